"""The OpenAI API's text path takes the engine's responses in steps (all that arrived since it last
looked, one SSE event per step): for every way of grouping the same responses into steps, the text of
each field, its order, the token count, the finish reason and where a stop string ends the answer are
those of one response per step, and no stop string leaks into a piece.

The responses come from a scripted generation, not from Triton: how Triton's responses group is decided
by timing, so only a script reaches every grouping. The tokenizers, detokeniser, stop filter and
reasoning splitter are the real ones; the grouping against the real server is in
tests/integration/test_openai_engine.py."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import AsyncIterator, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("tokenizers")

from swallow_trt.openai_api.deployment import Deployment
from swallow_trt.openai_api.schema import ChatRequest, parse
from swallow_trt.openai_api.service import Outcome, TextService
from tests.fixtures.tiny import japanese_paragraphs, make_tokenizer


class ScriptedGeneration:
    """The engine's responses (one list of ids each), handed out in steps of the given sizes."""

    def __init__(self, responses: list[list[int]], steps: list[int]) -> None:
        assert sum(steps) == len(responses)
        self.responses = responses
        self.steps = steps
        self.stopped_after: int | None = None  # responses handed out when stop() came
        self.handed = 0

    async def tokens(self) -> AsyncIterator[list[list[int]]]:
        for n in self.steps:
            batch = self.responses[self.handed : self.handed + n]
            self.handed += n
            yield batch

    def stop(self) -> None:
        if self.stopped_after is None:
            self.stopped_after = self.handed


@cache
def service(fmt: str) -> TextService:
    kind = {"llama3": "llama31", "qwen3": "qwen3"}[fmt]
    tok = make_tokenizer(kind)
    deployment = Deployment(
        repo=Path("."), model_id="m", aliases=(), tokenizer_dir=Path("."), chat_format=fmt, system_prompt=None,
        end_id=None, stop_words=(), max_input_len=4096, default_max_tokens=256, max_seq_len=8192,
        max_batch_size=8, guided=False,
    )  # fmt: skip
    return TextService(deployment, engine=None, tokenizer=tok)  # type: ignore[arg-type]  # pieces() never reaches it


def run(fmt: str, responses: list[list[int]], steps: list[int], **request: Any) -> dict[str, Any]:
    svc = service(fmt)
    body = {"model": "m", "messages": [{"role": "user", "content": "日本で一番高い山は？"}], **request}
    prepared = svc.prepare(parse(ChatRequest, json.dumps(body, ensure_ascii=False).encode()))
    generation = ScriptedGeneration(responses, steps)
    outcome = Outcome()

    async def collect() -> list[list[tuple[str, str]]]:
        return [piece async for piece in svc.pieces(prepared, generation, outcome)]  # type: ignore[arg-type]

    got = asyncio.run(collect())
    timeline: list[list[str]] = []  # (field, text) runs in the order a client shows them
    for piece in got:
        assert piece, "an empty piece is an SSE event with nothing in it"
        names = [name for name, _ in piece]
        assert names in (["content"], ["reasoning_content", "reasoning"],
                         ["reasoning_content", "reasoning", "content"]), names  # fmt: skip
        fields = dict(piece)
        assert fields.get("reasoning_content") == fields.get("reasoning")
        for name in ("reasoning", "content"):
            if fields.get(name):
                if timeline and timeline[-1][0] == name:
                    timeline[-1][1] += fields[name]
                else:
                    timeline.append([name, fields[name]])
    return {
        "timeline": timeline,
        "pieces": got,
        "tokens": outcome.completion_tokens,
        "reason": outcome.finish_reason,
        "stopped_after": generation.stopped_after,
    }


def groupings(n: int, limit: int, seed: int) -> Iterator[list[int]]:
    """Every way to cut n responses into steps when there are few, else ``limit`` random ones."""
    if n <= 11:
        for cuts in itertools.product([False, True], repeat=n - 1):
            steps, size = [], 1
            for cut in cuts:
                if cut:
                    steps.append(size)
                    size = 1
                else:
                    size += 1
            yield [*steps, size]
        return
    rng = random.Random(seed)
    for _ in range(limit):
        steps, left = [], n
        while left:
            steps.append(min(left, rng.randint(1, 6)))
            left -= steps[-1]
        yield steps


