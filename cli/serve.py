"""``swallow-trt serve``: run Triton on a model repository until Ctrl-C."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from swallow_trt.cli.options import (
    SERVE_FLAGS,
    ApiKeyOpt,
    ApiModelNameOpt,
    BindHostOpt,
    CorsOriginOpt,
    DryRunOpt,
    JsonOpt,
    MaxBodyOpt,
    MaxInFlightOpt,
    ModelFlags,
    ServeModelOpt,
    ServeRuntimeOpt,
    model_flags,
)
from swallow_trt.cli.output import emit_json, out

if TYPE_CHECKING:
    from swallow_trt.triton_repo.server import TritonServer

HELP = """Serve a model repository with Triton and the OpenAI-compatible API, print the endpoints, and stop
both cleanly on Ctrl-C / SIGTERM.

Binds 127.0.0.1 unless --host / --openai-host say otherwise; a port that is already taken is refused
before anything starts. A reference repository runs on the Triton server inside the nvidia-pytriton wheel (no system
tritonserver needed). An engine repository (tensorrtllm backend) runs on the system tritonserver of the
Triton TensorRT-LLM image, one rank per GPU under mpirun (world size from the engine), after checking
that the engine was built with this TensorRT-LLM/TensorRT and for this GPU's SM.

Triton never restarts a Python model whose stub process died, so serve watches the stubs: it reloads the
model of a dead one (the server runs with explicit model control, every model loaded at start-up),
restarts the whole server when that fails, when the server exits, or when more than two replaced
versions are held by requests that died with their stub (a restart cuts every stream), with a doubling
back-off, and gives up (exit 1) after --max-restarts. Each of these steps is one line on stderr. A chat
stream on a dead chat stub ends with an error within 0.25 s for `swallow-trt chat` on this host; the API
and chat end their streams on a dead reference tensorrt_llm stub within about 0.5 s.

Once Triton is ready, the OpenAI-compatible API (/v1/chat/completions, /v1/completions, /v1/models,
/health, /metrics; what `swallow-trt openai` runs on its own) opens in a child process on
127.0.0.1:8000 (--openai-host, --openai-port; --no-openai: none). It streams tensorrt_llm over Triton's
gRPC port, answers 503 while a restart is under way, and stops with the server. With --api-key (or
SWALLOW_TRT_API_KEY) every /v1 route needs `Authorization: Bearer KEY`. Only for repositories with the
chat and tensorrt_llm models (what `swallow-trt package` writes).

Examples:

  swallow-trt serve --repo repo

  SWALLOW_TRT_API_KEY=secret swallow-trt serve --repo repo --openai-host 0.0.0.0 --openai-port 8080

  swallow-trt serve --repo repo --no-openai --host 0.0.0.0 --http-port 8000 --grpc-port 8001 --metrics-port 8002

--runtime pytorch serves what `build --runtime pytorch` made for the same --model/--target/format:
`trtllm-serve CHECKPOINT --extra_llm_api_options FILE` with the family's reasoning parser (qwen3 for
Qwen3), or with --triton Triton's llmapi model from `package --runtime pytorch`. Both need TensorRT-LLM
(exit 3 without it); --dry-run prints the exact command and files:

  swallow-trt serve --runtime pytorch --model tokyotech-llm/GPT-OSS-Swallow-120B-RL-v0.1-MXFP4 --target h100x4 --dry-run

  swallow-trt serve --runtime pytorch --model qwen3-30b-a3b --target hopper --triton --dry-run
