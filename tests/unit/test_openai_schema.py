"""Request parsing of the OpenAI-compatible API: every bad body is a 400 naming the field (OpenAI's
envelope), unsupported values are refused by name, and the ``openai`` client's own bodies parse."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("fastapi")

from swallow_trt.openai_api.errors import ApiError
from swallow_trt.openai_api.schema import ChatRequest, CompletionRequest, parse

MSG = [{"role": "user", "content": "こんにちは"}]


def body(**kw: Any) -> bytes:
    return json.dumps({"model": "m", "messages": MSG, **kw}, ensure_ascii=False).encode()


def refused(raw: bytes, kind: type[Any] = ChatRequest) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse(kind, raw)
    assert info.value.status == 400
    envelope = info.value.envelope()["error"]
    assert set(envelope) == {"message", "type", "param", "code"}
    return info.value


def test_good_bodies_parse() -> None:
    r = parse(ChatRequest, body(max_tokens=5, temperature=0, stop="。", stream=True,
                                stream_options={"include_usage": True}, n=1, user="u", logprobs=False))  # fmt: skip
    assert (r.max_tokens, r.stops(), r.stream_options and r.stream_options.include_usage) == (5, ["。"], True)
    parts = parse(
        ChatRequest,
        body(
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
            ]
        ),
    )
    assert parts.messages[0].text() == "ab"
    c = parse(CompletionRequest, json.dumps({"model": "m", "prompt": ["富士山"], "max_tokens": 3}).encode())
    assert c.prompt_text() == "富士山"
    assert parse(ChatRequest, body(temperature=1)).temperature == 1.0  # an int where a float goes


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (body(frobnicate=1), "frobnicate"),
        (body(n=2), "n"),
        (body(n=0), "n"),
        (body(logprobs=True), "logprobs"),
        (body(top_logprobs=2), "top_logprobs"),
        (body(tools=[{"type": "function"}]), "tools"),
        (body(logit_bias={"1": 5}), "logit_bias"),
        (body(stream_options={"include_usage": True}), "stream_options"),
        (body(max_tokens="12"), "max_tokens"),
        (body(max_tokens=0), "max_tokens"),
        (body(max_tokens=-3), "max_tokens"),
        (body(max_tokens=10**30), "max_tokens"),
        (body(seed=-1), "seed"),
        (body(temperature=3), "temperature"),
        (body(top_p=0), "top_p"),
        (body(top_p=True), "top_p"),
        (body(stop=""), "stop"),
        (body(stop=["a"] * 17), "stop"),
        (body(messages=[]), "messages"),
        (body(messages=[{"role": "tool", "content": "x"}]), "messages.0.role"),
        (body(messages=[{"role": "user"}]), "messages.0.content"),
        (body(messages=[{"role": "user", "content": "x", "extra": 1}]), "messages.0.extra"),
        (json.dumps({"messages": MSG}).encode(), "model"),
    ],
)
def test_bad_fields_are_named(raw: bytes, param: str) -> None:
    assert refused(raw).param == param


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[1]",
        b"null",
        b'"s"',
        b"\xff\xfe{}",
        b'{"model": "m", "messages": [' * 5000,
        b"1e999",
    ],
)
def test_malformed_bodies(raw: bytes) -> None:
    error = refused(raw)
    assert error.code == "invalid_json" or error.param is not None


def test_completion_refusals() -> None:
    assert (
        refused(json.dumps({"model": "m", "prompt": "x", "echo": True}).encode(), CompletionRequest).param
        == "echo"
    )
    assert (
        refused(json.dumps({"model": "m", "prompt": ["a", "b"]}).encode(), CompletionRequest).param
        == "prompt"
    )
    assert (
        refused(json.dumps({"model": "m", "prompt": "x", "best_of": 3}).encode(), CompletionRequest).param
        == "best_of"
    )
