"""The one output sink: rich tables for people, ``--json`` for scripts, errors as one line on stderr."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from swallow_trt.errors import SwallowTrtError


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


def report_error(exc: SwallowTrtError) -> None:
    """A failure as people read it: ``error: <fact> — <hint>`` on stderr, then its details (a log tail)."""
    error_line(exc.one_line())
    if exc.details:
        sys.stderr.write(exc.details.rstrip() + "\n")
        sys.stderr.flush()


class ConsoleReporter:
    """Progress on stderr: a live bar on a terminal, a line per 10% otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self._bar: Any = None
        self._task: Any = None
        self._last_decile = -1

    def phase(self, message: str) -> None:
        self._close_bar()
        if not self.quiet:
            sys.stderr.write(f"• {message}\n")

    def warn(self, message: str) -> None:
        self._close_bar()
        sys.stderr.write(f"warning: {message}\n")

    def calib(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.tty:
            if self._bar is None:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

                self._bar = Progress(
                    "calibrating", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
                )
                self._bar.start()
                self._task = self._bar.add_task("calib", total=total)
            self._bar.update(self._task, completed=done)
        else:
            decile = done * 10 // max(total, 1)
            if decile != self._last_decile:
                self._last_decile = decile
                sys.stderr.write(f"  calibration {done}/{total}\n")

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def close(self) -> None:
        self._close_bar()
