"""The profiler's load generator: client processes that stream requests over gRPC and time every response.

Each worker is a ``spawn`` process with its own gRPC client and one stream (``start_stream``) that
multiplexes its requests; responses are matched by request id and timed with CLOCK_MONOTONIC
(``time.monotonic_ns``), which every process on the host shares. Two ways to drive the load:

- closed loop (``slot_starts``): each worker keeps its share of the concurrency busy, sending the next
  request as soon as one ends (its final response or an error); the slots start together at t0, or
  spread over a ramp-up;
- open loop (``schedule``): each request has a scheduled send time (a Poisson process drawn by the
  parent); the worker sends it then, whatever is still in flight, and latencies count from the
  *scheduled* time, so a slow server (or a late client) shows in the figures instead of being hidden.

The callback does as little as possible (reads the token count from the raw output bytes; no numpy), and
each worker reports its own headroom: CPU time, the share of the wall time its callback thread was busy,
and (from the records) how late each send was against its schedule.

Tokens are counted from what the server says, never by re-tokenising text: ``sequence_length`` per
response (``tensorrt_llm``, ``ensemble``; ``output_ids`` length if absent), or the cumulative
``num_output_tokens`` (``chat``). Error responses carry no request id in tritonclient's stream callback,
so a worker attributes them to its unfinished requests in order; a broken stream fails every request
still in flight.

The ``openai`` target (an OpenAI-compatible API, ``--api openai``) runs the same jobs over HTTP/1.1 and
server-sent events instead (:mod:`swallow_trt.profiler.openai_client`, asyncio in the same processes),
into the same records (:mod:`swallow_trt.profiler.records`).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from swallow_trt.profiler.records import Job, Kind, Rec, WorkerResult

COUNT_OUTPUT: dict[str, tuple[str, bool]] = {  # kind -> (output carrying the count, cumulative?)
    "tensorrt_llm": ("sequence_length", False),
    "ensemble": ("sequence_length", False),
    "chat": ("num_output_tokens", True),
}
SERVER_TIME_OUTPUT = "last_token_time_ns"  # the send time, where a model reports it (same-host clocks)
INPUT_COUNT_OUTPUT = "num_input_tokens"


@dataclass(frozen=True)
class Target:
    """A served streaming model and how to talk to it."""

    name: str
    kind: Kind
    batched: bool  # max_batch_size > 0: every tensor gets a leading batch dimension of 1
    inputs: frozenset[str]  # the inputs the model declares (optional ones are sent only if declared)

    def forced_length(self) -> bool:
        """Whether the output length can be forced (min tokens, no end token)."""
        need = {"tensorrt_llm": {"min_tokens", "end_id"}, "chat": {"min_tokens", "ignore_eos"},
                "ensemble": {"min_tokens", "end_id"}, "openai": {"min_tokens", "ignore_eos"}}[self.kind]  # fmt: skip
        return need <= self.inputs


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str  # Triton's: INT32, BOOL, BYTES
    values: tuple[Any, ...]
    shape: tuple[int, ...]


def request_tensors(target: Target, prompt: Sequence[int] | str, output_tokens: int) -> list[Tensor]:
    """The inputs of one request: the prompt and a forced output length where the model allows it
    (``min_tokens`` = the output length with no end token: ``end_id`` -1, or ``ignore_eos`` for chat)."""
    lead = (1,) if target.batched else ()

    def t(name: str, datatype: str, values: Sequence[Any]) -> Tensor:
        return Tensor(name, datatype, tuple(values), (*lead, len(values)))

    out: list[Tensor] = []
    if target.kind == "tensorrt_llm":
        if isinstance(prompt, str):
            raise TypeError("the tensorrt_llm target takes token ids")
        out += [
            t("input_ids", "INT32", prompt),
            t("input_lengths", "INT32", [len(prompt)]),
            t("request_output_len", "INT32", [output_tokens]),
            t("streaming", "BOOL", [True]),
        ]
        optional = [t("min_tokens", "INT32", [output_tokens]), t("end_id", "INT32", [-1])]
    else:
        if not isinstance(prompt, str):
            raise TypeError(f"the {target.kind} target takes text")
        out += [t("text_input", "BYTES", [prompt.encode("utf-8")]), t("max_tokens", "INT32", [output_tokens])]
        optional = [t("min_tokens", "INT32", [output_tokens])]
        if target.kind == "chat":
            optional.append(t("ignore_eos", "BOOL", [True]))
        else:
            optional += [t("end_id", "INT32", [-1]), t("stream", "BOOL", [True])]
    out += [x for x in optional if x.name in target.inputs]
    return out


def _infer_inputs(tensors: list[Tensor]) -> list[Any]:
    import numpy as np
    import tritonclient.grpc as grpcclient

    np_types = {"INT32": np.int32, "BOOL": np.bool_, "BYTES": np.object_}
    built = []
    for x in tensors:
        i = grpcclient.InferInput(x.name, list(x.shape), x.datatype)
        i.set_data_from_numpy(np.array(x.values, dtype=np_types[x.datatype]).reshape(x.shape))
        built.append(i)
    return built


class _Stream:
    """One worker's stream for one job: sends, times and counts."""

    def __init__(self, client: Any, target: Target, inputs: list[list[Any]], job: Job) -> None:
        self.client = client
        self.target = target
        self.inputs = inputs
        self.job = job
        self.records: list[Rec] = []
        self.lock = threading.Condition()
        self.finished = 0
        self.errors: list[str] = []
        self.broken: str | None = None
        self.busy_ns = 0
        self.responses = 0
        self.free: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self.count_name, self.cumulative = COUNT_OUTPUT[target.kind]

    def callback(self, result: Any, error: Any) -> None:
        t = time.monotonic_ns()
        if error is not None:
            self._error(error)
        else:
            self._response(result.get_response(), t)
        self.busy_ns += time.monotonic_ns() - t

    def _error(self, error: Any) -> None:
        with self.lock:
            status = error.status() if hasattr(error, "status") else None
            if status:  # the stream itself failed: nothing more will arrive
                self.broken = str(error)
            else:
                self.errors.append(str(error))
                self.finished += 1
                self.free.put(1)
            self.lock.notify_all()
        if status:
            self.free.put(None)

    def _response(self, r: Any, t: int) -> None:
        self.responses += 1
        rec = self.records[int(r.id)]
        count: int | None = None
        ids_len: int | None = None
        raw = r.raw_output_contents
        for i, o in enumerate(r.outputs):
            name = o.name
            if name == self.count_name:
                count = int.from_bytes(raw[i][:4], "little", signed=True)
            elif name == SERVER_TIME_OUTPUT:
                rec.server_ns.append(int.from_bytes(raw[i][:8], "little", signed=True))
            elif name == INPUT_COUNT_OUTPUT:
                rec.input_tokens = int.from_bytes(raw[i][:4], "little", signed=True)
            elif name == "output_ids" and o.shape:
                ids_len = int(o.shape[-1])  # used only where sequence_length is absent
        n = count if count is not None else (ids_len if self.target.kind == "tensorrt_llm" else None)
        if n is None:
            n = 0
        elif self.cumulative:
            n, rec.tokens = n - rec.tokens, n
        else:
            rec.tokens += n
        if n > 0:
            rec.chunk_ns.append(t)
            rec.chunk_tokens.append(n)
        if len(rec.server_ns) > len(rec.chunk_ns):
            rec.server_ns.pop()  # an empty response's timestamp: keep them paired with the token chunks
        if r.parameters["triton_final_response"].bool_param:
            rec.final_ns = t
            with self.lock:
                self.finished += 1
                self.lock.notify_all()
            self.free.put(1)

    def send(self, index: int, scheduled_ns: int) -> None:
        prompt = index % len(self.inputs)
        rec = Rec(index=index, prompt=prompt, scheduled_ns=scheduled_ns)
        local = len(self.records)
        self.records.append(rec)
        rec.sent_ns = time.monotonic_ns()
        if self.job.mode == "closed":
            rec.scheduled_ns = rec.sent_ns
        self.client.async_stream_infer(
            self.target.name, self.inputs[prompt], request_id=str(local), enable_empty_final_response=True
        )

    def wait_all(self, stop: threading.Event) -> None:
        deadline = time.monotonic_ns() + self.job.timeout_ns
        with self.lock:
            while self.finished < len(self.records) and self.broken is None and not stop.is_set():
                left = deadline - time.monotonic_ns()
                if left <= 0:
                    break
                self.lock.wait(min(left / 1e9, 0.1))

    def settle(self) -> None:
        """Mark what never finished: error responses in order, else broken / incomplete."""
        errors = iter(self.errors)
        for rec in self.records:
            if rec.final_ns == 0 and not rec.error:
                rec.error = next(errors, None) or self.broken or "incomplete: no final response"


