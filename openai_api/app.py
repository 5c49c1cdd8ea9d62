"""The OpenAI-compatible HTTP app (FastAPI): routes, the key check, limits, errors and SSE.

Order of checks on a ``/v1`` POST: API key (401), body size (413), JSON and schema (400), model (404),
admission (429 with ``Retry-After``), prompt and length (400), then the engine (503 while Triton is not
ready or unreachable). A streamed answer waits for the engine's first piece before sending its status, so
those errors keep their status code instead of arriving inside a 200 stream. A client that goes away is
noticed by a task that waits on the ASGI ``receive`` (``http.disconnect``), streaming or not, and its
generation is stopped in the engine at once.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from swallow_trt import __version__
from swallow_trt.openai_api.deployment import Deployment, read_deployment
from swallow_trt.openai_api.engine import Engine, EngineError, EngineUnavailable, Generation
from swallow_trt.openai_api.errors import ApiError, unavailable
from swallow_trt.openai_api.metrics import Metrics
from swallow_trt.openai_api.schema import ChatRequest, CompletionRequest, parse
from swallow_trt.openai_api.service import Outcome, Prepared, TextService

log = logging.getLogger("swallow_trt.openai_api")
DEFAULT_MAX_BODY = 1 << 20
DRAIN_LIMIT = 64 << 20  # past this, an oversized body is not read to its end before the 413
ROUTES = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics", "/version"}


@dataclass(frozen=True)
class ApiConfig:
    triton_url: str
    repo: str
    model_name: str | None = None
    api_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY
    max_in_flight: int | None = None  # default: twice the engine's max batch size
    cors_origins: tuple[str, ...] = ()


class Disconnected(Exception):
    pass


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _or_disconnect(awaitable: Awaitable[Any], receive: Receive) -> Any:
    """``awaitable``'s result, or Disconnected as soon as the client has gone (the awaitable is
    cancelled)."""
    work = asyncio.ensure_future(awaitable)
    watch = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        work.cancel()
        watch.cancel()
        raise
    if work.done():
        watch.cancel()
        return work.result()
    work.cancel()
    raise Disconnected


class EventStream(Response):
    """Server-sent events from ``chunks``; when the client goes away mid-stream, ``on_disconnect``."""

    media_type = "text/event-stream"

    def __init__(self, chunks: AsyncIterator[bytes], on_disconnect: Callable[[], None]) -> None:
        self.chunks = chunks
        self.on_disconnect = on_disconnect
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]

    async def _produce(self, send: Send) -> None:
        async for chunk in self.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        try:
            await _or_disconnect(self._produce(send), receive)
        except (Disconnected, OSError):
            self.on_disconnect()


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def _error_response(exc: ApiError) -> Response:
    return Response(exc.body(), status_code=exc.status, media_type="application/json", headers=exc.headers)


class Api:
    """State of one app: the text service, the engine, limits and metrics."""

    def __init__(self, config: ApiConfig, deployment: Deployment, tokenizer: Any | None = None) -> None:
        self.config = config
        self.d = deployment
        from swallow_trt.settings import load_settings

        self.engine = Engine(config.triton_url, deployment.llm_model, load_settings().stub_deaths)
        self.service = TextService(deployment, self.engine, tokenizer)
        self.metrics = Metrics()
        self.limit = config.max_in_flight or 2 * deployment.max_batch_size
        self.active = 0
        self._key = config.api_key.encode("utf-8") if config.api_key else None

    # ------------------------------------------------------------------------------- checks

    def check_key(self, request: Request) -> None:
        if self._key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        # Compared in constant time whatever was sent, so timing tells nothing about the key.
        ok = hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), self._key)
        if not (ok and scheme.lower() == "bearer"):
            what = "Incorrect API key provided" if header else "Missing API key (Authorization: Bearer KEY)"
            raise ApiError(401, what, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    async def body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        too_big = ApiError(
            413,
            f"The request body is larger than this server's limit of {limit} bytes",
            code="request_too_large",
        )
        if declared.isdigit() and int(declared) > DRAIN_LIMIT:
            raise too_big
        chunks, size = [], 0
        # Read to the end even when over the limit, so that the client, still sending, sees the 413.
        async for chunk in request.stream():
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
            elif size > DRAIN_LIMIT:
                raise too_big
        if size > limit:
            raise too_big
        return b"".join(chunks)

    def admit(self) -> None:
        if self.active >= self.limit:
            self.metrics.rejected.inc()
            raise ApiError(
                429,
                f"This server is at its limit of {self.limit} requests in flight; retry shortly",
                type="rate_limit_error",
                code="too_many_requests",
                headers={"Retry-After": "1"},
            )
        self.active += 1
        self.metrics.in_flight.inc()
        self.metrics.queued.inc()

    # ------------------------------------------------------------------------------- answering

    async def complete(self, request: Request, kind: type[ChatRequest] | type[CompletionRequest]) -> Response:
        arrived = time.perf_counter()
        self.check_key(request)
        parsed = parse(kind, await self.body(request))
        prepared = self.service.prepare(parsed)
        self.admit()
        run = _Run(self, prepared, arrived)
        try:
            generation = self.service.start(prepared)
            run.generation = generation
            pieces = self.service.pieces(prepared, generation, run.outcome)
            if prepared.stream:
                first = await _or_disconnect(_first(pieces), request.receive)
                return EventStream(run.events(first, pieces), run.disconnected)
            text = await _or_disconnect(_collect(pieces), request.receive)
            run.finish()
            return _json(run.whole(text))
        except Disconnected:
            run.disconnected()
            return Response(status_code=499)
        except EngineUnavailable as exc:
            run.finish()
            raise unavailable(f"Triton is not ready or unreachable: {exc}") from None
        except EngineError as exc:
            run.finish()
            raise ApiError(400, f"tensorrt_llm refused the request: {exc}", code="engine_error") from None
        except BaseException:
            run.disconnected() if run.generation is not None else run.finish()
            raise


_NOTHING: list[tuple[str, str]] = []


async def _first(pieces: AsyncIterator[list[tuple[str, str]]]) -> list[tuple[str, str]] | None:
    try:
        return await anext(pieces)
    except StopAsyncIteration:
        return None


async def _collect(pieces: AsyncIterator[list[tuple[str, str]]]) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    async for piece in pieces:
        for name, text in piece:
            out.setdefault(name, []).append(text)
    return {name: "".join(parts) for name, parts in out.items()}


class _Run:
    """One admitted request: its outcome, metrics and the JSON it answers with."""

    def __init__(self, api: Api, prepared: Prepared, arrived: float) -> None:
        self.api = api
        self.p = prepared
        self.arrived = arrived
        self.outcome = Outcome(on_first=self.first_token)
        self.generation: Generation | None = None
        self.done = False
        self.queued = True  # admitted, no token yet
        self.id = ("chatcmpl-" if prepared.kind == "chat" else "cmpl-") + prepared.request_id
        self.object = "chat.completion" if prepared.kind == "chat" else "text_completion"
        api.metrics.prompt_tokens.inc(len(prepared.ids))

    def first_token(self) -> None:
        self.api.metrics.queued.dec()
        self.queued = False

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        m, o = self.api.metrics, self.outcome
        self.api.active -= 1
        m.in_flight.dec()
        if self.queued:
            m.queued.dec()
            self.queued = False
        if o.first_token_at is not None:
            m.ttft.observe(o.first_token_at - self.arrived)
            if o.completion_tokens > 1 and o.last_token_at is not None:
                m.tpot.observe((o.last_token_at - o.first_token_at) / (o.completion_tokens - 1))
        m.completion_tokens.inc(o.completion_tokens)
        if self.generation is not None:
            self.generation.close()

    def disconnected(self) -> None:
        if self.done:
            return
        self.api.metrics.disconnects.inc()
        if self.generation is not None:
            self.generation.stop()
        self.finish()

    def usage(self) -> dict[str, int]:
        n = self.outcome.completion_tokens
        return {"prompt_tokens": len(self.p.ids), "completion_tokens": n, "total_tokens": len(self.p.ids) + n}

    def whole(self, text: dict[str, str]) -> dict[str, Any]:
        base = {"id": self.id, "object": self.object, "created": self.p.created, "model": self.p.model}
        reason = self.outcome.finish_reason
        if self.p.kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": text.pop("content", "")}
            message.update(text)
            choice: dict[str, Any] = {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": reason,
            }
        else:
            choice = {"index": 0, "text": text.get("content", ""), "logprobs": None, "finish_reason": reason}
        return {**base, "choices": [choice], "usage": self.usage()}

    # --------------------------------------------------------------------------- streaming

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": self.id,
            "object": self.object + (".chunk" if self.p.kind == "chat" else ""),
            "created": self.p.created,
            "model": self.p.model,
            "choices": choices,
        }
        if self.p.include_usage:
            body["usage"] = usage
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def _content_frame(self) -> tuple[bytes, bytes]:
        """The bytes around the JSON string of a content piece: the per-token path is one orjson call
        on the text and two concatenations."""
        marker = "\x00MARK\x00"
        if self.p.kind == "chat":
            choice = {"index": 0, "delta": {"content": marker}, "logprobs": None, "finish_reason": None}
        else:
            choice = {"index": 0, "text": marker, "logprobs": None, "finish_reason": None}
        frame = self._chunk([choice])
        head, tail = frame.split(orjson.dumps(marker))
        return head, tail

    def _delta(self, piece: list[tuple[str, str]], head: bytes, tail: bytes) -> bytes:
        if len(piece) == 1 and piece[0][0] == "content":
            return head + orjson.dumps(piece[0][1]) + tail
        if self.p.kind == "chat":
            return self._chunk([{"index": 0, "delta": dict(piece), "logprobs": None, "finish_reason": None}])
        text = "".join(t for name, t in piece if name == "content")
        return head + orjson.dumps(text) + tail

    async def events(
        self, first: list[tuple[str, str]] | None, pieces: AsyncIterator[list[tuple[str, str]]]
    ) -> AsyncIterator[bytes]:
        """The stream's SSE bytes: the role chunk goes out with the first piece, and the finish chunk,
        the usage chunk and ``[DONE]`` together, so that a short answer is two writes, not five."""
        head, tail = self._content_frame()
        pending = b""
        if self.p.kind == "chat":
            role = {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
            pending = self._chunk([role])
        try:
            if first is not None:
                yield pending + self._delta(first, head, tail)
                pending = b""
                async for piece in pieces:
                    yield self._delta(piece, head, tail)
        except (EngineUnavailable, EngineError) as exc:
            error = ApiError(503 if isinstance(exc, EngineUnavailable) else 400, f"generation failed: {exc}")
            self.finish()
            yield pending + b"data: " + error.body() + b"\n\ndata: [DONE]\n\n"
            return
        finally:
            if not self.outcome.finish_reason:  # cut short: the engine must stop too
                self.disconnected()
        self.finish()
        reason = self.outcome.finish_reason
        if self.p.kind == "chat":
            last = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}
        else:
            last = {"index": 0, "text": "", "logprobs": None, "finish_reason": reason}
        end = pending + self._chunk([last])
        if self.p.include_usage:
            end += self._chunk([], self.usage())
        yield end + b"data: [DONE]\n\n"


class _StatusCounter:
    """ASGI middleware: counts answered requests by route and status."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = (
            path if path in ROUTES else ("/v1/models/{model}" if path.startswith("/v1/models/") else "other")
        )

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(route, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)


