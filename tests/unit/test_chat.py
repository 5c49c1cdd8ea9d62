"""Chat formats and stop-word layout per Swallow family."""

from __future__ import annotations

import pytest

from swallow_trt.errors import UsageError
from swallow_trt.registry import DEFAULT_SYSTEM_PROMPT, load_registry
from swallow_trt.text.chat import (
    ALPACA_PREAMBLE,
    REASONING_FORMATS,
    Message,
    adds_bos,
    check_reasoning,
    render,
    stop_words_list,
)

U = Message("user", "日本の首都はどこですか？")


def test_llama3_header_format() -> None:
    text = render("llama3", [U])
    assert text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        f"{DEFAULT_SYSTEM_PROMPT}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
        "日本の首都はどこですか？<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    multi = render(
        "llama3",
        [Message("system", "簡潔に。"), U, Message("assistant", "東京です。"), Message("user", "人口は？")],
    )
    assert multi.count("<|eot_id|>") == 4
    assert multi.endswith("人口は？<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert "簡潔に。" in multi
    assert DEFAULT_SYSTEM_PROMPT not in multi


def test_llama2_inst_format() -> None:
    assert (
        render("llama2", [U])
        == f"<s>[INST] <<SYS>>\n{DEFAULT_SYSTEM_PROMPT}\n<</SYS>>\n\n日本の首都はどこですか？ [/INST]"
    )
    two = render("llama2", [U, Message("assistant", "東京です。"), Message("user", "人口は？")])
    assert two.endswith(" [/INST] 東京です。 </s><s>[INST] 人口は？ [/INST]")


def test_alpaca_ja_format() -> None:
    assert (
        render("alpaca-ja", [U]) == f"{ALPACA_PREAMBLE}\n\n### 指示:\n日本の首都はどこですか？\n\n### 応答:"
    )
    assert adds_bos("alpaca-ja")
    assert not adds_bos("llama3")


def test_base_models_take_raw_text() -> None:
    assert render("none", [U]) == U.content


@pytest.mark.parametrize(
    "messages",
    [[], [Message("assistant", "x")], [U, U], [Message("system", "s")]],
)
def test_bad_chats(messages: list[Message]) -> None:
    with pytest.raises(UsageError):
        render("llama3", messages)


def test_stop_words_layout() -> None:
    assert stop_words_list([[128009], [2, 3]]) == [[128009, 2, 3], [1, 3, -1]]
    assert stop_words_list([]) == [[0], [-1]]


def test_every_instruct_model_has_a_renderable_format() -> None:
    for m in load_registry().models:
        if m.entry.kind == "instruct":
            assert render(m.entry.chat_format, [U])


def test_reasoning_families_are_the_reasoning_formats() -> None:
    """The registry's reasoning flag and the chat formats that think agree, so a thinking request is
    refused exactly for the families that cannot think."""
    for m in load_registry().models:
        if m.entry.kind == "instruct":
            assert (m.entry.chat_format in REASONING_FORMATS) == m.family.reasoning, m.repo


@pytest.mark.parametrize(
    ("chat_format", "thinking", "effort", "message"),
    [
        ("llama3", True, None, "thinking was asked of a model whose chat format 'llama3' does not reason"),
        ("llama2", None, "low", "reasoning effort 'low' was asked of a model whose chat format 'llama2'"),
        ("none", True, None, "does not reason"),
        ("qwen3", None, "high", "Qwen3 has no reasoning effort"),
        ("harmony", False, None, "gpt-oss always reasons"),
        ("harmony", None, "max", "unknown reasoning effort 'max'"),
    ],
)
def test_reasoning_options_the_format_cannot_honour(
    chat_format: str, thinking: bool | None, effort: str | None, message: str
) -> None:
    with pytest.raises(UsageError) as info:
        check_reasoning(chat_format, thinking, effort)
    assert message in info.value.message
    assert info.value.hint
    with pytest.raises(UsageError):
        render(chat_format, [U], thinking=thinking, reasoning_effort=effort)


def test_thinking_off_is_a_no_op_for_formats_that_never_think() -> None:
    check_reasoning("llama3", False, None)
    assert render("llama3", [U], thinking=False) == render("llama3", [U])


def test_reasoning_formats_carry_no_bos_and_no_llama_system_prompt() -> None:
    for chat_format in REASONING_FORMATS:
        assert not adds_bos(chat_format)
        assert DEFAULT_SYSTEM_PROMPT not in render(chat_format, [U])


def test_harmony_refuses_channel_markup_in_an_earlier_answer() -> None:
    answer = Message("assistant", "<|channel|>final<|message|>東京です。")
    with pytest.raises(UsageError):
        render("harmony", [U, answer, Message("user", "人口は？")])
