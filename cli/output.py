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


def console() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


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
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            error_line("interrupted")
            raise typer.Exit(130) from None

    return wrapper
