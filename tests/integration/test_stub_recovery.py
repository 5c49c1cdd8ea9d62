"""A dead Python stub on the real Triton 2.51 server, which never restarts one and keeps reporting the
model ready: the watcher of a server started with a Recovery policy reloads the model, or restarts the
server, and says so in one line.

- The stub-kill test: chat streams run through the real ``chat`` BLS model over a ``tensorrt_llm``
  that emits tokens on a schedule (tests/triton_models/schedule); SIGKILL of one ``chat`` stub, then of
  the ``tensorrt_llm`` stub, mid-stream. Streams on the dead chat stub end with an error at once (the
  client watches the stub chat named), streams on the other instance finish whole, and no restart cuts
  them; new requests, through ``chat`` and through the ensemble, succeed after each reload. The chat and
  OpenAI API streams held by the dead ``tensorrt_llm`` stub (Triton 2.51 holds them for ever) end with
  an error at once, from the watcher's record of the death (not a hang: each stream has a deadline
  between responses, and the test checks that the error is not that deadline); the watcher restarts the
  server once too many versions are held, and requests succeed again after the restart. Each step must happen within RECOVERY_BOUND_S (generous: CI machines
  are loaded); the measured times are printed.
- A stub that dies idle: the reload alone recovers, no restart.
- The server itself killed: restarted on the same ports. A model that no longer loads: reloads fail,
  restarts fail, the watcher gives up after ``max_restarts`` and leaves its error in ``failure``.
- No server or stub process outlives any of it.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tritonclient.grpc")
pytest.importorskip("transformers")

from swallow_trt.errors import EnvironmentProblem, StageFailed
from swallow_trt.openai_api.server import start_api_process
from swallow_trt.triton_repo.client import stream_chat
from swallow_trt.triton_repo.recovery import Recovery
from swallow_trt.triton_repo.repo import RepoSpec, write_repo
from swallow_trt.triton_repo.server import TritonServer, leftover_processes
from swallow_trt.triton_repo.stubs import token_pid
from tests.fixtures.ensemble import ensemble_call
from tests.fixtures.ports import free_port
from tests.fixtures.python_models import echo_repo, stream_countdown
from tests.fixtures.tiny import make_checkpoint, make_tokenizer

pytestmark = [pytest.mark.integration, pytest.mark.requires_triton]
SCHEDULE = Path(__file__).resolve().parents[1] / "triton_models" / "schedule" / "model.py"
RECOVERY_BOUND_S = 120.0  # a generous bound on a loaded 2-core CI machine; seen here: about 1 s
STREAM_DEADLINE_S = 60.0  # the longest wait for the next response of a stream before calling it a hang
FAST = Recovery(
    poll_s=0.1, backoff_s=0.2, backoff_cap_s=1.0, reload_timeout_s=120, ready_timeout_s=300, held_after_s=5
)
DIED = r"stub of model '{model}' instance {model}_0_0 died \((signal 9|already reaped by the server)\); reloading {model} \.\.\."


class Events:
    """The watcher's lines, thread-safe, with a wait for one matching a pattern."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, line: str) -> None:
        print(f"[watcher] {line}")
        with self._cond:
            self.lines.append(line)
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout_s: float, start: int = 0) -> str:
        """The first line from index ``start`` on that matches ``pattern``, waiting up to ``timeout_s``."""

        def matches() -> list[str]:
            return [x for x in self.lines[start:] if re.search(pattern, x)]

        with self._cond:
            self._cond.wait_for(lambda: bool(matches()), timeout_s)
            found = matches()
        assert found, f"no watcher line matching {pattern!r}; got {self.lines}"
        return found[0]


def _chat_repo(tmp_path: Path, chat_instances: int = 1) -> Path:
    ckpt = make_checkpoint(tmp_path / "ckpt", "llama31", vocab_size=len(make_tokenizer("llama31")))
    repo = write_repo(
        RepoSpec(checkpoint=ckpt, chat_format="llama3", end_id=None, chat_instances=chat_instances),
        tmp_path / "repo",
    )
    shutil.copyfile(SCHEDULE, repo / "tensorrt_llm" / "1" / "model.py")
    with (repo / "tensorrt_llm" / "config.pbtxt").open("a", encoding="utf-8") as f:
        # 20 ms a token: a 1,000-token answer streams for 20 s, time enough to kill a stub mid-stream.
        for key, value in {
            "first_token_ms": "20",
            "token_interval_ms": "20",
            "require_forced_length": "false",
        }.items():
            f.write(f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}\n')
    return repo


