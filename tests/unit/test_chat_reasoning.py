"""The reasoning splitter on the Qwen3 and GPT-OSS tokenizer families (real vocabulary sizes, the real
ids of their markers): reasoning and answer come out apart and exact for Japanese text, however the ids
are cut into pieces; formats without reasoning are the detokeniser's text unchanged."""

from __future__ import annotations

import random
from collections.abc import Iterator
from functools import cache
from typing import Any

import pytest

from swallow_trt.text.detok import IncrementalDetokenizer
from swallow_trt.text.reasoning import (
    Delta,
    ReasoningSplitter,
    prompt_opens_reasoning,
    split_reasoning,
)
from tests.fixtures.tiny import japanese_paragraphs, make_tokenizer

pytest.importorskip("tokenizers")

PARAGRAPHS = japanese_paragraphs()[:24]


@cache
def tokenizer(kind: str) -> Any:
    return make_tokenizer(kind)


def enc(tok: Any, text: str) -> list[int]:
    ids: list[int] = tok.encode(text, add_special_tokens=False)
    return ids


def pieces(ids: list[int], seed: int | None) -> Iterator[list[int]]:
    """One id at a time (seed None) or random chunks of 1-7 ids."""
    if seed is None:
        yield from ([i] for i in ids)
        return
    rng = random.Random(seed)
    at = 0
    while at < len(ids):
        n = rng.randint(1, 7)
        yield ids[at : at + n]
        at += n


def stream(splitter: ReasoningSplitter, ids: list[int], seed: int | None) -> tuple[Delta, list[Delta]]:
    deltas = [splitter.push(chunk) for chunk in pieces(ids, seed)]
    deltas.append(splitter.flush())
    total = Delta()
    for d in deltas:
        total = total + d
    return total, deltas


def test_markers_have_their_real_ids() -> None:
    qwen, oss = tokenizer("qwen3"), tokenizer("gpt_oss")
    assert len(qwen) == 151669
    assert qwen.convert_tokens_to_ids(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    ) == [
        151643,
        151644,
        151645,
        151667,
        151668,
    ]
    # The think tokens are not special: they survive skip_special_tokens (the contract's section 3).
    assert qwen.decode([151667, 151668], skip_special_tokens=True) == "<think></think>"
    assert len(oss) == 201088
    names = ["<|return|>", "<|constrain|>", "<|channel|>", "<|start|>", "<|end|>", "<|message|>", "<|call|>"]
    assert oss.convert_tokens_to_ids(names) == [200002, 200003, 200005, 200006, 200007, 200008, 200012]
    assert oss.decode([200005, 200008, 200007], skip_special_tokens=True) == ""


