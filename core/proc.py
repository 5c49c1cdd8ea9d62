"""One supervisor for every child process the tool starts: :class:`ManagedProcess`.

Triton, the OpenAI API processes, the quantize worker, ``trtllm-build`` and ``trtllm-serve`` all go through
it, so each of them:

- logs its exact argv (to the logger, and as ``$ argv`` at the top of its log file);
- starts in its own session (``start_new_session``), so a stop reaches the whole process group (Triton's
  Python-backend stubs, uvicorn's workers, MPI ranks) and a Ctrl-C in the terminal is ours to forward;
- dies with its parent: ``PR_SET_PDEATHSIG`` (SIGKILL) set in the child between fork and exec. A
  parent-death *watch* would need the child's cooperation (a pipe it polls) and tritonserver or
  trtllm-build cannot give it; the kernel's death signal needs nothing from the child and also covers
  ``kill -9`` of the CLI, which no atexit hook sees. It follows the *thread* that forked, not the process
  (prctl(2)), so it is set only when that thread outlives the child: the main thread by default, or a
  caller that says so (Triton's stub watcher). Normal exits and SIGTERM/SIGHUP of the parent are covered
  as well by a registry of live processes stopped at exit;
- waits for readiness, or for its end, against a deadline given at construction (``timeout_s``, counted
  from ``start()``): no caller can start a process with one deadline and wait with another;
- stops as a group: SIGTERM, a wait, then SIGKILL of the group;
- keeps its log, whose tail goes into the error when it fails (:class:`ProcessFailed`, whose facts are
  attributes: the reason, the exit code, the argv).

Standard library only: this is the bottom layer.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Literal

from swallow_trt.errors import ProcessFailed, ProcessFailure

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
_POLL_S = 0.2

# Resolved in the parent: the child between fork and exec must not load libraries (another thread of
# the parent may hold the loader's lock at the fork).
_PRCTL: Any = None
with contextlib.suppress(OSError, AttributeError):
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl


def die_with_parent() -> None:
    """Child pre-exec (Linux): receive SIGKILL when the thread that forked it ends."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)


def size_of(path: Path) -> int:
    """The size of a log file; 0 when it does not exist (yet)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def read_from(path: Path, offset: int) -> str:
    """A log file from ``offset`` on (what one launch appended)."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


