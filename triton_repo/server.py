"""Launch and stop a Triton Inference Server on a model repository.

The server comes from nvidia-pytriton or a system install (``triton_repo/install.py``) and runs as a
:class:`~swallow_trt.proc.ManagedProcess`: its own session, tied to the caller's life, readiness polled
against the deadline given at construction (``start_timeout_s``, which ``with TritonServer(...)`` honours
as ``start()`` does), and a group stop. A server holding decoupled Python models may sit on SIGTERM for a
long time and its ``triton_python_backend_stub`` children can outlive it, so ``stop()`` escalates:
SIGTERM, then SIGKILL of the whole process group after a deadline, then SIGKILL of any stub still
carrying this server's unique shared-memory prefix (``triton_repo/stubs.py`` finds them in /proc).

Triton 2.51 never restarts a dead stub and keeps reporting the model ready, so a server started with a
``Recovery`` policy runs a watcher (``triton_repo/recovery.py``) that reloads the model of a dead stub
through the model-control API, or restarts the whole server with a bounded back-off.

Only the standard library is imported here; nothing heavy at import time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from swallow_trt.errors import (
    ProcessFailed,
    ProcessFailure,
    StageFailed,
    SwallowTrtError,
    UsageError,
)
from swallow_trt.proc import ManagedProcess, read_from, register_live, size_of, unregister_live
from swallow_trt.settings import load_settings
from swallow_trt.triton_repo.install import SERVE_HINT, TritonInstall, find_tritonserver, python_lib_dir
from swallow_trt.triton_repo.ports import PORT_NAMES, PortInUse, port_in_use
from swallow_trt.triton_repo.ports import free_ports as _free_ports  # a module global: tests patch it
from swallow_trt.triton_repo.recovery import Recovery, StubWatcher
from swallow_trt.triton_repo.stubs import (
    STUB_NAME,
    StubProcess,
    exit_description,
    find_stubs,
    pid_alive,
    server_processes,
)

log = logging.getLogger(__name__)

GRPC_ENV = "SWALLOW_TRT_TRITON_GRPC"  # core/settings.py: the server's own gRPC address, for its models
DEATHS_ENV = "SWALLOW_TRT_STUB_DEATHS"  # core/settings.py: the server's deaths_path, for its clients
DEFAULT_START_TIMEOUT_S = 600.0  # loading Python-backend models takes minutes on a loaded machine
_LOG_TAIL_LINES = 40
_EXIT_EXPIRED = "Exit timeout expired"  # logged when in-flight requests outlast --exit-timeout-secs
_HANG_GRACE_S = 2.0  # how long a server that logged it may still take to exit on its own
_LOG_NOISE = ("CudaDriverHelper has not been initialized", "Failed to initialize NVML")  # no GPU here
_BIND_ERRORS = ("address already in use", "already in use", "failed to bind")
_EXPLICIT = "--model-control-mode=explicit"


# --------------------------------------------------------------------------------------------------
# Errors and the stop flag


class Interrupted(SwallowTrtError):
    """A stop was asked for (Ctrl-C, SIGTERM) before the server was ready; it was stopped. Exits
    128 + the signal number, as a shell reports a process that signal ended."""

    def __init__(self, signum: int) -> None:
        super().__init__(
            f"interrupted by {signal.Signals(signum).name} while Triton was starting; stopped it"
        )
        self.exit_code = 128 + signum


class StopFlag:
    """Set from a signal handler, polled by a waiting start-up. Plain attributes on purpose: a signal
    handler that takes a lock (threading.Event.set) can deadlock against the thread it interrupted."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def set(self, signum: int) -> None:
        self.signum = signum

    def is_set(self) -> bool:
        return self.signum is not None

    def wait(self, timeout_s: float, step_s: float = 0.1) -> bool:
        """Sleep up to ``timeout_s``; True as soon as the flag is set."""
        end = time.monotonic() + timeout_s
        while not self.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(step_s, left))
        return True


# --------------------------------------------------------------------------------------------------
# The server


