"""Streaming ``tensorrt_llm`` over gRPC with asyncio (``grpc.aio`` on Triton's service stubs from
``tritonclient.grpc``), so nothing between the API and the C++ engine is a Python-backend model.

Requests share a few long-lived bidirectional ``ModelStreamInfer`` streams (:data:`LANES`) instead of
opening one per request: Triton's stream carries any number of requests, every response names its
request (``infer_response.id``, set by Triton on error and empty final responses too), and one reader
task per stream hands each response to its :class:`Generation`. A generation collects what arrived
since its consumer last looked, so responses that arrive together are taken in one step (one SSE event
downstream) while the consumer still sees each response's ids apart (counts and stop checks stay exact).

Every request asks for Triton's empty final response (``triton_enable_empty_final_response``), so the end
of a generation is a flag on a response, not a guess. Stopping a generation early (a client went away, a
stop string was seen) sends ``tensorrt_llm``'s ``stop`` input with the same request id on the same stream,
as the ``chat`` model does and as the C++ backend honours; its responses are read and dropped until both
final responses (the generation's and the stop request's) arrive, or forgotten after
:data:`STOP_GRACE_S` (a shared stream cannot be cancelled for one request). A stream that fails fails its
generations and is replaced on the next request, and a stream with no request left is closed (an
idle open stream would hold up Triton's shutdown): unreachable or not-ready Triton is
:class:`EngineUnavailable` (503); an error response from the model is :class:`EngineError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

STOP_GRACE_S = 5.0  # after a stop request, how long its responses are awaited before it is forgotten
# Streams per engine: one reader task per stream, so a few let several responses complete per event-loop
# turn; each new request goes to the next one in turn.
LANES = 16
FINAL = "triton_final_response"
# Reconnect fast once Triton is back (gRPC's default backoff grows to 120 s); messages of any size.
CHANNEL_ARGS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class EngineUnavailable(Exception):
    """Triton is unreachable, or the model is not loaded or not ready."""


class EngineError(Exception):
    """An error response from ``tensorrt_llm`` (bad input it refused, a failed generation)."""


_UNAVAILABLE_TEXT = ("unknown model", "is not ready", "not found", "unavailable", "failed to connect")


def _classify(message: str) -> Exception:
    low = message.lower()
    if any(t in low for t in _UNAVAILABLE_TEXT):
        return EngineUnavailable(message)
    return EngineError(message)


_DATATYPES = {"int32": "INT32", "uint64": "UINT64", "float32": "FP32", "bool": "BOOL", "object": "BYTES"}


def infer_request(model: str, request_id: str, inputs: list[tuple[str, Any]]) -> Any:
    """A ``ModelInferRequest`` of (name, numpy array) inputs that asks for the empty final response,
    which tritonclient's own request builder refuses to set (a reserved parameter)."""
    from tritonclient.grpc import service_pb2
    from tritonclient.utils import serialize_byte_tensor

    request = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    for name, value in inputs:
        tensor = request.inputs.add(name=name, datatype=_DATATYPES[str(value.dtype)])
        tensor.shape.extend(value.shape)
        if value.dtype == object:
            request.raw_input_contents.append(serialize_byte_tensor(value).item())
        else:
            request.raw_input_contents.append(value.tobytes())
    request.outputs.add(name="output_ids")
    request.parameters[FINAL.replace("final_response", "enable_empty_final_response")].bool_param = True
    return request


def _output_ids(response: Any) -> list[int]:
    for i, output in enumerate(response.outputs):
        if output.name == "output_ids":
            # Triton's raw tensors are little-endian, as is every host the engine runs on: a memoryview
            # cast is the cheapest decode of a response's few int32s.
            ids: list[int] = memoryview(response.raw_output_contents[i]).cast("i").tolist()
            return ids
    return []


def _is_final(response: Any) -> bool:
    param = response.parameters.get(FINAL)
    return param is not None and bool(param.bool_param)


