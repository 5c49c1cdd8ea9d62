"""Checks of command-line values shared by several commands, each failing as one UsageError (exit 2).

They run before any heavy work (and in ``--dry-run``), so a bad value is reported before a model is
downloaded, a server contacted or an output directory half written.
"""

from __future__ import annotations

import os
from pathlib import Path

from swallow_trt.errors import UsageError


def at_least(flag: str, value: int | float, low: int | float) -> None:
    if value < low:
        raise UsageError(f"{flag} must be at least {low:g}, got {value:g}", f"pass {flag} {low:g} or more")


def output_dir(path: Path, flag: str = "--out") -> None:
    """``path`` is a directory or can be made one: it is not a file, no file sits on the way to it, and
    the nearest existing directory is writable."""
    path = path.expanduser()
    for probe in (path, *path.absolute().parents):
        if not probe.exists():
            continue
        if not probe.is_dir():
            where = "is a file, not a directory" if probe == path else f"is inside {probe}, which is a file"
            raise UsageError(
                f"{flag} {str(path)!r} {where}",
                f"pass a directory for {flag} (it is created if missing)",
            )
        if not os.access(probe, os.W_OK | os.X_OK):
            raise UsageError(
                f"{flag} {str(path)!r}: {probe} is not writable", f"pass a directory you can write for {flag}"
            )
        return