def _sleep_until(t_ns: int, stop: threading.Event) -> bool:
    """Wait for ``t_ns``; False if stopped first."""
    while True:
        left = t_ns - time.monotonic_ns()
        if left <= 0:
            return not stop.is_set()
        if stop.wait(left / 1e9):
            return False


def _run_job(
    client: Any, target: Target, inputs: list[list[Any]], job: Job, stop: threading.Event
) -> WorkerResult:
    s = _Stream(client, target, inputs, job)
    cpu0 = time.process_time()
    client.start_stream(callback=s.callback)
    try:
        if _sleep_until(job.t0_ns, stop):
            if job.mode == "open":
                for index, at in job.schedule:
                    if not _sleep_until(at, stop) or s.broken:
                        break
                    s.send(index, at)
            else:
                k = 0
                for at in job.slot_starts:  # each slot's first request (all at t0 without a ramp-up)
                    if (job.count is not None and k >= job.count) or not _sleep_until(at, stop) or s.broken:
                        break
                    s.send(job.first_index + k * job.stride, 0)
                    k += 1
                while not stop.is_set() and s.broken is None and (job.count is None or k < job.count):
                    if job.deadline_ns is not None and time.monotonic_ns() >= job.deadline_ns:
                        break
                    try:
                        token = s.free.get(timeout=0.1)
                    except queue.Empty:
                        continue
                    if token is None:
                        break
                    if job.deadline_ns is not None and time.monotonic_ns() >= job.deadline_ns:
                        break
                    s.send(job.first_index + k * job.stride, 0)
                    k += 1
        s.wait_all(stop)
    except Exception as exc:
        s.broken = s.broken or f"{type(exc).__name__}: {exc}"
    finally:
        pending = any(r.final_ns == 0 for r in s.records)
        with contextlib.suppress(Exception):
            client.stop_stream(cancel_requests=pending)
    s.settle()
    end = max([job.t0_ns, *(r.final_ns for r in s.records)])
    return WorkerResult(
        worker=-1,
        records=s.records,
        wall_ns=max(1, end - job.t0_ns),
        cpu_s=time.process_time() - cpu0,
        callback_busy_ns=s.busy_ns,
        responses=s.responses,
        stopped=stop.is_set(),
    )


