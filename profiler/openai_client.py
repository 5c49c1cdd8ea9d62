"""The profiler's client for an OpenAI-compatible API (``swallow-trt profile --api openai``): streaming chat
completions over HTTP/1.1 and server-sent events, timed with the same clock as the gRPC routes
(:mod:`swallow_trt.profiler.loadgen`), into the same records (:mod:`swallow_trt.profiler.records`).

The client is the standard library's asyncio (uvloop where installed) with a small HTTP/1.1 response
parser of its own (:class:`HttpSse`: status line, headers, chunked or sized body, SSE ``data:`` fields),
so a response's arrival is stamped in ``data_received`` with no HTTP library between the socket and the
clock. Connections are kept alive and reused, as AIPerf's and vLLM's benchmark clients do.

What is recorded for a request, by the definitions of :mod:`swallow_trt.profiler.run`:

- a token-carrying response is an SSE event whose choice has non-empty ``delta.content`` (or
  ``reasoning_content``, or ``text`` for a completion): the first one is the TTFT, the last one the
  end of the E2E latency. A token whose text is still incomplete (half of a character) carries no
  text, so on this route the first chunk can hold more than one token: the same holds for every
  OpenAI-API client;
- output and prompt tokens are the server's own ``usage`` (``stream_options.include_usage``), never a
  re-tokenisation; the API sends no per-chunk counts, so ``chunk_tokens`` stays empty;
- the final response is ``data: [DONE]``; a stream without it, or without usage, is a failed request.

The output length is forced with ``min_tokens`` = ``max_tokens`` and ``ignore_eos`` (extensions that
vLLM and ``swallow-trt openai`` accept) when the server's ``/openapi.json`` lists them; OpenAI itself
refuses unknown fields, so they are sent only then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

from swallow_trt.errors import EnvironmentProblem, UsageError
from swallow_trt.profiler.records import Job, Rec, WorkerResult

CHAT_PATH = "/v1/chat/completions"
FORCING_FIELDS = ("min_tokens", "ignore_eos")
TEXT_FIELDS = (b'"content"', b'"reasoning_content"', b'"text"')


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int

    @property
    def base(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_http_url(url: str, flag: str = "--url") -> Endpoint:
    """``http(s)://HOST[:PORT]`` (a trailing ``/`` or ``/v1`` is accepted: the API's base URL)."""
    hint = f"e.g. {flag} http://127.0.0.1:8000 (the OpenAI API of `swallow-trt serve`)"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UsageError(f"{flag} {url!r} is not an http(s) URL", hint) from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path.rstrip("/") not in ("", "/v1")
        or parts.query
        or parts.fragment
        or any(c.isspace() for c in url)
    ):
        raise UsageError(f"{flag} {url!r} is not an http(s) URL of the API's root", hint)
    return Endpoint(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80))


# --------------------------------------------------------------------------------------------------
# Requests


def chat_body(model: str, prompt: str, output_tokens: int, forced: bool) -> bytes:
    """A streaming chat completion of one user message; greedy (``temperature`` 0), as the gRPC routes
    are by default; usage in the last chunk."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": output_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if forced:
        body |= {"min_tokens": output_tokens, "ignore_eos": True}
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def http_request(endpoint: Endpoint, path: str, body: bytes, api_key: str | None) -> bytes:
    """The bytes of one keep-alive POST."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {endpoint.host}:{endpoint.port}\r\n"
        "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
        f"Content-Length: {len(body)}\r\n"
    )
    if api_key:
        head += f"Authorization: Bearer {api_key}\r\n"
    return head.encode("latin-1") + b"\r\n" + body


# --------------------------------------------------------------------------------------------------
# Responses


