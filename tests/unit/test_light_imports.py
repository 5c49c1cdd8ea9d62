"""The light commands never import the heavy libraries (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "modelopt", "tritonclient", "tensorrt_llm", "pydantic", "rich")
PROBE = """
import atexit, json, sys
heavy = {heavy!r}
atexit.register(lambda: sys.stderr.write("LOADED=" + json.dumps(sorted(m for m in heavy if m in sys.modules)) + "\\n"))
from swallow_trt.cli.main import run
sys.argv = ["swallow-trt", *{args!r}]
run()
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["models"],
        ["models", "--json"],
        ["targets"],
        ["plan", "--model", "70b", "--tp", "4", "--fp8", "--target", "h100x4"],
        ["plan", "--model", "70b", "--tp", "4", "--fp8", "--target", "h100x4", "--json"],
        ["plan", "--model", "nope", "--target", "hopper"],
        ["build", "--model", "70b", "--tp", "4", "--fp8", "--target", "h100x4", "--dry-run"],
        ["build", "--model", "70b", "--tp", "4", "--fp8", "--target", "h100x4", "--dry-run", "--json"],
    ],
)
def test_no_heavy_imports(args: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY, args=args)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = next(x for x in proc.stderr.splitlines() if x.startswith("LOADED="))
    loaded = json.loads(line.removeprefix("LOADED="))
    allowed = {"rich"} if args == ["--help"] else set()  # typer renders help with rich
    assert set(loaded) <= allowed, loaded
    assert "Traceback" not in proc.stderr
