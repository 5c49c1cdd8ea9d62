"""Running the API: :func:`run` (in this process, uvicorn, ``workers`` processes when asked) and
:func:`start_api_process` (a child process, for ``swallow-trt serve``).

``start_api_process(triton_url, repo, ...)`` starts ``swallow-trt openai`` as a child in its own session,
waits until ``/version`` answers (Triton need not be ready: ``/health`` says when it is) and returns an
:class:`ApiProcess`; ``stop()`` ends it with SIGTERM, then SIGKILL of its process group after a deadline.
The API key travels in the child's environment (``SWALLOW_TRT_API_KEY``), never on its command line.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from swallow_trt.errors import StageFailed, UsageError
from swallow_trt.openai_api.app import ApiConfig

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


@dataclass
class ApiProcess:
    """A running ``swallow-trt openai`` child."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path
    _log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, deadline_s: float = 10) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(deadline_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Workers (--workers N) share the group: none may outlive the parent.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


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
) -> ApiProcess:
    """Start the API in front of Triton's gRPC endpoint ``triton_url`` for repository ``repo``."""
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
    if api_key:
        env["SWALLOW_TRT_API_KEY"] = api_key
    if log_path is None:
        from swallow_trt.settings import load_settings

        log_path = load_settings().home / "api-logs" / f"openai-{os.getpid()}-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    client_host = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    handle = ApiProcess(proc, f"http://{client_host}:{port}", log_path, log)
    deadline = time.monotonic() + timeout_s
    while not _answers(handle.url):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = handle.log_tail()
            handle.stop()
            what = f"exited with {proc.returncode}" if proc.returncode is not None else "did not answer"
            raise StageFailed(f"the OpenAI API process {what}", f"see {log_path}", details=tail)
        time.sleep(0.2)
    return handle
