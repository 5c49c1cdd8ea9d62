"""The OpenAI-compatible API (``swallow-trt openai`` started as ``serve`` will start it, a child process)
in front of the real Triton server, driven by the real ``openai`` client.

Reference repository (tiny random Llama-3.1 model on the reference backend): chat and completions,
streaming and not, give the same Japanese text at temperature 0 and with a fixed seed; usage is exact;
stop strings that cross token boundaries never leak; max_tokens ends with ``length``; every error case
has its status, envelope and parameter; a malformed-body battery gets only 4xx and the server still
answers; 64 streams of which a third disconnect leave the others exact and the reference backend logs
the disconnected ones as stopped. Zero-delay schedule repository: 256 concurrent streams complete, and
with Triton stopped the API answers 503 (``/health`` too) and recovers once Triton is back.
No wall-clock assertions: counts and order only.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest

pytest.importorskip("tritonclient.grpc")
pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from swallow_trt.openai_api.server import ApiProcess, start_api_process  # noqa: E402
from swallow_trt.text.chat import Message, adds_bos, render  # noqa: E402
from swallow_trt.triton_repo.server import TritonServer  # noqa: E402
from tests.fixtures.ports import free_port  # noqa: E402
from tests.fixtures.triton import ReferenceServed, StartTriton, serving  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.requires_triton]
KEY = "sk-test-0123456789"
MODEL = "tokyotech-llm/Llama-3.1-Swallow-8B-Instruct-v0.3"  # registry alias: 8b
PROMPT = "日本で一番高い山は何ですか？"


def raw(
    url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request with the standard library (bodies the openai client would never send)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def envelope(body: bytes) -> dict[str, Any]:
    data = json.loads(body)
    assert set(data) == {"error"}, data
    assert set(data["error"]) == {"message", "type", "param", "code"}, data
    error: dict[str, Any] = data["error"]
    return error


class Deployment(NamedTuple):
    """A Triton server, the OpenAI API process in front of it, and the repository both serve."""

    server: TritonServer
    api: ApiProcess
    repo: Path


@contextmanager
def api_before(server: TritonServer, repo: Path, log_path: Path, **options: Any) -> Iterator[ApiProcess]:
    """The API process in front of ``server`` for the length of a ``with`` block (``options``:
    start_api_process's); stopped on leaving, with nothing of it left."""
    api = start_api_process(server.grpc_url, repo, port=free_port(), log_path=log_path, **options)
    try:
        yield api
    finally:
        api.stop()
    assert api.proc.poll() is not None


@pytest.fixture(scope="module")
def reference(
    reference_triton: ReferenceServed, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """The API, with a key and a 1 MiB body limit, in front of the shared reference server
    (tests/conftest.py: a tiny random Llama-3.1 on the reference backend, batch 64, 512 tokens by default)."""
    server, repo, _ = reference_triton
    log = tmp_path_factory.mktemp("oai-ref") / "api.log"
    with api_before(server, repo, log, api_key=KEY, model_name=MODEL, max_body_bytes=1 << 20) as api:
        yield Deployment(server, api, repo)


@pytest.fixture(scope="module")
def client(reference: Deployment) -> Any:
    return openai.OpenAI(base_url=reference.api.url + "/v1", api_key=KEY, max_retries=0, timeout=300)


def prompt_ids(repo: Path, text: str) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(repo / "chat" / "tokenizer")
    ids: list[int] = tok.encode(render("llama3", [Message("user", text)], default_system=None),
                                add_special_tokens=adds_bos("llama3"))  # fmt: skip
    return ids


def chat(client: Any, **kw: Any) -> Any:
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPT}], **kw)


def streamed(client: Any, **kw: Any) -> tuple[list[Any], str]:
    chunks = list(chat(client, stream=True, stream_options={"include_usage": True}, **kw))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return chunks, text


# ------------------------------------------------------------------------------------------------ basics


def test_models_list_and_alias(client: Any) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == [MODEL, "8b"]
    answer = client.chat.completions.create(
        model="8b", messages=[{"role": "user", "content": PROMPT}], max_tokens=4
    )
    assert answer.model == "8b"