def _start_and_kill(server: TritonServer, model: str) -> Iterator[str]:
    """A long chat stream with text flowing, then SIGKILL of ``model``'s stub; returns the stream."""
    pieces = stream_chat(server.grpc_url, "長い答えをください", max_tokens=1000, timeout_s=STREAM_DEADLINE_S)
    assert all(next(pieces) is not None for _ in range(3))
    (stub,) = [s for s in server.stubs() if s.model == model]
    os.kill(stub.pid, signal.SIGKILL)
    return pieces


def _assert_ends_with_error(pieces: Iterator[str], model: str) -> None:
    """The stream ends with chat's error response saying that ``model``'s stub died (not a hang, not a
    normal end, not the client's deadline)."""
    with pytest.raises(StageFailed) as caught:
        for _ in pieces:
            pass
    print(f"in-flight request after killing {model}'s stub: {caught.value.message}")
    assert caught.value.message.startswith(
        f"chat answered with an error: the {model} instance serving this request died (stub pid "
    )


def _first_success_s(server: TritonServer, t0: float) -> float:
    """Seconds from ``t0`` until a new chat request succeeds; fails the test past RECOVERY_BOUND_S."""
    failures: list[str] = []
    while time.monotonic() - t0 < RECOVERY_BOUND_S:
        try:
            text = "".join(stream_chat(server.grpc_url, "こんにちは", max_tokens=8, timeout_s=30))
        except (StageFailed, EnvironmentProblem) as exc:  # EnvironmentProblem: while it restarts
            failures.append(exc.message)
            time.sleep(0.2)
            continue
        assert text
        return time.monotonic() - t0
    raise AssertionError(f"no request succeeded within {RECOVERY_BOUND_S:g} s: {failures[-3:]}")


def _open_streams(
    server: TritonServer, n: int, max_tokens: int
) -> list[tuple[Iterator[str], list[str], str]]:
    """``n`` chat streams with text flowing, each with the token of the stub that serves it and its first
    piece of text."""
    streams = []
    for _ in range(n):
        tokens: list[str] = []
        pieces = stream_chat(
            server.grpc_url,
            "長い答えをください",
            max_tokens=max_tokens,
            timeout_s=STREAM_DEADLINE_S,
            on_instance=tokens.append,
        )
        first = next(pieces)  # the instance's token came first, then text
        assert first
        assert len(tokens) == 1
        streams.append((pieces, tokens, first))
    return streams


