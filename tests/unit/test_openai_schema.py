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


def test_min_tokens_and_ignore_eos_extensions(tmp_path: Any) -> None:
    """vLLM's extensions, mapped as the chat model maps them: ``min_tokens`` onto tensorrt_llm's own input,
    ``ignore_eos`` onto ``end_id`` -1 with the family's stop words dropped (the request's own stay)."""
    pytest.importorskip("transformers")
    from swallow_trt.openai_api.deployment import Deployment
    from swallow_trt.openai_api.service import TextService
    from tests.fixtures.tiny import make_tokenizer

    assert parse(ChatRequest, body()).ignore_eos is False
    assert refused(body(ignore_eos="yes")).param == "ignore_eos"
    assert refused(body(min_tokens=-1)).param == "min_tokens"
    tok = make_tokenizer("llama31")
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    deployment = Deployment(
        repo=tmp_path, model_id="m", aliases=(), tokenizer_dir=tmp_path, chat_format="llama3", system_prompt=None,
        end_id=eot, stop_words=("<|eot_id|>",), max_input_len=256, default_max_tokens=64, max_seq_len=512,
        max_batch_size=8, guided=False,
    )  # fmt: skip
    service = TextService(deployment, engine=None, tokenizer=tok)  # type: ignore[arg-type]  # prepare() never reaches it

    def prepared(**kw: Any) -> tuple[dict[str, Any], list[str]]:
        p = service.prepare(parse(ChatRequest, body(max_tokens=16, stop="。", **kw)))
        return {name: value.reshape(-1).tolist() for name, value in p.inputs}, p.stops

    inputs, stops = prepared(min_tokens=16, ignore_eos=True)
    assert (inputs["end_id"], inputs["min_tokens"], inputs["request_output_len"]) == ([-1], [16], [16])
    assert stops == ["。"]
    # stop_words_list holds the ids of the request's stop string only: [ids..., offsets...] padded.
    assert eot not in inputs["stop_words_list"]
    inputs, stops = prepared()
    assert (inputs["end_id"], inputs["min_tokens"]) == ([eot], [0])
    assert stops == ["<|eot_id|>", "。"]
    assert eot in inputs["stop_words_list"]
    with pytest.raises(ApiError) as info:
        prepared(min_tokens=17)
    assert info.value.param == "min_tokens"
