"""``swallow-trt package``: write a Triton model repository."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from swallow_trt.cli.options import JsonOpt, ModelOpt
from swallow_trt.cli.output import emit_json, guarded, out

HELP = """Write a self-contained Triton model repository for a Swallow model.

--backend reference: a Python-backend `tensorrt_llm` model with the TensorRT-LLM backend's tensor
contract, running transformers on the HF checkpoint (CPU or GPU), plus the streaming `chat` model
(chat format of the model's family, exact Japanese streaming, stop words). It runs on a real Triton
server without TensorRT-LLM: for CI, for trying the pipeline, for the CPU quickstart.
(--backend tensorrtllm, serving a built engine, is not in this version yet.)

Examples:

  swallow-trt package --model ./Tiny-Swallow --backend reference --out repo

  swallow-trt package --model tokyotech-llm/Llama-3.1-Swallow-8B-Instruct-v0.3 --backend reference --out repo --json
"""


@guarded
def package(
    model: ModelOpt,
    out_dir: Annotated[Path, typer.Option("--out", help="Repository directory to create.")],
    backend: Annotated[
        str, typer.Option("--backend", help="reference (tensorrtllm: not yet).")
    ] = "reference",
    max_batch_size: Annotated[int, typer.Option("--max-batch-size", help="Requests batched per step.")] = 8,
    max_input_len: Annotated[int, typer.Option("--max-input-len", help="Longest prompt, tokens.")] = 2048,
    max_tokens: Annotated[
        int, typer.Option("--default-max-tokens", help="Output tokens when a request names none.")
    ] = 256,
    as_json: JsonOpt = False,
) -> None:
    from swallow_trt.errors import UsageError
    from swallow_trt.quantize.checkpoint import fetch_checkpoint
    from swallow_trt.registry import DEFAULT_SYSTEM_PROMPT, resolve_model
    from swallow_trt.triton_repo.repo import ReferenceRepoSpec, end_id_for, write_reference_repo

    if backend != "reference":
        raise UsageError(f"--backend {backend!r} is not available in this version", "use --backend reference")
    for flag, value in (
        ("--max-batch-size", max_batch_size),
        ("--max-input-len", max_input_len),
        ("--default-max-tokens", max_tokens),
    ):
        if value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}", f"pass a positive {flag}")
    resolved = resolve_model(model)
    ckpt = fetch_checkpoint(resolved, None, False)
    reg = resolved.registered
    chat_format = reg.entry.chat_format if reg else "none"
    stop_words = tuple(reg.entry.stop_words) if reg else ()
    end_id = end_id_for(ckpt, stop_words)
    spec = ReferenceRepoSpec(
        checkpoint=ckpt,
        chat_format=chat_format,
        end_id=end_id,
        stop_words=stop_words,
        system_prompt=(reg.entry.system_prompt or (DEFAULT_SYSTEM_PROMPT if chat_format != "none" else None))
        if reg
        else None,
        max_batch_size=max_batch_size,
        max_input_len=max_input_len,
        default_max_tokens=max_tokens,
    )
    repo = write_reference_repo(spec, out_dir)
    if as_json:
        emit_json(
            {
                "repo": str(repo),
                "backend": backend,
                "models": ["tensorrt_llm", "chat"],
                "chat_format": chat_format,
            }
        )
    else:
        out(f"wrote {repo}: tensorrt_llm (reference backend on {ckpt}) + chat ({chat_format} format)")
        out(f"next: swallow-trt serve --repo {repo}")
