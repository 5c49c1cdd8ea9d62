"""``swallow-trt openai``: the OpenAI-compatible API in front of a running Triton."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from swallow_trt.cli.options import (
    ApiKeyOpt,
    ApiModelNameOpt,
    BindHostOpt,
    CorsOriginOpt,
    MaxBodyOpt,
    MaxInFlightOpt,
)

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


def openai(
    triton_url: Annotated[
        str, typer.Option("--triton-url", help="Triton's gRPC address HOST:PORT.")
    ] = "127.0.0.1:8001",
    repo: Annotated[
        Path, typer.Option("--repo", help="The model repository Triton serves (its configs and tokenizer).")
    ] = Path("repo"),
    host: BindHostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to bind.")] = 8000,
    workers: Annotated[int, typer.Option("--workers", help="API processes (for many cores).")] = 1,
    api_key: ApiKeyOpt = None,
    max_body_bytes: MaxBodyOpt = None,
    max_in_flight: MaxInFlightOpt = None,
    cors_origin: CorsOriginOpt = None,
    model_name: ApiModelNameOpt = None,
) -> None:
    from swallow_trt.errors import EnvironmentProblem
    from swallow_trt.openai_api.deployment import read_deployment
    from swallow_trt.openai_api.server import api_config, check_api_limits, run
    from swallow_trt.triton_repo.client import check_grpc_url
    from swallow_trt.triton_repo.server import port_in_use

    check_grpc_url(triton_url, "--triton-url")
    check_api_limits(port=port, workers=workers, max_body_bytes=max_body_bytes, max_in_flight=max_in_flight)
    read_deployment(repo, model_name)  # a bad repository is one line here, not a worker's traceback
    if port_in_use(host, port):
        raise EnvironmentProblem(
            f"port {port} on {host} is already in use", "stop what listens there, or pass another --port"
        )
    config = api_config(triton_url, repo, model_name=model_name, api_key=api_key, max_body_bytes=max_body_bytes,
                        max_in_flight=max_in_flight, cors_origins=tuple(cors_origin or ()))  # fmt: skip
    typer.echo(f"openai: serving http://{host}:{port}/v1 in front of Triton {triton_url}", err=True)
    run(config, host=host, port=port, workers=workers)