class TritonServer:
    """One tritonserver process on ``repo``. ``with TritonServer(repo, start_timeout_s=...) as server:``
    starts it, waits until ``/v2/health/ready`` answers 200 (at most ``start_timeout_s``), and stops it
    (with every stub it started) on the way out; ``start()`` does the same outside a ``with``. The
    deadline is the constructor's alone, so no caller can start with one and believe it waits with another.

    With ``recovery`` set, the server runs with explicit model control (every model loaded at start-up)
    and, once ready, a watcher thread reloads the model of any stub that dies, or restarts the server;
    ``on_event`` receives one line per thing it does, and ``failure`` holds the error once it gives up."""

    def __init__(
        self,
        repo: Path,
        *,
        host: str = "127.0.0.1",
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
        install: TritonInstall | None = None,
        exit_timeout_s: int = 5,
        world_size: int = 1,
        mpirun: str | None = None,
        recovery: Recovery | None = None,
        on_event: Callable[[str], None] | None = None,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
    ) -> None:
        self.repo = Path(repo).resolve()
        self.host = host
        self._requested_ports = (http_port, grpc_port, metrics_port)
        self.http_port, self.grpc_port, self.metrics_port = self._pick_ports()
        self.extra_args = list(extra_args)
        self.install = install
        self.exit_timeout_s = exit_timeout_s
        self.world_size = world_size
        self.mpirun = mpirun or "mpirun"
        self.recovery = recovery
        self.on_event: Callable[[str], None] = on_event or log.warning
        self.start_timeout_s = start_timeout_s
        self.failure: SwallowTrtError | None = None  # set by the watcher when it gives up
        self.shm_prefix = f"swtrt{os.getpid()}x{secrets.token_hex(4)}"  # unique: marks this server's stubs
        if log_path is None:
            log_path = load_settings().home / "triton-logs" / f"tritonserver-{self.shm_prefix}.log"
        self.log_path = Path(log_path)
        # The watcher appends each stub death here for the server's clients and models (recovery.py).
        self.deaths_path = self.log_path.with_name(self.log_path.name + ".stub-deaths")
        self.argv: list[str] = []
        self._process: ManagedProcess | None = None
        self._lock = threading.RLock()
        self._closing = False  # stop() was called: nothing may relaunch the server
        self._watcher: threading.Thread | None = None

    # ---- addresses and state

    def _pick_ports(self) -> tuple[int, int, int]:
        free = iter(_free_ports(self.host, sum(p is None for p in self._requested_ports)))
        http, grpc, metrics = (p if p is not None else next(free) for p in self._requested_ports)
        return http, grpc, metrics

    @property
    def _client_host(self) -> str:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"[{host}]" if ":" in host else host

    @property
    def http_url(self) -> str:
        return f"http://{self._client_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` as tritonclient.grpc expects it (no scheme)."""
        return f"{self._client_host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._client_host}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    @property
    def returncode(self) -> int | None:
        return self._process.poll() if self._process is not None else None

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def model_control_explicit(self) -> bool:
        """Whether models can be (re)loaded through the model-control API."""
        return self.recovery is not None or _EXPLICIT in self.extra_args

    def check_ports(self) -> None:
        """Refuse, before anything is launched, a port the caller named that is taken (PortInUse) or one
        port named for two endpoints (UsageError); automatically chosen ports found taken are re-picked."""
        named = {w: p for w, p in zip(PORT_NAMES, self._requested_ports, strict=True) if p is not None}
        if len(set(named.values())) < len(named):
            raise UsageError(
                "the same port is given for two endpoints: "
                + ", ".join(f"--{w}-port {p}" for w, p in named.items()),
                "give each of HTTP, gRPC and metrics its own port",
            )
        for which, port in named.items():
            if port_in_use(self.host, port):
                raise PortInUse(which, self.host, port)
        for _ in range(3):
            ports = (self.http_port, self.grpc_port, self.metrics_port)
            if not any(
                port_in_use(self.host, p) for w, p in zip(PORT_NAMES, ports, strict=True) if w not in named
            ):
                return
            self.http_port, self.grpc_port, self.metrics_port = self._pick_ports()

    # ---- start

    def command(self) -> list[str]:
        install = self.install or find_tritonserver()
        self.install = install
        if self.world_size == 1:
            return self._rank_argv(install, 0)
        # The TensorRT-LLM backend's leader mode: one tritonserver per rank under MPI, each with its own
        # Python-backend shared-memory prefix; ranks above 0 load only the engine model.
        argv = [self.mpirun, "--allow-run-as-root"]
        for rank in range(self.world_size):
            argv += ["-n", "1", *self._rank_argv(install, rank), ":"]
        return argv[:-1]

    def _rank_argv(self, install: TritonInstall, rank: int) -> list[str]:
        prefix = self.shm_prefix if rank == 0 else f"{self.shm_prefix}r{rank}"
        if rank:
            control = [_EXPLICIT, "--load-model=tensorrt_llm"]
        elif self.recovery is not None and not any(
            a.startswith("--model-control-mode") for a in self.extra_args
        ):
            # Reloading a model needs explicit model control; "*" keeps start-up loading everything.
            control = [_EXPLICIT, "--load-model=*"]
        else:
            control = []
        return [
            str(install.binary),
            *control,
            f"--model-repository={self.repo}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--disable-auto-complete-config",
            "--log-verbose=0",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--backend-directory={install.backend_dir}",
            f"--backend-config=python,shm-region-prefix-name={prefix}",
            *self.extra_args,
        ]

    # ---- start

    def start(self, *, stop: StopFlag | None = None) -> TritonServer:
        """Launch the server and wait until it is ready, at most ``start_timeout_s``; ProcessFailed
        (with the log's errors and tail) otherwise, PortInUse before launching on a taken port,
        Interrupted (server stopped) once ``stop`` is set. A running server is returned as it is."""
        if not self.repo.is_dir():
            raise StageFailed(f"model repository {self.repo} does not exist", "write the repository first")
        with self._lock:
            if self.running:
                return self
            self._closing = False
            self.failure = None
            self.check_ports()
            for attempt in range(3):
                offset = self.log_size()
                try:
                    self._launch(self.start_timeout_s)
                    self._wait_ready(stop)
                    break
                except ProcessFailed as exc:
                    # Another process took an automatically chosen port between the probe and the bind.
                    lost = exc.reason is ProcessFailure.EXITED and self._lost_auto_port(
                        self.log_since(offset)
                    )
                    if attempt < 2 and lost:
                        log.info("Triton could not bind a port it was given; retrying with new ones")
                        self.http_port, self.grpc_port, self.metrics_port = self._pick_ports()
                        continue
                    raise
                except BaseException:
                    self.stop()
                    raise
            if self.recovery is not None:
                self._watcher = StubWatcher(self, self.recovery)
                self._watcher.start()
        return self

    def relaunch(self, timeout_s: float, *, pdeathsig: bool = False) -> bool:
        """Stop the server's processes and start it again on the same ports, for the watcher, with its
        own deadline. False (nothing launched) once stop() has been called; ProcessFailed when it does not
        become ready. ``pdeathsig``: the calling thread promises to outlive the server (the death signal
        follows the thread that forked)."""
        with self._lock:
            if self._closing:
                return False
            self._stop_processes(deadline_s=5)
            self._launch(timeout_s, tie_to_parent=pdeathsig)
        self._wait_ready(None)
        return True

    def _lost_auto_port(self, text: str) -> bool:
        """True when the server failed to bind and every port it names as taken was chosen by us."""
        import re

        if not any(e in text.lower() for e in _BIND_ERRORS):
            return False
        taken = {int(m) for m in re.findall(r"Socket '[^']*:(\d+)' already in use", text)}
        explicit = {p for p in self._requested_ports if p is not None}
        if taken:
            return not (taken & explicit)
        return not explicit

    def _launch(self, timeout_s: float, *, tie_to_parent: bool | None = None) -> None:
        self.argv = self.command()
        assert self.install is not None
        process = ManagedProcess(
            self.argv,
            name="Triton",
            log_path=self.log_path,
            timeout_s=timeout_s,
            ready=self._ready,
            env=self._environment(self.install),
            cwd=self.repo,  # the C++ backend opens the repository's relative paths from here (repo.py)
            tie_to_parent=tie_to_parent,
            tail_lines=_LOG_TAIL_LINES,
        )
        with self._lock:
            self._process = process
            register_live(self)
            process.start()

    def _environment(self, install: TritonInstall) -> dict[str, str]:
        env = install.environment()
        env.pop(GRPC_ENV, None)
        env[DEATHS_ENV] = str(self.deaths_path)
        if install.source == "pytriton":
            # Triton 2.51's BLS drops tensorrt_llm's error responses; chat streams over gRPC there.
            env[GRPC_ENV] = self.grpc_url
        return env

    def _ready(self) -> bool:
        return self._http("GET", "/v2/health/ready", 2)[0] == 200

    def _wait_ready(self, stop: StopFlag | None) -> None:
        process = self._process
        assert process is not None
        try:
            process.wait_ready(stop=stop.is_set if stop is not None else None)
        except ProcessFailed as exc:
            if exc.reason is ProcessFailure.INTERRUPTED and stop is not None and stop.signum is not None:
                self.stop(deadline_s=2)
                raise Interrupted(stop.signum) from None
            if self._closing:
                raise StageFailed("Triton was stopped while it was starting") from None
            self._stop_processes()  # not stop(): the watcher may still relaunch after a failed restart
            unregister_live(self)
            details = exc.details or ""
            errors = _error_lines(self.log_since(process.launch_offset))
            if errors:
                details = "--- errors in the server log ---\n" + "\n".join(errors) + "\n" + details
            raise ProcessFailed(
                exc.name,
                exc.reason,
                exc.argv,
                returncode=exc.returncode,
                timeout_s=exc.timeout_s,
                log_path=self.log_path,
                summary=exc.summary,
                hint=f"see the server log {self.log_path} (a model that fails to load stops the server)",
                details=details,
            ) from None

    # ---- model control (explicit mode)

    def _http(self, method: str, path: str, timeout_s: float) -> tuple[int, str]:
        """Status and body of one request to the server's HTTP endpoint; (0, reason) when unreachable."""
        import urllib.error
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        data = b"{}" if method == "POST" else None
        request = urllib.request.Request(f"{self.http_url}{path}", data=data, method=method)
        try:
            with opener.open(request, timeout=timeout_s) as response:
                return int(response.status), response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as exc:
            return 0, str(getattr(exc, "reason", exc))

    def model_ready(self, name: str, timeout_s: float = 5) -> bool:
        from urllib.parse import quote

        return self._http("GET", f"/v2/models/{quote(name)}/ready", timeout_s)[0] == 200

    def load_model(self, name: str, timeout_s: float = 600) -> None:
        """Load, or reload, ``name`` through the model-control API (explicit mode); StageFailed with the
        server's own message otherwise. A reload replaces every instance of the model."""
        import json
        from urllib.parse import quote

        status, body = self._http("POST", f"/v2/repository/models/{quote(name)}/load", timeout_s)
        if status == 200:
            return
        try:
            message = str(json.loads(body).get("error", body))
        except (ValueError, AttributeError):
            message = body
        # Triton appends the model's Python traceback: the first line says what failed.
        message = next(iter(message.strip().splitlines()), "") or f"HTTP {status}"
        raise StageFailed(f"loading model '{name}' failed: {message}", f"see the server log {self.log_path}")

    def reload_model(self, name: str, timeout_s: float = 600) -> None:
        """Replace every instance of the loaded model ``name`` (explicit mode). Triton 2.51 answers a load
        of an unchanged model with 200 and keeps its instances, a dead stub included, and a config.pbtxt
        touched with the same content only updates them in place (both seen here); a version directory
        newer than at load time makes it load the model afresh. So the version directories' mtime is
        bumped first (their contents are left alone)."""
        model_dir = self.repo / name
        try:
            versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
            for version in versions:
                os.utime(version)
        except OSError as exc:
            raise StageFailed(
                f"cannot mark model '{name}' for a reload ({exc.strerror}: {exc.filename})",
                "a read-only repository can only be recovered by restarting the server",
            ) from None
        if not versions:
            raise StageFailed(f"model '{name}' has no version directory in {self.repo}")
        self.load_model(name, timeout_s)

    def stubs(self) -> list[StubProcess]:
        """The live Python-backend stubs of this server (every rank), by model and instance."""
        return find_stubs(self.shm_prefix)

    # ---- stop

    def stop(self, deadline_s: float = 15) -> None:
        """SIGTERM, SIGKILL of the process group after ``deadline_s``, then SIGKILL of any stub left with
        this server's prefix; removes its shared-memory regions; ends the watcher. Safe to call any
        number of times."""
        with self._lock:
            self._closing = True
            self._stop_processes(deadline_s)
            unregister_live(self)
        watcher = self._watcher
        # After the processes are gone: the watcher's thread may be the one a restarted server's death
        # signal follows.
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(30)

    def _stop_processes(self, deadline_s: float = 15) -> None:
        with self._lock:
            process = self._process
            if process is None:
                return
            offset = self.log_size()
            process.stop(deadline_s, give_up=self._hung_after_exit_timeout(process, offset))
            end = time.monotonic() + 10
            while (left := leftover_processes(self)) and time.monotonic() < end:
                for pid in left:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.05)
            if left:
                log.warning("processes of Triton (pid %s) still alive after SIGKILL: %s", process.pid, left)
            self._remove_shm()

    def _hung_after_exit_timeout(self, process: ManagedProcess, offset: int) -> Callable[[], bool]:
        """For the wait after SIGTERM: a server whose decoupled models are still streaming logs "Exit
        timeout expired" after ``--exit-timeout-secs`` and then hangs on the busy model instances; True
        once it has been so for a short grace, so the group is killed without waiting the whole deadline."""
        expired_at: list[float] = []

        def hung() -> bool:
            now = time.monotonic()
            if not expired_at:
                if _EXIT_EXPIRED in self.log_since(offset):
                    expired_at.append(now)
                return False
            if now - expired_at[0] >= _HANG_GRACE_S:
                log.warning("Triton (pid %s) hung after its exit timeout (busy models)", process.pid)
                return True
            return False

        return hung

    def log_size(self) -> int:
        return size_of(self.log_path)

    def log_since(self, offset: int) -> str:
        return read_from(self.log_path, offset)

    def _remove_shm(self) -> None:
        """Shared-memory regions the Python backend left (a killed stub cannot unlink its own)."""
        with contextlib.suppress(OSError):
            for path in Path("/dev/shm").iterdir():
                if path.name.startswith(self.shm_prefix):
                    with contextlib.suppress(OSError):
                        path.unlink()

    # ---- context manager

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"TritonServer(repo={str(self.repo)!r}, http={self.http_url}, pid={self.pid})"


