"""``swallow-trt serve``: run Triton on a model repository until Ctrl-C."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from swallow_trt.cli.options import (
    JsonOpt,
    KvOpt,
    OutRootOpt,
    PpOpt,
    QformatOpt,
    TargetOpt,
    TpOpt,
)
from swallow_trt.cli.output import emit_json, guarded, out

if TYPE_CHECKING:
    from swallow_trt.triton_repo.server import TritonServer

HELP = """Serve a model repository with Triton, print the endpoints, and stop cleanly on Ctrl-C / SIGTERM.

Binds 127.0.0.1 unless --host says otherwise; a port that is already taken is refused before anything
starts. A reference repository runs on the Triton server inside the nvidia-pytriton wheel (no system
tritonserver needed). An engine repository (tensorrtllm backend) runs on the system tritonserver of the
Triton TensorRT-LLM image, one rank per GPU under mpirun (world size from the engine), after checking
that the engine was built with this TensorRT-LLM/TensorRT and for this GPU's SM.

Triton never restarts a Python model whose stub process died, so serve watches the stubs: it reloads the
model of a dead one (the server runs with explicit model control, every model loaded at start-up),
restarts the whole server when that fails or when the server exits, with a doubling back-off, and gives
up (exit 1) after --max-restarts. Each of these steps is one line on stderr.

Examples:

  swallow-trt serve --repo repo

  swallow-trt serve --repo repo --host 0.0.0.0 --http-port 8000 --grpc-port 8001 --metrics-port 8002

--runtime pytorch serves what `build --runtime pytorch` made for the same --model/--target/format:
`trtllm-serve CHECKPOINT --extra_llm_api_options FILE` with the family's reasoning parser (qwen3 for
Qwen3), or with --triton Triton's llmapi model from `package --runtime pytorch`. Both need TensorRT-LLM
(exit 3 without it); --dry-run prints the exact command and files:

  swallow-trt serve --runtime pytorch --model tokyotech-llm/GPT-OSS-Swallow-120B-RL-v0.1-MXFP4 --target h100x4 --dry-run

  swallow-trt serve --runtime pytorch --model qwen3-30b-a3b --target hopper --triton --dry-run
"""


@guarded
def serve(
    repo: Annotated[
        Path | None, typer.Option("--repo", help="Model repository (from swallow-trt package).")
    ] = None,
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
    max_restarts: Annotated[
        int, typer.Option("--max-restarts", help="Server restarts allowed before serve gives up (0: none).")
    ] = 5,
    runtime: Annotated[
        str | None, typer.Option("--runtime", help="pytorch: serve a `build --runtime pytorch` output.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="pytorch: the model built.")] = None,
    target: TargetOpt = None,
    qformat: QformatOpt = None,
    kv_cache_dtype: KvOpt = None,
    tp: TpOpt = None,
    pp: PpOpt = None,
    out_root: OutRootOpt = Path("swallow-trt-out"),
    triton: Annotated[bool, typer.Option("--triton", help="pytorch: Triton with the llmapi model.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="pytorch: print the command and files.")] = False,
    as_json: JsonOpt = False,
) -> None:
    from swallow_trt.errors import UsageError
    from swallow_trt.triton_repo.launch import inspect_repo, run_until_stopped, server_for
    from swallow_trt.triton_repo.recovery import Recovery

    if runtime is not None and runtime.strip().lower() != "engine":
        from swallow_trt.cli.build import serve_pytorch

        serve_pytorch(runtime, model, target, qformat, kv_cache_dtype, tp, pp, out_root, triton,
                      repo, http_port, dry_run, as_json)  # fmt: skip
        return
    if repo is None:
        raise UsageError("--repo is required", "pass the repository `swallow-trt package` wrote")
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
    if max_restarts < 0:
        raise UsageError(f"--max-restarts {max_restarts} is negative", "pass 0 or more")

    def on_event(line: str) -> None:
        typer.echo(f"serve: {line}", err=True)

    def on_ready(server: TritonServer) -> None:
        endpoints = {
            "http": server.http_url,
            "grpc": server.grpc_url,
            "metrics": server.metrics_url,
            "log": str(server.log_path),
        }
        if as_json:
            emit_json({"ready": True, **endpoints})
            return
        out(f"Triton ready on {repo}")
        for k, v in endpoints.items():
            out(f"  {k:<8} {v}")
        out(f"try: swallow-trt chat --url {endpoints['grpc']} 'こんにちは'   (Ctrl-C stops the server)")
        sys.stdout.flush()  # a supervisor reading a pipe sees the endpoints now, not at exit

    server = server_for(
        info,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        recovery=Recovery(ready_timeout_s=ready_timeout, max_restarts=max_restarts),
        on_event=on_event,
    )
    run_until_stopped(server, ready_timeout_s=ready_timeout, on_ready=on_ready)
    if not as_json:
        out("stopped")
