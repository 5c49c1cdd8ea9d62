"""package -> serve -> chat through the real CLI and a real Triton server; a stub killed under serve is
reloaded (one line on stderr); clean stop on SIGINT, also during start-up; a taken port refused before
anything starts."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc")
pytest.importorskip("torch")

from tests.fixtures.tiny import make_checkpoint, make_tokenizer

pytestmark = pytest.mark.integration


def cli(*args: str, home: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SWALLOW_TRT_HOME=str(home))
    return subprocess.run(
        [sys.executable, "-m", "swallow_trt.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pids(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(x) for x in found.stdout.split()]


def _wait_for_line(lines: list[str], pattern: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while not (found := [x for x in list(lines) if re.search(pattern, x)]):
        assert time.monotonic() < deadline, f"no line matching {pattern!r} in {lines}"
        time.sleep(0.2)
    return found[0]


def test_package_serve_chat_and_stop(tmp_path: Path) -> None:
    # Named like a registry model so the registry supplies the Llama-3 chat format and <|eot_id|> stop.
    ckpt = make_checkpoint(
        tmp_path / "Llama-3.1-Swallow-8B-Instruct-v0.3", "llama31", vocab_size=len(make_tokenizer("llama31"))
    )
    repo = tmp_path / "repo"
    packaged = cli("package", "--model", str(ckpt), "--out", str(repo), "--json", home=tmp_path)
    assert packaged.returncode == 0, packaged.stderr
    assert '"chat_format": "llama3"' in packaged.stdout
    again = cli("package", "--model", str(ckpt), "--out", str(repo), home=tmp_path)
    assert again.returncode == 2
    assert "already exists" in again.stderr

    port = free_port()
    env = dict(os.environ, SWALLOW_TRT_HOME=str(tmp_path))
    serve = subprocess.Popen(
        [sys.executable, "-m", "swallow_trt.cli.main", "serve", "--repo", str(repo), "--grpc-port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    errors: list[str] = []
    assert serve.stderr is not None
    reader = threading.Thread(target=lambda: errors.extend(serve.stderr or ()), daemon=True)
    reader.start()
    try:
        assert serve.stdout is not None
        seen = []
        deadline = time.monotonic() + 240
        for line in serve.stdout:
            seen.append(line)
            if line.startswith("try: swallow-trt chat"):
                break
            assert time.monotonic() < deadline
        assert any(f"127.0.0.1:{port}" in line for line in seen), seen
        assert all("0.0.0.0" not in line for line in seen)
        answer = cli(
            "chat", "--url", f"127.0.0.1:{port}", "--max-tokens", "12", "日本で一番高い山は？", home=tmp_path
        )
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.strip()
        # serve watches the stubs: one of chat's, killed, gets one line, a reload, and chat answers.
        os.kill(_pids(f"{repo}/chat/1/model.py")[0], signal.SIGKILL)
        reloaded = _wait_for_line(errors, r"^serve: reloaded chat in [\d.]+ s", 300)  # loaded CI: generous
        assert re.search(r"^serve: stub of model 'chat' instance chat_\d+_\d+ died \(", "".join(errors), re.M)
        print(reloaded)
        again = cli("chat", "--url", f"127.0.0.1:{port}", "--max-tokens", "4", "こんにちは", home=tmp_path)
        assert again.returncode == 0, again.stderr
        bad = cli("chat", "--url", f"127.0.0.1:{port}", "--max-tokens", "4", "   ", home=tmp_path)
        assert bad.returncode == 2
        assert "the prompt is empty" in bad.stderr
    finally:
        serve.send_signal(signal.SIGINT)
        rest, _ = serve.communicate(timeout=60)
        reader.join(10)
    err = "".join(errors)
    assert serve.returncode == 0, err
    assert rest.strip().endswith("stopped")
    assert "Traceback" not in err
    left = subprocess.run(["pgrep", "-f", str(repo)], capture_output=True, text=True)
    assert left.stdout.strip() == "", "a server or stub outlived serve"


def test_cli_refusals(tmp_path: Path) -> None:
    not_repo = cli("serve", "--repo", str(tmp_path), home=tmp_path)
    assert not_repo.returncode == 2
    assert "is not a model repository" in not_repo.stderr
    unreachable = cli("chat", "--url", f"127.0.0.1:{free_port()}", "こんにちは", home=tmp_path, timeout=120)
    assert unreachable.returncode == 3
    assert "cannot reach Triton" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr
    engine = cli(
        "package", "--model", "8b", "--backend", "tensorrtllm", "--out", str(tmp_path / "r"), home=tmp_path
    )
    assert engine.returncode == 2
    assert "--backend 'tensorrtllm' needs --engine" in engine.stderr
    neither = cli("package", "--out", str(tmp_path / "r"), home=tmp_path)
    assert neither.returncode == 2
    assert "exactly one of --model" in neither.stderr
    not_engine = cli("package", "--engine", str(tmp_path), "--out", str(tmp_path / "r"), home=tmp_path)
    assert not_engine.returncode == 2
    assert "not a TensorRT-LLM engine directory" in not_engine.stderr
    assert not (tmp_path / "r").exists()


SLOW_CONFIG = """
name: "slow"
backend: "python"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "Y" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

