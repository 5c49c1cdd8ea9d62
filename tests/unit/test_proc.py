"""The process supervisor (core/proc.py) on real child processes, and TritonServer's start deadline.

Each child is a shell or sleep: cheap, and what the supervisor does (sessions, groups, signals, the death
signal) is the kernel's, so nothing here is mocked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swallow_trt.errors import ProcessFailed, ProcessFailure, StageFailed
from swallow_trt.proc import ManagedProcess
from swallow_trt.triton_repo.install import TritonInstall
from swallow_trt.triton_repo.server import TritonServer, leftover_processes
from swallow_trt.triton_repo.stubs import pid_alive, scan_proc

NEVER_READY = Path(__file__).resolve().parents[1] / "stubs" / "bin" / "never-ready-server"


def _gone(pid: int, within_s: float = 10) -> bool:
    """Whether ``pid`` is gone within ``within_s`` (a bound against a hang, not a timing claim)."""
    end = time.monotonic() + within_s
    while pid_alive(pid):
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def _group(pgid: int) -> list[int]:
    return [p.pid for p in scan_proc() if p.pgrp == pgid and p.state != "Z"]


def test_argv_logged_own_session_and_group_stopped(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    # A leader with a grandchild in its group: the stop must reach both.
    child = ManagedProcess(["sh", "-c", "sleep 600 & echo started; wait"], name="sh", log_path=log)
    child.start()
    pid = child.pid
    assert pid is not None
    assert os.getsid(pid) == pid  # its own session, so its own process group
    end = time.monotonic() + 10
    while len(_group(pid)) < 2 and time.monotonic() < end:
        time.sleep(0.02)
    members = _group(pid)
    assert len(members) == 2
    child.stop(deadline_s=5)
    assert all(_gone(p) for p in members)
    text = log.read_text()
    assert text.splitlines()[0] == "$ sh -c 'sleep 600 & echo started; wait'"
    assert "started" in text


def test_sigterm_ignored_then_group_killed(tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(600)"
    child = ManagedProcess([sys.executable, "-c", code], name="stubborn", log_path=tmp_path / "l.log")
    child.start()
    end = time.monotonic() + 10
    while "up" not in child.log_since(0).splitlines() and time.monotonic() < end:
        time.sleep(0.02)
    child.stop(deadline_s=0.3)
    assert child.returncode == -signal.SIGKILL
    assert _group(child.pid or -1) == []


def test_exit_before_ready_carries_its_facts(tmp_path: Path) -> None:
    child = ManagedProcess(["sh", "-c", "echo cannot bind; exit 3"], name="server", log_path=tmp_path / "s.log",
                           timeout_s=30, ready=lambda: False)  # fmt: skip
    with pytest.raises(ProcessFailed) as caught:
        child.start().wait_ready()
    err = caught.value
    assert err.reason is ProcessFailure.EXITED
    assert err.returncode == 3
    assert err.argv == ("sh", "-c", "echo cannot bind; exit 3")
    assert err.summary == "server exited with code 3 before it was ready"
    assert err.message.startswith(err.summary + ": sh -c ")
    assert "cannot bind" in (err.details or "")
    assert err.exit_code == 1  # the CLI's exit code is not the child's


def test_job_deadline_given_at_construction(tmp_path: Path) -> None:
    job = ManagedProcess(["sleep", "600"], name="build", log_path=tmp_path / "b.log", timeout_s=0.5)
    with pytest.raises(ProcessFailed) as caught:
        job.start().wait()
    assert caught.value.reason is ProcessFailure.TIMED_OUT
    assert caught.value.timeout_s == 0.5
    assert "did not finish within 0.5 s" in caught.value.message
    assert _gone(job.pid or -1)


def test_interrupted_wait_stops_the_child(tmp_path: Path) -> None:
    child = ManagedProcess(["sleep", "600"], name="api", log_path=tmp_path / "a.log", ready=lambda: False)
    with pytest.raises(ProcessFailed) as caught:
        child.start().wait_ready(stop=lambda: True)
    assert caught.value.reason is ProcessFailure.INTERRUPTED
    assert _gone(child.pid or -1)


def test_child_dies_with_its_parent(tmp_path: Path) -> None:
    """kill -9 of the parent, which no atexit hook sees: PR_SET_PDEATHSIG ends the child."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from swallow_trt.proc import ManagedProcess\n"
        f"p = ManagedProcess(['sleep', '600'], name='c', log_path=Path({str(tmp_path / 'c.log')!r})).start()\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert pid_alive(child_pid)
        parent.kill()
        parent.wait()
        assert _gone(child_pid), "the child outlived its parent's kill -9"
    finally:
        parent.kill()
        parent.wait()


def test_context_managed_server_honours_the_callers_deadline(tmp_path: Path) -> None:
    """``with TritonServer(..., start_timeout_s=N)`` waits N, not a default: a stand-in server that never
    becomes ready fails with the caller's 2 s (the old ``with`` started with 120 s whatever the caller
    passed to start() inside the block)."""
    install = TritonInstall(binary=NEVER_READY, backend_dir=tmp_path, lib_dir=None, python_bin_dir=None,
                            source="system")  # fmt: skip
    repo = tmp_path / "repo"
    repo.mkdir()
    server = TritonServer(repo, install=install, log_path=tmp_path / "t.log", start_timeout_s=2)
    with pytest.raises(StageFailed) as caught, server:
        pytest.fail("a server that never answers was taken as ready")
    err = caught.value
    assert isinstance(err, ProcessFailed)
    assert err.reason is ProcessFailure.TIMED_OUT
    assert err.timeout_s == 2
    assert err.summary == "Triton was not ready within 2 s"
    assert err.argv[0] == str(NEVER_READY)
    assert leftover_processes(server) == []
