"""Test-only ``tensorrt_llm`` stand-in that emits tokens on a fixed schedule: the ground truth the
profiler's figures are checked against.

Per request: exactly ``request_output_len`` tokens, token ``i`` (from 0) due ``first_token_ms + i *
token_interval_ms`` after the request reached ``execute``. The first token goes out alone; the others in
responses of ``tokens_per_response`` (each sent when its last token is due), so TPOT is exactly the
interval while the gap between responses is ``tokens_per_response`` intervals; the last response carries
the final flag. Every response carries ``sequence_length`` (tokens in it), ``last_token_time_ns`` (the
CLOCK_MONOTONIC time of the send, comparable with the client's clock on the same host) and the first
one ``num_input_tokens`` (the prompt length received).

One scheduler thread holds a heap of due times and sends every response itself (no thread per
request): 64 concurrent streams keep the schedule on 2 cores.

Parameters (config.pbtxt ``parameters``, strings):
- ``first_token_ms`` (50), ``token_interval_ms`` (10), ``tokens_per_response`` (1);
- ``require_forced_length`` ("true"): refuse requests without ``min_tokens == request_output_len`` and
  ``end_id == -1`` (what the profiler must send to force the output length);
- ``stall_ms``, ``stall_at``, ``stall_period``: when the number of requests received so far, modulo
  ``stall_period``, equals ``stall_at``, hold every send (of every request) for ``stall_ms`` from that
  request's arrival; sends that fell due meanwhile go out when the stall ends. Each send is stamped and
  checked against the stall under the lock that sets it, so no send is stamped between the moment a
  stall is set and its end;
- the ``stop`` input, as the C++ backend honours it: a request with stop=true ends the request with the
  same request id (its final response is an empty one, sent by the scheduler at once, with no token
  after the stop) and gets an empty final response itself;
- ``fail_after_tokens`` (0: never): a request that has been sent that many tokens gets an error response
  instead of its next one, as a ``tensorrt_llm`` that fails mid-generation, in one of the two ways a
  decoupled model can: for an odd ``request_output_len``, the error response carries the final flag; for
  an even one, the error response is followed by an empty final response (tests pick the way per request
  through the length they ask for);
- ``record_path`` (none): append what the model did, one JSON object a line, so tests can hold the
  profiler to it: per request, written just before its final send (so a client that has the final
  response finds the line), ``{"arrival", "received", "inputs", "due", "sent", "tokens"}`` (``arrival``:
  CLOCK_MONOTONIC ns when ``execute`` took it; ``received``: its place in the arrival order, from 1;
  ``due``/``sent``/``tokens``: per response, when it was due, its ``last_token_time_ns`` stamp, its
  token count; ``dropped``: true when the client had gone; for a stopped request, ``stopped``: when
  ``execute`` took its stop request, and ``ended``: the stamp of its final send); per stall, when it is set,
  ``{"stall": {"received", "arrival", "set", "until"}}``.
"""

import contextlib
import heapq
import itertools
import json
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils


def _scalar(request, name):
    t = pb_utils.get_input_tensor_by_name(request, name)
    return None if t is None else int(t.as_numpy().reshape(-1)[0])


_FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.first_ns = int(float(params.get("first_token_ms", "50")) * 1e6)
        self.interval_ns = int(float(params.get("token_interval_ms", "10")) * 1e6)
        self.chunk = int(params.get("tokens_per_response", "1"))
        self.require_forced = params.get("require_forced_length", "true") == "true"
        self.stall_ns = int(float(params.get("stall_ms", "0")) * 1e6)
        self.stall_at = int(params.get("stall_at", "0") or 0)
        self.stall_period = int(params.get("stall_period", "0") or 0)
        self.fail_after = int(params.get("fail_after_tokens", "0") or 0)
        record = params.get("record_path", "")
        self.record = open(record, "a", encoding="utf-8") if record else None  # noqa: SIM115 - open for the model's life
        self.stall_until = 0
        self.received = 0
        self.heap = []
        self.by_id = {}  # request id -> state of a running request (for stop requests)
        self.seq = itertools.count()
        self.cond = threading.Condition()
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def execute(self, requests):
        now = time.monotonic_ns()
        for request in requests:
            sender = request.get_response_sender()
            if _scalar(request, "stop"):
                self._stop(request.request_id(), now)
                sender.send(flags=_FINAL)
                continue
            problem = self._check(request)
            if problem:
                sender.send(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(problem)),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                )
                continue
            n = _scalar(request, "request_output_len")
            ids = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy().reshape(-1)
            state = {"sender": sender, "left": n, "sent": 0, "start": now, "inputs": len(ids), "n": n,
                     "due": [], "stamps": [], "tokens": [], "id": request.request_id()}  # fmt: skip
            with self.cond:
                if state["id"]:
                    self.by_id[state["id"]] = state
                self.received += 1
                state["received"] = self.received
                if self.stall_period and self.received % self.stall_period == self.stall_at:
                    self.stall_until = now + self.stall_ns
                    self._write({"stall": {"received": self.received, "arrival": now,
                                           "set": time.monotonic_ns(), "until": self.stall_until}})  # fmt: skip
                heapq.heappush(self.heap, (now + self.first_ns, next(self.seq), state))
                self.cond.notify()
        return None

    def _stop(self, rid, now):
        with self.cond:
            state = self.by_id.pop(rid, None) if rid else None
            if state is not None:
                state["stopped"] = now
                # Due now: the scheduler ends it before any send that fell due after the stop.
                heapq.heappush(self.heap, (now, next(self.seq), state))
                self.cond.notify()

    def _check(self, request):
        n = _scalar(request, "request_output_len")
        if n is None or n < 1:
            return "request_output_len must be at least 1"
        length = _scalar(request, "input_lengths")
        ids = pb_utils.get_input_tensor_by_name(request, "input_ids")
        if ids is None or length != ids.as_numpy().size:
            return "input_lengths does not match input_ids"
        if self.require_forced and (_scalar(request, "min_tokens") != n or _scalar(request, "end_id") != -1):
            return "output length not forced: send min_tokens = request_output_len and end_id = -1"
        if _scalar(request, "streaming") != 1:
            return "streaming must be true"
        return None

    def _loop(self):
        while True:
            with self.cond:
                while self.running:
                    now = time.monotonic_ns()
                    gate = max(self.heap[0][0], self.stall_until) if self.heap else None
                    if gate is not None and gate <= now:
                        break
                    self.cond.wait(None if gate is None else (gate - now) / 1e9)
                if not self.running:
                    return
                due, _, state = heapq.heappop(self.heap)
                # Stamped under the lock that sets a stall: a stall set after this stamp holds the
                # sends after it, so no stamp falls inside a stall (what tests hold the profiler to).
                stamp = time.monotonic_ns()
            if "ended" in state:  # a stopped request's entry left in the heap
                continue
            if "stopped" in state:
                state["ended"] = stamp
                self._record(state, dropped=False)
                with contextlib.suppress(Exception):  # the client went away meanwhile: nothing to end
                    state["sender"].send(flags=_FINAL)
                continue
            state["due"].append(due)
            if self._send(state, stamp):
                last = state["sent"] + min(self.chunk, state["left"]) - 1  # the next response's last token
                at = state["start"] + self.first_ns + last * self.interval_ns
                with self.cond:
                    heapq.heappush(self.heap, (at, next(self.seq), state))

    def _send(self, state, stamp):
        """Send the next response (one token first, then up to ``chunk``); True when more are to come."""
        if self.fail_after and state["sent"] >= self.fail_after:
            return self._fail(state, stamp)
        n = 1 if state["sent"] == 0 else min(self.chunk, state["left"])
        ids = [(state["sent"] + j) % 1000 + 10 for j in range(n)]
        state["left"] -= n
        state["sent"] += n
        state["stamps"].append(stamp)
        state["tokens"].append(n)
        last = state["left"] == 0
        tensors = [
            pb_utils.Tensor("output_ids", np.array([[ids]], dtype=np.int32)),
            pb_utils.Tensor("sequence_length", np.array([[n]], dtype=np.int32)),
            pb_utils.Tensor("last_token_time_ns", np.array([[stamp]], dtype=np.int64)),
        ]
        if state["sent"] == n:
            tensors.append(pb_utils.Tensor("num_input_tokens", np.array([[state["inputs"]]], dtype=np.int32)))
        if last:  # before the send: a client holding the final response finds the record
            state["ended"] = stamp
            self._record(state, dropped=False)
        flags = _FINAL if last else 0
        try:
            state["sender"].send(pb_utils.InferenceResponse(output_tensors=tensors), flags=flags)
        except Exception:  # the client went away: drop the request
            if not last:
                state["ended"] = stamp
                self._record(state, dropped=True)
            return False
        return not last

    def _fail(self, state, stamp):
        """The error response that ends the request (``fail_after_tokens``); False: nothing more to come."""
        error = pb_utils.InferenceResponse(
            error=pb_utils.TritonError(f"generation failed after {state['sent']} tokens (test stand-in)")
        )
        state["ended"] = stamp
        self._record(state, dropped=False)
        with contextlib.suppress(Exception):  # the client went away meanwhile
            if state["n"] % 2:
                state["sender"].send(error, flags=_FINAL)
            else:
                state["sender"].send(error)
                state["sender"].send(flags=_FINAL)
        return False

    def _record(self, state, dropped):
        line = {k: state[k] for k in ("received", "inputs", "due", "tokens")}
        line |= {"arrival": state["start"], "sent": state["stamps"], "dropped": dropped}
        if "stopped" in state:
            line |= {"stopped": state["stopped"], "ended": state["ended"]}
        with self.cond:
            self.by_id.pop(state["id"], None)
            self._write(line)

    def _write(self, obj):
        """One line, flushed (the caller holds ``cond``: execute and the scheduler both write)."""
        if self.record is not None:
            self.record.write(json.dumps(obj) + "\n")
            self.record.flush()

    def finalize(self):
        with self.cond:
            self.running = False
            self.cond.notify()
        self.thread.join(timeout=5)
        if self.record is not None:
            self.record.close()