@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 0.9, "seed": 1234, "top_p": 0.95}])
def test_streamed_equals_whole_with_exact_usage(
    client: Any, reference: Deployment, sampling: dict[str, Any]
) -> None:
    whole = chat(client, max_tokens=24, **sampling)
    chunks, text = streamed(client, max_tokens=24, **sampling)
    assert text == whole.choices[0].message.content
    assert text
    assert whole.choices[0].message.role == "assistant"
    # First chunk: the role; then content; a chunk with the finish reason; then the usage chunk.
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == []
    n_prompt = len(prompt_ids(reference.repo, PROMPT))
    assert whole.usage.prompt_tokens == n_prompt == chunks[-1].usage.prompt_tokens
    assert whole.usage.completion_tokens == chunks[-1].usage.completion_tokens
    assert whole.usage.total_tokens == n_prompt + whole.usage.completion_tokens
    assert 1 <= whole.usage.completion_tokens <= 24


def test_seed_changes_the_sample(client: Any) -> None:
    texts = {
        chat(client, max_tokens=16, temperature=2.0, seed=s).choices[0].message.content for s in range(1, 6)
    }
    again = chat(client, max_tokens=16, temperature=2.0, seed=1).choices[0].message.content
    assert len(texts) > 1
    assert again in texts


def test_max_tokens_gives_length(client: Any) -> None:
    whole = chat(client, max_tokens=7, temperature=0, extra_body={"min_tokens": 7})
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 7
    also = chat(client, max_completion_tokens=5, temperature=0, extra_body={"min_tokens": 5})
    assert also.usage.completion_tokens == 5


def test_completions_streamed_equals_whole(client: Any) -> None:
    whole = client.completions.create(model=MODEL, prompt="富士山は", max_tokens=20, temperature=0)
    chunks = list(
        client.completions.create(model=MODEL, prompt="富士山は", max_tokens=20, temperature=0, stream=True)
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert whole.object == "text_completion"
    assert whole.usage.completion_tokens >= 1


def test_stop_across_token_boundaries(client: Any, reference: Deployment) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(reference.repo / "chat" / "tokenizer")
    whole = chat(client, max_tokens=32, temperature=0, extra_body={"min_tokens": 32})
    text = whole.choices[0].message.content
    # A stop string that starts inside one token's text and ends inside a later one's.
    pieces = [tok.decode([t]) for t in tok.encode(text, add_special_tokens=False)]
    starts = [sum(len(p) for p in pieces[:i]) for i in range(len(pieces) + 1)]
    cut = next(s for s in starts[2:] if 2 <= s <= len(text) - 2)
    stop = text[cut - 1 : cut + 2]
    want = text[: text.find(stop)]
    got = chat(client, max_tokens=32, temperature=0, stop=[stop], extra_body={"min_tokens": 32})
    assert got.choices[0].message.content == want
    assert got.choices[0].finish_reason == "stop"
    chunks, streamed_text = streamed(
        client, max_tokens=32, temperature=0, stop=stop, extra_body={"min_tokens": 32}
    )
    assert streamed_text == want
    assert not any(stop in (c.choices[0].delta.content or "") for c in chunks if c.choices)


def test_health_version_metrics(reference: Deployment) -> None:
    url = reference.api.url
    assert raw(url, "GET", "/health")[0] == 200
    status, _, body = raw(url, "GET", "/version")
    assert status == 200
    assert json.loads(body)["model"] == MODEL
    status, _, body = raw(url, "GET", "/metrics")
    text = body.decode()
    for name in ("swallow_api_requests_total", "swallow_api_in_flight", "swallow_api_queued",
                 "swallow_api_disconnects_total", "swallow_api_prompt_tokens_total",
                 "swallow_api_completion_tokens_total", "swallow_api_time_to_first_token_seconds_bucket",
                 "swallow_api_time_per_output_token_seconds_bucket", "process_cpu_seconds_total"):  # fmt: skip
        assert name in text, name
    assert raw(url, "GET", "/openapi.json")[0] == 200
    assert raw(url, "GET", "/docs")[0] == 200


# ------------------------------------------------------------------------------------------------ errors

AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


def post(
    url: str, body: Any, path: str = "/v1/chat/completions", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    return raw(url, "POST", path, data, AUTH if headers is None else headers)


def good(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 4, **extra}


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (good(frobnicate=1), 400, "frobnicate"),
        (good(n=2), 400, "n"),
        (good(logprobs=True), 400, "logprobs"),
        (good(tools=[{"type": "function", "function": {"name": "f"}}]), 400, "tools"),
        (good(stream_options={"include_usage": True}), 400, "stream_options"),
        (good(temperature=-1), 400, "temperature"),
        (good(max_tokens=0), 400, "max_tokens"),
        (good(max_tokens=100000), 400, "max_tokens"),
        (good(model="nope"), 404, "model"),
        (good(messages=[{"role": "user", "content": "山" * 2000}]), 400, "messages"),
        (good(messages=[{"role": "wizard", "content": "x"}]), 400, "messages.0.role"),
        (good(messages=[]), 400, "messages"),
        (good(stop=""), 400, "stop"),
    ],
)
def test_error_cases(reference: Deployment, body: dict[str, Any], status: int, param: str) -> None:
    got, _, data = post(reference.api.url, body)
    error = envelope(data)
    assert (got, error["param"]) == (status, param), error
    if param == "messages" and "山" in json.dumps(body, ensure_ascii=False):
        # Both numbers: the engine's limit and the prompt's length.
        assert "256 tokens" in error["message"]
        assert "your prompt is" in error["message"]


