"""Write a Triton model repository, atomically: configs from ModelConfig messages, the Python-backend
models shipped in ``triton_repo/models``, and everything they read copied in (self-contained).

Models: ``tensorrt_llm`` (the TensorRT-LLM C++ backend on an engine, or the reference backend on the HF
checkpoint; one tensor contract), ``preprocessing`` / ``postprocessing`` / ``ensemble`` (text in, text
out, raw prompts, upstream's layout) and ``chat`` (decoupled BLS: chat format, exact Japanese streaming,
stops, multi-turn).

Paths. A repository is built on one machine and served on another, so every path in its configs is
relative to the repository root and names something inside it::

    chat/tokenizer/                            every tokenizer file of the model (chat_template.jinja too)
    tensorrt_llm/xgrammar_tokenizer_info.json  the tokenizer's xgrammar info (guided decoding)
    tensorrt_llm/1/engine/                     the engine (tensorrtllm backend), or
    tensorrt_llm/1/checkpoint/                 the HF checkpoint (reference backend)

Files are hard-linked where source and repository share a file system (no copy of a 70B engine), else
copied. The Python models resolve a relative path against the repository root, which is the parent of
the model directory Triton passes them (``pipeline.model_parameters``). The C++ backend opens
``gpt_model_path`` and ``xgrammar_tokenizer_info_path`` exactly as written (``std::filesystem`` on the
string, in ``model_instance_state.cc``), i.e. relative to its working directory, so ``serve`` starts
tritonserver (and mpirun's ranks, which inherit it) with the repository root as working directory.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swallow_trt.errors import UsageError
from swallow_trt.triton_repo.configs import (
    TrtllmModelSettings,
    chat_config,
    check_required_parameters,
    ensemble_config,
    postprocessing_config,
    preprocessing_config,
    tensorrt_llm_config,
    to_pbtxt,
)

MODELS_DIR = Path(__file__).resolve().parent / "models"
# What a tokenizer directory may hold: fast and SentencePiece tokenizers, BPE vocabularies, tiktoken
# files, added tokens and the chat template, which transformers reads from chat_template.jinja.
TOKENIZER_PATTERNS = (
    "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt", "spiece.model",
    "*.tiktoken", "chat_template*",
)  # fmt: skip
MODEL_NAMES = ("tensorrt_llm", "preprocessing", "postprocessing", "ensemble", "chat")
# Inside the chat model's directory: Triton ignores non-numeric subdirectories of a model, and would take
# a top-level folder for a model. Relative to the repository root, as every path in the configs.
TOKENIZER_DIR = "chat/tokenizer"
XGRAMMAR_INFO = "tensorrt_llm/xgrammar_tokenizer_info.json"
ENGINE_DIR = "tensorrt_llm/1/engine"
CHECKPOINT_DIR = "tensorrt_llm/1/checkpoint"


def tokenizer_files(directory: Path) -> list[Path]:
    """The tokenizer files of ``directory``; a missing or tokenizer-less directory is a usage error."""
    if not directory.is_dir():
        raise UsageError(
            f"tokenizer directory {directory} does not exist",
            "pass --tokenizer DIR (the model's tokenizer files) or a checkpoint that has them",
        )
    files = sorted({f for pattern in TOKENIZER_PATTERNS for f in directory.glob(pattern) if f.is_file()})
    if not files:
        raise UsageError(
            f"{directory} has no tokenizer files (tokenizer.json, tokenizer.model, ...)",
            "pass --tokenizer DIR with the model's tokenizer",
        )
    return files


def _link_or_copy(files: list[Path], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        try:
            os.link(f, dest / f.name)
        except OSError:  # another file system, or links not allowed there
            shutil.copyfile(f, dest / f.name)


@dataclass(frozen=True)
class EngineSettings:
    """What the ``tensorrt_llm`` model takes from a built engine (manifest + config.json) and the profile."""

    engine_dir: Path
    max_batch_size: int
    max_input_len: int
    world_size: int
    paged_context_fmha: bool
    kv_cache_free_gpu_mem_fraction: float = 0.9
    batch_scheduler_policy: str = "guaranteed_no_evict"
    enable_chunked_context: bool = False


@dataclass(frozen=True)
class RepoSpec:
    checkpoint: Path  # HF checkpoint: its tokenizer; the weights the reference backend serves
    chat_format: str
    end_id: int | None
    stop_words: tuple[str, ...] = ()
    system_prompt: str | None = None
    max_batch_size: int = 8
    max_input_len: int = 2048
    default_max_tokens: int = 256
    engine: EngineSettings | None = None  # set: the tensorrtllm backend on this engine
    instances: int = 1
    chat_instances: int = 4  # concurrent chat streams (one per instance process)

    @property
    def backend(self) -> str:
        return "reference" if self.engine is None else "tensorrtllm"


def end_id_for(checkpoint: Path, stop_words: tuple[str, ...]) -> int | None:
    """The token generation ends at: the family's stop token (``<|eot_id|>``, ``</s>``) as the model's own
    tokenizer numbers it, else the tokenizer's EOS."""
    from transformers import AutoTokenizer

    tokenizer_files(checkpoint)
    try:
        tok = AutoTokenizer.from_pretrained(checkpoint)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"{checkpoint} does not load as a tokenizer: {first}", "pass --tokenizer DIR"
        ) from None
    for word in stop_words:
        tid = tok.convert_tokens_to_ids(word)
        if isinstance(tid, int) and tid != tok.unk_token_id:
            return tid
    eos = tok.eos_token_id
    return int(eos) if isinstance(eos, int) else None