class HttpSse:
    """An incremental parser of one HTTP/1.1 response whose body is server-sent events: :meth:`feed` takes
    bytes as they arrive and returns the ``data`` of each event they complete. ``status``, ``keep_alive``
    and ``done`` (the body ended) describe the response; a non-2xx body is kept whole in ``body``."""

    def __init__(self) -> None:
        self.status = 0
        self.keep_alive = True
        self.done = False
        self.body = b""
        self._head = True
        self._buf = b""
        self._chunked = False
        self._left: int | None = None  # sized body: bytes still to come; chunked: of the current chunk
        self._state = "size"  # chunked: size -> data -> crlf -> size ... -> trailer
        self._events = b""

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        if self._head and not self._parse_head():
            return out
        if self._chunked:
            self._chunks(out)
        elif self._left is not None:
            take = self._buf[: self._left]
            self._buf = self._buf[len(take) :]
            self._left -= len(take)
            self._payload(take, out)
            if self._left == 0:
                self._end(out)
        else:  # until the connection closes (close() ends it)
            self._payload(self._buf, out)
            self._buf = b""
        return out

    def close(self) -> list[bytes]:
        """The connection closed: a body delimited by the close ends here."""
        out: list[bytes] = []
        if not self._head and not self._chunked and self._left is None and not self.done:
            self._end(out)
        return out

    def _parse_head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > 65536:
                raise ValueError("response head over 64 KiB")
            return False
        lines = self._buf[:end].decode("latin-1").split("\r\n")
        self._buf = self._buf[end + 4 :]
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
            raise ValueError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
        self.status = int(rest[:3])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        self.keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if not self._chunked and "content-length" in headers:
            self._left = int(headers["content-length"])
        elif not self._chunked:
            self.keep_alive = False  # the body ends with the connection
        self._head = False
        if self._left == 0:
            self._end([])
        return True

    def _chunks(self, out: list[bytes]) -> None:
        buf = self._buf
        while not self.done:
            state = self._state
            if state == "data":
                take = buf[: self._left]
                if not take:
                    break
                buf = buf[len(take) :]
                self._payload(take, out)
                self._left = (self._left or 0) - len(take)
                if self._left == 0:
                    self._state = "crlf"
            elif state == "crlf":
                if len(buf) < 2:
                    break
                buf = buf[2:]
                self._state = "size"
            else:  # a chunk-size line, or a trailer line after the last chunk
                nl = buf.find(b"\r\n")
                if nl < 0:
                    break
                line, buf = buf[:nl], buf[nl + 2 :]
                if state == "trailer":
                    if not line:
                        self._end(out)
                    continue
                size = int(line.split(b";", 1)[0], 16)
                self._left = size
                self._state = "data" if size else "trailer"
        self._buf = buf

    def _payload(self, data: bytes, out: list[bytes]) -> None:
        if not data:
            return
        if not 200 <= self.status < 300:
            self.body += data
            return
        events = self._events + data
        if b"\r" in events:
            events = events.replace(b"\r\n", b"\n")
        *complete, self._events = events.split(b"\n\n")
        for block in complete:
            out += _data_of(block)

    def _end(self, out: list[bytes]) -> None:
        self.done = True
        if self._events.strip():
            out += _data_of(self._events)
        self._events = b""