GC_THRESHOLDS = (20_000, 20, 20)  # Python's default is (700, 10, 10)


def _settle_heap() -> None:
    """Freeze what start-up loaded (transformers, the tokenizer, the app: all of it lives as long as the
    process) out of the cyclic collector's reach, and collect the young generation less often.

    With the defaults a full collection re-scans that heap (about 386,000 objects) for about 250 ms a
    time (measured on the zero-delay schedule model at 64 streams; the saving per token was below what
    the shared 2-core machine could resolve). The per-token garbage is freed by reference counting, so
    fewer passes cost little memory."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def create_app(config: ApiConfig, tokenizer: Any | None = None) -> FastAPI:
    """The app for ``config`` (the repository is read and its tokenizer loaded here)."""
    from contextlib import asynccontextmanager

    deployment = read_deployment(Path(config.repo), config.model_name)
    api = Api(config, deployment, tokenizer)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _settle_heap()
        yield
        await api.engine.close()

    app = FastAPI(
        title="swallow-trt OpenAI-compatible API",
        version=__version__,
        lifespan=lifespan,
        description=f"Serves {deployment.model_id} from a Triton deployment (tensorrt_llm over gRPC).",
    )
    app.state.api = api

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> Response:
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        message = f"Unknown path {request.url.path}" if exc.status_code == 404 else str(exc.detail)
        return _error_response(ApiError(exc.status_code, message, type=kind))

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> Response:
        return _error_response(ApiError(400, f"Invalid request: {exc.errors()[0].get('msg')}"))

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return _error_response(ApiError(500, "Internal server error", type="server_error"))

    schema = {"requestBody": {"required": True, "content": {"application/json": {"schema": {}}}}}

    def body_schema(model: type[ChatRequest] | type[CompletionRequest]) -> dict[str, Any]:
        out = {**schema}
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema(by_alias=True)}},
        }
        return out

    @app.post("/v1/chat/completions", openapi_extra=body_schema(ChatRequest), response_model=None)
    async def chat_completions(request: Request) -> Response:
        return await api.complete(request, ChatRequest)

    @app.post("/v1/completions", openapi_extra=body_schema(CompletionRequest), response_model=None)
    async def completions(request: Request) -> Response:
        return await api.complete(request, CompletionRequest)

    def model_card(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "swallow-trt"}

    @app.get("/v1/models", response_model=None)
    async def models(request: Request) -> Response:
        api.check_key(request)
        names = [deployment.model_id, *deployment.aliases]
        return _json({"object": "list", "data": [model_card(n) for n in names]})

    @app.get("/v1/models/{model:path}", response_model=None)
    async def model(request: Request, model: str) -> Response:
        api.check_key(request)
        if not deployment.accepts(model):
            raise ApiError(404, f"The model '{model}' does not exist", param="model", code="model_not_found")
        return _json(model_card(model))

    @app.get("/health", response_model=None)
    async def health() -> Response:
        if await api.engine.ready():
            return _json({"status": "ok", "model": deployment.model_id})
        return _error_response(
            unavailable(f"Triton at {config.triton_url} does not report {deployment.llm_model} ready")
        )

    @app.get("/version", response_model=None)
    async def version() -> Response:
        return _json({"version": __version__, "model": deployment.model_id})

    @app.get("/metrics", response_model=None)
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(api.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if config.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["authorization", "content-type"],
        )
    app.add_middleware(_StatusCounter, metrics=api.metrics)
    return app
