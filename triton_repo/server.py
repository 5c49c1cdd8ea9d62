"""Launch and stop a Triton Inference Server on a model repository.

The server comes from nvidia-pytriton (the ``serve`` extra ships a real ``tritonserver`` binary, its
libraries and a Python-backend stub per Python version) or, when asked, from a system install on PATH.
Nothing in site-packages is modified: the Python backend is assembled, as symlinks, under
``$SWALLOW_TRT_HOME/triton-backends/<key>/python/`` with the stub of the running Python.

A server holding decoupled Python models may sit on SIGTERM for a long time and its
``triton_python_backend_stub`` children can outlive it, so a server runs in its own session and
``stop()`` escalates: SIGTERM, then SIGKILL of the whole process group after a deadline, then SIGKILL of
any stub still carrying this server's unique shared-memory prefix. An ``atexit`` hook, a SIGTERM/SIGHUP
hook (installed only where the caller has none) and PR_SET_PDEATHSIG (when started from the main thread,
or from the recovery watcher, which outlives every server it launches) make sure the caller's death never
leaves a server behind.

Triton 2.51 never restarts a dead stub and keeps reporting the model ready, so a server started with a
``Recovery`` policy runs a watcher (``triton_repo/recovery.py``) that reloads the model of a dead stub
through the model-control API, or restarts the whole server with a bounded back-off.

Only the standard library is imported here; nothing heavy at import time.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import logging
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, TYPE_CHECKING, Literal

from swallow_trt.errors import EnvironmentProblem, StageFailed, SwallowTrtError, UsageError
from swallow_trt.proc import die_with_parent, tail
from swallow_trt.settings import load_settings

if TYPE_CHECKING:
    from swallow_trt.triton_repo.recovery import Recovery

log = logging.getLogger(__name__)

STUB_NAME = "triton_python_backend_stub"
SERVE_HINT = (
    "pip install 'swallow-trt[serve]' (nvidia-pytriton ships tritonserver), or put tritonserver on PATH"
)
_LOG_TAIL_LINES = 40
_EXIT_EXPIRED = "Exit timeout expired"  # logged when in-flight requests outlast --exit-timeout-secs
_HANG_GRACE_S = 2.0  # how long a server that logged it may still take to exit on its own
_LOG_NOISE = ("CudaDriverHelper has not been initialized", "Failed to initialize NVML")  # no GPU here
_BIND_ERRORS = ("address already in use", "already in use", "failed to bind")
_PORT_NAMES = ("http", "grpc", "metrics")
_PORT_LABELS = {"http": "HTTP", "grpc": "gRPC", "metrics": "metrics"}
_EXPLICIT = "--model-control-mode=explicit"


@dataclass(frozen=True)
class TritonInstall:
    """Where a runnable tritonserver lives and what its environment needs."""

    binary: Path
    backend_dir: Path  # passed as --backend-directory
    lib_dir: Path | None  # prepended to LD_LIBRARY_PATH
    python_bin_dir: Path | None  # prepended to PATH: the stub takes sys.prefix from the python3 it finds
    source: Literal["pytriton", "system"]
    # Prepended to LD_LIBRARY_PATH after lib_dir: without it the stub embeds whichever libpython the
    # loader finds first (the system's 3.11.2) over the venv's own standard library (3.11.7).
    python_lib_dir: Path | None = None

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        libs = [str(p) for p in (self.lib_dir, self.python_lib_dir) if p is not None]
        if libs:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (*libs, env.get("LD_LIBRARY_PATH")) if p)
        if self.python_bin_dir is not None:
            env["PATH"] = os.pathsep.join(p for p in (str(self.python_bin_dir), env.get("PATH")) if p)
        return env


# --------------------------------------------------------------------------------------------------
# Finding the server


def find_tritonserver(*, prefer_system: bool = False, home: Path | None = None) -> TritonInstall:
    """The pytriton server (default) or a system ``tritonserver`` on PATH (``prefer_system``); either
    falls back to the other. Raises EnvironmentProblem when neither exists or the pytriton one cannot
    serve Python models with this interpreter."""
    order = ("system", "pytriton") if prefer_system else ("pytriton", "system")
    for source in order:
        install = _system_install() if source == "system" else _pytriton_install(home)
        if install is not None:
            return install
    raise EnvironmentProblem(
        "no Triton Inference Server found (neither nvidia-pytriton nor tritonserver on PATH)", SERVE_HINT
    )


def _system_install() -> TritonInstall | None:
    found = shutil.which("tritonserver")
    if found is None:
        return None
    binary = Path(found).resolve()
    prefix = binary.parent.parent  # /opt/tritonserver/bin/tritonserver -> /opt/tritonserver
    lib_dir = prefix / "lib"
    return TritonInstall(
        binary=binary,
        backend_dir=prefix / "backends",
        lib_dir=lib_dir if lib_dir.is_dir() else None,
        python_bin_dir=None,
        source="system",
    )


def _pytriton_install(home: Path | None) -> TritonInstall | None:
    spec = importlib.util.find_spec("pytriton")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    dist = package / "tritonserver"
    binary = dist / "bin" / "tritonserver"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return None
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / STUB_NAME
    if not stub.is_file():
        have = sorted(p.name for p in (dist / "python_backend_stubs").glob("*") if (p / STUB_NAME).is_file())
        raise EnvironmentProblem(
            f"nvidia-pytriton has no Python-backend stub for Python {version} (it has: {', '.join(have) or 'none'})",
            f"run swallow-trt with one of Python {', '.join(have)}, or use a system tritonserver (prefer_system)",
        )
    _check_numpy()
    backend_dir = _assemble_backends(
        dist / "backends", stub, (home or load_settings().home) / "triton-backends"
    )
    return TritonInstall(
        binary=binary,
        backend_dir=backend_dir,
        lib_dir=package.parent / "nvidia_pytriton.libs",
        python_bin_dir=_python_bin_dir(),
        source="pytriton",
        python_lib_dir=python_lib_dir(),
    )


def _check_numpy() -> None:
    from importlib import metadata

    try:
        version = metadata.version("numpy")
    except metadata.PackageNotFoundError:
        raise EnvironmentProblem(
            "numpy is not installed; Triton's Python backend needs it in the model environment", SERVE_HINT
        ) from None
    if int(version.split(".")[0]) >= 2:
        raise EnvironmentProblem(
            f"numpy {version} is installed; the Python-backend stub of nvidia-pytriton 0.7 needs numpy < 2",
            "pip install 'numpy<2' (the serve extra pins it)",
        )


def python_lib_dir() -> Path | None:
    """The directory holding the running interpreter's shared libpython (what the stub of this Python
    version links against), or None for an interpreter built without one."""
    import sysconfig

    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if not (sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and soname):
        return None
    return Path(libdir) if (Path(libdir) / soname).is_file() else None


def _python_bin_dir() -> Path:
    prefix_bin = Path(sys.prefix) / "bin"
    if (prefix_bin / "python3").exists():
        return prefix_bin
    return Path(sys.executable).parent


def _assemble_backends(source: Path, stub: Path, root: Path) -> Path:
    """A backend directory of our own: every backend of ``source`` as symlinks, plus the stub next to
    ``python/libtriton_python.so``. Keyed by the source files, so a new pytriton gets a new directory;
    built in a temporary sibling and renamed into place (concurrent callers race harmlessly)."""
    files = sorted(p for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    digest = hashlib.sha256()
    for path in [stub, *files]:
        st = path.stat()
        digest.update(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    target = root / digest.hexdigest()[:16]
    if (target / "python" / STUB_NAME).is_file() and (target / "python" / "libtriton_python.so").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        for path in files:
            link = temp / path.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path.resolve())
        (temp / "python").mkdir(exist_ok=True)
        (temp / "python" / STUB_NAME).symlink_to(stub.resolve())
        try:
            temp.rename(target)
        except OSError:
            if not target.is_dir():  # not a lost race: a real failure
                raise
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    return target


# --------------------------------------------------------------------------------------------------
# Processes


@dataclass(frozen=True)
class _ProcInfo:
    pid: int
    state: str
    pgrp: int
    cmdline: list[str]


def _scan_proc() -> list[_ProcInfo]:
    found: list[_ProcInfo] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp ...
        if len(fields) < 3:
            continue
        found.append(_ProcInfo(int(entry.name), fields[0], int(fields[2]), cmdline))
    return found


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` from field 3 (state) on, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()


def _pid_alive(pid: int) -> bool:
    """True for a live process (a zombie waiting for its reaper counts as gone)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[:1] != ["Z"]


