"""Chat formats and stop words of the Swallow families (registry ``chat_format``), without heavy imports.

- ``llama3``: Llama-3/3.1/3.3 Swallow Instruct, header format, ends at ``<|eot_id|>``;
- ``llama2``: Swallow instruct-v0.1 and Swallow-MS instruct, ``[INST] <<SYS>>`` format, ends at ``</s>``;
- ``alpaca-ja``: the original Swallow instruct-hf models, Japanese Alpaca-style ``### 指示:`` /
  ``### 応答:`` prompt, ends at ``</s>``;
- ``none``: base models, raw text.

Rendered prompts carry their own BOS where the format has one: encode them with
``add_special_tokens=False`` (:func:`adds_bos`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from swallow_trt.errors import UsageError
from swallow_trt.registry import DEFAULT_SYSTEM_PROMPT

Role = Literal["system", "user", "assistant"]
ALPACA_PREAMBLE = (
    "以下に、あるタスクを説明する指示があります。リクエストを適切に完了するための回答を記述してください。"
)


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


def _check(messages: Sequence[Message]) -> tuple[str | None, list[Message]]:
    system = None
    turns = list(messages)
    if turns and turns[0].role == "system":
        system = turns.pop(0).content
    if not turns or turns[-1].role != "user":
        raise UsageError("a chat must end with a user message", "add the user's turn")
    for i, m in enumerate(turns):
        want = "user" if i % 2 == 0 else "assistant"
        if m.role != want:
            raise UsageError(
                f"message {i + 1} is from {m.role!r}, expected {want!r}", "alternate user and assistant turns"
            )
    return system, turns


def render(
    chat_format: str, messages: Sequence[Message], default_system: str | None = DEFAULT_SYSTEM_PROMPT
) -> str:
    """The prompt text for ``messages`` (system first, optional; then user/assistant turns ending with user)."""
    system, turns = _check(messages)
    if system is None:
        system = default_system
    # Whitespace is trimmed where the family's own chat template trims it (Jinja ``trim`` and Python
    # ``strip`` are the same function), so that turn 2 of a chat whose answer ended with a newline is the
    # prompt the model was trained on; tests/unit/test_chat_templates.py renders the real templates.
    if chat_format == "llama3":
        parts = ["<|begin_of_text|>"]
        if system:
            parts.append(f"<|start_header_id|>system<|end_header_id|>\n\n{system.strip()}<|eot_id|>")
        for m in turns:
            parts.append(f"<|start_header_id|>{m.role}<|end_header_id|>\n\n{m.content.strip()}<|eot_id|>")
        parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
        return "".join(parts)
    if chat_format == "llama2":
        out = []
        for i in range(0, len(turns), 2):
            user = turns[i].content
            if i == 0 and system:
                user = f"<<SYS>>\n{system}\n<</SYS>>\n\n{user}"
            answer = turns[i + 1].content.strip() if i + 1 < len(turns) else None
            out.append(
                f"<s>[INST] {user.strip()} [/INST]" + (f" {answer} </s>" if answer is not None else "")
            )
        return "".join(out)
    if chat_format == "alpaca-ja":
        parts = [system if system and system != DEFAULT_SYSTEM_PROMPT else ALPACA_PREAMBLE]
        for m in turns:
            parts.append(f"### 指示:\n{m.content}" if m.role == "user" else f"### 応答:\n{m.content}")
        parts.append("### 応答:")
        return "\n\n".join(parts)
    if chat_format == "none":
        return turns[-1].content
    raise UsageError(f"unknown chat format {chat_format!r}", "use llama3, llama2, alpaca-ja or none")


def adds_bos(chat_format: str) -> bool:
    """Whether the tokenizer should add BOS itself (the raw format) or the rendered text has it."""
    return chat_format in ("none", "alpaca-ja")


def stop_words_list(words: Sequence[Sequence[int]]) -> list[list[int]]:
    """TensorRT-LLM's ``[2, L]`` int32 layout: row 0 the flattened token ids, row 1 the exclusive end
    offset of each word, padded with -1 (``to_word_list_format``)."""
    flat: list[int] = []
    offsets: list[int] = []
    for w in words:
        if not w:
            continue
        flat.extend(int(t) for t in w)
        offsets.append(len(flat))
    if not flat:
        return [[0], [-1]]
    offsets += [-1] * (len(flat) - len(offsets))
    return [flat, offsets]