class Generation:
    """One streamed ``tensorrt_llm`` request: iterate :meth:`tokens`; :meth:`stop` ends it early."""

    def __init__(self, engine: Engine, request_id: str, inputs: list[tuple[str, Any]]) -> None:
        self.engine = engine
        self.request_id = request_id
        self.finished = False  # its final response (or an error, or its stream's failure) has arrived
        self.stopping = False
        self._ready: list[list[int]] = []
        self._error: Exception | None = None
        self._wake: asyncio.Future[None] | None = None
        self._finals = 0  # while stopping: final responses seen (two end it)
        self._lane = engine.lane()
        self._lane.send(self, infer_request(engine.model, request_id, inputs))

    # ------------------------------------------------------------------ called by the stream's reader

    def _deliver(self, message: Any) -> None:
        response = message.infer_response
        if self.stopping:
            if message.error_message or _is_final(response):
                self._finals += 1
                if self._finals == 2:
                    self._lane.forget(self)
            return
        if message.error_message:
            self._error = _classify(message.error_message)
            if not _is_final(response):  # a failure the engine may still be generating after
                self._signal()
                self.stop()
                return
            self.finished = True
            self._lane.forget(self)
        else:
            ids = _output_ids(response)
            if ids:
                self._ready.append(ids)
            if _is_final(response):
                self.finished = True
                self._lane.forget(self)
        self._signal()

    def _fail(self, error: Exception) -> None:
        """Its stream failed: nothing more will arrive."""
        if not self.stopping and self._error is None:
            self._error = error
        self.finished = True
        self._signal()

    def _signal(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    # ------------------------------------------------------------------ called by the consumer

    async def tokens(self) -> AsyncIterator[list[list[int]]]:
        """The token ids of each response, until the final one, in steps: each step holds every
        response that arrived since the last (one list of ids per response, in order)."""
        loop = asyncio.get_running_loop()
        while True:
            if self._ready:
                batch, self._ready = self._ready, []
                yield batch
                continue
            if self._error is not None:
                self.finished = True
                raise self._error
            if self.finished:
                return
            self._wake = loop.create_future()
            try:
                await self._wake
            finally:
                self._wake = None

    def stop(self) -> None:
        """End the generation in the engine (its ``stop`` input on the same stream); its remaining
        responses are dropped. Safe to call from a cancelled task and more than once."""
        if self.finished or self.stopping:
            return
        import numpy as np

        self.stopping = True
        self.engine.stops_sent += 1
        inputs = [
            ("input_ids", np.array([[0]], dtype=np.int32)),
            ("input_lengths", np.array([[1]], dtype=np.int32)),
            ("request_output_len", np.array([[1]], dtype=np.int32)),
            ("stop", np.array([[True]], dtype=bool)),
        ]
        self._lane.send(self, infer_request(self.engine.model, self.request_id, inputs))
        # A stop the engine never answers must not keep the request id routed for ever.
        asyncio.get_running_loop().call_later(STOP_GRACE_S, self._lane.forget, self)

    def close(self) -> None:
        """Release the generation: one that has not finished is stopped in the engine."""
        self.stop()


class _Lane:
    """One ``ModelStreamInfer`` stream carrying many requests, its responses routed by request id."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.routes: dict[str, Generation] = {}
        self.dead = False
        self.closed = False
        self._requests: asyncio.Queue[Any] = asyncio.Queue()
        self._call = engine.stub().ModelStreamInfer(self._iterate())
        self.reader = asyncio.get_running_loop().create_task(self._read())
        engine._readers.add(self.reader)
        self.reader.add_done_callback(engine._readers.discard)

    async def _iterate(self) -> AsyncIterator[Any]:
        while (item := await self._requests.get()) is not None:
            yield item

    def send(self, generation: Generation, request: Any) -> None:
        self.routes[generation.request_id] = generation
        self._requests.put_nowait(request)

    def forget(self, generation: Generation) -> None:
        if self.routes.get(generation.request_id) is generation:
            del self.routes[generation.request_id]
            if not self.routes:
                # No stream stays open while idle: Triton's shutdown would wait on it.
                self.close()

    async def _read(self) -> None:
        import grpc

        error: Exception = EngineUnavailable("the stream from Triton ended before the final response")
        routes = self.routes
        try:
            async for message in self._call:
                generation = routes.get(message.infer_response.id)
                if generation is not None:  # else: a forgotten (stopped) request's late response
                    generation._deliver(message)
        except grpc.aio.AioRpcError as exc:
            # The stream itself failed, not one request on it: Triton went away or cut it (a shutdown
            # cancels open streams), unless the status says otherwise.
            lost = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN)  # fmt: skip
            if exc.code() in lost:
                error = EngineUnavailable(exc.details() or str(exc.code()))
            else:
                error = _classify(exc.details() or str(exc.code()))
        except asyncio.CancelledError:
            error = EngineUnavailable("the API is shutting down")
            raise
        finally:
            self.end(error)

    def end(self, error: Exception) -> None:
        """Fail every request still on this stream and let the engine open a new one."""
        self.dead = True
        self.engine.drop(self)
        routes, self.routes = self.routes, {}
        for generation in routes.values():
            generation._fail(error)
        self._requests.put_nowait(None)
        self._call.cancel()

    def close(self) -> None:
        """Half-close: Triton ends the stream once the requests on it have finished; new requests go to
        a new stream."""
        if not self.closed:
            self.closed = True
            self.engine.drop(self)
            self._requests.put_nowait(None)


class Engine:
    """The gRPC channel to one Triton and its shared streams (created on first use, in the running
    event loop)."""

    def __init__(self, url: str, model: str = "tensorrt_llm", lanes: int = LANES) -> None:
        self.url = url
        self.model = model
        self._channel: Any = None
        self._stub: Any = None
        self._lanes: list[_Lane | None] = [None] * lanes
        self._turn = itertools.cycle(range(lanes))
        self._readers: set[asyncio.Task[None]] = set()  # of open and closing streams
        self.stops_sent = 0

    def stub(self) -> Any:
        if self._stub is None:
            import grpc
            from tritonclient.grpc import service_pb2_grpc

            self._channel = grpc.aio.insecure_channel(self.url, options=CHANNEL_ARGS)
            self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        return self._stub

    def lane(self) -> _Lane:
        """The next stream in turn, opened again if it failed."""
        i = next(self._turn)
        lane = self._lanes[i]
        if lane is None or lane.dead or lane.closed:
            lane = self._lanes[i] = _Lane(self)
        return lane

    def drop(self, lane: _Lane) -> None:
        for i, held in enumerate(self._lanes):
            if held is lane:
                self._lanes[i] = None

    def generate(self, request_id: str, inputs: list[tuple[str, Any]]) -> Generation:
        return Generation(self, request_id, inputs)

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
        """Half-close every stream, give the requests on them (stops included) a grace period to end,
        then cancel what is left and close the channel."""
        lanes = [lane for lane in self._lanes if lane is not None]
        for lane in lanes:
            lane.close()
        readers = [task for task in self._readers if not task.done()]
        if readers:
            _, pending = await asyncio.wait(readers, timeout=STOP_GRACE_S + 1)
            for task in pending:
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*pending, return_exceptions=True)
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()
