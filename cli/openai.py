"""``swallow-trt openai``: the OpenAI-compatible API in front of a running Triton."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from swallow_trt.cli.output import guarded

HELP = """Serve the OpenAI-compatible API (/v1/chat/completions, /v1/completions, /v1/models, /health,
/metrics) in front of a Triton that already serves REPO, e.g. on another machine or pod.

Each request is rendered in the model family's chat format, tokenized with the repository's tokenizer
and streamed from tensorrt_llm over gRPC, with no Python-backend model per token. Binds 127.0.0.1 unless
--host says otherwise; with --api-key (or SWALLOW_TRT_API_KEY) every /v1 route needs
`Authorization: Bearer KEY`; CORS is off unless --cors-origin is given.

Examples:

  swallow-trt openai --triton-url 127.0.0.1:8001 --repo repo

  SWALLOW_TRT_API_KEY=secret swallow-trt openai --triton-url triton:8001 --repo repo --host 0.0.0.0 --port 8000 --workers 4

  curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model": "repo", "messages": [{"role": "user", "content": "日本で一番高い山は？"}]}'
"""


@guarded
def openai(
    triton_url: Annotated[
        str, typer.Option("--triton-url", help="Triton's gRPC address HOST:PORT.")
    ] = "127.0.0.1:8001",
    repo: Annotated[
        Path, typer.Option("--repo", help="The model repository Triton serves (its configs and tokenizer).")
    ] = Path("repo"),
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to bind.")] = 8000,
    workers: Annotated[int, typer.Option("--workers", help="API processes (for many cores).")] = 1,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key", help="Key every /v1 route requires (default: SWALLOW_TRT_API_KEY; none: open)."
        ),
    ] = None,
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", help="Largest request body accepted (413 above).")
    ] = 1 << 20,
    max_in_flight: Annotated[
        int | None,
        typer.Option(
            "--max-in-flight",
            help="Requests in flight plus queued before 429 (default: twice the engine's max batch size).",
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option("--cors-origin", help="Origin allowed by CORS (repeatable; default: none)."),
    ] = None,
    model_name: Annotated[
        str | None,
        typer.Option("--model-name", help="Model id /v1/models shows (default: the repository's name)."),
    ] = None,
) -> None:
    from swallow_trt.errors import EnvironmentProblem, UsageError
    from swallow_trt.triton_repo.client import check_grpc_url

    check_grpc_url(triton_url, "--triton-url")
    if not 0 < port < 65536:
        raise UsageError(f"--port {port} is not a port number", "pass 1-65535")
    for flag, value in (
        ("--workers", workers),
        ("--max-body-bytes", max_body_bytes),
        ("--max-in-flight", max_in_flight),
    ):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}", f"pass a positive {flag}")
    from swallow_trt.openai_api.app import ApiConfig
    from swallow_trt.openai_api.deployment import read_deployment
    from swallow_trt.openai_api.server import run
    from swallow_trt.settings import load_settings
    from swallow_trt.triton_repo.server import port_in_use

    read_deployment(repo, model_name)  # a bad repository is one line here, not a worker's traceback
    if port_in_use(host, port):
        raise EnvironmentProblem(
            f"port {port} on {host} is already in use", "stop what listens there, or pass another --port"
        )
    config = ApiConfig(
        triton_url=triton_url,
        repo=str(repo.absolute()),
        model_name=model_name,
        api_key=api_key or load_settings().api_key,
        max_body_bytes=max_body_bytes,
        max_in_flight=max_in_flight,
        cors_origins=tuple(cors_origin or ()),
    )
    typer.echo(f"openai: serving http://{host}:{port}/v1 in front of Triton {triton_url}", err=True)
    run(config, host=host, port=port, workers=workers)