def _data_of(block: bytes) -> list[bytes]:
    """The ``data`` of one event block (its ``data:`` lines joined with newlines); none for a comment."""
    lines = [line[5:].removeprefix(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
    return [b"\n".join(lines)] if lines else []


@dataclass
class EventInfo:
    """What one SSE event says, for the profiler."""

    done: bool = False
    text: bool = False  # it carries output text
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    error: str | None = None


def _loads() -> Callable[[bytes], Any]:
    try:
        import orjson

        return orjson.loads
    except ImportError:  # the serve extra is not installed
        return json.loads


_LOADS = _loads()


def read_event(data: bytes) -> EventInfo:
    """One event's ``data``: ``[DONE]``, an error, text, usage. The JSON is parsed only where a text field
    or usage may be (the role chunk and the finish chunk are skipped on bytes alone)."""
    if data == b"[DONE]":
        return EventInfo(done=True)
    info = EventInfo()
    has_text = any(f in data for f in TEXT_FIELDS)
    if not has_text and b'"usage"' not in data and b'"error"' not in data:
        return info
    try:
        obj = _LOADS(data)
    except ValueError:
        info.error = f"an event is not JSON: {data[:80]!r}"
        return info
    if not isinstance(obj, dict):
        info.error = f"an event is not a JSON object: {data[:80]!r}"
        return info
    if obj.get("error"):
        e = obj["error"]
        info.error = str(e.get("message", e) if isinstance(e, dict) else e)
        return info
    for choice in obj.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("reasoning_content") or choice.get("text"):
            info.text = True
    usage = obj.get("usage")
    if isinstance(usage, dict):
        info.completion_tokens = usage.get("completion_tokens")
        info.prompt_tokens = usage.get("prompt_tokens")
    return info


def error_message(status: int, body: bytes) -> str:
    """``HTTP 429: <the envelope's message>``."""
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body[:200].decode("utf-8", "replace").strip()
    return f"HTTP {status}: {message}" if message else f"HTTP {status}"


# --------------------------------------------------------------------------------------------------
# Discovery (the parent process, before the load)


def _get(url: str, api_key: str | None, timeout_s: float = 30) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    # The load goes straight to the socket, so these queries must not take a proxy either.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=timeout_s) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass(frozen=True)
class ApiInfo:
    model: str
    models: tuple[str, ...]
    forced: bool  # the server takes min_tokens and ignore_eos


def discover_api(endpoint: Endpoint, model: str, api_key: str | None) -> ApiInfo:
    """The served model (``model``, or the first ``/v1/models`` lists) and whether the output length can be
    forced (the request schema in ``/openapi.json`` has both extensions)."""
    base = endpoint.base
    try:
        status, body = _get(base + "/v1/models", api_key)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EnvironmentProblem(
            f"cannot reach the OpenAI API at {base}: {reason}",
            "start it with `swallow-trt serve --repo REPO` or `swallow-trt openai --triton-url HOST:PORT --repo REPO`",
        ) from None
    if status == 401:
        raise UsageError(
            f"the OpenAI API at {base} wants an API key", "set SWALLOW_TRT_API_KEY to the server's key"
        )
    try:
        if status != 200:
            raise ValueError(error_message(status, body))
        models = tuple(str(m["id"]) for m in json.loads(body)["data"])
    except (ValueError, KeyError, TypeError) as exc:
        raise EnvironmentProblem(
            f"{base}/v1/models did not list models: {exc}", "is --url the root of an OpenAI-compatible API?"
        ) from None
    if not models:
        raise EnvironmentProblem(f"{base}/v1/models lists no model", "check the API server's log")
    if model and model not in models:
        raise UsageError(
            f"model {model!r} is not served by the OpenAI API at {base}",
            f"choose --model from: {', '.join(models)}",
        )
    return ApiInfo(model=model or models[0], models=models, forced=_takes_forcing(base, api_key))


def _takes_forcing(base: str, api_key: str | None) -> bool:
    try:
        status, body = _get(base + "/openapi.json", api_key)
        if status != 200:
            return False
        doc = json.loads(body)
    except (urllib.error.URLError, OSError, ValueError):
        return False
    schemas = doc.get("components", {}).get("schemas", {}) if isinstance(doc, dict) else {}
    for path in (doc.get("paths") or {}).get(CHAT_PATH, {}).values() if isinstance(doc, dict) else ():
        content = (path.get("requestBody") or {}).get("content", {}).get("application/json", {})
        schema = content.get("schema", {})
        ref = schema.get("$ref", "")
        if ref.startswith("#/components/schemas/"):
            schema = schemas.get(ref.rsplit("/", 1)[1], {})
        if all(f in schema.get("properties", {}) for f in FORCING_FIELDS):
            return True
    return False


# --------------------------------------------------------------------------------------------------
# The load (a client process: see loadgen.worker_main)


class _Conn(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, owner: _Client) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.parser: HttpSse | None = None
        self.rec: Rec | None = None
        self.done: asyncio.Future[None] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def start(self, rec: Any, request: bytes) -> asyncio.Future[None]:
        assert self.transport is not None
        self.rec = rec
        self.parser = HttpSse()
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.done

    def data_received(self, data: bytes) -> None:
        t = time.monotonic_ns()
        rec, parser = self.rec, self.parser
        if rec is None or parser is None:
            return  # nothing asked: a stray byte on an idle connection
        try:
            events = parser.feed(data)
        except ValueError as exc:
            self._finish(f"bad response: {exc}", reuse=False)
            return
        owner = self.owner
        for data_ in events:
            owner.responses += 1
            info = read_event(data_)
            if info.text:
                rec.chunk_ns.append(t)
            if info.completion_tokens is not None:
                rec.tokens = int(info.completion_tokens)
            if info.prompt_tokens is not None:
                rec.input_tokens = int(info.prompt_tokens)
            if info.error and not rec.error:
                rec.error = info.error
            if info.done:
                rec.final_ns = t
        if parser.done:
            self._settle(parser)
        owner.busy_ns += time.monotonic_ns() - t

    def _settle(self, parser: HttpSse) -> None:
        rec = self.rec
        assert rec is not None
        if not 200 <= parser.status < 300:
            rec.final_ns = 0
            self._finish(error_message(parser.status, parser.body), reuse=parser.keep_alive)
        elif rec.error:
            self._finish(rec.error, reuse=parser.keep_alive)
        elif rec.final_ns == 0:
            self._finish("the stream ended without data: [DONE]", reuse=parser.keep_alive)
        elif rec.input_tokens < 0:
            self._finish(
                "no usage in the stream (stream_options.include_usage ignored)", reuse=parser.keep_alive
            )
        elif not rec.chunk_ns:
            self._finish("the stream carried no text", reuse=parser.keep_alive)
        else:
            self._finish("", reuse=parser.keep_alive)

    def fail(self, error: str) -> None:
        """End the request in flight with ``error`` and drop the connection (the server sees a disconnect)."""
        if self.rec is not None:
            self._finish(error, reuse=False)

    def _finish(self, error: str, reuse: bool) -> None:
        rec, done = self.rec, self.done
        self.rec = self.parser = self.done = None
        if error and rec is not None:
            rec.error = error
            rec.final_ns = 0
        if reuse and not self.closed:
            self.owner.idle.append(self)
        else:
            self.abort()
        if done is not None and not done.done():
            done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        with contextlib.suppress(ValueError):
            self.owner.idle.remove(self)
        rec, parser = self.rec, self.parser
        if rec is not None and parser is not None:
            t = time.monotonic_ns()
            for data in parser.close():
                if read_event(data).done:
                    rec.final_ns = t
            if parser.done:
                self._settle(parser)
            else:
                self._finish(f"connection lost: {exc or 'closed by the server'}", reuse=False)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class _Client:
    """A process's connections to one API and its accounting."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.ssl = ssl.create_default_context() if endpoint.scheme == "https" else None
        self.idle: list[_Conn] = []
        self.live: set[_Conn] = set()
        self.busy_ns = 0
        self.responses = 0

    async def conn(self) -> _Conn:
        while self.idle:
            c = self.idle.pop()
            if not c.closed:
                return c
        loop = asyncio.get_running_loop()
        _, c = await loop.create_connection(
            lambda: _Conn(self), self.endpoint.host, self.endpoint.port, ssl=self.ssl
        )
        self.live.add(c)
        return c

    def close(self) -> None:
        for c in list(self.live):
            c.abort()
        self.live.clear()
        self.idle.clear()


async def _sleep_until(t_ns: int) -> None:
    """Wake at ``t_ns``: the loop's timers wake up to a millisecond late (epoll's resolution), so the last
    millisecond is spent yielding to the loop, which keeps reading responses meanwhile."""
    left = t_ns - time.monotonic_ns()
    if left > 1_500_000:
        await asyncio.sleep((left - 1_000_000) / 1e9)
    while time.monotonic_ns() < t_ns:
        await asyncio.sleep(0)


async def _run(endpoint: Endpoint, requests: list[bytes], job: Job, stop: Any) -> tuple[list[Rec], _Client]:
    client = _Client(endpoint)
    records: list[Rec] = []
    broken: list[str] = []
    timeout_s = job.timeout_ns / 1e9

    async def one(index: int, scheduled_ns: int) -> None:
        rec = Rec(index=index, prompt=index % len(requests), scheduled_ns=scheduled_ns)
        records.append(rec)
        rec.sent_ns = time.monotonic_ns()
        if job.mode == "closed":
            rec.scheduled_ns = rec.sent_ns
        try:
            c = await client.conn()
        except OSError as exc:  # cannot connect: the server is gone, send no more
            rec.error = f"cannot connect: {exc}"
            broken.append(rec.error)
            return
        try:
            await asyncio.wait_for(asyncio.shield(c.start(rec, requests[rec.prompt])), timeout_s)
        except TimeoutError:
            c.fail(f"no final response in {timeout_s:g} s (--request-timeout)")

    async def closed_slot(first_at: int, state: dict[str, int]) -> None:
        await _sleep_until(first_at)
        while not stop.is_set() and not broken:
            if job.count is not None and state["k"] >= job.count:
                return
            if job.deadline_ns is not None and time.monotonic_ns() >= job.deadline_ns:
                return
            index = job.first_index + state["k"] * job.stride
            state["k"] += 1
            await one(index, 0)

    async def drive() -> None:
        tasks: list[asyncio.Future[None]] = []
        await _sleep_until(job.t0_ns)
        if job.mode == "open":
            for index, at in job.schedule:
                await _sleep_until(at)
                if stop.is_set() or broken:
                    break
                tasks.append(asyncio.ensure_future(one(index, at)))
        else:
            state = {"k": 0}
            tasks += [asyncio.ensure_future(closed_slot(at, state)) for at in job.slot_starts]
        try:
            if tasks:
                await asyncio.wait(tasks)
        finally:
            for t in tasks:
                t.cancel()

    async def watch() -> None:
        while not stop.is_set():
            await asyncio.sleep(0.05)

    runner, watcher = asyncio.ensure_future(drive()), asyncio.ensure_future(watch())
    await asyncio.wait({runner, watcher}, return_when=asyncio.FIRST_COMPLETED)
    for t in (runner, watcher):
        t.cancel()
    await asyncio.gather(runner, watcher, return_exceptions=True)
    # Closing a connection mid-stream is a client disconnect: the API stops those generations.
    client.close()
    for rec in records:
        if rec.final_ns == 0 and not rec.error:
            rec.error = broken[0] if broken else "incomplete: no final response"
    return records, client


def run_job(endpoint: Endpoint, requests: list[bytes], job: Job, stop: Any) -> WorkerResult:
    """One job on a fresh event loop (uvloop where installed)."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # the serve extra is not installed: the standard loop is fine, only slower
        pass
    cpu0 = time.process_time()
    with asyncio.Runner(loop_factory=factory) as runner:
        records, client = runner.run(_run(endpoint, requests, job, stop))
    end = max([job.t0_ns, *(r.final_ns for r in records)])
    return WorkerResult(
        worker=-1, records=records, wall_ns=max(1, end - job.t0_ns), cpu_s=time.process_time() - cpu0,
        callback_busy_ns=client.busy_ns, responses=client.responses, stopped=stop.is_set(),
    )  # fmt: skip
