"""The profiler's OpenAI-API client without a server: URLs, request bytes (held to the API's own schema),
the HTTP/1.1 + server-sent-events parser at every split of the bytes, what each event says, and the
CLI's refusals (one line, exit 2; an API that is not there: exit 3)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from swallow_trt.errors import UsageError
from swallow_trt.profiler.openai_client import (
    CHAT_PATH,
    Endpoint,
    HttpSse,
    chat_body,
    error_message,
    http_request,
    parse_http_url,
    read_event,
)
from swallow_trt.profiler.run import ProfileSpec
from tests.fixtures.ports import free_port


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [("http://127.0.0.1:8000", Endpoint("http", "127.0.0.1", 8000)),
     ("http://localhost:8000/v1/", Endpoint("http", "localhost", 8000)),
     ("https://api.example.jp", Endpoint("https", "api.example.jp", 443)),
     ("http://[::1]:9000", Endpoint("http", "::1", 9000))],
)  # fmt: skip
def test_urls(url: str, endpoint: Endpoint) -> None:
    assert parse_http_url(url) == endpoint
    assert parse_http_url(endpoint.base) == endpoint


@pytest.mark.parametrize(
    "url",
    ["127.0.0.1:8000", "grpc://h:1", "http://", "http://h:99999", "http://h:1/v1/chat", "http://h:1?x=1"],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(UsageError, match="--url"):
        parse_http_url(url)


def test_spec_takes_the_api_defaults() -> None:
    spec = ProfileSpec(url="", model="", api="openai", mode="closed", levels=(1.0,))
    assert (spec.url, spec.model) == ("http://127.0.0.1:8000", "")
    spec = ProfileSpec(url="", model="", mode="closed", levels=(1.0,))
    assert (spec.url, spec.model) == ("127.0.0.1:8001", "tensorrt_llm")
    with pytest.raises(UsageError, match="but a URL") as info:
        ProfileSpec(url="http://127.0.0.1:8000", model="", mode="closed", levels=(1.0,))
    assert "add --api openai" in info.value.one_line()
    with pytest.raises(UsageError, match="neither triton nor openai"):
        ProfileSpec(url="", model="", api="kserve", mode="closed", levels=(1.0,))  # type: ignore[arg-type]


@pytest.mark.parametrize("forced", [True, False])
def test_chat_body_is_what_the_api_takes(forced: bool) -> None:
    body = chat_body("8b", "富士山について", 64, forced)
    data = json.loads(body)
    assert data["messages"] == [{"role": "user", "content": "富士山について"}]
    assert (data["max_tokens"], data["temperature"], data["stream"]) == (64, 0, True)
    assert data["stream_options"] == {"include_usage": True}
    assert ("min_tokens" in data, data.get("min_tokens"), data.get("ignore_eos")) == (
        (True, 64, True) if forced else (False, None, None)
    )
    pytest.importorskip("fastapi")
    from swallow_trt.openai_api.schema import ChatRequest, parse

    request = parse(ChatRequest, body)  # the server's own strict schema: no field it would refuse
    assert (request.min_tokens, request.ignore_eos) == ((64, True) if forced else (None, False))


def test_request_bytes() -> None:
    body = chat_body("m", "あ", 4, True)
    raw = http_request(Endpoint("http", "127.0.0.1", 8000), CHAT_PATH, body, "sk-1")
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/chat/completions HTTP/1.1"
    assert "Host: 127.0.0.1:8000" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert "Authorization: Bearer sk-1" in lines
    assert rest == body
    assert b"Authorization" not in http_request(Endpoint("http", "h", 1), CHAT_PATH, body, None)


EVENTS = [
    b'{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}',
    b'{"choices":[{"index":0,"delta":{"content":"\xe5\xaf\x8c\xe5\xa3\xab"},"finish_reason":null}],"usage":null}',
    b'{"choices":[{"index":0,"delta":{"content":"\\n\\n"},"finish_reason":null}],"usage":null}',
    b'{"choices":[{"index":0,"delta":{},"finish_reason":"length"}],"usage":null}',
    b'{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}',
    b"[DONE]",
]


def _chunked(events: list[bytes], crlf: bool = False) -> bytes:
    sep = b"\r\n" if crlf else b"\n"
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in
                    [b": a comment" + sep + sep] + [b"data: " + e + sep + sep for e in events])  # fmt: skip
    return head + body + b"0\r\n\r\n"


def _feed_split(raw: bytes, at: list[int]) -> tuple[HttpSse, list[bytes]]:
    p = HttpSse()
    out: list[bytes] = []
    for a, b in zip([0, *at], [*at, len(raw)], strict=True):
        out += p.feed(raw[a:b])
    return p, out


@pytest.mark.parametrize("crlf", [False, True])
def test_sse_over_chunked_http_at_every_split(crlf: bool) -> None:
    raw = _chunked(EVENTS, crlf)
    for i in range(1, len(raw)):  # every place a read can end, and one byte at a time
        p, events = _feed_split(raw, [i])
        assert events == EVENTS, i
        assert (p.status, p.done, p.keep_alive) == (200, True, True)
    p, events = _feed_split(raw, list(range(1, len(raw))))
    assert events == EVENTS
    assert p.done


def test_sized_error_body_and_close_delimited_streams() -> None:
    envelope = json.dumps(
        {"error": {"message": "too many requests", "type": "x", "param": None, "code": None}}
    )
    raw = (f"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: {len(envelope)}\r\n\r\n"
           + envelope).encode()  # fmt: skip
    p, events = _feed_split(raw, [20, len(raw) - 3])
    assert (events, p.status, p.done, p.keep_alive) == ([], 429, True, True)
    assert error_message(p.status, p.body) == "HTTP 429: too many requests"
    assert error_message(502, b"<html>bad gateway</html>") == "HTTP 502: <html>bad gateway</html>"
    # HTTP/1.0 and no length: the body ends with the connection; a multi-line data field is joined.
    raw = b"HTTP/1.0 200 OK\r\n\r\ndata: a\ndata: b\n\ndata: [DONE]"
    p, events = _feed_split(raw, [25])
    assert (events, p.done, p.keep_alive) == ([b"a\nb"], False, False)
    assert p.close() == [b"[DONE]"]
    assert p.done
    with pytest.raises(ValueError, match="not an HTTP"):
        HttpSse().feed(b"SSH-2.0-OpenSSH\r\n\r\n")


def test_what_each_event_says() -> None:
    said = [read_event(e) for e in EVENTS]
    assert [e.text for e in said] == [False, True, True, False, False, False]
    assert [e.done for e in said] == [False] * 5 + [True]
    assert (said[4].completion_tokens, said[4].prompt_tokens) == (3, 12)
    assert all(e.error is None for e in said)
    assert read_event(b'{"choices":[{"delta":{"reasoning_content":"x"}}]}').text
    assert read_event(b'{"choices":[{"index":0,"text":"x","finish_reason":null}]}').text
    assert read_event(b'{"choices":[{"index":0,"text":"","finish_reason":null}]}').text is False
    assert (
        read_event(b'{"error":{"message":"generation failed: gone","type":"x"}}').error
        == "generation failed: gone"
    )
    assert read_event(b'{"usage": [nope').error is not None


# --------------------------------------------------------------------------------------------------
# The CLI


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--api", "openai", "--url", "127.0.0.1:8000"], "is not an http(s) URL"),
     (["--api", "nope"], "neither triton nor openai"),
     (["--url", "http://127.0.0.1:8000"], "add --api openai"),
     (["--api", "openai"], "--api openai needs the served repository")],
)  # fmt: skip
def test_cli_refusals(cli: Callable[..., Any], tmp_path: Path, args: list[str], needle: str) -> None:
    result = cli("profile", *args, "--concurrency", "1", "--out", str(tmp_path))
    assert result.exit_code == 2, result.stdout
    assert result.stderr.startswith("error: ")
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_api_not_there_exits_3(cli: Callable[..., Any], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "chat").mkdir(parents=True)
    (repo / "chat" / "config.pbtxt").write_text(
        'name: "chat"\nparameters { key: "chat_format" value { string_value: "llama3" } }\n', encoding="utf-8"
    )
    port = free_port()
    result = cli("profile", "--api", "openai", "--url", f"http://127.0.0.1:{port}", "--repo", str(repo),
                 "--concurrency", "1", "--out", str(tmp_path / "out"))  # fmt: skip
    assert result.exit_code == 3, result.stdout
    assert result.stderr.startswith(f"error: cannot reach the OpenAI API at http://127.0.0.1:{port}")
    assert "swallow-trt openai" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