def test_auth_and_paths(reference: Deployment) -> None:
    url = reference.api.url
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        status, _, data = post(url, good(), headers={**headers, "Content-Type": "application/json"})
        assert status == 401
        assert envelope(data)["code"] == "invalid_api_key"
    status, _, data = raw(url, "GET", "/v1/models")
    assert status == 401
    status, _, data = raw(url, "GET", "/v1/nothing-here", headers=AUTH)
    assert status == 404
    assert envelope(data)["type"] == "not_found_error"
    assert raw(url, "GET", "/health")[0] == 200  # not a /v1 route: no key


def test_malformed_battery_then_normal(reference: Deployment, client: Any) -> None:
    url = reference.api.url
    battery: list[bytes] = [
        b"not json",
        b"[1, 2, 3]",
        b"",
        b'{"model": 5, "messages": "hi"}',
        json.dumps(good(max_tokens="12")).encode(),
        json.dumps(good(max_tokens=10**40)).encode(),
        json.dumps(good(temperature=1e308 * 10)).encode().replace(b"Infinity", b"1e999"),
        json.dumps(good(max_tokens=-5)).encode(),
        json.dumps(good(top_p=True)).encode(),
        b'{"model": "x", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
        json.dumps(good(messages=[])).encode(),
        json.dumps(good(messages=[{"role": "tool", "content": "x"}])).encode(),
        json.dumps(good(messages=[{"role": "assistant", "content": "x"}])).encode(),
        json.dumps(
            good(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}])
        ).encode(),
        b'{"a":' * 100000 + b"1" + b"}" * 100000,
        b"x" * (2 << 20),
    ]
    statuses = [post(url, body)[0] for body in battery]
    assert all(400 <= s < 500 for s in statuses), statuses
    assert statuses[-1] == 413
    assert envelope(post(url, b"x" * (2 << 20))[2])["code"] == "request_too_large"
    assert chat(client, max_tokens=4).choices[0].message.content is not None


def test_admission_limit_429(reference: Deployment) -> None:
    server, _, repo = reference
    small = start_api_process(server.grpc_url, repo, port=free_port(), model_name=MODEL, max_in_flight=1)
    try:
        slow = openai.OpenAI(base_url=small.url + "/v1", api_key="x", max_retries=0, timeout=300)
        stream = slow.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPT}],
                                              max_tokens=200, stream=True, extra_body={"min_tokens": 200})  # fmt: skip
        next(iter(stream))  # admitted and streaming
        status, headers, data = post(small.url, good(), headers={"Content-Type": "application/json"})
        assert status == 429
        assert {k.lower(): v for k, v in headers.items()}.get("retry-after") == "1"
        assert envelope(data)["type"] == "rate_limit_error"
        stream.close()
    finally:
        small.stop()


# ------------------------------------------------------------------------------------------------ load


def _stopped_lines(server: TritonServer, offset: int) -> list[str]:
    new = server.log_path.read_text(errors="replace")[offset:]
    return [line for line in new.splitlines() if "stopped after" in line and "of 300 tokens" in line]


