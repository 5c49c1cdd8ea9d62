"""Chat formats and stop words of the Swallow families (registry ``chat_format``), without heavy imports.

- ``llama3``: Llama-3/3.1/3.3 Swallow Instruct, header format, ends at ``<|eot_id|>``;
- ``llama2``: Swallow instruct-v0.1 and Swallow-MS instruct, ``[INST] <<SYS>>`` format, ends at ``</s>``;
- ``alpaca-ja``: the original Swallow instruct-hf models, Japanese Alpaca-style ``### 指示:`` /
  ``### 応答:`` prompt, ends at ``</s>``;
- ``qwen3``: Qwen3-Swallow (dense and MoE), Qwen3's ChatML with thinking: ``enable_thinking`` (default on,
  as the cards advise) lets the model open its own ``<think>`` block; off pre-fills an empty one. Earlier
  answers are rendered without their reasoning, as Qwen3's template does. Ends at ``<|im_end|>`` /
  ``<|endoftext|>``;
- ``harmony``: GPT-OSS-Swallow, gpt-oss's harmony format: a system message with the knowledge cutoff,
  the date and ``Reasoning: low|medium|high`` (default medium, the cards' setting), the system prompt as
  the developer message's instructions, earlier answers on the ``final`` channel without their analysis.
  Ends at ``<|return|>`` / ``<|call|>``; ``<|end|>`` only ends a message;
- ``none``: base models, raw text.

``qwen3`` and ``harmony`` reason before they answer (:data:`REASONING_FORMATS`); asking another format to
think, or for a reasoning effort, is a :class:`UsageError` (:func:`check_reasoning`).

Rendered prompts carry their own BOS where the format has one: encode them with
``add_special_tokens=False`` (:func:`adds_bos`).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from swallow_trt.errors import UsageError
from swallow_trt.registry import DEFAULT_SYSTEM_PROMPT

Role = Literal["system", "user", "assistant"]
ALPACA_PREAMBLE = (
    "以下に、あるタスクを説明する指示があります。リクエストを適切に完了するための回答を記述してください。"
)
REASONING_FORMATS: Final = ("qwen3", "harmony")
REASONING_EFFORTS: Final = ("low", "medium", "high")
# The GPT-OSS-Swallow cards: "Please use reasoning mode set to 'medium'" (their scores were measured so).
DEFAULT_REASONING_EFFORT: Final = "medium"
# The formats whose models were trained with the registry's (Japanese) default system prompt; the
# reasoning families prescribe none.
DEFAULT_SYSTEM_FORMATS: Final = ("llama3", "llama2", "alpaca-ja")
QWEN3_EMPTY_THINK: Final = "<think>\n\n</think>\n\n"
HARMONY_IDENTITY: Final = "You are ChatGPT, a large language model trained by OpenAI."
HARMONY_KNOWLEDGE_CUTOFF: Final = "2024-06"


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


def check_reasoning(
    chat_format: str, thinking: bool | None = None, reasoning_effort: str | None = None
) -> None:
    """Refuse reasoning options the format cannot honour (one line and a hint)."""
    if chat_format not in REASONING_FORMATS:
        if thinking or reasoning_effort is not None:
            what = "thinking" if thinking else f"reasoning effort {reasoning_effort!r}"
            raise UsageError(
                f"{what} was asked of a model whose chat format {chat_format!r} does not reason",
                "drop --think / --reasoning-effort, or serve a Qwen3-Swallow or GPT-OSS-Swallow model",
            )
        return
    if reasoning_effort is not None and reasoning_effort not in REASONING_EFFORTS:
        raise UsageError(
            f"unknown reasoning effort {reasoning_effort!r}", f"use one of {', '.join(REASONING_EFFORTS)}"
        )
    if chat_format == "qwen3" and reasoning_effort is not None:
        raise UsageError(
            "Qwen3 has no reasoning effort, only thinking on or off", "use --think or --no-think instead"
        )
    if chat_format == "harmony" and thinking is False:
        raise UsageError(
            "gpt-oss always reasons; its reasoning cannot be turned off",
            "use --reasoning-effort low for the shortest reasoning",
        )


def render(
    chat_format: str,
    messages: Sequence[Message],
    default_system: str | None = DEFAULT_SYSTEM_PROMPT,
    *,
    thinking: bool | None = None,
    reasoning_effort: str | None = None,
    date: str | None = None,
) -> str:
    """The prompt text for ``messages`` (system first, optional; then user/assistant turns ending with user).

    ``thinking`` (qwen3; None: on) and ``reasoning_effort`` (harmony; None: medium) are the reasoning
    families' options; ``date`` (harmony's "Current date", ``YYYY-MM-DD``) defaults to today, as the
    template's ``strftime_now`` does."""
    check_reasoning(chat_format, thinking, reasoning_effort)
    system, turns = _check(messages)
    if system is None and chat_format in DEFAULT_SYSTEM_FORMATS:
        system = default_system
    if chat_format == "qwen3":
        return _render_qwen3(system, turns, thinking is not False)
    if chat_format == "harmony":
        return _render_harmony(system, turns, reasoning_effort or DEFAULT_REASONING_EFFORT, date)
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
    raise UsageError(
        f"unknown chat format {chat_format!r}", "use llama3, llama2, alpaca-ja, qwen3, harmony or none"
    )


def _render_qwen3(system: str | None, turns: list[Message], thinking: bool) -> str:
    """Qwen3's template for a chat without tools. Every assistant turn here comes before the last user
    turn, so the template renders it without its reasoning (what follows the last ``</think>``, newlines
    at its start removed) and without trimming anything else."""
    parts = [f"<|im_start|>system\n{system}<|im_end|>\n"] if system else []
    for m in turns:
        content = m.content
        if m.role == "assistant" and "</think>" in content:
            content = content.split("</think>")[-1].lstrip("\n")
        parts.append(f"<|im_start|>{m.role}\n{content}<|im_end|>\n")
    parts.append("<|im_start|>assistant\n")
    if not thinking:
        parts.append(QWEN3_EMPTY_THINK)
    return "".join(parts)


def _render_harmony(system: str | None, turns: list[Message], effort: str, date: str | None) -> str:
    """gpt-oss's template for a chat without tools: earlier answers on the final channel, their analysis
    dropped (the template's "CoT is dropped during all previous turns")."""
    today = date or datetime.date.today().strftime("%Y-%m-%d")
    parts = [
        "<|start|>system<|message|>",
        f"{HARMONY_IDENTITY}\nKnowledge cutoff: {HARMONY_KNOWLEDGE_CUTOFF}\nCurrent date: {today}\n\n",
        f"Reasoning: {effort}\n\n",
        "# Valid channels: analysis, commentary, final. Channel must be included for every message.\n",
        "Calls to these tools must go to the commentary channel: 'functions'.<|end|>",
    ]
    if system:
        parts.append(f"<|start|>developer<|message|># Instructions\n\n{system}<|end|>")
    for m in turns:
        if m.role == "user":
            parts.append(f"<|start|>user<|message|>{m.content}<|end|>")
            continue
        if "<|channel|>analysis<|message|>" in m.content or "<|channel|>final<|message|>" in m.content:
            raise UsageError(
                "an earlier answer holds harmony <|channel|> markup", "pass the answer's final text alone"
            )
        parts.append(f"<|start|>assistant<|channel|>final<|message|>{m.content}<|end|>")
    parts.append("<|start|>assistant")
    return "".join(parts)


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
