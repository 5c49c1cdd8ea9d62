"""``swallow-trt package``: write a Triton model repository."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from swallow_trt.cli.options import JsonOpt
from swallow_trt.cli.output import emit_json, out

HELP = """Write a self-contained Triton model repository for a Swallow model.

Models: tensorrt_llm (the engine), preprocessing / postprocessing / ensemble (raw text in and out,
upstream's layout) and chat (decoupled streaming: the chat format of the model's family, exact Japanese
streaming, stop words, multi-turn). Self-contained: the tokenizer (chat_template.jinja too), the
engine or checkpoint (hard-linked where possible) and the xgrammar tokenizer info are inside it, and every
path in its configs is relative to it, so it can be moved or copied to another machine. Guided decoding
(xgrammar) is on: requests may carry guided_decoding_guide_type (json, json_schema, regex, ebnf_grammar)
and guided_decoding_guide, and temperature, top_k, top_p, seed and the penalties.

--engine DIR (tensorrtllm backend): the engine `swallow-trt build` wrote. max_batch_size never exceeds
the engine's, chunked context is on only when the engine has paged context FMHA, gpu_device_ids cover
its ranks, KV-cache fraction and scheduler come from --target's profile. The tokenizer and the model's
family are found through the engine's manifests (--tokenizer overrides).

--model ID|DIR (reference backend): a Python-backend tensorrt_llm model with the same tensor contract,
running transformers on the HF checkpoint (CPU or GPU): the whole repository runs on a real Triton
server without TensorRT-LLM (CI, trying the pipeline, the CPU quickstart).

Examples:

  swallow-trt package --engine engines/Llama-3.1-Swallow-70B-Instruct-v0.3/fp8-tp4/engine --target h100x4 --out repo

  swallow-trt package --model ./Tiny-Swallow --out repo --json

--runtime pytorch --build DIR: Triton's llmapi model (TensorRT-LLM's own Python model, copied from
--llmapi-model, default the image's tree) with a 1/model.yaml holding the LLM() arguments of that
`build --runtime pytorch` output plus triton_config:

  swallow-trt package --runtime pytorch --build swallow-trt-out/Qwen3-Swallow-30B-A3B-RL-v0.2-fp8-kvfp8-tp1pp1 --out repo
"""


def package(
    out_dir: Annotated[Path, typer.Option("--out", help="Repository directory to create.")],
    engine: Annotated[
        Path | None, typer.Option("--engine", help="Engine directory (tensorrtllm backend).")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="HF checkpoint id or directory (reference backend).")
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option("--backend", help="tensorrtllm (with --engine) or reference (with --model)."),
    ] = None,
    tokenizer: Annotated[
        Path | None, typer.Option("--tokenizer", help="Tokenizer directory (default: the model's).")
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="Profile for KV fraction and scheduler policy.")
    ] = None,
    max_batch_size: Annotated[
        int | None,
        typer.Option("--max-batch-size", help="Requests in flight (default: engine's; reference 8)."),
    ] = None,
    max_input_len: Annotated[
        int, typer.Option("--max-input-len", help="Longest prompt, tokens (reference backend).")
    ] = 2048,
    max_tokens: Annotated[
        int, typer.Option("--default-max-tokens", help="Output tokens when a request names none.")
    ] = 256,
    instances: Annotated[
        int, typer.Option("--instances", help="Instances of the Python pre/post/chat models.")
    ] = 1,
    chat_instances: Annotated[
        int, typer.Option("--chat-instances", help="Chat stub processes (each serves many streams at once).")
    ] = 4,
    runtime: Annotated[
        str | None, typer.Option("--runtime", help="pytorch: Triton's llmapi model from --build.")
    ] = None,
    build_dir: Annotated[
        Path | None, typer.Option("--build", help="pytorch: the `build --runtime pytorch` output directory.")
    ] = None,
    llmapi_model: Annotated[
        Path | None, typer.Option("--llmapi-model", help="pytorch: TensorRT-LLM's llmapi/tensorrt_llm dir.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    from swallow_trt.errors import UsageError
    from swallow_trt.triton_repo.package import PackageRequest, package

    if runtime is not None and runtime.strip().lower() != "engine":
        from swallow_trt.triton_repo.llmapi import find_upstream, write_llmapi_repo

        if runtime.strip().lower() != "pytorch" or build_dir is None:
            raise UsageError(
                f"--runtime {runtime!r} needs --build DIR" if runtime.strip().lower() == "pytorch"
                else f"unknown --runtime {runtime!r}",
                "use --runtime pytorch --build DIR (a `build --runtime pytorch` output), or --runtime engine",
            )  # fmt: skip
        repo = write_llmapi_repo(build_dir, out_dir, find_upstream(llmapi_model))
        if as_json:
            emit_json({"repo": str(repo), "backend": "llmapi", "models": ["tensorrt_llm"]})
            return
        out(f"wrote {repo}: tensorrt_llm (Triton's llmapi model, 1/model.yaml from {build_dir})")
        out(
            "next: swallow-trt serve --runtime pytorch --triton with the --model/--target/format of the build"
        )
        return

    wanted = {"tensorrtllm": engine, "reference": model}
    if backend is not None and (backend not in wanted or wanted[backend] is None):
        raise UsageError(
            f"--backend {backend!r} needs {'--engine' if backend == 'tensorrtllm' else '--model'}"
            if backend in wanted
            else f"unknown --backend {backend!r}",
            "use --backend tensorrtllm with --engine DIR, or --backend reference with --model ID|DIR",
        )
    result = package(
        PackageRequest(
            out=out_dir,
            model=model,
            engine=engine,
            tokenizer=tokenizer,
            target=target,
            max_batch_size=max_batch_size,
            max_input_len=max_input_len,
            default_max_tokens=max_tokens,
            instances=instances,
            chat_instances=chat_instances,
        )
    )
    if as_json:
        emit_json(result.to_json())
        return
    spec = result.spec
    what = f"engine {spec.engine.engine_dir}" if spec.engine else f"reference backend on {spec.checkpoint}"
    out(f"wrote {result.repo}: tensorrt_llm ({what}), preprocessing, postprocessing, ensemble, chat")
    out(f"  chat format {spec.chat_format}, end_id {spec.end_id}, max_batch_size {spec.max_batch_size}")
    out(f"next: swallow-trt serve --repo {result.repo}")