def read_engine(
    engine_dir: Path,
    *,
    kv_cache_free_gpu_mem_fraction: float = 0.9,
    batch_scheduler_policy: str = "guaranteed_no_evict",
    enable_chunked_context: bool | None = None,
) -> EngineSettings:
    """The engine's limits from its config.json (trtllm-build's build_config and mapping). Chunked
    context needs paged context FMHA in the engine: asked for without it, refused; not asked (None), on
    exactly when the engine has it."""
    engine_dir = engine_dir.absolute()
    config_path = engine_dir / "config.json"
    if not config_path.is_file():
        raise UsageError(
            f"{engine_dir} is not a TensorRT-LLM engine directory (no config.json)",
            "pass the engine directory that `swallow-trt build` printed",
        )
    try:
        config = json.loads(config_path.read_text())
        build = config["build_config"]
        mapping = config["pretrained_config"]["mapping"]
        world = int(
            mapping.get("world_size") or int(mapping.get("tp_size", 1)) * int(mapping.get("pp_size", 1))
        )
        max_batch = int(build["max_batch_size"])
        max_input = int(build["max_input_len"])
        plugin = build.get("plugin_config") or {}
        paged_ctx = bool(plugin.get("use_paged_context_fmha", False))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(
            f"{config_path} is not a TensorRT-LLM engine config ({type(exc).__name__}: {exc})",
            "rebuild the engine with `swallow-trt build`",
        ) from None
    missing = [f"rank{r}.engine" for r in range(world) if not (engine_dir / f"rank{r}.engine").is_file()]
    if missing:
        raise UsageError(
            f"{engine_dir} lacks {', '.join(missing)} for its world size {world}", "rebuild the engine"
        )
    if enable_chunked_context and not paged_ctx:
        raise UsageError(
            "chunked context needs an engine built with paged context FMHA (use_paged_context_fmha)",
            "rebuild with a profile that sets build.use_paged_context_fmha: true, or leave chunked context off",
        )
    settings = EngineSettings(
        engine_dir=engine_dir,
        max_batch_size=max_batch,
        max_input_len=max_input,
        world_size=world,
        paged_context_fmha=paged_ctx,
        kv_cache_free_gpu_mem_fraction=kv_cache_free_gpu_mem_fraction,
        batch_scheduler_policy=batch_scheduler_policy,
        enable_chunked_context=paged_ctx if enable_chunked_context is None else enable_chunked_context,
    )
    return settings


def _write_model(root: Path, name: str, config: Any, model_source: Path | None) -> None:
    (root / name / "1").mkdir(parents=True, exist_ok=True)
    (root / name / "config.pbtxt").write_text(to_pbtxt(config), encoding="utf-8")
    if model_source is not None:
        shutil.copyfile(model_source, root / name / "1" / "model.py")