SLOW_MODEL = """
import time


class TritonPythonModel:
    def initialize(self, args):
        time.sleep(3600)  # keeps the server starting until it is interrupted

    def execute(self, requests):
        return []
"""


def _slow_repo(root: Path) -> Path:
    (root / "slow" / "1").mkdir(parents=True)
    (root / "slow" / "config.pbtxt").write_text(SLOW_CONFIG.lstrip())
    (root / "slow" / "1" / "model.py").write_text(SLOW_MODEL.lstrip())
    return root


def test_ctrl_c_during_start_up_stops_at_once(tmp_path: Path) -> None:
    repo = _slow_repo(tmp_path / "repo")
    env = dict(os.environ, SWALLOW_TRT_HOME=str(tmp_path))
    serve = subprocess.Popen(
        [sys.executable, "-m", "swallow_trt.cli.main", "serve", "--repo", str(repo)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        # Start-up is under way once the slow model's stub runs its initialize.
        deadline = time.monotonic() + 240
        while not _pids(f"{repo}/slow/1/model.py"):
            assert serve.poll() is None, serve.communicate()
            assert time.monotonic() < deadline, "the slow model's stub never started"
            time.sleep(0.2)
        serve.send_signal(signal.SIGINT)
        out, err = serve.communicate(timeout=60)  # a bound against a hang, not a timing assertion
    finally:
        if serve.poll() is None:
            serve.kill()
    assert serve.returncode == 130, err
    assert err.splitlines() == ["error: interrupted by SIGINT while Triton was starting; stopped it"], err
    assert out == ""
    assert _pids(str(repo)) == [], "a server or stub outlived serve"


def test_port_in_use_is_refused_before_launch(tmp_path: Path) -> None:
    repo = _slow_repo(tmp_path / "repo")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = cli("serve", "--repo", str(repo), "--metrics-port", str(port), home=tmp_path, timeout=120)
    assert busy.returncode == 3, busy.stderr
    assert busy.stderr.splitlines() == [
        f"error: the metrics port {port} on 127.0.0.1 is already in use — stop what listens there, or "
        "choose another with --metrics-port (leave it out for a free one)"
    ]
    # Refused before any launch: no server log was opened, and no process of this repository ran.
    assert not (tmp_path / "triton-logs").exists() or not any((tmp_path / "triton-logs").iterdir())
    assert _pids(str(repo)) == []
    same = cli("serve", "--repo", str(repo), "--http-port", "8123", "--grpc-port", "8123", home=tmp_path)
    assert same.returncode == 2
    assert "the same port is given for two endpoints" in same.stderr
