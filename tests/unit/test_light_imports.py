"""The light commands never import the heavy libraries, nor the modules of the other commands (checked in a
fresh interpreter): start-up is budgeted (benchmarks/cli_startup.py)."""

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
atexit.register(lambda: sys.stderr.write("OWN=" + json.dumps(sorted(m for m in sys.modules if m.startswith("swallow_trt."))) + "\\n"))
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
    if args != ["--help"]:
        own = json.loads(
            next(x for x in proc.stderr.splitlines() if x.startswith("OWN=")).removeprefix("OWN=")
        )
        commands = {m.removeprefix("swallow_trt.cli.") for m in own if m.startswith("swallow_trt.cli.")}
        assert commands <= {"main", "options", "output", *CLI_MODULES_OF[args[0]]}, commands
        assert not [m for m in own if m.startswith(("swallow_trt.triton_repo", "swallow_trt.workflows"))], own


# The command modules each light command may import besides main/options/output.
CLI_MODULES_OF = {
    "models": {"models"},
    "targets": {"targets"},
    "plan": {"plan", "plan_view"},
    "build": {"build", "plan_view"},
}


def test_commands_are_loaded_lazily() -> None:
    """``plan`` does not pay for the serving and profiling commands' modules; ``--help`` still lists them all."""
    from swallow_trt.cli.main import COMMANDS

    probe = PROBE.format(
        heavy=HEAVY, args=["plan", "--model", "70b", "--tp", "4", "--fp8", "--target", "h100x4"]
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    own = json.loads(next(x for x in proc.stderr.splitlines() if x.startswith("OWN=")).removeprefix("OWN="))
    for name in set(COMMANDS) - {"plan"}:
        assert f"swallow_trt.cli.{name}" not in own
    # Nor for the PyTorch-runtime build (it imports yaml): plan only needs the checks in builders.plan.
    assert "swallow_trt.builders.pytorch_runtime" not in own
    helped = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY, args=["--help"])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert helped.returncode == 0, helped.stderr
    for name in COMMANDS:
        assert f"│ {name} " in helped.stdout, name