def exit_description(pid: int) -> str | None:
    """How a process that is no longer alive ended ("signal 9", "exit code 1"), while it is a zombie
    (field 52 of its stat holds the wait status); None once it has been reaped, or while it lives."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] != "Z" or len(fields) < 50:
        return None
    status = int(fields[49])
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit code {os.WEXITSTATUS(status)}"


@dataclass(frozen=True)
class StubProcess:
    """A ``triton_python_backend_stub`` of one model instance."""

    pid: int
    model: str
    instance: str


def _stub_of(info: _ProcInfo, shm_prefix: str) -> StubProcess | None:
    # python_backend's argv: stub, model path (<repo>/<model>/<version>/model.py), shm region name
    # (<prefix><uuid>), shm sizes, parent pid, library dir, IPC handle, instance name, runtime dir.
    argv = info.cmdline
    if len(argv) < 3 or Path(argv[0]).name != STUB_NAME or not argv[2].startswith(shm_prefix):
        return None
    instance = argv[8] if len(argv) > 8 else "?"
    parts = Path(argv[1]).parts
    model = parts[-3] if len(parts) >= 3 else instance.rsplit("_", 2)[0]
    return StubProcess(info.pid, model, instance)


def _kill(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _family_and_bind_host(host: str) -> tuple[socket.AddressFamily, str]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return family, "" if host in ("0.0.0.0", "::") else host


def port_in_use(host: str, port: int) -> bool:
    """True when a server could not bind ``port`` on ``host``: someone listens there. SO_REUSEADDR, as
    Triton's listeners use, so connections of an earlier server lingering in TIME_WAIT do not count."""
    family, bind_host = _family_and_bind_host(host)
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((bind_host, port))
        except OSError:
            return True
    return False


