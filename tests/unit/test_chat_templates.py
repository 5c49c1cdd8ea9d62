"""The project's chat renderer produces exactly what each family's own chat template renders, on
multi-turn Japanese histories whose messages carry the whitespace real chats have (an answer ending with a
newline, leading spaces, an ideographic space), rendered with transformers' own Jinja renderer."""

from __future__ import annotations

from typing import Any

import pytest

from swallow_trt.registry import DEFAULT_SYSTEM_PROMPT
from swallow_trt.text.chat import Message, render
from tests.fixtures.chat_templates import ALPACA_JA, GPT_OSS, LLAMA2, LLAMA3, QWEN3, SPECIAL_TOKENS

pytest.importorskip("jinja2")

TEMPLATES = {"llama3": LLAMA3, "llama2": LLAMA2}
REASONING_TEMPLATES = {"qwen3": QWEN3, "harmony": GPT_OSS}

HISTORIES: dict[str, list[Message]] = {
    "one user turn": [Message("user", "日本の首都はどこですか？")],
    "system and two turns, answer ends with a newline": [
        Message("system", "簡潔に答えてください。"),
        Message("user", "日本の首都はどこですか？"),
        Message("assistant", "東京です。\n"),
        Message("user", "人口は？"),
    ],
    "leading spaces and blank lines": [
        Message("system", "\nあなたは誠実で優秀な日本人のアシスタントです。  "),
        Message("user", "  富士山の高さは？\n\n"),
        Message("assistant", "  3,776 メートルです。\n\n"),
        Message("user", "\tでは、北岳は？ "),
    ],
    "ideographic spaces and inner newlines kept": [
        Message("user", "　俳句を一つ詠んでください。　"),
        Message("assistant", "古池や\n蛙飛び込む\n水の音\n"),
        Message("user", "季語は何ですか？\n"),
        Message("assistant", "「蛙」で、春の季語です。\r\n"),
        Message("user", "ありがとう。"),
    ],
}


# Answers as a reasoning model's earlier turns come back when a client keeps them whole: Qwen3's template
# cuts the reasoning out of them (everything up to the last </think>).
REASONING_HISTORIES: dict[str, list[Message]] = {
    **HISTORIES,
    "earlier answers with their think blocks": [
        Message("system", "簡潔に答えてください。"),
        Message("user", "日本の首都はどこですか？"),
        Message("assistant", "<think>\n首都を聞かれている。\n</think>\n\n東京です。\n"),
        Message("user", "人口は？"),
        Message("assistant", "<think>\n\n</think>\n\n約1400万人です。"),
        Message("user", "ありがとう。"),
    ],
}


def reference(chat_format: str, messages: list[Message], **options: Any) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    conversation = [{"role": m.role, "content": m.content} for m in messages]
    template = {**TEMPLATES, **REASONING_TEMPLATES}[chat_format]
    rendered: Any
    rendered, _ = render_jinja_template(
        conversations=[conversation],
        chat_template=template,
        add_generation_prompt=True,
        **SPECIAL_TOKENS[chat_format],
        **options,
    )
    text: str = rendered[0]
    return text


def today() -> str:
    import datetime

    return datetime.date.today().strftime("%Y-%m-%d")


@pytest.mark.parametrize("history", list(REASONING_HISTORIES))
@pytest.mark.parametrize("thinking", [None, True, False])
def test_qwen3_renderer_equals_qwen3_template(history: str, thinking: bool | None) -> None:
    messages = REASONING_HISTORIES[history]
    options = {} if thinking is None else {"enable_thinking": thinking}
    expected = reference("qwen3", messages, **options)
    assert render("qwen3", messages, default_system=None, thinking=thinking) == expected
    # The Llama-family default system prompt is not Qwen3's: none is added.
    assert render("qwen3", messages, thinking=thinking) == expected


def test_qwen3_thinking_off_prefills_an_empty_think_block() -> None:
    messages = [Message("user", "こんにちは")]
    assert render("qwen3", messages) == "<|im_start|>user\nこんにちは<|im_end|>\n<|im_start|>assistant\n"
    assert render("qwen3", messages, thinking=False).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


@pytest.mark.parametrize("history", list(REASONING_HISTORIES))
@pytest.mark.parametrize("effort", [None, "low", "medium", "high"])
def test_harmony_renderer_equals_gpt_oss_template(history: str, effort: str | None) -> None:
    messages = [
        Message(m.role, m.content.split("</think>")[-1].lstrip("\n")) for m in REASONING_HISTORIES[history]
    ]
    options = {} if effort is None else {"reasoning_effort": effort}
    while True:  # the template writes today's date: render again if the day changed meanwhile
        day = today()
        expected = reference("harmony", messages, **options)
        ours = render("harmony", messages, default_system=None, reasoning_effort=effort)
        if today() == day:
            break
    assert ours == expected
    assert render("harmony", messages, reasoning_effort=effort, date=day) == expected


def test_harmony_defaults_to_medium_effort_and_writes_the_date() -> None:
    text = render("harmony", [Message("user", "こんにちは")], date="2026-02-20")
    assert text == (
        "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
        "Knowledge cutoff: 2024-06\nCurrent date: 2026-02-20\n\nReasoning: medium\n\n"
        "# Valid channels: analysis, commentary, final. Channel must be included for every message.\n"
        "Calls to these tools must go to the commentary channel: 'functions'.<|end|>"
        "<|start|>user<|message|>こんにちは<|end|><|start|>assistant"
    )


@pytest.mark.parametrize("chat_format", list(TEMPLATES))
@pytest.mark.parametrize("history", list(HISTORIES))
def test_renderer_equals_the_family_template(chat_format: str, history: str) -> None:
    messages = HISTORIES[history]
    assert render(chat_format, messages, default_system=None) == reference(chat_format, messages)


@pytest.mark.parametrize("chat_format", list(TEMPLATES))
def test_default_system_prompt_is_a_system_message(chat_format: str) -> None:
    """Without a system message the renderer adds the model's default one, as if the user had sent it."""
    turns = HISTORIES["ideographic spaces and inner newlines kept"]
    expected = reference(chat_format, [Message("system", DEFAULT_SYSTEM_PROMPT), *turns])
    assert render(chat_format, turns) == expected


def test_turn_two_prompt_does_not_depend_on_the_answer_s_trailing_newline() -> None:
    """The issue's case: an answer streamed with a final newline must not change the next prompt."""
    for chat_format in TEMPLATES:
        with_newline = HISTORIES["system and two turns, answer ends with a newline"]
        without = [*with_newline[:2], Message("assistant", "東京です。"), with_newline[3]]
        assert render(chat_format, with_newline) == render(chat_format, without)


def test_alpaca_ja_single_instruction_equals_the_card() -> None:
    instruction = "日本で一番高い山は何ですか？"
    expected = ALPACA_JA.format(instruction=instruction)
    assert render("alpaca-ja", [Message("user", instruction)]) == expected