def _error_lines(text: str, limit: int = 12) -> list[str]:
    """The lines of a server log that say what went wrong: glog errors, "error: ...", and models that
    are UNAVAILABLE in the status table (trimmed of the table borders); CPU-only noise left out."""
    import re

    found: dict[str, str] = {}  # message without the glog header -> first line carrying it
    for line in text.splitlines():
        stripped = line.strip()
        if any(noise in stripped for noise in _LOG_NOISE):
            continue
        if re.match(r"E\d{4} ", stripped) or stripped.lower().startswith("error:"):
            found.setdefault(re.sub(r"^E\d{4} \S+ +\d+ ", "", stripped), stripped)
        elif "UNAVAILABLE" in stripped and stripped.startswith("|"):
            row = " ".join(cell.strip() for cell in stripped.strip("|").split("|"))
            found.setdefault(row, row)
    lines = list(found.values())
    return lines if len(lines) <= limit else [*lines[: limit - 1], f"... ({len(lines) - limit + 1} more)"]


def leftover_processes(server: TritonServer) -> list[int]:
    """Live processes (zombies excluded) belonging to ``server``: the server itself, its process group
    while the server is unreaped, and any process carrying the server's unique shared-memory prefix (the
    server and its ``triton_python_backend_stub`` children, wherever they were reparented)."""
    if server.pid is None:
        return []
    return server_processes(server.pid, server.shm_prefix, own_group=server.running)


__all__: list[str] = [
    "DEFAULT_START_TIMEOUT_S",
    "SERVE_HINT",
    "STUB_NAME",
    "Interrupted",
    "PortInUse",
    "StopFlag",
    "StubProcess",
    "TritonInstall",
    "TritonServer",
    "exit_description",
    "find_tritonserver",
    "leftover_processes",
    "pid_alive",
    "port_in_use",
    "python_lib_dir",
]
