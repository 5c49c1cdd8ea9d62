"""Keep a running Triton server's Python models alive.

Triton 2.51 never restarts a dead ``triton_python_backend_stub`` (decoupled or not), and both model and
server readiness stay 200 afterwards: every request routed to that instance fails with "Stub process ...
is not healthy" for as long as the server lives. The watcher here is a thread of the process that owns
the server. It follows the server's stubs in /proc (found by the server's shared-memory prefix; model and
instance names come from their argv), and when one disappears while the server lives it reloads that
model through the model-control API (explicit mode; a reload replaces every instance of the model, the
old ones finish what they hold; ``TritonServer.reload_model`` says why it bumps the mtime of the
model's version directories first). A reload that keeps failing, or a server that exits on its own, leads
to a restart of the whole server on the same ports with a bounded, doubling back-off; after
``max_restarts`` the watcher stops the server and leaves the error in ``server.failure``.

Requests that were in flight on the dead stub are another matter (seen here, and upstream's
server#7862: no fail-over for decoupled models): a decoupled model whose ``execute`` returned before it
finished sending (every streaming LLM model, the ``chat`` BLS) leaves them waiting forever, since only the
stub could have sent their final response (python_backend r24.10's ``TRITONBACKEND_ModelInstanceExecute``,
src/python_be.cc at 01d0ad82: "TODO: Implement restart on decoupled"; the dead stub's response factories
are never released), and the replaced model version never unloads while they are held. Their clients
end them: ``chat`` names the stub that serves each request (``report_instance``) and swallow-trt's client
stops waiting the moment that stub is gone (``triton_repo.client``). The server itself goes on: the
reload serves new requests and the old version's live instances finish their streams. The watcher waits
``held_after_s`` after a reload for the log to show the old version unloaded; when it does not, the
version is held (it keeps its idle stubs' memory), the watcher says so, and it restarts the server
only once more than ``max_held_versions`` are held (a restart ends every held request with an error,
and cuts every other stream too).

The watcher knows the server only through :class:`Watched` (what ``TritonServer`` offers it), so this
module does not import ``server.py``, which imports it. Standard library only, like server.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from swallow_trt.errors import ProcessFailed, StageFailed, SwallowTrtError
from swallow_trt.triton_repo.stubs import StubDeath, StubProcess, exit_description, pid_alive, record_death

log = logging.getLogger(__name__)


class Watched(Protocol):
    """What the watcher needs of the server it keeps alive (``TritonServer``)."""

    shm_prefix: str
    log_path: Path
    deaths_path: Path  # where the watcher appends each death (stubs.record_death) for the server's clients
    failure: SwallowTrtError | None
    on_event: Callable[[str], None]

    @property
    def closing(self) -> bool: ...
    @property
    def running(self) -> bool: ...
    @property
    def pid(self) -> int | None: ...
    @property
    def returncode(self) -> int | None: ...
    def stubs(self) -> list[StubProcess]: ...
    def model_ready(self, name: str, timeout_s: float = 5) -> bool: ...
    def reload_model(self, name: str, timeout_s: float = 600) -> None: ...
    def relaunch(self, timeout_s: float, *, pdeathsig: bool = False) -> bool: ...
    def log_size(self) -> int: ...
    def log_since(self, offset: int) -> str: ...
    def stop(self, deadline_s: float = 15) -> None: ...


@dataclass(frozen=True)
class Recovery:
    """How the watcher reacts. Times in seconds."""

    poll_s: float = 0.2  # the known stubs are checked this often (cheap: one stat file each)
    rescan_s: float = 2.0  # /proc is searched this often for stubs started later (models loaded later)
    reload_attempts: int = 3
    reload_timeout_s: float = 600.0  # one load call: minutes for a big model on a loaded machine
    confirm_timeout_s: float = 60.0  # for the reloaded model's stubs to appear
    max_restarts: int = 5
    backoff_s: float = 1.0  # before the first restart (and between reload attempts); doubles each time
    backoff_cap_s: float = 30.0
    ready_timeout_s: float = 600.0  # a restarted server has this long to become ready
    healthy_reset_s: float = 600.0  # this long without trouble and the restart count starts again
    # After a reload, how long the replaced version may take to unload before it is taken as held for ever
    # by the requests the dead stub had.
    held_after_s: float = 30.0
    # Held versions the server keeps serving beside (their stubs' memory stays taken); one more and it is
    # restarted, which cuts every stream in flight. None: never restart for held versions.
    max_held_versions: int | None = 2

    def delay(self, n: int) -> float:
        return float(min(self.backoff_s * 2**n, self.backoff_cap_s))


class StubWatcher(threading.Thread):
    """Started by ``TritonServer.start`` once the server is ready (when it has a Recovery policy).

    The thread outlives every server it launched: it ends only after the server was stopped (it calls
    ``server.stop()`` on its way out, which waits for a stop in progress), so the death signal of a
    restarted server, which follows this thread, never fires while the server should run."""

    def __init__(self, server: Watched, policy: Recovery) -> None:
        super().__init__(name=f"triton-watch-{server.shm_prefix}", daemon=True)
        self.server = server
        self.policy = policy
        self.restarts = 0
        self.reloads = 0
        self._known: dict[int, StubProcess] = {}
        self._retired: set[int] = set()  # stubs of replaced instances: their exit is expected
        self._generation = 0  # restarts of the server so far: what was known before one is void
        self._unloads: list[tuple[str, int, float]] = []  # replaced versions: (model, log offset, when)
        self.held: list[str] = []  # models with a replaced version held by a dead stub's requests
        self._last_trouble = time.monotonic()
        self._rescan()  # here, not in the thread: a stub that dies before the thread runs still counts

    def say(self, line: str) -> None:
        try:
            self.server.on_event(line)
        except Exception:  # a broken sink must not stop the watching
            log.exception("on_event failed")

    def run(self) -> None:
        try:
            self._watch()
        except Exception as exc:
            log.exception("the stub watcher failed")
            self.server.failure = StageFailed(
                f"the watcher of Triton's stubs failed ({type(exc).__name__}: {exc}); stopped the server",
                f"see the server log {self.server.log_path}",
            )
        finally:
            self.server.stop()

    # ---- the loop

    def _sleep(self, seconds: float) -> bool:
        """Sleep, but True at once when the server is being stopped."""
        end = time.monotonic() + seconds
        while not self.server.closing:
            left = end - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(0.1, left))
        return True

    def _rescan(self) -> None:
        for stub in self.server.stubs():
            if stub.pid not in self._retired:
                self._known.setdefault(stub.pid, stub)

    def _watch(self) -> None:
        server, policy = self.server, self.policy
        last_scan = time.monotonic()
        while not self._sleep(policy.poll_s):
            if not server.running:
                what = f"Triton (pid {server.pid}) exited on its own with code {server.returncode}"
                if not self._restart(what):
                    return
                continue
            dead = [s for s in self._known.values() if not pid_alive(s.pid)]
            if dead:
                if not self._handle(dead):
                    return
                continue
            stuck = self._stuck_model()
            if stuck is not None:
                model, waited = stuck
                self.held.append(model)
                reason = (
                    f"the version of {model} that the dead stub served still holds its requests "
                    f"{waited:.0f} s after the reload (Triton 2.51 never ends them)"
                )
                limit = policy.max_held_versions
                if limit is None or len(self.held) <= limit:
                    self.say(
                        f"{reason}; it stays loaded beside the new one, which serves, and streams on other "
                        f"instances go on ({len(self.held)} held version(s); "
                        + ("never restarting for them)" if limit is None else f"a restart past {limit})")
                    )
                    continue
                if not self._restart(f"{reason}, and {len(self.held)} versions are held"):
                    return
                continue
            if time.monotonic() - last_scan >= policy.rescan_s:
                self._rescan()
                last_scan = time.monotonic()

    def _stuck_model(self) -> tuple[str, float] | None:
        """A reloaded model whose replaced version has not unloaded within ``held_after_s``, with the
        seconds since its reload."""
        grace = self.policy.held_after_s
        for i, (model, offset, reloaded_at) in enumerate(self._unloads):
            if f"successfully unloaded '{model}' version" in self.server.log_since(offset):
                del self._unloads[i]
                return None  # the others on the next poll
            waited = time.monotonic() - reloaded_at
            if waited >= grace:
                del self._unloads[i]  # held: its log is not read again
                return model, waited
        return None

    def _trouble(self) -> None:
        now = time.monotonic()
        if now - self._last_trouble >= self.policy.healthy_reset_s:
            self.restarts = 0
        self._last_trouble = now

    # ---- a dead stub: reload its model

    def _handle(self, dead: list[StubProcess]) -> bool:
        """Reload the model of each dead stub; False when the watching is over."""
        how = {s.pid: exit_description(s.pid) for s in dead}  # read before the server reaps them
        self._tell_clients(dead)
        for stub in dead:
            self._known.pop(stub.pid, None)
        self._trouble()
        for model in dict.fromkeys(s.model for s in dead):
            victims = [s for s in dead if s.model == model]
            if all(how[s.pid] == "exit code 0" for s in victims) or not self.server.model_ready(model):
                # A stub that finished cleanly, or a model no longer loaded: an unload, not a death.
                log.info("stubs of model %r ended (%s); not reloading", model, how)
                continue
            first = victims[0]
            names = ", ".join(s.instance for s in victims)
            cause = how[first.pid] or "already reaped by the server"
            self.say(
                f"stub of model '{model}' instance{'s' if len(victims) > 1 else ''} {names} died "
                f"({cause}); reloading {model} ..."
            )
            generation = self._generation
            if not self._reload(model, expected=len(victims)):
                return False
            if generation != self._generation:  # reloading failed and the server was restarted
                return True
        return True

    def _tell_clients(self, dead: list[StubProcess]) -> None:
        """Record each model's dead stubs for the server's clients (the OpenAI API ends the requests it
        has in flight on a model none of whose instances lives)."""
        at_ns = time.monotonic_ns()
        for model in dict.fromkeys(s.model for s in dead):
            victims = [s for s in dead if s.model == model]
            others = [s for s in self._known.values() if s.model == model and s not in victims]
            death = StubDeath(model, tuple(s.instance for s in victims), tuple(s.pid for s in victims),
                              every_instance=not any(pid_alive(s.pid) for s in others), at_ns=at_ns)  # fmt: skip
            try:
                record_death(self.server.deaths_path, death)
            except OSError as exc:
                log.warning(
                    "could not record the death of %s's stub in %s: %s", model, self.server.deaths_path, exc
                )

    def _reload(self, model: str, expected: int) -> bool:
        """Reload ``model`` (attempts with back-off), else restart the server; False when over."""
        server, policy = self.server, self.policy
        # The model's instances that still run are replaced by the reload too: their exit is expected.
        for pid, stub in list(self._known.items()):
            if stub.model == model:
                self._retired.add(pid)
                expected += 1
                del self._known[pid]
        self._retired.update(s.pid for s in server.stubs() if s.model == model)
        reason = ""
        for attempt in range(policy.reload_attempts):
            if attempt and self._sleep(policy.delay(attempt - 1)):
                return False
            t0 = time.monotonic()
            offset = server.log_size()
            try:
                server.reload_model(model, timeout_s=policy.reload_timeout_s)
            except StageFailed as exc:
                if server.closing:
                    return False
                reason = exc.message
                log.warning("%s (attempt %d of %d)", reason, attempt + 1, policy.reload_attempts)
                continue
            fresh = self._wait_for_stubs(model, expected)
            if fresh:
                self.reloads += 1
                self._known.update((s.pid, s) for s in fresh)
                self._unloads.append((model, offset, time.monotonic()))
                pids = ", ".join(str(s.pid) for s in fresh)
                self.say(f"reloaded {model} in {time.monotonic() - t0:.1f} s (stub pid {pids})")
                return True
            reason = f"model '{model}' was reloaded but no stub of it came back"
        return self._restart(f"{reason} after {policy.reload_attempts} attempts")

    def _wait_for_stubs(self, model: str, expected: int) -> list[StubProcess]:
        end = time.monotonic() + self.policy.confirm_timeout_s
        fresh: list[StubProcess] = []
        while not self.server.closing:
            fresh = [s for s in self.server.stubs() if s.model == model and s.pid not in self._retired]
            if len(fresh) >= expected or time.monotonic() >= end:
                break
            time.sleep(0.1)
        return fresh

    # ---- restart the whole server

    def _restart(self, reason: str) -> bool:
        """Restart the server (doubling back-off, at most ``max_restarts``); False when over."""
        server, policy = self.server, self.policy
        self._trouble()
        while not server.closing:
            if self.restarts >= policy.max_restarts:
                server.failure = StageFailed(
                    f"Triton could not be recovered after {self.restarts} restart(s): {reason}",
                    f"see the server log {server.log_path}",
                )
                self.say(f"giving up: {server.failure.message}; stopping Triton")
                server.stop()
                return False
            delay = policy.delay(self.restarts)
            self.restarts += 1
            self.say(
                f"{reason}; restarting Triton in {delay:g} s (restart {self.restarts} of {policy.max_restarts})"
            )
            if self._sleep(delay):
                return False
            t0 = time.monotonic()
            try:
                if not server.relaunch(policy.ready_timeout_s, pdeathsig=True):
                    return False
            except StageFailed as exc:
                # The event line wants the reason, not the whole argv a ProcessFailed's message ends with.
                reason = (
                    f"the restart failed: {exc.summary if isinstance(exc, ProcessFailed) else exc.message}"
                )
                continue
            self._generation += 1
            self._known.clear()
            self._retired.clear()
            self._unloads.clear()
            self.held.clear()
            self._rescan()
            self.say(f"Triton restarted, ready in {time.monotonic() - t0:.1f} s (pid {server.pid})")
            return True
        return False


__all__ = ["Recovery", "StubWatcher", "Watched"]
