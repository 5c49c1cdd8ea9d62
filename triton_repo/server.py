"""Launch and stop a Triton Inference Server on a model repository.

The server comes from nvidia-pytriton (the ``serve`` extra ships a real ``tritonserver`` binary, its
libraries and a Python-backend stub per Python version) or, when asked, from a system install on PATH.
Nothing in site-packages is modified: the Python backend is assembled, as symlinks, under
``$SWALLOW_TRT_HOME/triton-backends/<key>/python/`` with the stub of the running Python.

A server holding decoupled Python models may sit on SIGTERM for a long time and its
``triton_python_backend_stub`` children can outlive it, so a server runs in its own session and
``stop()`` escalates: SIGTERM, then SIGKILL of the whole process group after a deadline, then SIGKILL of
any stub still carrying this server's unique shared-memory prefix. An ``atexit`` hook, a SIGTERM/SIGHUP
hook (installed only where the caller has none) and PR_SET_PDEATHSIG (when started from the main thread)
make sure the caller's death never leaves a server behind.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Literal

from swallow_trt.errors import EnvironmentProblem, StageFailed
from swallow_trt.proc import die_with_parent, tail
from swallow_trt.settings import load_settings

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


@dataclass(frozen=True)
class TritonInstall:
    """Where a runnable tritonserver lives and what its environment needs."""

    binary: Path
    backend_dir: Path  # passed as --backend-directory
    lib_dir: Path | None  # prepended to LD_LIBRARY_PATH
    python_bin_dir: Path | None  # prepended to PATH: the stub takes sys.prefix from the python3 it finds
    source: Literal["pytriton", "system"]

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        if self.lib_dir is not None:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                p for p in (str(self.lib_dir), env.get("LD_LIBRARY_PATH")) if p
            )
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


def _pid_alive(pid: int) -> bool:
    """True for a live process (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[:1] != ["Z"]


def _kill(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _free_ports(host: str, count: int) -> list[int]:
    """``count`` distinct free TCP ports (all bound at once, then released)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    bind_host = "" if host in ("0.0.0.0", "::") else host
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
# The server


class TritonServer:
    """One tritonserver process on ``repo``. ``with TritonServer(repo) as server: ...`` starts it, waits
    until ``/v2/health/ready`` answers 200, and stops it (with every stub it started) on the way out."""

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
        self.shm_prefix = f"swtrt{os.getpid()}x{secrets.token_hex(4)}"  # unique: marks this server's stubs
        if log_path is None:
            log_path = load_settings().home / "triton-logs" / f"tritonserver-{self.shm_prefix}.log"
        self.log_path = Path(log_path)
        self.argv: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._lock = threading.RLock()
        self._launch_offset = 0  # where this launch's lines start in the (appended) log

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
        only_llm = ["--model-control-mode=explicit", "--load-model=tensorrt_llm"] if rank else []
        return [
            str(install.binary),
            *only_llm,
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

    def start(self, timeout_s: float = 120) -> TritonServer:
        """Launch the server and wait until it is ready; StageFailed (with the log tail) otherwise."""
        if not self.repo.is_dir():
            raise StageFailed(f"model repository {self.repo} does not exist", "write the repository first")
        with self._lock:
            if self.running:
                return self
            for attempt in range(3):
                offset = self._log_size()
                try:
                    self._launch()
                    self._wait_ready(timeout_s)
                    return self
                except StageFailed:
                    # Another process took an automatically chosen port between the probe and the bind.
                    if attempt < 2 and self._lost_auto_port(self._log_since(offset)):
                        log.info("Triton could not bind a port it was given; retrying with new ones")
                        self.http_port, self.grpc_port, self.metrics_port = self._pick_ports()
                        continue
                    raise
                except BaseException:
                    self.stop()
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

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

    def _launch(self) -> None:
        argv = self.command()
        assert self.install is not None
        self.argv = argv
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._launch_offset = self._log_size()
        self._log_file = self.log_path.open("ab")
        self._log_file.write(("$ " + shlex.join(argv) + "\n").encode())
        self._log_file.flush()
        log.info("starting Triton: %s", shlex.join(argv))
        _install_hooks()
        main_thread = threading.current_thread() is threading.main_thread()
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
                # The death signal follows the thread that forked: only safe from the main thread.
                preexec_fn=die_with_parent if main_thread else None,
            )
            _LIVE.add(self)

    def _wait_ready(self, timeout_s: float) -> None:
        import urllib.error
        import urllib.request

        assert self._proc is not None
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
        url = f"{self.http_url}/v2/health/ready"
        deadline = time.monotonic() + timeout_s
        while True:
            rc = self._proc.poll()
            if rc is not None:
                self._fail(f"Triton exited with code {rc} before it was ready")
            try:
                with opener.open(url, timeout=2) as response:
                    if response.status == 200:
                        log.info("Triton ready at %s (pid %d)", self.http_url, self._proc.pid)
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() >= deadline:
                self._fail(f"Triton was not ready within {timeout_s:g} s")
            time.sleep(0.2)

    def _fail(self, what: str) -> None:
        self.stop()
        details = f"--- last lines of {self.log_path} ---\n{tail(self.log_path, _LOG_TAIL_LINES)}"
        errors = _error_lines(self._log_since(self._launch_offset))
        if errors:
            details = "--- errors in the server log ---\n" + "\n".join(errors) + "\n" + details
        raise StageFailed(
            f"{what}: {shlex.join(self.argv)}",
            f"see the server log {self.log_path} (a model that fails to load stops the server)",
            details=details,
        )

    # ---- stop

    def stop(self, deadline_s: float = 15) -> None:
        """SIGTERM, SIGKILL of the process group after ``deadline_s``, then SIGKILL of any stub left with
        this server's prefix; removes its shared-memory regions. Safe to call any number of times."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is None:
                offset = self._log_size()
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
            with _LIVE_LOCK:
                _LIVE.discard(self)

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def _log_since(self, offset: int) -> str:
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
                if _EXIT_EXPIRED in self._log_since(offset):
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
    "TritonInstall",
    "TritonServer",
    "find_tritonserver",
    "leftover_processes",
]
