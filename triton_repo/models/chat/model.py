"""``chat``: decoupled streaming chat model (Triton Python backend, BLS).

Text in, text out, per request: render the Swallow family's chat format (with earlier turns, if given),
tokenize with the model's own tokenizer, call ``tensorrt_llm`` (TensorRT-LLM engine or the reference
backend; same contract) in streaming mode, and detokenise incrementally (exact for Japanese: no U+FFFD
for characters split across tokens). Generation ends at the model's end token and at stop words, which
are not in the output. Every response carries ``num_output_tokens`` (the tokens generated so far) when
the client asked for it, and ``text_output`` when it has text. With the optional input ``report_instance``
true, the first response comes at once and carries ``instance``, a token naming the stub process that
serves the request (``triton_repo.stubs.process_token``): Triton 2.51 holds for ever a request whose
stub died (python_backend r24.10 has no restart for decoupled models), so a client on the same host asks
``stubs.process_gone`` while it waits, and ends the request with an error at once when the stub is gone.

Reasoning families (Qwen3's ``<think>`` blocks, gpt-oss's analysis channel; text/reasoning.py):
the reasoning streams in ``reasoning_output`` and ``text_output`` holds the answer alone. The optional
inputs ``enable_thinking`` (qwen3) and ``reasoning_effort`` (harmony) reach the chat format; asking a
format that does not reason for either is an error response. Stop strings end the answer; the reasoning
is not searched for them (a stop string the model thinks about must not end its answer unwritten).

Many streams per instance: ``execute`` is a coroutine (Triton 2.51's Python backend runs the coroutines
of a decoupled model on one event-loop thread of the stub, concurrently), the LLM is called with
``await async_exec(decoupled=True)``, and then one pool thread per stream owns that stream to its end:
it iterates the (blocking) response iterator, detokenises, filters and calls ``sender.send()`` itself,
so a token costs no hop to the event loop (the hop, one ``call_soon_threadsafe`` and a loop wake-up per
response, cost more machine time per token than the whole single-stream model did). ``send()`` is a
round trip to the server process that releases the GIL, so streams' sends overlap instead of queueing
on the loop. The event loop keeps what is per request, not per token: parsing and rendering the prompt,
the BLS calls (``async_exec``, the ``stop`` request) and releasing the Python objects of the backend.
The iterator has no non-blocking "is another response ready?", so a pump cannot gather the responses
that arrived together; it handles them one by one, as the single-stream model did.

Object lifetimes (Triton 2.51, python_backend r24.10, frees backend objects without the GIL; fixed
upstream in r24.12 by python_backend#390, see design.md): a finished BLS response iterator whose
Python object is gone is destroyed, with the numpy arrays of every response it streamed, on the stub's
stub-to-parent thread; and ``send()`` drops the outputs the client did not request after releasing the
GIL. Both corrupted the heap under load. So (1) a finished iterator is kept referenced for
``RETIRE_S`` and then released on the event-loop thread, after the stub's own clean-up of it has run;
(2) a response carries only the outputs the client requested, and its tensors stay referenced by this
code until ``send()`` has returned; (3) a pump always drains its iterator to the final response, even
after an error or a stop, because an unfinished iterator's destructor blocks until the stream ends,
and it would run on the event-loop thread.

When a request ends before its generation does (a stop string seen in the text, or the client
cancelled), the chat model sends ``tensorrt_llm`` a ``stop`` request with the same request id, so the
engine stops working for nobody.

Transport: BLS, except on Triton 2.51 (nvidia-pytriton, python_backend r24.10), where an error response
of ``tensorrt_llm`` never reaches a BLS iterator: ``InferResponse::SaveToSharedMemory`` (src/infer_response.cc
at 01d0ad82) writes a response's iterator id only when it has no error, so the stub files the error under
a stale id and the iterator waits for ever (error sent as the final response) or ends as if the generation
succeeded (error followed by an empty final). Upstream fixed it in 7f21b67 (python_backend#398, r25.04 and
later: the pinned 25.12 image). So where the server that runs chat says it is that release
(SWALLOW_TRT_TRITON_GRPC, set by ``TritonServer`` to its own gRPC address), chat streams ``tensorrt_llm``
over the server's gRPC endpoint (one ``ModelStreamInfer`` call per stream, pumped by the same pool thread),
where an error response arrives as one; the ``stop`` request stays a BLS call (it has no tokens to lose).
There, ``tensorrt_llm`` may be a Python model (the reference backend) whose stub can die, holding the
streams it served for ever: chat reads the deaths the server's watcher records (SWALLOW_TRT_STUB_DEATHS,
``triton_repo.stubs.DeathFeed``) every DEATH_CHECK_S and ends each stream in flight on a model none of
whose instances lived with an error response.
"""

