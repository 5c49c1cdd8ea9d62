"""``swallow-trt package``: from a model (reference backend) or a built engine (tensorrtllm backend) to
a repository spec, then to a written repository. The model's family gives the chat format, end token,
stop words and system prompt; an engine's stage manifest leads back to its checkpoint and the HF model
it came from (the tokenizer)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swallow_trt.errors import UsageError
from swallow_trt.triton_repo.repo import RepoSpec, end_id_for, read_engine, write_repo


@dataclass(frozen=True)
class PackageRequest:
    out: Path
    model: str | None = None  # HF checkpoint: id or directory (the reference backend serves it)
    engine: Path | None = None  # built engine: the tensorrtllm backend
    tokenizer: Path | None = None
    target: str | None = None  # profile whose runtime settings (KV fraction, scheduler) apply
    max_batch_size: int | None = None
    max_input_len: int = 2048
    default_max_tokens: int = 256
    instances: int = 1
    chat_instances: int = 4


@dataclass(frozen=True)
class PackageResult:
    repo: Path
    spec: RepoSpec

    def to_json(self) -> dict[str, Any]:
        e = self.spec.engine
        return {
            "repo": str(self.repo),
            "backend": self.spec.backend,
            "models": ["tensorrt_llm", "preprocessing", "postprocessing", "ensemble", "chat"],
            "chat_format": self.spec.chat_format,
            "end_id": self.spec.end_id,
            "max_batch_size": self.spec.max_batch_size,
            "engine": None
            if e is None
            else {
                "dir": str(e.engine_dir),
                "world_size": e.world_size,
                "max_batch_size": e.max_batch_size,
                "max_input_len": e.max_input_len,
                "enable_chunked_context": e.enable_chunked_context,
            },
        }


def _engine_source(engine_dir: Path) -> tuple[Path | None, str | None]:
    """The HF checkpoint and model id an engine came from, through the engine's and the TRT-LLM
    checkpoint's stage manifests (None where a manifest is missing: an engine built elsewhere)."""
    try:
        engine_manifest = json.loads((engine_dir / "manifest.json").read_text())
        ckpt_dir = Path(engine_manifest["checkpoint"]["path"])
        ckpt_manifest = json.loads((ckpt_dir / "manifest.json").read_text())
        hf = Path(ckpt_manifest["inputs"]["checkpoint"]["path"])
        name = ckpt_manifest.get("model", {}).get("registered") or ckpt_manifest["inputs"].get("model")
    except (OSError, ValueError, KeyError, TypeError):
        return None, None
    return hf, name


def package(req: PackageRequest) -> PackageResult:
    from swallow_trt.profiles import get_target
    from swallow_trt.registry import DEFAULT_SYSTEM_PROMPT, resolve_model
    from swallow_trt.text.chat import DEFAULT_SYSTEM_FORMATS

    if (req.model is None) == (req.engine is None):
        raise UsageError(
            "pass exactly one of --model (reference backend) and --engine (tensorrtllm backend)",
            "e.g. swallow-trt package --engine ENGINE_DIR --out repo",
        )
    runtime = get_target(req.target).runtime if req.target else None
    engine = None
    model_name = req.model
    hf_dir: Path | None = None
    if req.engine is not None:
        engine = read_engine(
            req.engine,
            kv_cache_free_gpu_mem_fraction=runtime.kv_cache_free_gpu_mem_fraction if runtime else 0.9,
            batch_scheduler_policy=runtime.batch_scheduler_policy if runtime else "guaranteed_no_evict",
            # The profile's chunked context means "where the engine allows it" (trtllm-build may have
            # switched paged context FMHA off: builders/engine_rules.py), so it follows the engine.
            enable_chunked_context=None if runtime is None or runtime.enable_chunked_context else False,
        )
        hf_dir, model_name = _engine_source(engine.engine_dir)
        if req.tokenizer is None and hf_dir is None:
            raise UsageError(
                f"{req.engine} has no stage manifest leading to its Hugging Face checkpoint",
                "pass --tokenizer DIR (the model's tokenizer files)",
            )
    resolved = resolve_model(model_name) if model_name else None
    reg = resolved.registered if resolved else None
    if req.engine is None and resolved is not None:
        from swallow_trt.quantize.checkpoint import fetch_checkpoint

        hf_dir = fetch_checkpoint(resolved, None, False)
    source = req.tokenizer or hf_dir
    assert source is not None
    chat_format = reg.entry.chat_format if reg else "none"
    stop_words = tuple(reg.entry.stop_words) if reg else ()
    # The reasoning families prescribe no system prompt; the Llama-era ones were trained with the default.
    default = DEFAULT_SYSTEM_PROMPT if chat_format in DEFAULT_SYSTEM_FORMATS else None
    system = (reg.entry.system_prompt or default) if reg and chat_format != "none" else None
    max_batch = req.max_batch_size or (engine.max_batch_size if engine else 8)
    spec = RepoSpec(
        checkpoint=source if engine is not None else (hf_dir or source),
        chat_format=chat_format,
        end_id=end_id_for(source, stop_words),
        stop_words=stop_words,
        system_prompt=system,
        max_batch_size=max_batch,
        max_input_len=req.max_input_len,
        default_max_tokens=req.default_max_tokens,
        engine=engine,
        instances=req.instances,
        chat_instances=req.chat_instances,
    )
    return PackageResult(write_repo(spec, req.out), spec)
