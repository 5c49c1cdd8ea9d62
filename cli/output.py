"""The one output sink: rich tables for people, ``--json`` for scripts, errors as one line on stderr."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

if TYPE_CHECKING:
    from rich.console import Console

P = ParamSpec("P")
R = TypeVar("R")


def console() -> Console:  # rich, for progress on long stages
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


def table(title: str | None, headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    """A plain aligned text table. Plain text (not rich) keeps the light commands within their
    start-up budget (benchmarks/cli_startup.py) and pipes cleanly."""
    right = right or set()
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        out = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    parts = [title] if title else []
    parts += [line(headers), "  ".join("-" * w for w in widths)]
    parts += [line(r) for r in rows]
    return "\n".join(parts)


def out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


def error_line(text: str) -> None:
    sys.stderr.write(f"error: {text}\n")
    sys.stderr.flush()


def gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f} ms"


def guarded(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn SwallowTrtError into ``error: ...`` on stderr and its exit code (traceback with SWALLOW_TRT_DEBUG=1)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        import typer

        from swallow_trt.errors import SwallowTrtError
        from swallow_trt.settings import load_settings

        try:
            return fn(*args, **kwargs)
        except SwallowTrtError as exc:
            if load_settings().debug:
                raise
            error_line(exc.one_line())
            if exc.details:
                sys.stderr.write(exc.details.rstrip() + "\n")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            error_line("interrupted")
            raise typer.Exit(130) from None

    return wrapper