@pytest.mark.parametrize("seed", [None, 0, 1])
def test_qwen3_think_block_and_answer_exact(seed: int | None) -> None:
    tok = tokenizer("qwen3")
    for n, text in enumerate(PARAGRAPHS):
        reasoning, answer = text[: len(text) // 2], text[len(text) // 2 :]
        ids = [151667, *enc(tok, f"\n{reasoning}\n"), 151668, *enc(tok, f"\n\n{answer}"), 151645]
        total, deltas = stream(ReasoningSplitter(tok, "qwen3"), ids, None if seed is None else seed + n)
        assert total == Delta(reasoning, answer), n
        # The reasoning streams before the answer starts (one push may end one and start the other).
        first_answer = next(i for i, d in enumerate(deltas) if d.content)
        last_reasoning = max(i for i, d in enumerate(deltas) if d.reasoning)
        assert last_reasoning <= first_answer
        assert sum(1 for d in deltas if d.reasoning) > 1


def test_qwen3_keeps_inner_newlines_and_strips_the_template_s() -> None:
    tok = tokenizer("qwen3")
    ids = [151667, *enc(tok, "\n\n一行目\n\n二行目\n\n"), 151668, *enc(tok, "\n\n答え\n")]
    assert split_reasoning(tok, "qwen3", ids) == Delta("一行目\n\n二行目", "答え\n")


def test_qwen3_thinking_off_is_all_answer() -> None:
    tok = tokenizer("qwen3")
    text = PARAGRAPHS[0]
    assert split_reasoning(tok, "qwen3", [*enc(tok, text), 151645]) == Delta("", text)


def test_qwen3_prompt_that_opens_the_block() -> None:
    tok = tokenizer("qwen3")
    prompt = enc(tok, "<|im_start|>user\nこんにちは<|im_end|>\n<|im_start|>assistant\n<think>\n")
    assert prompt_opens_reasoning(tok, "qwen3", prompt)
    assert not prompt_opens_reasoning(
        tok, "qwen3", enc(tok, "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    )
    ids = [*enc(tok, "考え中。\n"), 151668, *enc(tok, "\n\nこんにちは。")]
    total, _ = stream(ReasoningSplitter.for_prompt(tok, "qwen3", prompt), ids, 3)
    assert total == Delta("考え中。", "こんにちは。")


@pytest.mark.parametrize("seed", [None, 0, 1])
def test_harmony_channels_exact(seed: int | None) -> None:
    tok = tokenizer("gpt_oss")
    for n, text in enumerate(PARAGRAPHS):
        reasoning, answer = text[: len(text) // 3], text[len(text) // 3 :]
        generated = (
            f"<|channel|>analysis<|message|>{reasoning}<|end|>"
            f"<|start|>assistant<|channel|>final<|message|>{answer}<|return|>"
        )
        ids = enc(tok, generated)
        assert 200005 in ids  # <|channel|> as its token, not as text
        total, _ = stream(ReasoningSplitter(tok, "harmony"), ids, None if seed is None else seed + n)
        assert total == Delta(reasoning, answer), n


def test_harmony_commentary_is_answer_and_nothing_after_return() -> None:
    tok = tokenizer("gpt_oss")
    generated = (
        "<|channel|>analysis<|message|>考える<|end|>"
        "<|start|>assistant<|channel|>commentary<|message|>調べます。<|end|>"
        "<|start|>assistant<|channel|>analysis<|message|>もう少し<|end|>"
        "<|start|>assistant<|channel|>final<|message|>答えです。<|return|>後ろ"
    )
    assert split_reasoning(tok, "harmony", enc(tok, generated)) == Delta(
        "考えるもう少し", "調べます。答えです。"
    )


def test_harmony_tool_call_header_names_commentary() -> None:
    tok = tokenizer("gpt_oss")
    generated = '<|channel|>commentary to=functions.search <|constrain|>json<|message|>{"q": "東京"}<|call|>'
    assert split_reasoning(tok, "harmony", enc(tok, generated)) == Delta("", '{"q": "東京"}')


def test_harmony_without_a_header_is_answer_text() -> None:
    tok = tokenizer("gpt_oss")
    text = PARAGRAPHS[1]
    assert split_reasoning(tok, "harmony", enc(tok, text)).content == text
    # A stream cut inside a header: no text, no markup.
    assert split_reasoning(tok, "harmony", enc(tok, "<|channel|>anal")) == Delta("", "")


@pytest.mark.parametrize(
    ("kind", "chat_format"), [("llama31", "llama3"), ("llama2", "llama2"), ("qwen3", "none")]
)
def test_formats_without_reasoning_are_the_detokeniser_s_text(kind: str, chat_format: str) -> None:
    tok = tokenizer(kind)
    for text in PARAGRAPHS[:6]:
        ids = enc(tok, text)
        detok = IncrementalDetokenizer(tok)
        expected = [detok.push(chunk) for chunk in pieces(ids, 5)] + [detok.flush()]
        splitter = ReasoningSplitter(tok, chat_format)
        got = [splitter.push(chunk) for chunk in pieces(ids, 5)] + [splitter.flush()]
        assert [d.content for d in got] == expected
        assert not any(d.reasoning for d in got)
        assert not splitter.splits


def test_a_tokenizer_without_the_markers_does_not_split() -> None:
    """A qwen3 chat format on a tokenizer that has no <think> token: all answer."""
    tok = tokenizer("llama31")
    splitter = ReasoningSplitter(tok, "qwen3")
    assert not splitter.splits
    text = "<think>考え</think>答え"
    assert split_reasoning(tok, "qwen3", enc(tok, text)) == Delta("", text)


def test_one_splitter_serves_consecutive_streams() -> None:
    tok = tokenizer("qwen3")
    splitter = ReasoningSplitter(tok, "qwen3")
    ids = [151667, *enc(tok, "理由"), 151668, *enc(tok, "答え")]
    first = splitter.push(ids) + splitter.flush()
    second = splitter.push(ids) + splitter.flush()
    assert first == second == Delta("理由", "答え")
