"""Write a Triton model repository, atomically: configs from ModelConfig messages, the Python-backend
models shipped in ``triton_repo/models``, and the tokenizer files copied in (self-contained)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from swallow_trt.errors import UsageError
from swallow_trt.triton_repo.configs import TrtllmModelSettings, chat_config, tensorrt_llm_config, to_pbtxt

MODELS_DIR = Path(__file__).resolve().parent / "models"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")


@dataclass(frozen=True)
class ReferenceRepoSpec:
    checkpoint: Path  # HF checkpoint the reference backend serves
    chat_format: str
    end_id: int | None
    stop_words: tuple[str, ...] = ()
    system_prompt: str | None = None
    max_batch_size: int = 8
    max_input_len: int = 2048
    default_max_tokens: int = 256


def end_id_for(checkpoint: Path, stop_words: tuple[str, ...]) -> int | None:
    """The token generation ends at: the family's stop token (``<|eot_id|>``, ``</s>``) as the model's own
    tokenizer numbers it, else the tokenizer's EOS."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(checkpoint)
    for word in stop_words:
        tid = tok.convert_tokens_to_ids(word)
        if isinstance(tid, int) and tid != tok.unk_token_id:
            return tid
    eos = tok.eos_token_id
    return int(eos) if isinstance(eos, int) else None


def _write_model(root: Path, name: str, config_text: str, model_source: Path) -> None:
    (root / name / "1").mkdir(parents=True, exist_ok=True)
    (root / name / "config.pbtxt").write_text(config_text, encoding="utf-8")
    shutil.copyfile(model_source, root / name / "1" / "model.py")


def write_reference_repo(spec: ReferenceRepoSpec, out: Path) -> Path:
    """``tensorrt_llm`` (reference backend, the C++ backend's contract) + ``chat`` (streaming BLS) + tokenizer."""
    ckpt = spec.checkpoint.resolve()
    if not (ckpt / "config.json").is_file():
        raise UsageError(
            f"{ckpt} is not a Hugging Face checkpoint (no config.json)", "pass the checkpoint directory"
        )
    tok_files = [ckpt / f for f in TOKENIZER_FILES if (ckpt / f).is_file()]
    if not tok_files:
        raise UsageError(f"{ckpt} has no tokenizer files", "copy the model's tokenizer into the checkpoint")
    out = out.absolute()
    if out.exists():
        raise UsageError(f"{out} already exists", "choose another --out or remove it")
    temp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    try:
        # Inside the chat model's directory (Triton ignores non-numeric subdirectories there; a
        # top-level folder would be taken for a model).
        tokenizer_dir = out / "chat" / "tokenizer"
        (temp / "chat" / "tokenizer").mkdir(parents=True)
        for f in tok_files:
            shutil.copyfile(f, temp / "chat" / "tokenizer" / f.name)
        llm = tensorrt_llm_config(
            TrtllmModelSettings(engine_dir=str(ckpt), max_batch_size=spec.max_batch_size, backend="python"),
            reference_parameters={"max_input_len": spec.max_input_len},
        )
        _write_model(temp, "tensorrt_llm", to_pbtxt(llm), MODELS_DIR / "tensorrt_llm_reference" / "model.py")
        chat = chat_config(
            {
                "tokenizer_dir": str(tokenizer_dir),
                "chat_format": spec.chat_format,
                "end_id": "" if spec.end_id is None else spec.end_id,
                "stop_words": json.dumps(list(spec.stop_words), ensure_ascii=False),
                "system_prompt": spec.system_prompt or "",
                "max_input_len": spec.max_input_len,
                "default_max_tokens": spec.default_max_tokens,
                "llm_model": "tensorrt_llm",
            }
        )
        _write_model(temp, "chat", to_pbtxt(chat), MODELS_DIR / "chat" / "model.py")
        os.replace(temp, out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return out