def test_disconnects_leave_the_others_exact(reference: Deployment) -> None:
    server, api, _ = reference
    want = chat(
        openai.OpenAI(base_url=api.url + "/v1", api_key=KEY, max_retries=0), max_tokens=16, temperature=0
    )
    want_text = want.choices[0].message.content
    offset = len(server.log_path.read_text(errors="replace"))
    quitters = 21

    async def main() -> list[Any]:
        aclient = openai.AsyncOpenAI(base_url=api.url + "/v1", api_key=KEY, max_retries=0, timeout=600)

        async def quit_early() -> str:
            stream = await aclient.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": PROMPT}], max_tokens=300, stream=True,
                extra_body={"min_tokens": 300},
            )  # fmt: skip
            seen = 0
            async for _ in stream:
                seen += 1
                if seen == 3:
                    break
            await stream.close()
            return "quit"

        async def stay() -> str:
            chunks = []
            stream = await aclient.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": PROMPT}],
                max_tokens=16,
                temperature=0,
                stream=True,
            )
            async for c in stream:
                chunks.append(c.choices[0].delta.content or "" if c.choices else "")
            return "".join(chunks)

        jobs = [quit_early() for _ in range(quitters)] + [stay() for _ in range(64 - quitters)]
        return await asyncio.gather(*jobs, return_exceptions=True)

    results = asyncio.run(main())
    assert results[:quitters] == ["quit"] * quitters
    assert results[quitters:] == [want_text] * (64 - quitters)
    deadline = time.monotonic() + 120  # a bound against hangs only; the assertion is on the count
    while len(_stopped_lines(server, offset)) < quitters and time.monotonic() < deadline:
        time.sleep(0.5)
    stopped = _stopped_lines(server, offset)
    assert len(stopped) == quitters, stopped
    assert all(int(line.split("stopped after ")[1].split(" ")[0]) < 300 for line in stopped)
    metrics = raw(api.url, "GET", "/metrics")[2].decode()
    assert f"swallow_api_disconnects_total {float(quitters)}" in metrics
    assert "swallow_api_in_flight 0.0" in metrics


@pytest.fixture(scope="module")
def schedule(tmp_path_factory: pytest.TempPathFactory, triton_install: Any) -> Iterator[Deployment]:
    """The zero-delay schedule model with room for 256 streams, and the API before it; the module's own
    (test_triton_down_503_then_recovers, its last user, stops this server)."""
    from tests.fixtures.repos import SCHEDULE_ZERO_DELAY
    from tests.fixtures.schedule_repo import schedule_repo

    root = tmp_path_factory.mktemp("oai-sched")
    repo = schedule_repo(root, SCHEDULE_ZERO_DELAY, max_batch_size=256)
    with serving(repo, root / "server.log") as server, api_before(server, repo, root / "api.log") as api:
        yield Deployment(server, api, repo)


def test_256_concurrent_streams(schedule: Deployment) -> None:
    _, api, repo = schedule

    async def main() -> list[Any]:
        aclient = openai.AsyncOpenAI(base_url=api.url + "/v1", api_key="x", max_retries=0, timeout=600)

        async def one(i: int) -> int:
            stream = await aclient.chat.completions.create(
                model=repo.name, messages=[{"role": "user", "content": f"{i}: {PROMPT}"}], max_tokens=8,
                stream=True, stream_options={"include_usage": True},
            )  # fmt: skip
            usage = None
            async for c in stream:
                usage = c.usage or usage
            assert usage is not None
            return int(usage.completion_tokens)

        return await asyncio.gather(*(one(i) for i in range(256)), return_exceptions=True)

    results = asyncio.run(main())
    assert results == [8] * 256, [r for r in results if r != 8][:3]


def test_triton_down_503_then_recovers(schedule: Deployment, start_triton: StartTriton) -> None:
    server, api, repo = schedule
    request = {"model": repo.name, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 4}
    headers = {"Content-Type": "application/json"}
    assert post(api.url, request, headers=headers)[0] == 200
    ports = (server.http_port, server.grpc_port, server.metrics_port)
    server.stop()
    status, _, data = post(api.url, request, headers=headers)
    assert status == 503
    assert envelope(data)["type"] == "service_unavailable"
    assert raw(api.url, "GET", "/health")[0] == 503
    start_triton(repo, http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2], log_name="server2.log")
    deadline = time.monotonic() + 60  # gRPC reconnects within its 1 s back-off; bound against hangs
    while raw(api.url, "GET", "/health")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert raw(api.url, "GET", "/health")[0] == 200
    assert post(api.url, request, headers=headers)[0] == 200