def _free_ports(host: str, count: int) -> list[int]:
    """``count`` distinct free TCP ports (all bound at once, then released)."""
    family, bind_host = _family_and_bind_host(host)
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(s)
            s.bind((bind_host, 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


_LIVE: set[TritonServer] = set()
_LIVE_LOCK = threading.Lock()
_HOOKS_INSTALLED = False


def _stop_all() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop(deadline_s=5)


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


# --------------------------------------------------------------------------------------------------
# Errors and the stop flag


class PortInUse(EnvironmentProblem):
    """A port the caller named is taken: found before anything is launched."""

    def __init__(self, which: str, host: str, port: int) -> None:
        super().__init__(
            f"the {_PORT_LABELS[which]} port {port} on {host} is already in use",
            f"stop what listens there, or choose another with --{which}-port (leave it out for a free one)",
        )
        self.which = which
        self.port = port


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
    """One tritonserver process on ``repo``. ``with TritonServer(repo) as server: ...`` starts it, waits
    until ``/v2/health/ready`` answers 200, and stops it (with every stub it started) on the way out.

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
        self.failure: SwallowTrtError | None = None  # set by the watcher when it gives up
        self.shm_prefix = f"swtrt{os.getpid()}x{secrets.token_hex(4)}"  # unique: marks this server's stubs
        if log_path is None:
            log_path = load_settings().home / "triton-logs" / f"tritonserver-{self.shm_prefix}.log"
        self.log_path = Path(log_path)
        self.argv: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._lock = threading.RLock()
        self._launch_offset = 0  # where this launch's lines start in the (appended) log
        self._closing = False  # stop() was called: nothing may relaunch the server
        self._watcher: threading.Thread | None = None

    # ---- addresses

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
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

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
        named = {w: p for w, p in zip(_PORT_NAMES, self._requested_ports, strict=True) if p is not None}
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
                port_in_use(self.host, p) for w, p in zip(_PORT_NAMES, ports, strict=True) if w not in named
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

    def start(self, timeout_s: float = 120, *, stop: StopFlag | None = None) -> TritonServer:
        """Launch the server and wait until it is ready; StageFailed (with the log tail) otherwise,
        PortInUse before launching on a taken port, Interrupted (server stopped) once ``stop`` is set."""
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
                    self._launch()
                    self._wait_ready(timeout_s, stop)
                    break
                except StageFailed:
                    # Another process took an automatically chosen port between the probe and the bind.
                    if attempt < 2 and self._lost_auto_port(self.log_since(offset)):
                        log.info("Triton could not bind a port it was given; retrying with new ones")
                        self.http_port, self.grpc_port, self.metrics_port = self._pick_ports()
                        continue
                    raise
                except BaseException:
                    self.stop()
                    raise
            if self.recovery is not None:
                from swallow_trt.triton_repo.recovery import StubWatcher

                self._watcher = StubWatcher(self, self.recovery)
                self._watcher.start()
        return self

    def relaunch(self, timeout_s: float, *, pdeathsig: bool = False) -> bool:
        """Stop the server's processes and start it again on the same ports, for the watcher. False
        (nothing launched) once stop() has been called; StageFailed when it does not become ready.
        ``pdeathsig``: the calling thread promises to outlive the server (the death signal follows the
        thread that forked)."""
        with self._lock:
            if self._closing:
                return False
            self._stop_processes(deadline_s=5)
            self._launch(pdeathsig=pdeathsig)
        self._wait_ready(timeout_s, None)
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

    def _launch(self, *, pdeathsig: bool | None = None) -> None:
        argv = self.command()
        assert self.install is not None
        self.argv = argv
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._launch_offset = self.log_size()
        self._log_file = self.log_path.open("ab")
        self._log_file.write(("$ " + shlex.join(argv) + "\n").encode())
        self._log_file.flush()
        log.info("starting Triton: %s", shlex.join(argv))
        _install_hooks()
        if pdeathsig is None:
            # The death signal follows the thread that forked: only safe from the main thread.
            pdeathsig = threading.current_thread() is threading.main_thread()
        with _LIVE_LOCK:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=self.install.environment(),
                start_new_session=True,
                # The C++ backend opens the repository's relative paths from here (see repo.py).
                cwd=self.repo,
                preexec_fn=die_with_parent if pdeathsig else None,
            )
            _LIVE.add(self)

    def _wait_ready(self, timeout_s: float, stop: StopFlag | None) -> None:
        import urllib.error
        import urllib.request

        proc = self._proc
        assert proc is not None
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
        url = f"{self.http_url}/v2/health/ready"
        deadline = time.monotonic() + timeout_s
        while True:
            if stop is not None and stop.signum is not None:
                # Nothing to drain in a server that never became ready: a short grace, then SIGKILL.
                self.stop(deadline_s=2)
                raise Interrupted(stop.signum)
            rc = proc.poll()
            if rc is not None:
                self._fail(f"Triton exited with code {rc} before it was ready")
            try:
                with opener.open(url, timeout=2) as response:
                    if response.status == 200:
                        log.info("Triton ready at %s (pid %d)", self.http_url, proc.pid)
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() >= deadline:
                self._fail(f"Triton was not ready within {timeout_s:g} s")
            if stop is not None:
                stop.wait(0.2)
            else:
                time.sleep(0.2)

    def _fail(self, what: str) -> None:
        if self._closing:
            raise StageFailed("Triton was stopped while it was starting")
        self._stop_processes()  # not stop(): the watcher may still relaunch after a failed restart
        with _LIVE_LOCK:
            _LIVE.discard(self)
        details = f"--- last lines of {self.log_path} ---\n{tail(self.log_path, _LOG_TAIL_LINES)}"
        errors = _error_lines(self.log_since(self._launch_offset))
        if errors:
            details = "--- errors in the server log ---\n" + "\n".join(errors) + "\n" + details
        raise StageFailed(
            f"{what}: {shlex.join(self.argv)}",
            f"see the server log {self.log_path} (a model that fails to load stops the server)",
            details=details,
        )

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
        found = (_stub_of(info, self.shm_prefix) for info in _scan_proc() if info.state != "Z")
        return sorted((s for s in found if s is not None), key=lambda s: s.pid)

    # ---- stop

    def stop(self, deadline_s: float = 15) -> None:
        """SIGTERM, SIGKILL of the process group after ``deadline_s``, then SIGKILL of any stub left with
        this server's prefix; removes its shared-memory regions; ends the watcher. Safe to call any
        number of times."""
        with self._lock:
            self._closing = True
            self._stop_processes(deadline_s)
            with _LIVE_LOCK:
                _LIVE.discard(self)
        watcher = self._watcher
        # After the processes are gone: the watcher's thread may be the one a restarted server's death
        # signal follows.
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(30)

    def _stop_processes(self, deadline_s: float = 15) -> None:
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is None:
                offset = self.log_size()
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                self._wait_after_term(proc, deadline_s, offset)
            if proc.poll() is None:
                # Still unreaped, so the group id cannot have been reused: the server and its stubs.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            end = time.monotonic() + 10
            while (left := leftover_processes(self)) and time.monotonic() < end:
                for pid in left:
                    _kill(pid, signal.SIGKILL)
                time.sleep(0.05)
            if left:
                log.warning("processes of Triton (pid %d) still alive after SIGKILL: %s", proc.pid, left)
            self._remove_shm()
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _wait_after_term(self, proc: subprocess.Popen[bytes], deadline_s: float, offset: int) -> None:
        """Wait for the server to exit after SIGTERM, at most ``deadline_s``. A server whose decoupled
        models are still streaming logs "Exit timeout expired" after ``--exit-timeout-secs`` and then
        hangs on the busy model instances; do not wait the whole deadline for it."""
        end = time.monotonic() + deadline_s
        expired_at: float | None = None
        while proc.poll() is None:
            now = time.monotonic()
            if now >= end:
                log.warning(
                    "Triton (pid %d) ignored SIGTERM for %g s; killing its group", proc.pid, deadline_s
                )
                return
            if expired_at is None:
                if _EXIT_EXPIRED in self.log_since(offset):
                    expired_at = now
            elif now - expired_at >= _HANG_GRACE_S:
                log.warning(
                    "Triton (pid %d) hung after its exit timeout (busy models); killing its group", proc.pid
                )
                return
            time.sleep(0.1)

    def _remove_shm(self) -> None:
        """Shared-memory regions the Python backend left (a killed stub cannot unlink its own)."""
        shm = Path("/dev/shm")
        with contextlib.suppress(OSError):
            for path in shm.iterdir():
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
    while the server is unreaped (so the group id cannot have been reused), and any process whose
    command line carries the server's unique shared-memory prefix (the server and its
    ``triton_python_backend_stub`` children, wherever they were reparented)."""
    proc = server._proc
    if proc is None:
        return []
    own_group = proc.poll() is None
    left: set[int] = {proc.pid} if own_group else set()
    for info in _scan_proc():
        if info.state == "Z" or info.pid == os.getpid():
            continue
        if (own_group and info.pgrp == proc.pid) or any(server.shm_prefix in arg for arg in info.cmdline):
            left.add(info.pid)
    return sorted(pid for pid in left if _pid_alive(pid))


__all__: list[str] = [
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
    "port_in_use",
    "python_lib_dir",
]
