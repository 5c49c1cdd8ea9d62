"""The real Triton 2.51 server of nvidia-pytriton on a tiny Python-backend repository: start, readiness,
a UTF-8 round trip over gRPC, a decoupled stream, and stops that leave no server or stub behind (also
with a stream in flight and after a model that fails to load)."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from swallow_trt.errors import EnvironmentProblem, StageFailed, UsageError
from swallow_trt.triton_repo import server as server_mod
from swallow_trt.triton_repo.server import PortInUse, TritonServer, find_tritonserver, leftover_processes
from swallow_trt.triton_repo.stubs import pid_alive
from tests.fixtures.python_models import COUNTDOWN_CONFIG, add_model, echo_repo, stream_countdown
from tests.fixtures.triton import StartTriton

pytest.importorskip("tritonclient")
np = pytest.importorskip("numpy")

pytestmark = [pytest.mark.integration, pytest.mark.requires_triton]

JAPANESE = "こんにちは、世界！　Swallowは日本語に強いLLMです。🐦"
STREAM_N = 5

BROKEN_MODEL = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("broken-on-purpose: this model refuses to load")

    def execute(self, requests):
        return []
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return echo_repo(tmp_path / "repo")


def _is_final(result: Any) -> bool:
    return bool(result.get_response().parameters["triton_final_response"].bool_param)


def _assert_no_leftovers(server: TritonServer, stubs: list[int]) -> None:
    assert leftover_processes(server) == []
    assert pid_alive(server.pid or -1) is False
    for pid in stubs:
        assert not pid_alive(pid), f"stub {pid} outlived the server"
    assert not [p for p in Path("/dev/shm").iterdir() if p.name.startswith(server.shm_prefix)]


def test_serve_echo_and_stream_then_stop_leaves_nothing(repo: Path, tmp_path: Path) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    server = TritonServer(repo, log_path=tmp_path / "triton.log")
    t0 = time.monotonic()
    with server:
        started_s = time.monotonic() - t0
        assert server.pid is not None
        assert len({server.http_port, server.grpc_port, server.metrics_port}) == 3
        assert (tmp_path / "triton.log").read_text().startswith("$ ")  # the exact command comes first
        stubs = [pid for pid in leftover_processes(server) if pid != server.pid]
        assert len(stubs) == 3, "one stub per model instance (echo x1, countdown x2)"

        http = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
        assert http.is_server_ready()
        assert http.is_model_ready("echo")
        assert http.is_model_ready("countdown")
        http.close()

        client = grpcclient.InferenceServerClient(server.grpc_url)
        text = grpcclient.InferInput("TEXT", [1], "BYTES")
        text.set_data_from_numpy(np.array([JAPANESE.encode("utf-8")], dtype=np.object_))
        num = grpcclient.InferInput("NUM", [1], "INT32")
        num.set_data_from_numpy(np.array([42], dtype=np.int32))
        result = client.infer("echo", [text, num])
        assert result.as_numpy("TEXT_OUT")[0] == JAPANESE.encode("utf-8")
        assert result.as_numpy("TEXT_OUT")[0].decode("utf-8") == JAPANESE
        assert result.as_numpy("NUM_OUT").tolist() == [42]

        results: queue.Queue[tuple[Any, Any]] = queue.Queue()
        stream_countdown(client, STREAM_N, results)
        values: list[int] = []
        while True:
            item, error = results.get(timeout=10)
            assert error is None, error
            if _is_final(item):
                assert item.as_numpy("VALUE") is None  # the empty final response
                break
            values.append(int(item.as_numpy("VALUE")[0]))
        assert values == list(range(STREAM_N, 0, -1))
        client.stop_stream()
        client.close()
        t1 = time.monotonic()
    stopped_s = time.monotonic() - t1
    print(f"start {started_s:.2f} s, stop {stopped_s:.2f} s")  # a figure, not a bound: load moves it
    _assert_no_leftovers(server, stubs)
    server.stop()  # idempotent
    assert "Signal (15) received" in (tmp_path / "triton.log").read_text()


ABRUPT_CLIENT = """
import sys, queue
import numpy as np
import tritonclient.grpc as grpcclient

