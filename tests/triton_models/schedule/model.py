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
  request's arrival; sends that fell due meanwhile go out when the stall ends.
"""

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
        self.stall_until = 0
        self.received = 0
        self.heap = []
        self.seq = itertools.count()
        self.cond = threading.Condition()
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def execute(self, requests):
        now = time.monotonic_ns()
        for request in requests:
            sender = request.get_response_sender()
            problem = self._check(request)
            if problem:
                sender.send(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(problem)),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                )
                continue
            n = _scalar(request, "request_output_len")
            ids = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy().reshape(-1)
            state = {"sender": sender, "left": n, "sent": 0, "start": now, "inputs": len(ids), "tok": 0}
            with self.cond:
                self.received += 1
                if self.stall_period and self.received % self.stall_period == self.stall_at:
                    self.stall_until = now + self.stall_ns
                heapq.heappush(self.heap, (now + self.first_ns, next(self.seq), state))
                self.cond.notify()
        return None

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
        while self.running:
            due = []
            with self.cond:
                while self.running:
                    now = time.monotonic_ns()
                    gate = max(self.heap[0][0], self.stall_until) if self.heap else None
                    if gate is not None and gate <= now:
                        break
                    self.cond.wait(None if gate is None else (gate - now) / 1e9)
                while self.heap and self.heap[0][0] <= now and self.stall_until <= now:
                    due.append(heapq.heappop(self.heap))
            for _, _, state in due:
                if self._send(state):
                    last = (
                        state["sent"] + min(self.chunk, state["left"]) - 1
                    )  # the next response's last token
                    at = state["start"] + self.first_ns + last * self.interval_ns
                    with self.cond:
                        heapq.heappush(self.heap, (at, next(self.seq), state))

    def _send(self, state):
        """Send the next response (one token first, then up to ``chunk``); True when more are to come."""
        n = 1 if state["sent"] == 0 else min(self.chunk, state["left"])
        ids = [(state["sent"] + j) % 1000 + 10 for j in range(n)]
        state["left"] -= n
        state["sent"] += n
        last = state["left"] == 0
        tensors = [
            pb_utils.Tensor("output_ids", np.array([[ids]], dtype=np.int32)),
            pb_utils.Tensor("sequence_length", np.array([[n]], dtype=np.int32)),
            pb_utils.Tensor("last_token_time_ns", np.array([[time.monotonic_ns()]], dtype=np.int64)),
        ]
        if state["sent"] == n:
            tensors.append(pb_utils.Tensor("num_input_tokens", np.array([[state["inputs"]]], dtype=np.int32)))
        flags = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if last else 0
        try:
            state["sender"].send(pb_utils.InferenceResponse(output_tensors=tensors), flags=flags)
        except Exception:  # the client went away: drop the request
            return False
        return not last

    def finalize(self):
        with self.cond:
            self.running = False
            self.cond.notify()
        self.thread.join(timeout=5)