import asyncio
import collections
import contextlib
import itertools
import os
import queue
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils

CANCEL_CHECK_S = 0.05
DEATH_CHECK_S = 0.25
RETIRE_S = 2.0  # how long a finished BLS iterator stays referenced (the stub's clean-up runs meanwhile)
DEFAULT_MAX_STREAMS = 1024  # pool threads: two per open stream (its async_exec, its response pump)


def _opt(request, name):
    t = pb_utils.get_input_tensor_by_name(request, name)
    return None if t is None else t.as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        from swallow_trt.settings import load_settings
        from swallow_trt.text.pipeline import Prompter, model_parameters
        from swallow_trt.triton_repo.stubs import process_token

        params = model_parameters(args)
        settings = load_settings()
        self.grpc_url = settings.triton_grpc  # set: stream tensorrt_llm over gRPC (docstring)
        self.grpc_stub = None
        self.calls = {}  # the open gRPC calls to tensorrt_llm, by request id
        self.prompter = Prompter.from_parameters(params)
        self.llm = params.get("llm_model", "tensorrt_llm")
        self.ids = itertools.count()
        self.token = np.array([process_token().encode()], dtype=object)
        self.prefix = f"chat-{os.getpid()}-{time.monotonic_ns()}"
        workers = int(params.get("max_streams") or DEFAULT_MAX_STREAMS)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chat-next")
        self.retired = collections.deque()  # (due, objects): released on the event-loop thread
        self.executor_set = False
        if self.grpc_url and settings.stub_deaths is not None:  # last: the thread reads self.llm, self.calls
            import threading

            watch = threading.Thread(target=self._watch_deaths, args=(settings.stub_deaths,), daemon=True)
            watch.start()

    async def execute(self, requests):
        if not self.executor_set:
            # async_exec's blocking part runs on the event loop's default executor (asyncio's default
            # is cpu count + 4 threads): the model's own pool takes it, so a burst of new streams does
            # not queue behind that. Measured at 20 ms/token: 64 of 64 streams open at once on one
            # instance with or without this (d00ccc8's "capped at 6" was a zero-delay artefact).
            asyncio.get_running_loop().set_default_executor(self.pool)
            self.executor_set = True
        await asyncio.gather(*(self._serve(request) for request in requests))
        return None

    # ----------------------------------------------------------------------------------------------
    # Object lifetimes (see the module docstring)

    def _retire(self, *objects):
        """Keep ``objects`` (finished iterators, their last responses) alive for RETIRE_S, then release
        them here on the event-loop thread, which holds the GIL."""
        self.retired.append((time.monotonic() + RETIRE_S, objects))
        asyncio.get_running_loop().call_later(RETIRE_S + 0.05, self._reap)

    def _reap(self):
        now = time.monotonic()
        while self.retired and self.retired[0][0] <= now:
            self.retired.popleft()

    def _send(self, sender, tensors, final=False):
        flags = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if final else 0
        response = pb_utils.InferenceResponse(output_tensors=tensors)
        sender.send(response, flags=flags)
        # ``tensors`` (and ``response``) are still referenced here, so nothing send() dropped without
        # the GIL was the last reference; they are released when this frame returns, with the GIL.
        return response

    # ----------------------------------------------------------------------------------------------

    async def _serve(self, request):
        from swallow_trt.text.pipeline import RequestError

        sender = request.get_response_sender()
        try:
            await self._chat(request, sender)
        except (RequestError, _Died) as exc:
            self._fail(sender, str(exc))
        except Exception as exc:  # a failed LLM call: an error response, the server stays healthy
            self._fail(sender, f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _fail(sender, message):
        response = pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
        # The sender may already be closed (the stream ended before the failure).
        with contextlib.suppress(Exception):
            sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    @staticmethod
    def _wanted(request):
        try:
            names = set(request.requested_output_names())
        except Exception:
            names = set()
        return names or {"text_output", "num_output_tokens", "reasoning_output", "instance"}

    @staticmethod
    def _tensors(wanted, text, count, reasoning=""):
        tensors = []
        if "num_output_tokens" in wanted:
            tensors.append(pb_utils.Tensor("num_output_tokens", np.array([count], dtype=np.int32)))
        # Never an empty BYTES element: one crashed this release's stub (see the module docstring).
        if text and "text_output" in wanted:
            tensors.append(pb_utils.Tensor("text_output", np.array([text.encode("utf-8")], dtype=object)))
        if reasoning and "reasoning_output" in wanted:
            tensors.append(
                pb_utils.Tensor("reasoning_output", np.array([reasoning.encode("utf-8")], dtype=object))
            )
        return tensors

    def _inputs(self, request):
        from swallow_trt.text.pipeline import RequestError, history_of, int_of, text_of, texts_of
        from swallow_trt.triton_repo.sampling import request_options

        raw = _opt(request, "text_input")
        if raw is None:
            raise RequestError("text_input is required")
        text = text_of(raw, "text_input")
        max_tokens = self.prompter.check_max_tokens(int_of(_opt(request, "max_tokens"), "max_tokens"))
        min_tokens = int_of(_opt(request, "min_tokens"), "min_tokens", 0)
        if min_tokens < 0:
            raise RequestError(f"min_tokens must not be negative, got {min_tokens}")
        system = _opt(request, "system_prompt")
        system = text_of(system, "system_prompt") if system is not None else None
        history = _opt(request, "history")
        history = history_of(history) if history is not None else []
        stops = _opt(request, "stop")
        stops = texts_of(stops, "stop") if stops is not None else []
        ignore_eos = _opt(request, "ignore_eos")
        ignore_eos = bool(np.asarray(ignore_eos).reshape(-1)[0]) if ignore_eos is not None else False
        thinking = _opt(request, "enable_thinking")
        thinking = bool(np.asarray(thinking).reshape(-1)[0]) if thinking is not None else None
        effort = _opt(request, "reasoning_effort")
        effort = text_of(effort, "reasoning_effort") if effort is not None else None
        options = request_options(lambda name: _opt(request, name))
        ids = self.prompter.encode_chat(text, history, system, thinking=thinking, reasoning_effort=effort)
        end_id = -1 if ignore_eos or self.prompter.end_id is None else self.prompter.end_id
        # The family's stop words are its end-of-turn tokens: ignore_eos ignores them too.
        family = [] if ignore_eos else list(self.prompter.stop_words)
        arrays = [
            ("input_ids", np.array([ids], dtype=np.int32)),
            ("input_lengths", np.array([[len(ids)]], dtype=np.int32)),
            ("request_output_len", np.array([[max_tokens]], dtype=np.int32)),
            ("streaming", np.array([[True]], dtype=bool)),
            ("stop_words_list", self.prompter.stop_words_array(stops, family)),
            ("end_id", np.array([[end_id]], dtype=np.int32)),
            ("min_tokens", np.array([[min_tokens]], dtype=np.int32)),
            *options,
        ]
        return arrays, [*family, *stops], ids

    async def _chat(self, request, sender):
        from swallow_trt.text.pipeline import StopFilter
        from swallow_trt.text.reasoning import ReasoningSplitter

        wanted = self._wanted(request)
        arrays, stops, prompt_ids = self._inputs(request)
        report = _opt(request, "report_instance")
        if report is not None and bool(np.asarray(report).reshape(-1)[0]) and "instance" in wanted:
            self._send(sender, [pb_utils.Tensor("instance", self.token)])
        rid = f"{self.prefix}-{next(self.ids)}"
        split = ReasoningSplitter.for_prompt(self.prompter.tokenizer, self.prompter.chat_format, prompt_ids)
        stream = _Stream(self, request, sender, wanted, split, StopFilter(stops), rid)
        if self.grpc_url:
            call = _GrpcCall(self._grpc(), self.llm, rid, arrays)
            self.calls[rid] = call
            try:
                await asyncio.wrap_future(self.pool.submit(stream.pump, call.events()))
            finally:
                self.calls.pop(rid, None)
                call.close()
        else:
            tensors = [pb_utils.Tensor(name, value) for name, value in arrays]
            llm = pb_utils.InferenceRequest(
                model_name=self.llm,
                inputs=tensors,
                requested_output_names=["output_ids", "sequence_length"],
                request_id=rid,
            )
            iterator = await llm.async_exec(decoupled=True)
            try:
                await asyncio.wrap_future(self.pool.submit(stream.pump, stream.bls_events(iterator)))
            finally:
                self._retire(iterator, llm, stream.last, tensors)
                stream.last = None
        if stream.stopping is not None:  # a failed stop: an error response if the stream is still open
            await asyncio.wrap_future(stream.stopping)

    def _grpc(self):
        if self.grpc_stub is None:
            import grpc
            from tritonclient.grpc import service_pb2_grpc

            options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
            channel = grpc.insecure_channel(self.grpc_url, options=options)
            self.grpc_stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        return self.grpc_stub

    def _watch_deaths(self, path):
        """End the calls in flight on a ``tensorrt_llm`` none of whose stubs lived (the module docstring)."""
        from swallow_trt.triton_repo.stubs import DeathFeed

        feed = DeathFeed(path)
        while True:
            time.sleep(DEATH_CHECK_S)
            for death in feed.fatal(self.llm):
                for call in list(self.calls.values()):
                    if call.started_ns < death.at_ns:
                        call.died(death.message())

    async def _stop(self, rid):
        """End ``tensorrt_llm``'s generation of request ``rid`` (the C++ backend's ``stop`` input)."""
        inputs = [
            pb_utils.Tensor("input_ids", np.array([[0]], dtype=np.int32)),
            pb_utils.Tensor("input_lengths", np.array([[1]], dtype=np.int32)),
            pb_utils.Tensor("request_output_len", np.array([[1]], dtype=np.int32)),
            pb_utils.Tensor("stop", np.array([[True]], dtype=bool)),
        ]
        stop = pb_utils.InferenceRequest(
            model_name=self.llm, inputs=inputs, requested_output_names=["output_ids"], request_id=rid
        )
        iterator = await stop.async_exec(decoupled=True)
        responses = None
        try:
            responses = await asyncio.wrap_future(self.pool.submit(list, iterator))
        finally:
            self._retire(iterator, stop, responses, inputs)

    def finalize(self):
        self.pool.shutdown(wait=False, cancel_futures=True)


class _Stream:
    """One chat stream's per-token work, on the pool thread that owns the stream (``pump``)."""

    def __init__(self, model, request, sender, wanted, split, filt, rid):
        self.model, self.request, self.sender, self.wanted = model, request, sender, wanted
        self.split, self.filt, self.rid = split, filt, rid
        self.loop = asyncio.get_running_loop()
        self.last = None  # the newest response: released with the iterator (see the module docstring)
        self.stopping = None  # the stop request's future, once one was sent

    def bls_events(self, iterator):
        """(error message or None, token ids) per response of a BLS stream."""
        for response in iterator:
            self.last = response
            if response.has_error():
                yield response.error().message(), []
                continue
            out = pb_utils.get_output_tensor_by_name(response, "output_ids")
            yield None, [] if out is None else out.as_numpy().reshape(-1).tolist()

    def pump(self, events):
        count, checked, ended, error = 0, time.monotonic(), False, None
        for failure, tokens in events:
            if ended:
                continue  # drain the stream to its final response (see the module docstring)
            try:
                if failure is not None:
                    raise RuntimeError(failure)
                if tokens:
                    count += len(tokens)
                    delta = self.split.push(tokens)
                    text = self.filt.feed(delta.content)
                    if text or delta.reasoning:
                        self.model._send(
                            self.sender, self.model._tensors(self.wanted, text, count, delta.reasoning)
                        )
                cancelled = False
                if time.monotonic() - checked > CANCEL_CHECK_S:
                    checked = time.monotonic()
                    cancelled = self.request.is_cancelled()
                if self.filt.stopped or cancelled:
                    ended = True
                    self._stop()
                    if cancelled:
                        self.sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                        self.sender = None
            except Exception as exc:
                # Keep draining (the iterator must finish here, not in its destructor on the loop),
                # and stop the generation, which now serves nobody.
                error, ended = exc, True
                self._stop()
        if error is not None:
            raise error
        if self.sender is not None:
            rest = self.split.flush()
            text = self.filt.feed(rest.content) + self.filt.close()
            self.model._send(
                self.sender, self.model._tensors(self.wanted, text, count, rest.reasoning), final=True
            )

    def _stop(self):
        # BLS calls stay on the event loop; the pump goes on draining meanwhile.
        if self.stopping is None:
            self.stopping = asyncio.run_coroutine_threadsafe(self.model._stop(self.rid), self.loop)


class _Died(RuntimeError):
    """The stub of the ``tensorrt_llm`` that served a stream died (the module docstring)."""


class _GrpcCall:
    """One ``ModelStreamInfer`` call to the server's own gRPC endpoint, for one generation (Triton 2.51)."""

    def __init__(self, stub, model, rid, arrays):
        from swallow_trt.triton_repo.grpc_stream import infer_request

        self.requests = queue.SimpleQueue()
        self.requests.put(infer_request(model, rid, arrays))
        self.call = stub.ModelStreamInfer(iter(self.requests.get, None))
        self.finished = False
        self.started_ns = time.monotonic_ns()
        self.death = None  # why the call was ended: tensorrt_llm's stub died (died())

    def died(self, message):
        self.death = message
        self.call.cancel()

    def events(self):
        """(error message or None, token ids) per response, until the final one (an error response
        carries the final flag too, when it is the last)."""
        import grpc

        try:
            yield from self._messages()
        except (grpc.RpcError, RuntimeError):
            if self.death is None:
                raise
            raise _Died(self.death) from None

    def _messages(self):
        from swallow_trt.triton_repo.grpc_stream import is_final, output_ids

        for message in self.call:
            response = message.infer_response
            yield (message.error_message or None), ([] if message.error_message else output_ids(response))
            if is_final(response):
                self.finished = True
                break
        if not self.finished:
            raise RuntimeError("the stream from tensorrt_llm ended before its final response")

    def close(self):
        self.requests.put(None)  # our side of the call ends: the call completes
        if not self.finished:
            self.call.cancel()