def _llm_config(spec: RepoSpec) -> Any:
    e = spec.engine
    if e is None:
        # KV-cache reuse is what a chat deployment wants (the system prompt is a shared prefix); the
        # reference backend keeps a cache per request and ignores it.
        return tensorrt_llm_config(
            TrtllmModelSettings(
                engine_dir=CHECKPOINT_DIR,
                max_batch_size=spec.max_batch_size,
                backend="python",
                instances=spec.instances,
                enable_kv_cache_reuse=True,
                tokenizer_dir=TOKENIZER_DIR,
                xgrammar_tokenizer_info_path=XGRAMMAR_INFO,
            ),
            reference_parameters={"max_input_len": spec.max_input_len},
        )
    if spec.max_batch_size > e.max_batch_size:
        raise UsageError(
            f"--max-batch-size {spec.max_batch_size} exceeds the engine's max_batch_size {e.max_batch_size}",
            f"pass --max-batch-size {e.max_batch_size} or less, or rebuild the engine",
        )
    return tensorrt_llm_config(
        TrtllmModelSettings(
            engine_dir=ENGINE_DIR,
            max_batch_size=spec.max_batch_size,
            kv_cache_free_gpu_mem_fraction=e.kv_cache_free_gpu_mem_fraction,
            batch_scheduler_policy=e.batch_scheduler_policy,
            enable_chunked_context=e.enable_chunked_context,
            gpu_device_ids=tuple(range(e.world_size)) if e.world_size > 1 else (),
            # On for chat (the system prompt is a shared prefix) wherever the engine allows it.
            enable_kv_cache_reuse=e.paged_context_fmha,
            tokenizer_dir=TOKENIZER_DIR,
            xgrammar_tokenizer_info_path=XGRAMMAR_INFO,
        )
    )


def write_repo(spec: RepoSpec, out: Path) -> Path:
    """The five models and the tokenizer, written to a temporary sibling and renamed into place."""
    ckpt = spec.checkpoint.absolute()
    if spec.engine is None and not (ckpt / "config.json").is_file():
        raise UsageError(
            f"{ckpt} is not a Hugging Face checkpoint (no config.json)", "pass the checkpoint directory"
        )
    tok_files = tokenizer_files(ckpt)
    for flag, value in (
        ("--max-batch-size", spec.max_batch_size),
        ("--max-input-len", spec.max_input_len),
        ("--default-max-tokens", spec.default_max_tokens),
        ("--instances", spec.instances),
        ("--chat-instances", spec.chat_instances),
    ):
        if value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}", f"pass a positive {flag}")
    out = out.absolute()
    if out.exists():
        raise UsageError(f"{out} already exists", "choose another --out or remove it")
    llm = _llm_config(spec)  # validates against the engine before anything is written
    check_required_parameters(llm)
    temp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    try:
        from swallow_trt.triton_repo.guided import write_tokenizer_info

        tokenizer_dir = TOKENIZER_DIR
        for f in tok_files:
            (temp / TOKENIZER_DIR).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, temp / TOKENIZER_DIR / f.name)
        reference = spec.engine is None
        if reference:
            _link_or_copy([f for f in ckpt.iterdir() if f.is_file()], temp / CHECKPOINT_DIR)
        else:
            assert spec.engine is not None
            src = spec.engine.engine_dir
            _link_or_copy([f for f in src.iterdir() if f.is_file()], temp / ENGINE_DIR)
        write_tokenizer_info(temp / TOKENIZER_DIR, temp / XGRAMMAR_INFO, spec.end_id)
        _write_model(
            temp,
            "tensorrt_llm",
            llm,
            MODELS_DIR / "tensorrt_llm_reference" / "model.py" if reference else None,
        )
        max_input_len = spec.engine.max_input_len if spec.engine is not None else spec.max_input_len
        text_params = {
            "tokenizer_dir": tokenizer_dir,
            "chat_format": spec.chat_format,
            "end_id": "" if spec.end_id is None else spec.end_id,
            "stop_words": json.dumps(list(spec.stop_words), ensure_ascii=False),
            "system_prompt": spec.system_prompt or "",
            "max_input_len": max_input_len,
            "default_max_tokens": spec.default_max_tokens,
        }
        _write_model(
            temp,
            "chat",
            chat_config({**text_params, "llm_model": "tensorrt_llm"}, instances=spec.chat_instances),
            MODELS_DIR / "chat" / "model.py",
        )
        _write_model(
            temp,
            "preprocessing",
            preprocessing_config(text_params, spec.max_batch_size, spec.instances),
            MODELS_DIR / "preprocessing" / "model.py",
        )
        _write_model(
            temp,
            "postprocessing",
            postprocessing_config({"tokenizer_dir": tokenizer_dir}, spec.max_batch_size, spec.instances),
            MODELS_DIR / "postprocessing" / "model.py",
        )
        _write_model(temp, "ensemble", ensemble_config(spec.max_batch_size), None)
        (temp / "ensemble" / "1" / ".keep").touch()
        os.replace(temp, out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return out
