"""Chat formats and stop-word layout per Swallow family."""

from __future__ import annotations

import pytest

from swallow_trt.errors import UsageError
from swallow_trt.registry import DEFAULT_SYSTEM_PROMPT, load_registry
from swallow_trt.triton_repo.chat import ALPACA_PREAMBLE, Message, adds_bos, render, stop_words_list

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
        # qwen3 (ChatML + think) and harmony are registered by issue 13; their renderers are the
        # chat-format part of that issue, not landed yet: drop this exclusion when they are.
        if m.entry.kind == "instruct" and m.entry.chat_format not in ("qwen3", "harmony"):
            assert render(m.entry.chat_format, [U])