def worker_main(
    conn: Any, worker: int, url: str, target: Target, prompts: list[Any], output_tokens: int,
    api_key: str | None = None,
) -> None:  # fmt: skip
    """A client process: build every prompt's inputs once, then run jobs until told to exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and tells us to stop
    try:
        if target.kind == "openai":
            from swallow_trt.profiler import openai_client as oai

            endpoint = oai.parse_http_url(url)
            forced = target.forced_length()
            requests = [
                oai.http_request(endpoint, oai.CHAT_PATH, oai.chat_body(target.name, p, output_tokens, forced),
                                 api_key)
                for p in prompts
            ]  # fmt: skip
            client: Any = None
        else:
            import tritonclient.grpc as grpcclient

            client = grpcclient.InferenceServerClient(url)
            inputs = [_infer_inputs(request_tensors(target, p, output_tokens)) for p in prompts]
    except Exception as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    stop = threading.Event()
    commands: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def listen() -> None:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):  # the parent is gone
                os._exit(0)
            if msg[0] == "stop":
                stop.set()
            else:
                commands.put(msg)

    threading.Thread(target=listen, daemon=True).start()
    conn.send(("ready", worker))
    while True:
        msg = commands.get()
        if msg[0] == "exit":
            break
        stop.clear()
        if client is None:
            result = oai.run_job(endpoint, requests, msg[1], stop)
        else:
            result = _run_job(client, target, inputs, msg[1], stop)
        result.worker = worker
        conn.send(("result", result))
    if client is not None:
        with contextlib.suppress(Exception):
            client.close()


# --------------------------------------------------------------------------------------------------
# The parent's side


class WorkerPool:
    """``n`` client processes, started once and reused for every load point."""

    def __init__(self, n: int, url: str, target: Target, prompts: list[Any], output_tokens: int,
                 start_timeout_s: float = 120, api_key: str | None = None) -> None:  # fmt: skip
        import multiprocessing as mp

        from swallow_trt.errors import StageFailed

        ctx = mp.get_context("spawn")
        self.conns: list[Any] = []
        self.procs: list[Any] = []
        for w in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=worker_main, args=(child, w, url, target, prompts, output_tokens, api_key), daemon=True,
                name=f"swallow-trt-profile-{w}",
            )  # fmt: skip
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)
        try:
            for conn in self.conns:
                if not conn.poll(start_timeout_s):
                    raise StageFailed("a profiler client process did not start", "check the machine's load")
                try:
                    msg = conn.recv()
                except EOFError:
                    raise StageFailed(
                        "a profiler client process exited at start", "run with SWALLOW_TRT_DEBUG=1"
                    ) from None
                if msg[0] != "ready":
                    raise StageFailed(
                        f"a profiler client process failed: {msg[1]}", "check --url and --model"
                    )
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self.conns)

    def run(self, jobs: list[Job]) -> tuple[list[WorkerResult], bool]:
        """Run one job per worker (fewer jobs: the first workers); (results, interrupted by Ctrl-C)."""
        used = self.conns[: len(jobs)]
        for conn, job in zip(used, jobs, strict=True):
            conn.send(("job", job))
        results: list[WorkerResult] = []
        interrupted = False
        pending = list(used)
        while pending:
            try:
                for conn in list(pending):
                    if conn.poll(0.05):
                        msg = conn.recv()
                        results.append(msg[1])
                        pending.remove(conn)
            except KeyboardInterrupt:
                interrupted = True
                for conn in pending:
                    with contextlib.suppress(OSError):
                        conn.send(("stop",))
            except EOFError:
                from swallow_trt.errors import StageFailed

                raise StageFailed(
                    "a profiler client process died", "rerun; report it if it repeats"
                ) from None
        return sorted(results, key=lambda r: r.worker), interrupted

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(("exit",))
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        for conn in self.conns:
            conn.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
