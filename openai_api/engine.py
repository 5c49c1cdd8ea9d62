"""Streaming ``tensorrt_llm`` over gRPC with asyncio (``grpc.aio`` on Triton's service stubs from
``tritonclient.grpc``), one bidirectional stream per request, so nothing between the API and the C++ engine
is a Python-backend model.

Every request asks for Triton's empty final response (``triton_enable_empty_final_response``), so the end
of a generation is a flag on a response, not a guess. Stopping a generation early (a client went away, a
stop string was seen) sends ``tensorrt_llm``'s ``stop`` input with the same request id on the same stream,
as the ``chat`` model does and as the C++ backend honours; the stream is read to its end in the background
and cancelled if the engine does not finish within :data:`STOP_GRACE_S`. Unreachable or not-ready Triton
is :class:`EngineUnavailable` (503); an error response from the model is :class:`EngineError`.

A ``tensorrt_llm`` that is a Python model (the reference backend, a test stand-in) can lose its stub, and
Triton 2.51 then holds its requests for ever (triton_repo/recovery.py). Where the server's watcher records
deaths (``SWALLOW_TRT_STUB_DEATHS``, set by ``serve``), the engine reads them every
:data:`DEATH_CHECK_S` and ends each generation in flight on a model none of whose instances lived with
:class:`EngineUnavailable` (503, or an error event mid-stream).

Measured and not kept (BENCHMARKS.md, OpenAI API overhead): requests sharing a few long-lived streams,
one reader task each, routed by request id. It saved the per-request stream set-up but read one response
per stream per event-loop turn, so fewer responses completed per turn: lower throughput and higher TTFT
at 64 streams for the same CPU per token; and responses of one request almost never arrived together
(1.006 per step), so there was nothing to coalesce.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from swallow_trt.triton_repo.grpc_stream import infer_request, is_final, output_ids

STOP_GRACE_S = 5.0  # after a stop request, how long the stream may take to end before it is cancelled
DEATH_CHECK_S = 0.25  # how often the watcher's record of dead stubs is read
# Reconnect fast once Triton is back (gRPC's default backoff grows to 120 s); messages of any size.
CHANNEL_ARGS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class EngineUnavailable(Exception):
    """Triton is unreachable, or the model is not loaded or not ready. ``grpc_status``: the status code's
    name when the call itself failed (UNAVAILABLE ...), None for an error response of a model that the
    server then reported not ready."""

    def __init__(self, message: str, *, grpc_status: str | None = None) -> None:
        super().__init__(message)
        self.grpc_status = grpc_status


class EngineError(Exception):
    """An error from ``tensorrt_llm`` (bad input it refused, a failed generation): an error response of a
    model the server reports ready (``grpc_status`` None), or a call that failed with another status."""

    def __init__(self, message: str, *, grpc_status: str | None = None) -> None:
        super().__init__(message)
        self.grpc_status = grpc_status


# The call's status, not its text, says whether Triton could not be reached.
_UNAVAILABLE_STATUS = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "NOT_FOUND")


class Generation:
    """One streamed ``tensorrt_llm`` request: iterate :meth:`tokens`; :meth:`stop` ends it early."""

    def __init__(self, engine: Engine, request_id: str, inputs: list[tuple[str, Any]]) -> None:
        self.engine = engine
        self.request_id = request_id
        self.finished = False
        self.stopping = False
        self.started_ns = time.monotonic_ns()
        self._death: str | None = None  # why the engine ended it: its stub died (:meth:`died`)
        self._requests: asyncio.Queue[Any] = asyncio.Queue()
        self._requests.put_nowait(infer_request(engine.model, request_id, inputs))
        self._call = engine.stub().ModelStreamInfer(self._iterate())

    async def _iterate(self) -> AsyncIterator[Any]:
        while (item := await self._requests.get()) is not None:
            yield item

    async def tokens(self) -> AsyncIterator[list[list[int]]]:
        """The token ids of the responses, until the final one, in steps of one list of ids per response
        (the consumer handles a step of several responses as one SSE event; this stream hands over one
        response a step, as it reads them)."""
        import grpc

        try:
            async for message in self._call:
                if message.error_message:
                    raise await self._error_response(message.error_message)
                response = message.infer_response
                ids = output_ids(response)
                if ids:
                    yield [ids]
                if is_final(response):
                    self.finished = True
                    return
        except grpc.aio.AioRpcError as exc:
            status = exc.code().name
            kind = EngineUnavailable if status in _UNAVAILABLE_STATUS else EngineError
            raise kind(exc.details() or status, grpc_status=status) from None
        except asyncio.CancelledError:
            # The call, cancelled by died(), ends its iteration so; a cancelled task is cancelled still.
            task = asyncio.current_task()
            if self._death is None or (task is not None and task.cancelling()):
                raise
            raise EngineUnavailable(self._death) from None
        finally:
            if self.finished:
                self._requests.put_nowait(None)
        if not self.finished:
            raise EngineUnavailable("the stream from Triton ended before the final response")

    async def _error_response(self, message: str) -> Exception:
        """An error response in the stream (a stream response carries no status code): the model refused
        or failed the request if the server reports it ready, else it is not there to serve it (unknown,
        unloaded, loading)."""
        if await self.engine.ready():
            return EngineError(message)
        return EngineUnavailable(message)

    def died(self, message: str) -> None:
        """The stub serving this generation died: end it with ``message`` (:meth:`tokens` raises)."""
        self._death = message
        self._requests.put_nowait(None)
        self._call.cancel()

    def stop(self) -> None:
        """End the generation in the engine (its ``stop`` input), then close the stream in the
        background; safe to call from a cancelled task and more than once."""
        if self.finished or self.stopping:
            self._requests.put_nowait(None)
            return
        self.stopping = True
        self.engine.spawn(self._stop_and_drain())

    async def _stop_and_drain(self) -> None:
        import numpy as np

        self.engine.stops_sent += 1
        inputs = [
            ("input_ids", np.array([[0]], dtype=np.int32)),
            ("input_lengths", np.array([[1]], dtype=np.int32)),
            ("request_output_len", np.array([[1]], dtype=np.int32)),
            ("stop", np.array([[True]], dtype=bool)),
        ]
        self._requests.put_nowait(infer_request(self.engine.model, self.request_id, inputs))
        finals = 0
        try:
            async with asyncio.timeout(STOP_GRACE_S):
                async for message in self._call:
                    # Two final responses: the stopped generation's and the stop request's own.
                    if message.error_message or is_final(message.infer_response):
                        finals += 1
                    if finals == 2:
                        break
        except Exception:  # failed or hung (TimeoutError): cancelling the stream is all that is left
            pass
        finally:
            self._requests.put_nowait(None)
            self._call.cancel()

    def close(self) -> None:
        """Release the stream of a generation that finished (its final response read)."""
        self._requests.put_nowait(None)
        if not self.finished and not self.stopping:
            self._call.cancel()


class Engine:
    """The gRPC channel to one Triton (created on first use, in the running event loop)."""

    def __init__(self, url: str, model: str = "tensorrt_llm", stub_deaths: Path | None = None) -> None:
        self.url = url
        self.model = model
        self._channel: Any = None
        self._stub: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.stops_sent = 0
        self.stub_deaths = stub_deaths
        self._open: weakref.WeakSet[Generation] = weakref.WeakSet()
        self._watch: asyncio.Task[None] | None = None

    def stub(self) -> Any:
        if self._stub is None:
            import grpc
            from tritonclient.grpc import service_pb2_grpc

            self._channel = grpc.aio.insecure_channel(self.url, options=CHANNEL_ARGS)
            self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        return self._stub

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def generate(self, request_id: str, inputs: list[tuple[str, Any]]) -> Generation:
        generation = Generation(self, request_id, inputs)
        if self.stub_deaths is not None:
            self._open.add(generation)
            if self._watch is None:
                self._watch = asyncio.get_running_loop().create_task(self._watch_deaths(self.stub_deaths))
        return generation

    async def _watch_deaths(self, path: Path) -> None:
        from swallow_trt.triton_repo.stubs import DeathFeed

        feed = DeathFeed(path)
        while True:
            await asyncio.sleep(DEATH_CHECK_S)
            for death in feed.fatal(self.model):
                for generation in list(self._open):
                    if not generation.finished and generation.started_ns < death.at_ns:
                        generation.died(death.message())

    async def ready(self, timeout_s: float = 2.0) -> bool:
        """Whether Triton answers and reports the model ready."""
        from tritonclient.grpc import service_pb2

        try:
            response = await self.stub().ModelReady(
                service_pb2.ModelReadyRequest(name=self.model), timeout=timeout_s
            )
            return bool(response.ready)
        except Exception:  # unreachable, timed out, not loaded: all "not ready"
            return False

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(task, STOP_GRACE_S + 1)
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()