def responses_of(ids: list[int], seed: int) -> list[list[int]]:
    """Ids as the engine sends them: mostly one a response, now and then a few."""
    rng = random.Random(seed)
    out, at = [], 0
    while at < len(ids):
        n = 1 if rng.random() < 0.7 else rng.randint(2, 3)
        out.append(ids[at : at + n])
        at += n
    return out


def text_ids(kind: str, text: str) -> list[int]:
    ids: list[int] = make_tokenizer(kind).encode(text, add_special_tokens=False)
    return ids


@pytest.mark.parametrize("paragraph", [0, 1, 2])
def test_every_grouping_gives_the_same_answer(paragraph: int) -> None:
    ids = text_ids("llama31", japanese_paragraphs()[paragraph])[:14]
    responses = responses_of(ids, paragraph)
    one_each = run("llama3", responses, [1] * len(responses), max_tokens=len(ids))
    assert one_each["reason"] == "length"
    assert one_each["tokens"] == len(ids)
    assert "".join(t for _, t in one_each["timeline"]) == make_tokenizer("llama31").decode(ids)
    for steps in groupings(len(responses), 300, paragraph):
        got = run("llama3", responses, steps, max_tokens=len(ids))
        assert got["timeline"] == one_each["timeline"], steps
        assert (got["tokens"], got["reason"]) == (len(ids), "length"), steps
        assert len(got["pieces"]) <= len(steps) + 1  # one event a step (and the detokeniser's tail)


@pytest.mark.parametrize("paragraph", [3, 4, 5])
def test_stop_string_at_every_grouping(paragraph: int) -> None:
    """A stop string that starts inside one token's text and ends inside a later one's: the answer
    ends before it, the count stops at the response that completed it, and the engine is told once."""
    tok = make_tokenizer("llama31")
    ids = text_ids("llama31", japanese_paragraphs()[paragraph])[:24]
    texts = [tok.decode(ids[:i]) for i in range(len(ids) + 1)]
    whole = texts[-1]
    cut = next(len(t) for t in texts[6:] if 6 <= len(t) <= len(whole) - 4)
    stop = whole[cut - 1 : cut + 2]
    want = whole[: whole.find(stop)]
    responses = responses_of(ids, paragraph)
    one_each = run("llama3", responses, [1] * len(responses), max_tokens=64, stop=[stop])
    assert "".join(t for _, t in one_each["timeline"]) == want
    assert one_each["reason"] == "stop"
    stopped_at = one_each["stopped_after"]
    assert stopped_at is not None
    assert one_each["tokens"] == sum(len(r) for r in responses[:stopped_at])
    for steps in groupings(len(responses), 400, paragraph):
        got = run("llama3", responses, steps, max_tokens=64, stop=[stop])
        assert got["timeline"] == one_each["timeline"], steps
        assert (got["tokens"], got["reason"]) == (one_each["tokens"], "stop"), steps
        assert not any(stop in text for piece in got["pieces"] for _, text in piece), steps
        # The engine is stopped in the step that held the response completing the stop string.
        ends = list(itertools.accumulate(steps))
        assert got["stopped_after"] == next(e for e in ends if e >= stopped_at), steps


def test_reasoning_then_answer_keeps_order_at_every_grouping() -> None:
    """Qwen3: the thinking goes to reasoning, the answer to content, and a step that holds the end of
    one and the start of the other gives them in that order (one event, reasoning first)."""
    kind = "qwen3"
    tok = make_tokenizer(kind)
    think, answer = japanese_paragraphs()[6][:40], japanese_paragraphs()[7][:40]
    ids = [tok.convert_tokens_to_ids("<think>"), *text_ids(kind, think), tok.convert_tokens_to_ids("</think>"),
           *text_ids(kind, "\n\n" + answer)]  # fmt: skip
    responses = [[i] for i in ids]
    one_each = run("qwen3", responses, [1] * len(responses), max_tokens=len(ids))
    assert [name for name, _ in one_each["timeline"]] == ["reasoning", "content"]
    assert one_each["timeline"][0][1].strip() == think
    assert one_each["timeline"][1][1].strip() == answer
    for steps in groupings(len(responses), 300, 7):
        got = run("qwen3", responses, steps, max_tokens=len(ids))
        assert got["timeline"] == one_each["timeline"], steps
        assert got["tokens"] == len(ids), steps