results = queue.Queue()
client = grpcclient.InferenceServerClient(sys.argv[1])
client.start_stream(callback=lambda result, error: results.put((result, error)))
count = grpcclient.InferInput("N", [1], "INT32")
count.set_data_from_numpy(np.array([100000], dtype=np.int32))
client.async_stream_infer("countdown", [count], enable_empty_final_response=True)
assert results.get(timeout=10)[1] is None
print("streaming", flush=True)
sys.stdin.read()
"""


def test_stop_with_streams_in_flight(repo: Path, tmp_path: Path) -> None:
    """One client is killed mid-stream (its request keeps running), another is still streaming when
    stop() is called: the server logs "Exit timeout expired", hangs, and is killed with its stubs."""
    import tritonclient.grpc as grpcclient

    script = tmp_path / "abrupt_client.py"
    script.write_text(ABRUPT_CLIENT, encoding="utf-8")
    server = TritonServer(repo, log_path=tmp_path / "triton.log", exit_timeout_s=2).start()
    live = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        stubs = [pid for pid in leftover_processes(server) if pid != server.pid]
        with subprocess.Popen(
            [sys.executable, str(script), server.grpc_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as abrupt:
            assert abrupt.stdout is not None
            assert abrupt.stdout.readline().strip() == "streaming"
            abrupt.kill()  # the client vanishes without closing its stream

        live_results: queue.Queue[tuple[Any, Any]] = queue.Queue()
        stream_countdown(live, 100_000, live_results)
        assert live_results.get(timeout=10)[1] is None
        t0 = time.monotonic()
        server.stop(deadline_s=30)
        stopped_s = time.monotonic() - t0
    finally:
        server.stop()
    # exit timeout (2 s) + the grace before escalating (2 s) on a quiet machine; a figure, not a bound
    print(f"stop with streams in flight {stopped_s:.2f} s")
    _assert_no_leftovers(server, stubs)
    assert "Exit timeout expired" in (tmp_path / "triton.log").read_text()
    closer = threading.Thread(target=live.close, daemon=True)  # the stream ended with the server
    closer.start()
    closer.join(10)
    assert not closer.is_alive()


def test_broken_model_fails_start_with_log_tail(repo: Path, tmp_path: Path) -> None:
    add_model(repo, "broken", COUNTDOWN_CONFIG.replace('"countdown"', '"broken"'), BROKEN_MODEL)
    server = TritonServer(repo, log_path=tmp_path / "triton.log", start_timeout_s=60)
    t0 = time.monotonic()
    with pytest.raises(StageFailed) as caught:
        server.start()
    print(f"failed start {time.monotonic() - t0:.2f} s")
    err = caught.value
    assert "exited with code" in err.message
    assert "--model-repository" in err.message  # the exact command
    assert err.details is not None
    assert "broken-on-purpose" in err.details  # the server log tail
    assert (
        "broken 1 UNAVAILABLE: Internal: RuntimeError: broken-on-purpose"
        in err.details.split("--- last lines")[0]
    )
    assert str(tmp_path / "triton.log") in (err.hint or "")
    assert not server.running
    assert leftover_processes(server) == []
    assert not [p for p in Path("/dev/shm").iterdir() if p.name.startswith(server.shm_prefix)]


def test_not_ready_in_time_is_stopped(repo: Path, tmp_path: Path) -> None:
    server = TritonServer(repo, log_path=tmp_path / "triton.log", start_timeout_s=0.01)
    with pytest.raises(StageFailed, match="not ready within"):
        server.start()
    assert leftover_processes(server) == []


def test_no_server_anywhere_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    import shutil

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    for prefer_system in (False, True):
        with pytest.raises(EnvironmentProblem) as caught:
            find_tritonserver(prefer_system=prefer_system)
        assert "pip install 'swallow-trt[serve]'" in (caught.value.hint or "")


def test_port_taken(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A port the caller named that is taken is refused before anything is launched; one port named
    twice is an argument error; a port we chose that someone took is re-picked (before the launch, or
    after a failed bind when it was taken in between)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])

        explicit = TritonServer(repo, grpc_port=port, log_path=tmp_path / "explicit.log", start_timeout_s=60)
        with pytest.raises(PortInUse) as caught:
            explicit.start()
        assert caught.value.one_line() == (
            f"the gRPC port {port} on 127.0.0.1 is already in use — stop what listens there, or choose "
            "another with --grpc-port (leave it out for a free one)"
        )
        assert caught.value.exit_code == 3  # an environment problem, as for every missing resource
        assert explicit.pid is None  # never launched
        assert not (tmp_path / "explicit.log").exists()

        with pytest.raises(UsageError, match="the same port is given for two endpoints"):
            TritonServer(repo, http_port=port + 1, metrics_port=port + 1).start()

        real = server_mod._free_ports
        calls: list[int] = []

        def first_taken(host: str, count: int) -> list[int]:
            calls.append(count)
            ports = real(host, count)
            return [port, *ports[1:]] if len(calls) == 1 else ports

        monkeypatch.setattr(server_mod, "_free_ports", first_taken)
        with TritonServer(repo, log_path=tmp_path / "auto.log") as server:
            assert port not in (server.http_port, server.grpc_port, server.metrics_port)
        assert len(calls) == 2
        assert (tmp_path / "auto.log").read_text().count("$ ") == 1  # re-picked before the launch
        assert leftover_processes(server) == []

        # Taken between the check and the bind: the server's own bind error leads to new ports.
        monkeypatch.setattr(server_mod, "port_in_use", lambda host, p: False)
        calls.clear()
        with TritonServer(repo, log_path=tmp_path / "race.log") as server:
            assert port not in (server.http_port, server.grpc_port, server.metrics_port)
        assert (tmp_path / "race.log").read_text().count("$ ") == 2
        assert leftover_processes(server) == []


def test_stub_embeds_the_interpreters_own_libpython(repo: Path, start_triton: StartTriton) -> None:
    """The stub links libpython3.X.so.1.0; with the running interpreter's LIBDIR first on
    LD_LIBRARY_PATH it maps that one (not the system's), so the embedded interpreter matches the
    standard library it finds under sys.prefix. Holds as well where the venv's Python is the system's."""
    import sysconfig

    expected = (Path(sysconfig.get_config_var("LIBDIR")) / sysconfig.get_config_var("INSTSONAME")).resolve()
    assert server_mod.python_lib_dir() == Path(sysconfig.get_config_var("LIBDIR"))
    server = start_triton(repo, log_name="triton.log")
    assert server.install is not None
    env = server.install.environment({"LD_LIBRARY_PATH": "/elsewhere"})
    assert env["LD_LIBRARY_PATH"].split(":")[1:] == [sysconfig.get_config_var("LIBDIR"), "/elsewhere"]
    stubs = server.stubs()
    assert {s.model for s in stubs} == {"echo", "countdown"}
    for stub in stubs:
        maps = Path(f"/proc/{stub.pid}/maps").read_text().splitlines()
        mapped = {Path(line.split()[-1]).resolve() for line in maps if "/libpython" in line}
        assert mapped == {expected}, (stub, mapped)
