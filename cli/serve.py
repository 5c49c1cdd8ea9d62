"""``swallow-trt serve``: run Triton on a model repository until Ctrl-C."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from swallow_trt.cli.options import JsonOpt
from swallow_trt.cli.output import emit_json, guarded, out

HELP = """Serve a model repository with Triton, print the endpoints, and stop cleanly on Ctrl-C / SIGTERM.

Binds 127.0.0.1 unless --host says otherwise. A reference repository runs on the Triton server inside
the nvidia-pytriton wheel (no system tritonserver needed). An engine repository (tensorrtllm backend)
runs on the system tritonserver of the Triton TensorRT-LLM image, one rank per GPU under mpirun (world
size from the engine), after checking that the engine was built with this TensorRT-LLM/TensorRT and
for this GPU's SM.

Examples:

  swallow-trt serve --repo repo

  swallow-trt serve --repo repo --host 0.0.0.0 --http-port 8000 --grpc-port 8001 --metrics-port 8002
"""


@guarded
def serve(
    repo: Annotated[Path, typer.Option("--repo", help="Model repository (from swallow-trt package).")],
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    http_port: Annotated[
        int | None, typer.Option("--http-port", help="HTTP port (default: a free one).")
    ] = None,
    grpc_port: Annotated[
        int | None, typer.Option("--grpc-port", help="gRPC port (default: a free one).")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Metrics port (default: a free one).")
    ] = None,
    ready_timeout: Annotated[
        float, typer.Option("--ready-timeout", help="Seconds to wait for every model.")
    ] = 600.0,
    as_json: JsonOpt = False,
) -> None:
    from swallow_trt.errors import UsageError
    from swallow_trt.triton_repo.launch import inspect_repo, server_for

    info = inspect_repo(repo)
    for flag, port in (
        ("--http-port", http_port),
        ("--grpc-port", grpc_port),
        ("--metrics-port", metrics_port),
    ):
        if port is not None and not 0 < port < 65536:
            raise UsageError(
                f"{flag} {port} is not a port number", "pass 1-65535, or leave it out for a free one"
            )
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    server = server_for(info, host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port)
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start(timeout_s=ready_timeout)
        endpoints = {
            "http": server.http_url,
            "grpc": server.grpc_url,
            "metrics": server.metrics_url,
            "log": str(server.log_path),
        }
        if as_json:
            emit_json({"ready": True, **endpoints})
        else:
            out(f"Triton ready on {repo}")
            for k, v in endpoints.items():
                out(f"  {k:<8} {v}")
            out(f"try: swallow-trt chat --url {server.grpc_url} 'こんにちは'   (Ctrl-C stops the server)")
        while not stop.wait(0.5):
            if not server.running:
                raise UsageError("the Triton server exited on its own", f"see its log: {server.log_path}")
    finally:
        server.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    if not as_json:
        out("stopped")