def _ensemble_stream_and_kill(server: TritonServer, model: str) -> tuple[str, float]:
    """A streamed ensemble request with text flowing, then SIGKILL of ``model``'s stub: the error the
    stream ends with, and how long after the kill it came."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    def tensor(name: str, value: Any, dtype: str, np_dtype: Any) -> Any:
        t = grpcclient.InferInput(name, [1, 1], dtype)
        t.set_data_from_numpy(np.array([[value]], dtype=np_dtype))
        return t

    results: queue.Queue[tuple[Any, Any, float]] = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.start_stream(callback=lambda result, error: results.put((result, error, time.monotonic())))
    try:
        # 100 tokens, 2 s: the generation left after the kill ends well before the watcher's held_after_s.
        inputs = [
            tensor("text_input", "日本".encode(), "BYTES", object),
            tensor("stream", True, "BOOL", bool),
            tensor("max_tokens", 100, "INT32", np.int32),
        ]
        client.async_stream_infer("ensemble", inputs, enable_empty_final_response=True)
        for _ in range(3):
            assert results.get(timeout=STREAM_DEADLINE_S)[1] is None
        (stub,) = [s for s in server.stubs() if s.model == model]
        t0 = time.monotonic()
        os.kill(stub.pid, signal.SIGKILL)
        while True:
            result, error, at = results.get(timeout=STREAM_DEADLINE_S)
            if error is not None:
                return str(error), at - t0
            assert not result.get_response().parameters["triton_final_response"].bool_param, (
                "ended as a success"
            )
    finally:
        client.stop_stream(cancel_requests=True)
        client.close()


def test_stub_killed_mid_stream(tmp_path: Path) -> None:
    """One server, three deaths.

    ``chat`` (two instances), SIGKILL of one stub with streams in flight on both: the streams on the dead
    stub end with an error at once (the client watches the stub that ``chat`` named), the streams on the
    other instance finish whole and unchanged, the reload serves new requests, and the replaced version,
    held for ever by the dead stub's requests, stays loaded without a restart (max_held_versions=2).

    The ensemble's ``postprocessing`` (not decoupled): the server ends the stream in flight with an error
    itself, and the reload serves the next request; its replaced version stays loaded too (seen on 2.51).

    Then ``tensorrt_llm`` (the test stand-in's stub; the C++ backend has none), with a chat stream and an
    OpenAI API stream in flight on it: both end with an error at once (chat and the API read the deaths
    the watcher records; tensorrt_llm has one instance, so each of its requests was on the dead stub), the
    reload serves new requests through ``chat`` and the ensemble, and the third held version is one too
    many: the watcher restarts Triton; requests, the API's too, succeed again after the restart."""
    repo = _chat_repo(tmp_path, chat_instances=2)
    events = Events()
    policy = replace(FAST, held_after_s=5, max_held_versions=2)
    api = None
    server = TritonServer(
        repo, log_path=tmp_path / "server.log", recovery=policy, on_event=events, start_timeout_s=300
    )
    try:
        server.start()
        assert "--model-control-mode=explicit" in server.argv
        first_pid = server.pid
        tokens_per_stream = 400  # 8 s at 20 ms a token: in flight across the kill and the reload
        streams = _open_streams(server, 2, tokens_per_stream)
        while len({token_pid(t[0]) for _, t, _ in streams}) < 2 and len(streams) < 8:
            streams += _open_streams(server, 1, tokens_per_stream)
        pids = {token_pid(t[0]) for _, t, _ in streams}
        assert len(pids) == 2, f"every stream went to one chat instance: {pids}"
        assert pids == {s.pid for s in server.stubs() if s.model == "chat"}
        victim = token_pid(streams[0][1][0])
        assert victim is not None
        start = len(events.lines)
        t0 = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        ended = []
        for pieces, tokens, _ in streams:
            if token_pid(tokens[0]) != victim:
                continue
            with pytest.raises(StageFailed) as caught:
                for _ in pieces:
                    pass
            ended.append(time.monotonic() - t0)
            assert f"the chat instance serving this request died (stub pid {victim})" in caught.value.message
        survivors = [
            first + "".join(pieces) for pieces, tokens, first in streams if token_pid(tokens[0]) != victim
        ]
        events.wait_for(r"stub of model 'chat' instance chat_0_\d died \(", 10, start)
        events.wait_for(r"^reloaded chat in [\d.]+ s \(stub pid \d+, \d+\)$", RECOVERY_BOUND_S, start)
        reference = "".join(stream_chat(server.grpc_url, "長い答えをください", max_tokens=tokens_per_stream))
        assert survivors
        assert all(text == reference for text in survivors)
        events.wait_for(
            r"^the version of chat that the dead stub served still holds its requests \d+ s after the "
            r"reload \(Triton 2.51 never ends them\); it stays loaded beside the new one, which serves, "
            r"and streams on other instances go on \(1 held version\(s\); a restart past 2\)$",
            RECOVERY_BOUND_S,
            start,
        )
        assert server.pid == first_pid
        assert not [x for x in events.lines if "restart" in x.replace("a restart past", "")], events.lines
        print(
            f"chat: {len(ended)} stream(s) on the killed stub ended with an error after "
            f"{', '.join(f'{x:.2f}' for x in ended)} s; {len(survivors)} on the other instance finished whole"
        )

        # A non-decoupled stub (the ensemble's postprocessing): the server itself fails the stream.
        start = len(events.lines)
        error, after_s = _ensemble_stream_and_kill(server, "postprocessing")
        assert "Stub process 'postprocessing_0_0' is not healthy" in error
        events.wait_for(r"^reloaded postprocessing in [\d.]+ s \(stub pid \d+\)$", RECOVERY_BOUND_S, start)
        assert ensemble_call(server, "日本", True, max_tokens=4)
        print(
            f"postprocessing: the ensemble stream in flight ended with an error {after_s:.2f} s after the kill"
        )
        # Seen on 2.51: the replaced postprocessing version is held too, though its request has ended.
        events.wait_for(
            r"^the version of postprocessing that the dead stub served still holds its requests \d+ s after "
            r"the reload .*\(2 held version\(s\); a restart past 2\)$",
            RECOVERY_BOUND_S,
            start,
        )
        assert server.pid == first_pid

        # The OpenAI API as serve starts it (told where the watcher records deaths), with a stream open.
        api = start_api_process(server.grpc_url, repo, port=free_port(), log_path=tmp_path / "api.log",
                                stub_deaths=server.deaths_path)  # fmt: skip
        api_stream = _api_stream(api.url)
        assert all(next(api_stream) for _ in range(3))

        start = len(events.lines)
        t0 = time.monotonic()
        in_flight = _start_and_kill(server, "tensorrt_llm")
        api_error = next(e for e in api_stream if e.startswith("error: ") or e == "[DONE]")
        api_ended_s = time.monotonic() - t0
        assert api_error.startswith(
            "error: generation failed: the tensorrt_llm instance serving this request died (stub pid "
        )
        assert next(api_stream) == "[DONE]"
        reloaded_s = _first_success_s(server, t0)
        events.wait_for(DIED.format(model="tensorrt_llm"), 10, start)
        events.wait_for(r"^reloaded tensorrt_llm in [\d.]+ s \(stub pid \d+\)$", RECOVERY_BOUND_S, start)
        # The ensemble uses the reloaded tensorrt_llm too (Triton 2.51 reloads it as a dependent).
        assert ensemble_call(server, "日本", True, max_tokens=4)
        _assert_ends_with_error(in_flight, "tensorrt_llm")
        ended_s = time.monotonic() - t0
        events.wait_for(
            r"^the version of tensorrt_llm that the dead stub served still holds its requests \d+ s after "
            r"the reload \(Triton 2.51 never ends them\), and 3 versions are held; restarting Triton in",
            RECOVERY_BOUND_S,
            start,
        )
        events.wait_for(r"^Triton restarted, ready in", RECOVERY_BOUND_S, start)
        restarted_s = _first_success_s(server, t0)
        print(
            f"tensorrt_llm: after SIGKILL of its stub, a new request succeeded at {reloaded_s:.2f} s, the "
            f"request in flight ended with an error at {ended_s:.2f} s, requests succeed after the "
            f"restart at {restarted_s:.2f} s; the OpenAI stream in flight ended with an error event at "
            f"{api_ended_s:.2f} s"
        )
        assert _api_succeeds(api.url)
        assert server.failure is None
    finally:
        if api is not None:
            api.stop()
        server.stop()
    assert leftover_processes(server) == []
    assert server.stubs() == []
    assert not [p for p in Path("/dev/shm").iterdir() if p.name.startswith(server.shm_prefix)]


def _api_succeeds(url: str) -> bool:
    """Whether a short streamed completion ends normally within RECOVERY_BOUND_S (the API answers 503
    while Triton restarts, and its channel reconnects within a second of Triton's return)."""
    import urllib.error

    deadline = time.monotonic() + RECOVERY_BOUND_S
    while time.monotonic() < deadline:
        try:
            events = list(_api_stream(url, max_tokens=4))
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
            continue
        if events[-1:] == ["[DONE]"] and not [e for e in events if e.startswith("error: ")]:
            return True
        time.sleep(0.5)
    return False


def _api_stream(url: str, max_tokens: int = 1000) -> Iterator[str]:
    """A streamed chat completion from the OpenAI API: yields each content piece, then "error: MESSAGE"
    for an error event, and "[DONE]"."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{url}/v1/models", timeout=STREAM_DEADLINE_S) as response:
        model = json.loads(response.read())["data"][0]["id"]
    body = {"model": model, "messages": [{"role": "user", "content": "長い答えをください"}],
            "max_tokens": max_tokens, "stream": True}  # fmt: skip
    request = urllib.request.Request(
        f"{url}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with opener.open(request, timeout=STREAM_DEADLINE_S) as response:
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                yield data
                return
            event = json.loads(data)
            if "error" in event:
                yield f"error: {event['error']['message']}"
                continue
            piece = event["choices"][0]["delta"].get("content")
            if piece:
                yield piece


def test_idle_stub_killed_is_reloaded_without_restart(tmp_path: Path) -> None:
    """A stub that dies with nothing in flight: the reload alone recovers, the old version unloads, and
    the server is not restarted."""
    repo = echo_repo(tmp_path / "repo")
    events = Events()
    server = TritonServer(
        repo, log_path=tmp_path / "server.log", recovery=FAST, on_event=events, start_timeout_s=120
    )
    try:
        server.start()
        pid = server.pid
        victims = [s for s in server.stubs() if s.model == "countdown"]
        assert len(victims) == 2
        os.kill(victims[0].pid, signal.SIGKILL)
        events.wait_for(rf"^stub of model 'countdown' instance {victims[0].instance} died \(", 30)
        events.wait_for(r"^reloaded countdown in [\d.]+ s \(stub pid \d+, \d+\)$", RECOVERY_BOUND_S)
        assert len(_countdown(server)) == 4  # three values and the empty final response
        deadline = time.monotonic() + RECOVERY_BOUND_S
        while "successfully unloaded 'countdown' version" not in server.log_since(0):
            assert time.monotonic() < deadline, "the replaced version of countdown never unloaded"
            time.sleep(0.2)
        assert not any(s.pid == victims[1].pid for s in server.stubs())  # its survivor was replaced too
        time.sleep(FAST.held_after_s)  # past the grace: still no restart
        assert server.pid == pid
        assert not [x for x in events.lines if "restart" in x], events.lines
    finally:
        server.stop()
    assert leftover_processes(server) == []


def _countdown(server: TritonServer, n: int = 3) -> list[Any]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    try:
        stream_countdown(client, n, results)
        got = []
        while len(got) <= n:
            result, error = results.get(timeout=STREAM_DEADLINE_S)
            if error is not None:
                raise StageFailed(str(error))
            got.append(result)
        return got
    finally:
        client.stop_stream()
        client.close()


def test_dead_server_is_restarted_then_given_up_on(tmp_path: Path) -> None:
    repo = echo_repo(tmp_path / "repo")
    events = Events()
    policy = Recovery(poll_s=0.1, backoff_s=0.2, backoff_cap_s=0.4, max_restarts=2, ready_timeout_s=120)
    server = TritonServer(
        repo, log_path=tmp_path / "server.log", recovery=policy, on_event=events, start_timeout_s=120
    )
    try:
        server.start()
        ports = (server.http_port, server.grpc_port, server.metrics_port)
        first_pid = server.pid
        assert first_pid is not None
        old_stubs = [s.pid for s in server.stubs()]
        os.kill(first_pid, signal.SIGKILL)
        events.wait_for(r"exited on its own with code -9; restarting Triton in 0.2 s \(restart 1 of 2\)", 30)
        events.wait_for(r"^Triton restarted, ready in [\d.]+ s \(pid \d+\)$", RECOVERY_BOUND_S)
        assert server.pid != first_pid
        assert (server.http_port, server.grpc_port, server.metrics_port) == ports
        assert len(_countdown(server)) == 4  # three values and the empty final response
        assert not [pid for pid in old_stubs if pid in {s.pid for s in server.stubs()}]

        # A model that no longer loads: its reload fails, and so does every restart.
        (repo / "echo" / "1" / "model.py").write_text("raise RuntimeError('broken-on-purpose')\n")
        (echo,) = [s for s in server.stubs() if s.model == "echo"]
        os.kill(echo.pid, signal.SIGKILL)
        events.wait_for(DIED.format(model="echo"), 30)
        events.wait_for(
            r"^loading model 'echo' failed: .* after 3 attempts; restarting Triton in [\d.]+ s \(restart 2 of 2\)$",
            RECOVERY_BOUND_S,
        )
        gave_up = events.wait_for(
            r"^giving up: Triton could not be recovered after 2 restart\(s\)", RECOVERY_BOUND_S
        )
        assert "the restart failed: Triton exited with code 1 before it was ready" in gave_up
        assert server.failure is not None
        assert server.failure.message in gave_up
        assert server.closing
        assert not server.running
    finally:
        server.stop()
    assert leftover_processes(server) == []
    assert server.stubs() == []
