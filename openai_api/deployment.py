"""What the API needs to know about a served repository, read from its configs once at start-up.

The ``chat`` model's parameters give the text side (tokenizer, chat format, end token, the family's stop
words, system prompt, max input length, default max tokens); the ``tensorrt_llm`` model's config gives
the max batch size (the admission limit's default), whether guided decoding is on, and, for an engine,
its ``max_seq_len``. Paths in a packaged repository are relative to its root (``repo.py``); older ones
may be relative to the model directory or absolute: all three are accepted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swallow_trt.errors import UsageError


@dataclass(frozen=True)
class Deployment:
    repo: Path
    model_id: str
    aliases: tuple[str, ...]
    tokenizer_dir: Path
    chat_format: str
    system_prompt: str | None
    end_id: int | None
    stop_words: tuple[str, ...]
    max_input_len: int
    default_max_tokens: int
    max_seq_len: int  # prompt + output the engine takes: the default max_tokens is what is left of it
    max_batch_size: int
    guided: bool
    llm_model: str = "tensorrt_llm"

    def accepts(self, name: str) -> bool:
        return name == self.model_id or name in self.aliases


def _parameters(path: Path) -> tuple[Any, dict[str, str]]:
    from swallow_trt.triton_repo.configs import read_model_config

    return read_model_config(
        path,
        f"{path} is missing: the OpenAI API needs the repository's chat and tensorrt_llm models",
        "create the repository with `swallow-trt package`",
    )


def _resolve(repo: Path, model_dir: Path, value: str) -> Path:
    path = Path(value)
    if path.is_absolute():
        return path
    for base in (repo, model_dir):
        if (base / path).exists():
            return base / path
    return repo / path


def _engine_max_seq_len(engine_dir: Path) -> int | None:
    try:
        build = json.loads((engine_dir / "config.json").read_text(encoding="utf-8"))["build_config"]
        return int(build["max_seq_len"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _aliases(model_id: str) -> tuple[str, ...]:
    from swallow_trt.registry import load_registry

    aliases = load_registry().data.aliases
    return tuple(sorted(a for a, target in aliases.items() if target.lower() == model_id.lower()))


def read_deployment(repo: Path, model_name: str | None = None) -> Deployment:
    """The repository's facts; ``model_name`` is the id ``/v1/models`` shows (default: the ``chat``
    model's ``model_id`` parameter where the repository has one, else the repository's directory name);
    the registry's aliases of that id are accepted in requests too."""
    repo = repo.absolute()
    chat_dir, llm_dir = repo / "chat", repo / "tensorrt_llm"
    _, params = _parameters(chat_dir / "config.pbtxt")
    llm_config, llm_params = _parameters(llm_dir / "config.pbtxt")
    if "tokenizer_dir" not in params:
        raise UsageError(f"{chat_dir / 'config.pbtxt'} has no tokenizer_dir", "package the repository again")
    max_input_len = int(params.get("max_input_len") or 0)
    default_max_tokens = int(params.get("default_max_tokens") or 256)
    max_seq_len = None
    if llm_config.backend == "tensorrtllm" and llm_params.get("gpt_model_path"):
        max_seq_len = _engine_max_seq_len(_resolve(repo, llm_dir, llm_params["gpt_model_path"]))
    if max_seq_len is None:
        # The reference backend has no engine limit: the repository's own input limit plus its default
        # output length is the sequence it was packaged for.
        max_seq_len = (max_input_len or 4096) + default_max_tokens
    model_id = model_name or params.get("model_id") or repo.name
    return Deployment(
        repo=repo,
        model_id=model_id,
        aliases=_aliases(model_id),
        tokenizer_dir=_resolve(repo, chat_dir, params["tokenizer_dir"]),
        chat_format=params.get("chat_format", "none"),
        system_prompt=params.get("system_prompt") or None,
        end_id=int(params["end_id"]) if params.get("end_id") else None,
        stop_words=tuple(json.loads(params.get("stop_words") or "[]")),
        max_input_len=max_input_len,
        default_max_tokens=default_max_tokens,
        max_seq_len=max_seq_len,
        max_batch_size=max(1, int(llm_config.max_batch_size or 1)),
        guided=bool(llm_params.get("guided_decoding_backend")),
        llm_model=params.get("llm_model") or "tensorrt_llm",
    )
