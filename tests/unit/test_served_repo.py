"""``profile`` without ``--repo`` finds a local server's repository from the server's command line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from swallow_trt.profiler.served_repo import flag_value, is_local, local_repository, repository_of
from tests.fixtures.ports import free_port

BIN = "/opt/triton/bin/tritonserver"


def _repo(root: Path, *models: str) -> Path:
    for model in models:
        (root / model).mkdir(parents=True)
        (root / model / "config.pbtxt").write_text(f'name: "{model}"\n')
    return root


def test_equals_and_space_forms(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo", "chat")
    for argv in (
        (BIN, f"--model-repository={repo}", "--grpc-port=9001"),
        (BIN, "--model-repository", str(repo), "--grpc-port", "9001"),
        (BIN, f"--model-store={repo}", "--grpc-port=9001"),
    ):
        assert repository_of(argv, Path("/"), 9001, "chat") == repo, argv


def test_relative_repository_resolves_against_the_servers_cwd(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "work" / "swallow-trt-quickstart" / "repo", "chat")
    argv = (BIN, "--model-repository=swallow-trt-quickstart/repo", "--grpc-port=8001")
    assert repository_of(argv, tmp_path / "work", 8001, "chat") == repo
    assert repository_of(argv, tmp_path, 8001, "chat") is None  # not there from another directory


def test_default_grpc_port_is_8001(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "chat")
    argv = (BIN, f"--model-repository={repo}")
    assert repository_of(argv, Path("/"), 8001, "chat") == repo
    assert repository_of(argv, Path("/"), 9001, "chat") is None


def test_other_processes_ports_and_models_do_not_match(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "chat")
    assert (
        repository_of(("mpirun", f"--model-repository={repo}", "--grpc-port=8001"), Path("/"), 8001, "chat")
        is None
    )
    assert (
        repository_of((BIN, f"--model-repository={repo}", "--grpc-port=8002"), Path("/"), 8001, "chat")
        is None
    )
    assert repository_of((BIN, f"--model-repository={repo}"), Path("/"), 8001, "ensemble") is None
    assert repository_of((), Path("/"), 8001, "chat") is None


def test_the_repository_holding_the_model_wins(tmp_path: Path) -> None:
    engines = _repo(tmp_path / "a", "tensorrt_llm")
    text = _repo(tmp_path / "b", "chat")
    argv = (BIN, f"--model-repository={engines}", f"--model-repository={text}", "--grpc-port=8001")
    assert repository_of(argv, Path("/"), 8001, "chat") == text


def test_last_flag_wins() -> None:
    assert flag_value(("x", "--grpc-port=1", "--grpc-port", "2"), "--grpc-port") == "2"
    assert flag_value(("x", "--grpc-port"), "--grpc-port") is None
    assert flag_value(("x", "--grpc-portal=3"), "--grpc-port") is None


@pytest.mark.parametrize(
    ("host", "local"),
    [("127.0.0.1", True), ("127.0.1.1", True), ("localhost", True), ("[::1]", True), ("0.0.0.0", True),
     (socket.gethostname(), True), ("10.1.2.3", False), ("triton.example.com", False)],
)  # fmt: skip
def test_is_local(host: str, local: bool) -> None:
    assert is_local(host) is local


def test_remote_or_malformed_url_is_not_looked_up() -> None:
    assert local_repository("triton.example.com:8001", "chat") is None
    assert local_repository("127.0.0.1", "chat") is None


def test_no_server_on_the_port(tmp_path: Path) -> None:
    """A real /proc scan: nothing on this machine serves gRPC on a port that was just free."""
    port = free_port()
    assert local_repository(f"127.0.0.1:{port}", "chat") is None
