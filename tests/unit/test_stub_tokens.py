"""The token a model names its serving stub with, and the client's wait on it: a stream whose stub died
ends with an error at once, one whose stub lives is waited for, and a token this host cannot check (another
host or pid namespace, an unknown form) never ends a stream. And the watcher's record of dead stubs, as
the OpenAI API and chat read it."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from swallow_trt.errors import StageFailed
from swallow_trt.triton_repo.client import STUB_CHECK_S, _next_response
from swallow_trt.triton_repo.stubs import (
    DeathFeed,
    StubDeath,
    process_gone,
    process_token,
    record_death,
    token_pid,
)


def _token_of_ended_child() -> str:
    child = subprocess.Popen(["sleep", "30"])
    token = process_token(child.pid)
    assert process_gone(token) is False
    child.kill()
    child.wait()
    return token


def test_token_names_a_live_process_and_its_pid() -> None:
    token = process_token()
    assert process_gone(token) is False
    assert token_pid(token) is not None


def test_ended_process_is_gone_and_a_zombie_counts_as_gone() -> None:
    assert process_gone(_token_of_ended_child()) is True
    child = subprocess.Popen(["true"])
    token = process_token(child.pid)
    deadline = time.monotonic() + 10
    while process_gone(token) is not True:  # exited, not yet reaped: a zombie
        assert time.monotonic() < deadline
        time.sleep(0.01)
    child.wait()


def test_pid_reused_by_another_process_is_gone() -> None:
    parts = process_token().split(":")
    parts[-1] = str(int(parts[-1]) + 1)  # same pid, another start time
    assert process_gone(":".join(parts)) is True


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.replace(t.split(":")[1], "another-boot-id"),  # another host
        lambda t: t.replace("pid:[", "pid:[9"),  # another pid namespace (another container)
        lambda t: "p0" + t[2:],  # a form this release does not know
        lambda t: "",
        lambda t: "garbage",
        lambda t: t.rsplit(":", 1)[0] + ":?",  # its start time was not readable
    ],
)
def test_a_token_this_process_cannot_check_is_unknown(mangle: Any) -> None:
    assert process_gone(mangle(_token_of_ended_child())) is None


def test_wait_ends_at_once_when_the_serving_stub_is_gone() -> None:
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    token = _token_of_ended_child()
    t0 = time.monotonic()
    with pytest.raises(StageFailed) as caught:
        _next_response(results, "chat", 60, token)
    assert time.monotonic() - t0 < 60
    assert caught.value.message.startswith(
        f"the chat instance serving this request died (stub pid {token_pid(token)})"
    )
    assert "send it again" in (caught.value.hint or "")


def test_wait_goes_on_while_the_stub_lives_and_returns_the_response() -> None:
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    threading.Timer(4 * STUB_CHECK_S, results.put, [("result", None)]).start()
    assert _next_response(results, "chat", 60, process_token()) == ("result", None)


@pytest.mark.parametrize("serving", [None, "unknown-form"])
def test_wait_without_a_checkable_stub_ends_only_at_its_deadline(serving: str | None) -> None:
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    with pytest.raises(StageFailed) as caught:
        _next_response(results, "chat", 0.3, serving)
    assert caught.value.message == "no response from chat within 0.3 s"


# ---- the watcher's record of dead stubs, as the OpenAI API and chat read it


def _death(model: str = "tensorrt_llm", every: bool = True, at_ns: int = 5) -> StubDeath:
    return StubDeath(model, (f"{model}_0_0",), (1234,), every, at_ns)


def test_feed_reads_only_deaths_recorded_after_it_was_made(tmp_path: Path) -> None:
    path = tmp_path / "server.log.stub-deaths"
    assert DeathFeed(path).new() == []  # no file yet: no death yet
    record_death(path, _death("chat"))
    feed = DeathFeed(path)
    assert feed.new() == []  # that death concerns no request of a reader made after it
    record_death(path, _death(every=False, at_ns=7))
    record_death(path, _death())
    assert feed.new() == [_death(every=False, at_ns=7), _death()]
    assert feed.new() == []


def test_feed_waits_for_a_whole_line_and_skips_a_broken_one(tmp_path: Path) -> None:
    path = tmp_path / "deaths"
    path.write_text("")
    feed = DeathFeed(path)
    line = json.dumps({"model": "m", "instances": ["m_0_0"], "pids": [9], "every_instance": True, "at_ns": 3})
    with path.open("a") as f:
        f.write("not json\n" + line[:10])
    assert feed.new() == []  # the broken line is skipped, the half-written one waits
    with path.open("a") as f:
        f.write(line[10:] + "\n")
    assert feed.new() == [StubDeath("m", ("m_0_0",), (9,), True, 3)]


def test_feed_follows_a_new_file_on_the_same_path(tmp_path: Path) -> None:
    path = tmp_path / "deaths"
    record_death(path, _death())
    record_death(path, _death())
    feed = DeathFeed(path)
    path.unlink()
    record_death(path, _death("chat"))  # a server started again: a shorter file
    assert feed.new() == [_death("chat")]


def test_death_message_names_the_model_and_the_stub() -> None:
    assert _death().message() == (
        "the tensorrt_llm instance serving this request died (stub pid 1234) before it finished; "
        "the server reloads it: send the request again"
    )


def test_fatal_deaths_are_those_of_the_model_with_no_instance_left(tmp_path: Path) -> None:
    path = tmp_path / "deaths"
    feed = DeathFeed(path)
    for death in (_death("chat"), _death(every=False, at_ns=7), _death(at_ns=9)):
        record_death(path, death)
    assert feed.fatal("tensorrt_llm") == [_death(at_ns=9)]
    assert feed.fatal("tensorrt_llm") == []  # read once
