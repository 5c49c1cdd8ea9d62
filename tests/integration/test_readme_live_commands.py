"""The README's commands that need a running server, run as written against the shared reference server
(its address replaces 127.0.0.1:8001, nothing else changes): the CPU profiling example names no --repo,
so it must find the tokenizer of the server's repository by itself. Which commands these are, and why the
others do not run here: tests/unit/test_readme_commands.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from swallow_trt.triton_repo.repo import TOKENIZER_DIR
from tests.fixtures.readme import argv_of, readme_commands
from tests.fixtures.triton import ReferenceServed

README_URL = "127.0.0.1:8001"
CHAT = "swallow-trt chat --url 127.0.0.1:8001 '日本で一番高い山は？'"
PROFILE = (
    "swallow-trt profile --url 127.0.0.1:8001 --model chat --concurrency 1,4,8 --input-tokens 128 "
    "--output-tokens 32 --num-requests 16 --out profile-cpu"
)

pytestmark = [pytest.mark.integration, pytest.mark.requires_triton]


def run_as_written(command: str, url: str, cwd: Path, timeout_s: float) -> subprocess.CompletedProcess[str]:
    assert command in readme_commands(), f"no longer in the README: {command}"
    argv = [url if a == README_URL else a for a in argv_of(command)]
    env = {k: v for k, v in os.environ.items() if k != "SWALLOW_TRT_DEBUG"}
    return subprocess.run([sys.executable, "-m", "swallow_trt.cli.main", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout_s)  # fmt: skip


def test_chat_example(reference_triton: ReferenceServed, tmp_path: Path) -> None:
    proc = run_as_written(CHAT, reference_triton.server.grpc_url, tmp_path, timeout_s=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip()


def test_cpu_profiling_example(reference_triton: ReferenceServed, tmp_path: Path) -> None:
    """The README's CPU reference run, from a directory unrelated to the repository's: the served
    repository's relative tokenizer_dir is resolved through the local server's --model-repository."""
    proc = run_as_written(PROFILE, reference_triton.server.grpc_url, tmp_path, timeout_s=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "profile-cpu"
    report = json.loads((out / "profile.json").read_text())
    found = Path(report["meta"]["tokenizer"])
    assert found.resolve() == (reference_triton.repo / TOKENIZER_DIR).resolve()
    points = report["points"]
    assert [p["load"] for p in points] == [{"mode": "closed", "concurrency": c} for c in (1, 4, 8)]
    for p in points:
        assert p["requests"] == {"sent": 16, "ok": 16, "failed": 0}, p["errors"]
    assert (out / "requests.csv").is_file()
    assert "concurrency 8" in proc.stdout
