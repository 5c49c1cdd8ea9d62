"""Text <-> token logic shared by the Python-backend models of a repository (``chat``, ``preprocessing``,
``postprocessing``): parsing request text, rendering and encoding prompts with the model's own tokenizer,
stop words in TensorRT-LLM's layout, and the stop-string filter of the streamed text.

Runs inside the Triton Python-backend stub (the package is installed in the server's Python); numpy and
transformers are imported by the functions that need them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from swallow_trt.errors import UsageError
from swallow_trt.text.chat import Message, adds_bos, render, stop_words_list


def model_parameters(args: dict[str, str]) -> dict[str, str]:
    """A Python-backend model's config parameters (``initialize``'s ``args``) as plain strings."""
    config = json.loads(args["model_config"])
    return resolve_paths(args, {k: v["string_value"] for k, v in config.get("parameters", {}).items()})


class RequestError(ValueError):
    """Bad input in a request: becomes an error response, the server stays healthy."""


def text_of(raw: Any, name: str) -> str:
    """The first element of a BYTES tensor as text; invalid UTF-8 is an error, not U+FFFD."""
    import numpy as np

    flat = np.asarray(raw).reshape(-1)
    if flat.size == 0:
        raise RequestError(f"{name} is empty")
    value = flat[0]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(f"{name} is not valid UTF-8") from None
    return str(value)


def texts_of(raw: Any, name: str) -> list[str]:
    import numpy as np

    return [text_of(np.array([v], dtype=object), name) for v in np.asarray(raw).reshape(-1)]


def int_of(raw: Any, name: str, default: int | None = None) -> int | None:
    import numpy as np

    if raw is None:
        return default
    flat = np.asarray(raw).reshape(-1)
    if flat.size == 0:
        raise RequestError(f"{name} is empty")
    return int(flat[0])


def history_of(raw: Any) -> list[Message]:
    """Earlier turns: a JSON list of {"role": "user"|"assistant", "content": str}, oldest first."""
    try:
        items = json.loads(text_of(raw, "history"))
    except json.JSONDecodeError as exc:
        raise RequestError(f"history is not JSON: {exc.msg}") from None
    if not isinstance(items, list):
        raise RequestError("history must be a JSON list of {role, content} objects")
    turns = []
    for item in items:
        if (
            not isinstance(item, dict)
            or item.get("role") not in ("user", "assistant")
            or not isinstance(item.get("content"), str)
        ):
            raise RequestError("each history item needs role user|assistant and a string content")
        turns.append(Message(item["role"], item["content"]))
    return turns


@dataclass
class Prompter:
    """The model's tokenizer with the family's chat format, end token and stop words."""

    tokenizer: Any
    chat_format: str = "none"
    system_prompt: str | None = None
    end_id: int | None = None
    stop_words: list[str] = field(default_factory=list)
    max_input_len: int = 0
    default_max_tokens: int = 256

    @classmethod
    def from_parameters(cls, params: dict[str, str]) -> Prompter:
        from transformers import AutoTokenizer

        return cls(
            tokenizer=AutoTokenizer.from_pretrained(params["tokenizer_dir"]),
            chat_format=params.get("chat_format", "none"),
            system_prompt=params.get("system_prompt") or None,
            end_id=int(params["end_id"]) if params.get("end_id") else None,
            stop_words=json.loads(params.get("stop_words") or "[]"),
            max_input_len=int(params.get("max_input_len") or 0),
            default_max_tokens=int(params.get("default_max_tokens") or 256),
        )

    def check_max_tokens(self, value: int | None) -> int:
        n = self.default_max_tokens if value is None else value
        if n < 1:
            raise RequestError(f"max_tokens must be at least 1, got {n}")
        return n

    def encode_chat(
        self,
        text: str,
        history: Sequence[Message] = (),
        system: str | None = None,
        *,
        thinking: bool | None = None,
        reasoning_effort: str | None = None,
    ) -> list[int]:
        if not text.strip():
            raise RequestError("empty prompt")
        system = self.system_prompt if system is None else system
        messages = ([Message("system", system)] if system else []) + [*history, Message("user", text)]
        try:
            prompt = render(
                self.chat_format,
                messages,
                default_system=None,
                thinking=thinking,
                reasoning_effort=reasoning_effort,
            )
        except UsageError as exc:  # a malformed history, reasoning options the format cannot honour
            raise RequestError(exc.message) from None
        return self._checked(self.tokenizer.encode(prompt, add_special_tokens=adds_bos(self.chat_format)))

    def encode_raw(self, text: str) -> list[int]:
        if not text.strip():
            raise RequestError("empty prompt")
        return self._checked(self.tokenizer.encode(text, add_special_tokens=True))

    def _checked(self, ids: list[int]) -> list[int]:
        if self.max_input_len and len(ids) > self.max_input_len:
            raise RequestError(f"prompt of {len(ids)} tokens exceeds max_input_len {self.max_input_len}")
        return list(ids)

    def stop_words_array(self, extra: Sequence[str] = (), family: Sequence[str] | None = None) -> Any:
        """[1, 2, L] int32 stop_words_list of the family's stop words (or ``family``) and ``extra``."""
        import numpy as np

        words = [*(self.stop_words if family is None else family), *extra]
        ids = [self.tokenizer.encode(w, add_special_tokens=False) for w in words if w]
        return np.array(stop_words_list(ids), dtype=np.int32).reshape(1, 2, -1)

    def decode(self, ids: Sequence[int]) -> str:
        text: str = self.tokenizer.decode(list(ids), skip_special_tokens=True)
        return text


class StopFilter:
    """Emits text up to the first stop string; holds back a tail that could still become one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        self.pending += text
        cut = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            out, self.pending, self.stopped = self.pending[:cut], "", True
            return out
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(out) :]
        return out

    def close(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


# Parameters that name files; in a packaged repository they are relative to its root (see repo.py).
PATH_PARAMETERS = ("tokenizer_dir", "gpt_model_path", "xgrammar_tokenizer_info_path")


def resolve_paths(args: dict[str, str], params: dict[str, str]) -> dict[str, str]:
    """``params`` with each relative path parameter made absolute against the repository root: the
    parent of the model directory Triton gives a Python model as ``args["model_repository"]``."""
    from pathlib import Path

    root = Path(args["model_repository"]).parent
    out = dict(params)
    for key in PATH_PARAMETERS:
        value = out.get(key)
        if value and not Path(value).is_absolute():
            out[key] = str(root / value)
    return out
