"""Running the API: :func:`run` (in this process, uvicorn, ``workers`` processes when asked) and
:func:`start_api_process` (a child process, for ``swallow-trt serve``).

``start_api_process(triton_url, repo, ...)`` starts ``swallow-trt openai`` as a supervised child
(:class:`~swallow_trt.proc.ManagedProcess`: own session, tied to the caller's life), waits until
``/version`` answers (Triton need not be ready: ``/health`` says when it is) and returns an
:class:`ApiProcess`; ``stop()`` ends it with SIGTERM, then SIGKILL of its process group after a deadline.
The API key travels in the child's environment (``SWALLOW_TRT_API_KEY``), never on its command line.

:class:`ApiLaunch` is what ``swallow-trt serve`` opens beside Triton: checked (flags, repository, port)
before anything starts, started once Triton is ready. The API only ever talks to Triton's gRPC address,
which a restart by the stub watcher keeps, so it follows restarts by itself (503 while Triton is down).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swallow_trt.errors import EnvironmentProblem, ProcessFailure, StageFailed, UsageError
from swallow_trt.openai_api.app import ApiConfig
from swallow_trt.proc import ManagedProcess

if TYPE_CHECKING:
    from swallow_trt.triton_repo.server import TritonServer

CONFIG_ENV = "SWALLOW_TRT_API_CONFIG"


def app_from_env() -> Any:
    """The app of a ``--workers`` process: uvicorn imports this factory in each worker."""
    from swallow_trt.openai_api.app import create_app
    from swallow_trt.settings import load_settings

    raw = load_settings().api_config
    if not raw:
        raise UsageError(f"{CONFIG_ENV} is not set", "start the API with `swallow-trt openai`")
    data = json.loads(raw)
    data["cors_origins"] = tuple(data.get("cors_origins") or ())
    return create_app(ApiConfig(**data))


def run(config: ApiConfig, host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Serve until SIGINT/SIGTERM."""
    import uvicorn

    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": "httptools",
        "log_level": "warning",
        "access_log": False,
        "timeout_graceful_shutdown": 5,
    }
    if workers > 1:
        # Each worker builds its own app (tokenizer, gRPC channel) from the config in its environment.
        os.environ[CONFIG_ENV] = json.dumps(asdict(config))
        uvicorn.run("swallow_trt.openai_api.server:app_from_env", factory=True, workers=workers, **common)
        return
    from swallow_trt.openai_api.app import create_app

    uvicorn.run(create_app(config), **common)


class ApiProcess:
    """A running ``swallow-trt openai`` child (a :class:`~swallow_trt.proc.ManagedProcess`)."""

    def __init__(self, process: ManagedProcess, url: str) -> None:
        self.process = process
        self.url = url

    @property
    def proc(self) -> subprocess.Popen[Any]:
        return self.process.popen

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def log_path(self) -> Path:
        assert self.process.log_path is not None
        return self.process.log_path

    def running(self) -> bool:
        return self.process.running

    def stop(self, deadline_s: float = 10) -> None:
        """SIGTERM, then SIGKILL of the group: workers (--workers N) share it, none outlives the parent."""
        self.process.stop(deadline_s)

    def log_tail(self, lines: int = 20) -> str:
        return self.process.log_tail(lines)

    def failure(self) -> StageFailed | None:
        """The error to report once the process has ended on its own; None while it runs."""
        if self.process.running:
            return None
        return self.process.failed(
            ProcessFailure.EXITED,
            summary=f"the OpenAI API process exited on its own (code {self.process.returncode})",
        )


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/version", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start_api_process(
    triton_url: str,
    repo: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    api_key: str | None = None,
    model_name: str | None = None,
    max_body_bytes: int | None = None,
    max_in_flight: int | None = None,
    cors_origins: tuple[str, ...] = (),
    log_path: Path | None = None,
    timeout_s: float = 300,
    stop: Callable[[], bool] | None = None,
    stub_deaths: Path | None = None,
) -> ApiProcess:
    """Start the API in front of Triton's gRPC endpoint ``triton_url`` for repository ``repo`` and wait,
    at most ``timeout_s``, until it answers. ``stop`` is polled meanwhile: once it returns True the child
    is stopped and ProcessFailed (INTERRUPTED) raised (a Ctrl-C during ``serve``'s start-up).
    ``stub_deaths``: the server's ``deaths_path``, where its watcher records dead stubs (the API ends the
    requests it has in flight on them)."""
    argv = [sys.executable, "-m", "swallow_trt.cli.main", "openai", "--triton-url", triton_url,
            "--repo", str(repo), "--host", host, "--port", str(port), "--workers", str(workers)]  # fmt: skip
    if model_name:
        argv += ["--model-name", model_name]
    if max_body_bytes is not None:
        argv += ["--max-body-bytes", str(max_body_bytes)]
    if max_in_flight is not None:
        argv += ["--max-in-flight", str(max_in_flight)]
    for origin in cors_origins:
        argv += ["--cors-origin", origin]
    env = dict(os.environ)
    env.pop("SWALLOW_TRT_API_KEY", None)
    env.pop("SWALLOW_TRT_STUB_DEATHS", None)
    if stub_deaths is not None:
        env["SWALLOW_TRT_STUB_DEATHS"] = str(stub_deaths)
    if api_key:
        env["SWALLOW_TRT_API_KEY"] = api_key
    if log_path is None:
        from swallow_trt.settings import load_settings

        log_path = load_settings().home / "api-logs" / f"openai-{os.getpid()}-{port}.log"
    client_host = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    url = f"http://{client_host}:{port}"
    # Tied to this process's life when started from the main thread (serve's): the death signal follows
    # the thread that forked.
    process = ManagedProcess(argv, name="the OpenAI API", log_path=log_path, timeout_s=timeout_s,
                             ready=lambda: _answers(url), env=env)  # fmt: skip
    process.start().wait_ready(stop=stop)
    return ApiProcess(process, url)