class ManagedProcess:
    """One child process, from start to a stop that leaves nothing of its group behind.

    ``ready``: polled by :meth:`wait_ready` until it returns True (a server's health check); without it,
    the process is a job and :meth:`wait` waits for its end. ``timeout_s``: the deadline of either, from
    :meth:`start` (None: no deadline). ``output``: ``"log"`` sends stdout and stderr to ``log_path``
    (appended to), ``"pipe"`` gives stdout to the caller (:attr:`stdout`, text) and stderr to the log,
    ``"inherit"`` leaves both on the parent's terminal. ``tie_to_parent``: set PR_SET_PDEATHSIG; None sets
    it only when started from the main thread (the signal follows the forking thread)."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        log_path: Path | None = None,
        timeout_s: float | None = None,
        ready: Callable[[], bool] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        output: Literal["log", "pipe", "inherit"] = "log",
        tie_to_parent: bool | None = None,
        stop_deadline_s: float = 10.0,
        tail_lines: int = 20,
    ) -> None:
        if output != "inherit" and log_path is None:
            raise ValueError(f"{name}: output={output!r} needs a log_path")
        self.argv = [str(a) for a in argv]
        self.name = name
        self.log_path = log_path
        self.timeout_s = timeout_s
        self.ready = ready
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.output = output
        self.tie_to_parent = tie_to_parent
        self.stop_deadline_s = stop_deadline_s
        self.tail_lines = tail_lines
        self.launch_offset = 0  # where this launch's lines start in the (appended) log
        self._proc: subprocess.Popen[Any] | None = None
        self._log: IO[bytes] | None = None
        self._deadline: float | None = None
        self.is_ready = False  # wait_ready() saw the readiness check pass

    # ---- state

    @property
    def popen(self) -> subprocess.Popen[Any]:
        if self._proc is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._proc

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def stdout(self) -> IO[str]:
        out = self.popen.stdout
        assert out is not None, "started without output='pipe'"
        return out

    def poll(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.poll()

    def left_s(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        return None if self._deadline is None else self._deadline - time.monotonic()

    # ---- start

    def start(self) -> ManagedProcess:
        if self._proc is not None:
            raise RuntimeError(f"{self.name} was already started (pid {self._proc.pid})")
        command = shlex.join(self.argv)
        stdout: Any = None
        stderr: Any = None
        if self.log_path is not None and self.output != "inherit":
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.launch_offset = self.log_size()
            self._log = self.log_path.open("ab")
            self._log.write(f"$ {command}\n".encode())
            self._log.flush()
            stdout = subprocess.PIPE if self.output == "pipe" else self._log
            stderr = self._log if self.output == "pipe" else subprocess.STDOUT
        log.info("starting %s: %s", self.name, command)
        tie = self.tie_to_parent
        if tie is None:
            tie = threading.current_thread() is threading.main_thread()
        _install_hooks()
        with _LIVE_LOCK:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                text=self.output == "pipe",
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=die_with_parent if tie else None,
            )
            _LIVE.add(self)
        self._deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        return self

    # ---- waiting

    def failed(
        self, reason: ProcessFailure, *, summary: str | None = None, hint: str | None = None
    ) -> ProcessFailed:
        """The error for this process, with the tail of its log."""
        details = None
        if self.log_path is not None and self.output != "inherit":
            # The file's name only: a stage's log moves once it failed (its hint says where to).
            details = f"--- last lines of {self.log_path.name} ---\n{tail(self.log_path, self.tail_lines)}"
        return ProcessFailed(
            self.name,
            reason,
            self.argv,
            returncode=self.poll(),
            timeout_s=self.timeout_s,
            log_path=self.log_path,
            summary=summary,
            hint=hint or (f"see {self.log_path}" if self.log_path is not None else None),
            details=details,
        )

    def wait_ready(self, stop: Callable[[], bool] | None = None) -> None:
        """Poll ``ready`` until it is True. Raises ProcessFailed (process stopped) when the process
        exits first (EXITED), the deadline passes (TIMED_OUT) or ``stop`` returns True (INTERRUPTED)."""
        assert self.ready is not None, f"{self.name} has no readiness check"
        proc = self.popen
        while True:
            if stop is not None and stop():
                error = self.failed(ProcessFailure.INTERRUPTED)
                self.stop(deadline_s=2)  # nothing to drain in a process that never became ready
                raise error
            if (code := proc.poll()) is not None:
                error = self.failed(
                    ProcessFailure.EXITED, summary=f"{self.name} exited with code {code} before it was ready"
                )
                self.stop()
                raise error
            if self.ready():
                log.info("%s ready (pid %d)", self.name, proc.pid)
                self.is_ready = True
                return
            left = self.left_s()
            if left is not None and left <= 0:
                error = self.failed(
                    ProcessFailure.TIMED_OUT, summary=f"{self.name} was not ready within {self.timeout_s:g} s"
                )
                self.stop()
                raise error
            time.sleep(_POLL_S if left is None else max(0.0, min(_POLL_S, left)))

    def wait(self, *, tick: Callable[[], None] | None = None, tick_s: float = 1.0) -> int:
        """Wait for the end of a job; its exit code. ``tick`` is called every ``tick_s`` while it runs.
        Past the deadline the group is stopped and ProcessFailed (TIMED_OUT) raised; any exception on the
        way (Ctrl-C) stops the group too."""
        proc = self.popen
        try:
            while True:
                left = self.left_s()
                step = tick_s if left is None else max(0.0, min(tick_s, left))
                try:
                    return proc.wait(timeout=step)
                except subprocess.TimeoutExpired:
                    left = self.left_s()
                    if left is not None and left <= 0:
                        error = self.failed(
                            ProcessFailure.TIMED_OUT,
                            summary=f"{self.name} did not finish within {self.timeout_s:g} s and was stopped",
                        )
                        self.stop()
                        raise error from None
                    if tick is not None:
                        tick()
        except BaseException:
            self.stop()
            raise

    # ---- stop

    def stop(self, deadline_s: float | None = None, *, give_up: Callable[[], bool] | None = None) -> None:
        """SIGTERM the group, wait up to ``deadline_s`` (default: the one given at construction) or until
        ``give_up`` returns True, then SIGKILL the group. The group is SIGKILLed once more after the leader
        is gone, for members that outlive it (workers, stubs). Safe to call any number of times."""
        proc = self._proc
        if proc is not None:
            deadline = self.stop_deadline_s if deadline_s is None else deadline_s
            was_running = proc.poll() is None
            if was_running:
                _signal_group(proc.pid, signal.SIGTERM)
                end = time.monotonic() + deadline
                while proc.poll() is None and time.monotonic() < end:
                    if give_up is not None and give_up():
                        break
                    time.sleep(0.05)
                if proc.poll() is None:
                    log.warning(
                        "%s (pid %d) still runs after SIGTERM; killing its group", self.name, proc.pid
                    )
            # Also after the leader ended: members that outlive it keep the group id from being reused
            # (Linux frees a pid only once no process uses it as a group id), so this reaches them or
            # nobody.
            _signal_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.stdout is not None:
                with contextlib.suppress(OSError):
                    proc.stdout.close()
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if self._log is not None:
            self._log.close()
            self._log = None

    # ---- the log

    def log_size(self) -> int:
        return 0 if self.log_path is None else size_of(self.log_path)

    def log_since(self, offset: int) -> str:
        return "" if self.log_path is None else read_from(self.log_path, offset)

    def note(self, text: str) -> None:
        """Append ``text`` to the log (what the parent read from a piped stdout and did not use)."""
        if self._log is not None:
            self._log.write(text.encode())
            self._log.flush()

    def log_tail(self, lines: int | None = None) -> str:
        return "" if self.log_path is None else tail(self.log_path, lines or self.tail_lines)

    # ---- context manager: started and, for a server, ready on entry; stopped on exit

    def __enter__(self) -> ManagedProcess:
        if self._proc is None:
            self.start()
        if self.ready is not None and not self.is_ready:
            self.wait_ready()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ManagedProcess({self.name!r}, pid={self.pid}, argv={shlex.join(self.argv)!r})"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# ---- the parent's own end: stop what is still running


_LIVE: set[Any] = set()  # ManagedProcess, and owners that register themselves (a Triton server)
_LIVE_LOCK = threading.Lock()
_HOOKS_INSTALLED = False


def register_live(owner: Any) -> None:
    """Have ``owner.stop(deadline_s=5)`` called at exit, or on SIGTERM/SIGHUP of this process."""
    with _LIVE_LOCK:
        _LIVE.add(owner)
    _install_hooks()


def unregister_live(owner: Any) -> None:
    with _LIVE_LOCK:
        _LIVE.discard(owner)


def _stop_all() -> None:
    with _LIVE_LOCK:
        owners = list(_LIVE)
    # Owners (servers) before their processes: an owner's stop does more than the group kill.
    for owner in sorted(owners, key=lambda o: isinstance(o, ManagedProcess)):
        with contextlib.suppress(Exception):
            owner.stop(deadline_s=5)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _stop_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_hooks() -> None:
    global _HOOKS_INSTALLED
    if _HOOKS_INSTALLED:
        return
    _HOOKS_INSTALLED = True
    atexit.register(_stop_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) == signal.SIG_DFL:  # never replace a handler the caller installed
                signal.signal(sig, _on_signal)


__all__ = [
    "ManagedProcess",
    "die_with_parent",
    "read_from",
    "register_live",
    "size_of",
    "tail",
    "unregister_live",
]
