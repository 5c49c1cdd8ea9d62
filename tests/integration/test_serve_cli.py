"""package -> serve -> chat through the real CLI and a real Triton server; clean stop on SIGINT."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
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
        bad = cli("chat", "--url", f"127.0.0.1:{port}", "--max-tokens", "4", "   ", home=tmp_path)
        assert bad.returncode == 2
        assert "the prompt is empty" in bad.stderr
    finally:
        serve.send_signal(signal.SIGINT)
        rest, err = serve.communicate(timeout=60)
    assert serve.returncode == 0, err
    assert rest.strip().endswith("stopped")
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