def api_config(
    triton_url: str,
    repo: Path,
    *,
    model_name: str | None = None,
    api_key: str | None = None,
    max_body_bytes: int | None = None,
    max_in_flight: int | None = None,
    cors_origins: tuple[str, ...] = (),
) -> ApiConfig:
    """The app's settings from the command's flags: None takes the default (the key from
    SWALLOW_TRT_API_KEY, 1 MiB bodies)."""
    from swallow_trt.openai_api.app import DEFAULT_MAX_BODY
    from swallow_trt.settings import load_settings

    return ApiConfig(
        triton_url=triton_url,
        repo=str(repo.absolute()),
        model_name=model_name,
        api_key=api_key or load_settings().api_key,
        max_body_bytes=max_body_bytes or DEFAULT_MAX_BODY,
        max_in_flight=max_in_flight,
        cors_origins=cors_origins,
    )


def check_api_limits(
    *,
    port: int,
    workers: int,
    max_body_bytes: int | None,
    max_in_flight: int | None,
    flags: Mapping[str, str] | None = None,
) -> None:
    """UsageError for a value no API can run with; ``flags`` renames the flags in the message
    (``serve`` spells ``--port`` and ``--workers`` as ``--openai-port`` and ``--openai-workers``)."""
    names = {"--port": "--port", "--workers": "--workers", **(flags or {})}
    if not 0 < port < 65536:
        raise UsageError(f"{names['--port']} {port} is not a port number", "pass 1-65535")
    for flag, value in (
        (names["--workers"], workers),
        ("--max-body-bytes", max_body_bytes),
        ("--max-in-flight", max_in_flight),
    ):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}", f"pass a positive {flag}")


class ApiPortInUse(EnvironmentProblem):
    """The OpenAI API's port is taken: found before anything is launched (exit 3, as Triton's ports)."""

    def __init__(self, host: str, port: int, flag: str) -> None:
        super().__init__(
            f"the OpenAI API port {port} on {host} is already in use",
            f"stop what listens there, or choose another with {flag} (or --no-openai)",
        )
        self.port = port


def api_applies(repo: Path) -> bool:
    """Whether a repository can have the API: it needs the ``chat`` model's text settings and a
    ``tensorrt_llm`` model to stream (the reference backend or the TensorRT-LLM engine)."""
    return all((repo / name / "config.pbtxt").is_file() for name in ("chat", "tensorrt_llm"))


_SERVE_FLAGS = {"--port": "--openai-port", "--workers": "--openai-workers"}


@dataclass(frozen=True)
class ApiLaunch:
    """The API ``swallow-trt serve`` opens beside Triton: ``check`` before anything starts, ``start``
    once Triton is ready. ``api_key`` None takes SWALLOW_TRT_API_KEY."""

    repo: Path
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    api_key: str | None = None
    model_name: str | None = None
    max_body_bytes: int | None = None
    max_in_flight: int | None = None
    cors_origins: tuple[str, ...] = ()
    log_path: Path | None = None
    ready_timeout_s: float = 300

    @property
    def url(self) -> str:
        """The API's base URL, as the ``openai`` client takes it."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/v1"

    def key(self) -> str | None:
        from swallow_trt.settings import load_settings

        return self.api_key or load_settings().api_key

    def check(self, triton_ports: Mapping[str, int | None]) -> str:
        """Refuse, before anything starts: a bad value (UsageError), a repository the API cannot read
        (UsageError), a port Triton was also given (UsageError), a port already taken (ApiPortInUse).
        ``triton_ports``: flag -> port the caller named (None: a free one). Returns the model id
        ``/v1/models`` will show."""
        from swallow_trt.openai_api.deployment import read_deployment
        from swallow_trt.triton_repo.ports import port_in_use

        check_api_limits(port=self.port, workers=self.workers, max_body_bytes=self.max_body_bytes,
                         max_in_flight=self.max_in_flight, flags=_SERVE_FLAGS)  # fmt: skip
        for flag, port in triton_ports.items():
            if port == self.port:
                raise UsageError(
                    f"--openai-port {self.port} is also {flag}",
                    "give the OpenAI API its own --openai-port, or pass --no-openai",
                )
        deployment = read_deployment(self.repo, self.model_name)
        if port_in_use(self.host, self.port):
            raise ApiPortInUse(self.host, self.port, "--openai-port")
        return deployment.model_id

    def warnings(self) -> list[str]:
        if self.host in ("127.0.0.1", "localhost", "::1") or self.key():
            return []
        return [
            f"the OpenAI API binds {self.host} without an API key: anyone who reaches it can use the "
            "model (pass --api-key or set SWALLOW_TRT_API_KEY)"
        ]

    def companion(self) -> Callable[[TritonServer, Callable[[], bool]], ApiProcess]:
        """What ``triton_repo.launch.run_until_stopped`` starts once the server (given) is ready."""
        return lambda server, stop: self.start(server.grpc_url, stop, server.deaths_path)

    def start(
        self, triton_grpc_url: str, stop: Callable[[], bool] | None = None, stub_deaths: Path | None = None
    ) -> ApiProcess:
        return start_api_process(
            triton_grpc_url,
            self.repo,
            host=self.host,
            port=self.port,
            workers=self.workers,
            api_key=self.key(),
            model_name=self.model_name,
            max_body_bytes=self.max_body_bytes,
            max_in_flight=self.max_in_flight,
            cors_origins=self.cors_origins,
            log_path=self.log_path,
            timeout_s=self.ready_timeout_s,
            stop=stop,
            stub_deaths=stub_deaths,
        )