"""


@model_flags(SERVE_FLAGS, model=(ServeModelOpt, None), runtime=(ServeRuntimeOpt, None))
def serve(
    flags: ModelFlags,
    repo: Annotated[
        Path | None, typer.Option("--repo", help="Model repository (from swallow-trt package).")
    ] = None,
    host: BindHostOpt = "127.0.0.1",
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
    openai_host: Annotated[
        str, typer.Option("--openai-host", help="Address the OpenAI API binds.")
    ] = "127.0.0.1",
    openai_port: Annotated[int, typer.Option("--openai-port", help="Port of the OpenAI API.")] = 8000,
    no_openai: Annotated[
        bool, typer.Option("--no-openai", help="Do not open the OpenAI-compatible API.")
    ] = False,
    openai_workers: Annotated[
        int, typer.Option("--openai-workers", help="OpenAI API processes (for many cores).")
    ] = 1,
    api_key: ApiKeyOpt = None,
    max_body_bytes: MaxBodyOpt = None,
    max_in_flight: MaxInFlightOpt = None,
    cors_origin: CorsOriginOpt = None,
    model_name: ApiModelNameOpt = None,
    max_restarts: Annotated[
        int, typer.Option("--max-restarts", help="Server restarts allowed before serve gives up (0: none).")
    ] = 5,
    triton: Annotated[bool, typer.Option("--triton", help="pytorch: Triton with the llmapi model.")] = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    from swallow_trt.errors import UsageError
    from swallow_trt.triton_repo.launch import inspect_repo, run_until_stopped, server_for
    from swallow_trt.triton_repo.recovery import Recovery

    if flags.runtime is not None and flags.runtime.strip().lower() != "engine":
        serve_pytorch(flags, triton, repo, http_port, dry_run, as_json)
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
            **({"openai": api.url} if api is not None else {}),
            "log": str(server.log_path),
        }
        if as_json:
            emit_json({"ready": True, **endpoints, **({"openai_model": model_id} if api else {})})
            return
        out(f"Triton ready on {repo}" + (" (and the OpenAI API)" if api is not None else ""))
        for k, v in endpoints.items():
            out(f"  {k:<8} {v}")
        if api is not None:
            out(f"  model    {model_id}")
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
        start_timeout_s=ready_timeout,
    )
    from swallow_trt.openai_api.server import ApiLaunch, api_applies

    api, model_id = None, ""
    if not no_openai and api_applies(info.repo):
        api = ApiLaunch(info.repo, host=openai_host, port=openai_port, workers=openai_workers, api_key=api_key,
                        model_name=model_name, max_body_bytes=max_body_bytes, max_in_flight=max_in_flight,
                        cors_origins=tuple(cors_origin or ()), ready_timeout_s=ready_timeout)  # fmt: skip
        model_id = api.check(
            {"--http-port": http_port, "--grpc-port": grpc_port, "--metrics-port": metrics_port}
        )
        for line in api.warnings():
            on_event(line)
    run_until_stopped(server, on_ready=on_ready,
                      companion=api.companion() if api is not None else None)  # fmt: skip
    if not as_json:
        out("stopped")


def serve_pytorch(
    flags: ModelFlags, triton: bool, repo: Path | None, port: int | None, dry_run: bool, as_json: bool
) -> None:
    """``serve --runtime pytorch``: the same plan inputs as build find the same outputs."""
    import yaml

    from swallow_trt.builders.plan import command_line
    from swallow_trt.builders.pytorch_runtime import run_serve, serve_request
    from swallow_trt.errors import UsageError

    if flags.model is None:
        raise UsageError("--runtime pytorch needs --model", "pass the --model (and --target) you built")
    served = serve_request(flags.plan_request(), triton, repo, port)
    if served["plan"].runtime != "pytorch":
        raise UsageError(
            f"{served['plan'].model.display_name} runs on the engine runtime by default",
            "pass --runtime pytorch, or serve its engine repository with --repo",
        )
    layout = served["layout"]
    if dry_run:
        data = {
            "dry_run": True,
            "runtime": "pytorch",
            "run": served["run"],
            "needs": [str(p) for p in served["needs"]],
            "options_file": str(layout.options),
            "options": served["options"],
            "commands": served["commands"],
        }
        if as_json:
            emit_json(data)
            return
        out("dry run: nothing is checked or run on this machine")
        out(f"run:   {command_line(served['run'])}")
        out("needs: " + ", ".join(data["needs"]))
        out(f"options: {layout.options}")
        for line in yaml.safe_dump(served["options"], sort_keys=False).splitlines():
            out(f"  {line}")
        return
    run_serve(served, triton, announce=lambda argv: out(f"running: {command_line(argv)}"))
