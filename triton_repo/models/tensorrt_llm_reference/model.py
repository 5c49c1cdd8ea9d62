"""Reference ``tensorrt_llm`` model (Triton Python backend): the tensorrtllm backend's tensor contract,
served by transformers on CPU or GPU, so a whole repository runs on a real Triton server without
TensorRT-LLM. A KV cache per request; greedy unless the request asks for sampling (temperature,
runtime_top_k, runtime_top_p, seed, repetition/presence/frequency penalties, with TensorRT-LLM's
semantics: see ``swallow_trt.triton_repo.sampling``), and guided decoding (guided_decoding_guide_type
json / json_schema / regex / ebnf_grammar, guided_decoding_guide) with xgrammar's CPU matcher on the
repository's xgrammar tokenizer info, as the C++ backend does: each step's logits are masked by the
grammar's token bitmask, so the end token is allowed only where the grammar may end.

Like the C++ backend it batches in flight: ``execute`` only validates and queues; one scheduler thread
owns the model and, round after round, advances every active request by one token (a new request joins
at the next round, a finished one leaves), sending each streamed token as it is made. Honoured:
streaming, end_id (-1: none), min_tokens, stop_words_list, request_output_len, client cancellation, and
the ``stop`` input (a request with stop=true and the same request id ends that request, as in the C++
backend, which is how the chat model cancels the generation of a client that went away).

Metrics: the C++ backend's families, with its names, labels (``model``, ``version`` and one category label)
and meanings (NVIDIA/TensorRT-LLM triton_backend/inflight_batcher_llm/src/custom_metrics_reporter/
custom_metrics_reporter.cc at 89fd9b74, values as model_instance_state.cc's WaitForStats at c8c6df08 fills
them), through the Python backend's custom-metrics API, from this scheduler's own rounds and KV accounting:
``nv_trt_llm_request_metrics`` (active, max, scheduled, context, waiting = active - scheduled),
``nv_trt_llm_kv_cache_block_metrics`` (max, free, used, tokens_per, reused = 0, fraction = used / max),
``nv_trt_llm_inflight_batcher_metrics`` and ``nv_trt_llm_general_metrics``; not the runtime-memory,
disaggregated-serving and token-length families. The KV cache is counted in blocks of ``tokens_per_block``
tokens (default 32, trtllm-build's); its size is ``max_tokens_in_paged_kv_cache`` where the config sets it,
else room for ``max_batch_size`` sequences of the model's full length (so nothing ever waits for blocks). A
new request is scheduled as the C++ guaranteed_no_evict scheduler does: only when the blocks of its whole
sequence (prompt + request_output_len, at most a full-length sequence's) fit beside those reserved by the
requests already running; until then it is active but waiting. The scheduler thread publishes at most every
``stats_check_period_ms`` (default 100, the C++ default), only what changed; the gauges live as long as the
model and are dropped in ``finalize``, on the model's thread, before their families.

Triton 2.51's stub frees objects without the GIL (design notes, section 2), so no response is ever the
last holder of its tensors: each response's arrays and ``pb_utils.Tensor`` objects stay referenced by the
job (or the model, for returned responses) until after ``send()`` has returned, and a response carries
only the outputs the caller requested, so ``send()`` has none to drop.
"""

import json
import queue
import threading
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

CANCEL_CHECK_S = 0.05  # how often a running request asks the server whether its client cancelled it
PRODUCED = ("output_ids", "sequence_length")  # the contract's outputs this backend makes
# (family, description, category label, sub-labels): custom_metrics_reporter.cc's groups, in its order.
METRIC_GROUPS = (
    ("nv_trt_llm_request_metrics", "TRT LLM request metrics", "request_type",
     ("active", "max", "scheduled", "context", "waiting")),
    ("nv_trt_llm_kv_cache_block_metrics", "TRT LLM KV cache block metrics", "kv_cache_block_type",
     ("max", "free", "used", "tokens_per", "reused", "fraction")),
    ("nv_trt_llm_inflight_batcher_metrics", "TRT LLM inflight_batcher-specific metrics",
     "inflight_batcher_specific_metric",
     ("total_context_tokens", "generation_requests", "micro_batch_id", "paused_requests")),
    ("nv_trt_llm_general_metrics", "General TRT LLM metrics", "general_type", ("timestamp", "iteration_counter")),
)  # fmt: skip


def _opt(request, name):
    t = pb_utils.get_input_tensor_by_name(request, name)
    return None if t is None else t.as_numpy()


def _scalar(value, default=None):
    return default if value is None else np.asarray(value).reshape(-1)[0].item()


def _stop_sequences(words):
    """[2, L] (or [1, 2, L]) TensorRT-LLM word list -> list of id sequences."""
    if words is None:
        return []
    words = np.asarray(words).reshape(2, -1)
    flat, ends = words[0].tolist(), [int(e) for e in words[1].tolist() if int(e) > 0]
    out, start = [], 0
    for end in ends:
        out.append(flat[start:end])
        start = end
    return [s for s in out if s]


def _error(sender, message):
    sender.send(
        pb_utils.InferenceResponse(error=pb_utils.TritonError(message)),
        flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
    )


def _requested(request):
    """The outputs to send. A request that names its outputs must name both of PRODUCED: the C++
    backend's fillTritonResponse throws, as its first and final response, when output_ids or
    sequence_length is not among them (NVIDIA/TensorRT-LLM
    triton_backend/inflight_batcher_llm/src/model_instance_state.cc at c8c6df08)."""
    asked = set(request.requested_output_names())
    for name in PRODUCED:
        if asked and name not in asked:
            raise ValueError(
                f"Error encountered while populating response: {name} tensor must be present in list "
                "of output tensors"
            )
    return list(PRODUCED)


class Job:
    def __init__(self, request, sender, prompt, max_new, end_id, min_tokens, stops, streaming):
        self.request, self.sender = request, sender
        self.prompt, self.max_new, self.end_id, self.min_tokens = prompt, max_new, end_id, min_tokens
        self.stops, self.streaming = stops, streaming
        self.request_id = request.request_id()
        self.outputs = _requested(request)
        self.generated, self.past, self.next_input = [], None, None
        self.sampler, self.guide = None, None
        self.stopped = False  # by a stop request or a cancelled client
        self.last_check = time.monotonic()
        self.held = None  # the tensors of the last response sent, kept past its send()
        self.started = False  # scheduled once: its KV blocks are reserved until it ends


class TritonPythonModel:
    def initialize(self, args):
        import torch
        from transformers import AutoModelForCausalLM

        from swallow_trt.text.pipeline import model_parameters
        from swallow_trt.triton_repo.guided import Guides

        config = json.loads(args["model_config"])
        params = model_parameters(args)  # paths resolved against the repository root
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.model = (
            AutoModelForCausalLM.from_pretrained(params["gpt_model_path"], dtype=dtype).to(self.device).eval()
        )
        self.max_input_len = int(params.get("max_input_len", "0") or 0)
        self.guides = None
        if params.get("guided_decoding_backend") == "xgrammar" and params.get("xgrammar_tokenizer_info_path"):
            self.guides = Guides(Path(params["xgrammar_tokenizer_info_path"]), self.model.config.vocab_size)
        self.held = []  # returned (non-decoupled) responses and their tensors, until the next execute
        self.max_active = int(config.get("max_batch_size") or 1)
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        self.incoming = queue.Queue()
        self.lock = threading.Lock()
        self.by_id = {}  # request id -> active or queued Job (for stop requests)
        self._kv_setup(params)
        self.stats_period_s = int(params.get("stats_check_period_ms") or 100) / 1000
        self.published, self.published_at, self.iteration, self.stamp_us = {}, 0.0, 0, 0.0
        self.metrics = self._metrics(args["model_name"], args["model_version"])
        self._publish(self._stats(0, 0, [], 0))  # the cache's size from the start, not from the first request
        self.running = True
        self.worker = threading.Thread(target=self._loop, name="reference-scheduler", daemon=True)
        self.worker.start()

    # -- requests ---------------------------------------------------------------------------------
    def _parse(self, request, sender):
        ids = _opt(request, "input_ids")
        lengths = _opt(request, "input_lengths")
        out_len = _opt(request, "request_output_len")
        if ids is None or lengths is None or out_len is None:
            raise ValueError("input_ids, input_lengths and request_output_len are required")
        n_in = int(_scalar(lengths))
        prompt = np.asarray(ids).reshape(-1)[:n_in].tolist()
        max_new = int(_scalar(out_len))
        if n_in < 1 or not prompt:
            raise ValueError("empty prompt: input_lengths must be at least 1")
        if self.max_input_len and n_in > self.max_input_len:
            raise ValueError(f"prompt of {n_in} tokens exceeds max_input_len {self.max_input_len}")
        if max_new < 1:
            raise ValueError(f"request_output_len must be at least 1, got {max_new}")
        vocab = self.model.config.vocab_size
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise ValueError(f"input_ids must lie in [0, {vocab})")
        end_id = _scalar(_opt(request, "end_id"))
        end_id = None if end_id is None or int(end_id) < 0 else int(end_id)
        min_tokens = int(_scalar(_opt(request, "min_tokens"), 0))
        streaming = bool(_scalar(_opt(request, "streaming"), False))
        if streaming and not self.decoupled:
            raise ValueError("streaming needs the decoupled transaction policy")
        stops = _stop_sequences(_opt(request, "stop_words_list"))
        job = Job(request, sender, prompt, max_new, end_id, min_tokens, stops, streaming)
        self._sampling(job)
        return job

    def _sampling(self, job):
        from swallow_trt.triton_repo.sampling import Sampler, read_sampling

        s = read_sampling(lambda name: _opt(job.request, name))
        job.sampler = Sampler(s, self.device)
        if s.guided:
            if self.guides is None:
                raise ValueError(
                    "guided decoding is off in this repository (guided_decoding_backend is empty); "
                    "package it again to turn it on"
                )
            job.guide = self.guides.matcher(s.guide_type, s.guide, job.end_id)

    def execute(self, requests):
        if not self.decoupled:
            held, responses = [], []
            for request in requests:
                try:
                    job = self._parse(request, None)
                    while not self._step(job):
                        pass
                    tensors, response = self._response(job.generated, job.outputs)
                    held.append(tensors)
                except Exception as exc:  # an error response; the model stays up
                    response = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
                responses.append(response)
            # The stub sends these after execute returns: keep their tensors until the next call.
            self.held = [held, responses]
            return responses
        for request in requests:
            sender = request.get_response_sender()
            if bool(_scalar(_opt(request, "stop"), False)):
                self._stop_request(request, sender)
                continue
            try:
                job = self._parse(request, sender)
            except Exception as exc:
                _error(sender, str(exc))
                continue
            with self.lock:
                if job.request_id:
                    self.by_id[job.request_id] = job
            self.incoming.put(job)
        return None

    def _stop_request(self, request, sender):
        rid = request.request_id()
        if not rid:
            _error(sender, "a stop request needs the request id of the request to stop")
            return
        with self.lock:
            job = self.by_id.get(rid)
            if job is not None:
                job.stopped = True
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    # -- the scheduler ----------------------------------------------------------------------------
    def _loop(self):
        active = []
        while self.running:
            try:
                while len(active) < self.max_active:
                    active.append(self.incoming.get(block=not active, timeout=0.2))
            except queue.Empty:
                pass
            if not active:
                self._publish(self._stats(0, 0, [], 0))
                continue
            scheduled, new = self._schedule(active)
            finished = []
            for job in active:
                if job not in scheduled:  # waiting for KV blocks: it may still be stopped or cancelled
                    if self._stopped(job):
                        self._finish(job)
                        finished.append(job)
                    continue
                try:
                    done = self._step(job)
                except Exception as exc:
                    _error(job.sender, f"generation failed: {exc}")
                    finished.append(job)
                    continue
                if done:
                    self._finish(job)
                    finished.append(job)
            self.iteration += 1
            self.stamp_us = time.time() * 1e6
            if finished:
                active = [j for j in active if j not in finished]
                with self.lock:
                    for job in finished:
                        self.by_id.pop(job.request_id, None)
            used = sum(self._blocks(len(j.prompt) + len(j.generated)) for j in active if j.started)
            self._publish(self._stats(len(active) + len(finished), len(scheduled), new, used))

    def _stopped(self, job):
        """Whether ``job`` was stopped, asking the server at most every CANCEL_CHECK_S if its client cancelled."""
        now = time.monotonic()
        if job.sender is not None and now - job.last_check > CANCEL_CHECK_S:
            job.last_check = now
            job.stopped = job.stopped or job.request.is_cancelled()
        return job.stopped

    # -- KV accounting and metrics ----------------------------------------------------------------
    def _kv_setup(self, params):
        self.tokens_per_block = int(params.get("tokens_per_block") or 32)
        if self.tokens_per_block < 1:
            raise ValueError(f"tokens_per_block must be at least 1, got {self.tokens_per_block}")
        length = getattr(self.model.config, "max_position_embeddings", None) or self.max_input_len or 4096
        # A sequence's most (the C++ backend clips a request's output to max_seq_len).
        self.seq_blocks = self._blocks(int(length))
        tokens = int(params.get("max_tokens_in_paged_kv_cache") or 0)
        if tokens <= 0:  # room for every active request at the model's full length: none ever waits
            tokens = self.max_active * self.seq_blocks * self.tokens_per_block
        self.kv_max_blocks = max(1, tokens // self.tokens_per_block)

    def _blocks(self, tokens):
        return -(-tokens // self.tokens_per_block)

    def _need(self, job):
        """Blocks reserved for the whole sequence, at most a full-length one's and the whole cache (so that
        the longest request still runs, alone if need be)."""
        return min(self._blocks(len(job.prompt) + job.max_new), self.seq_blocks, self.kv_max_blocks)

    def _schedule(self, active):
        """(jobs to step this round, those of them in their context phase): every started job, then the others
        in arrival order while their blocks fit beside the started ones' (guaranteed_no_evict)."""
        reserved = sum(self._need(j) for j in active if j.started)
        run = {j for j in active if j.started}
        new = []
        for job in active:
            if job.started:
                continue
            if reserved + self._need(job) > self.kv_max_blocks:
                break
            reserved += self._need(job)
            job.started = True
            new.append(job)
        return run.union(new), new

    def _metrics(self, model, version):
        """(families, gauges by (family, sub-label)): one gauge per sub-label, labelled as the C++ backend's."""
        families, gauges = [], {}
        for name, description, category, subs in METRIC_GROUPS:
            family = pb_utils.MetricFamily(
                name=name, description=description, kind=pb_utils.MetricFamily.GAUGE
            )
            families.append(family)
            for sub in subs:
                gauges[name, sub] = family.Metric(
                    labels={"model": model, "version": str(version), category: sub}
                )
        return families, gauges

    def _stats(self, active, scheduled, new, used):
        """This round's values (model_instance_state.cc WaitForStats: waiting = active - scheduled)."""
        req, kv, ifb, general = (group[0] for group in METRIC_GROUPS)
        top = self.kv_max_blocks
        return {
            (req, "active"): active, (req, "max"): self.max_active, (req, "scheduled"): scheduled,
            (req, "context"): len(new), (req, "waiting"): active - scheduled,
            (kv, "max"): top, (kv, "free"): top - used, (kv, "used"): used,
            (kv, "tokens_per"): self.tokens_per_block, (kv, "reused"): 0, (kv, "fraction"): used / top,
            (ifb, "total_context_tokens"): sum(len(j.prompt) for j in new),
            (ifb, "generation_requests"): scheduled - len(new), (ifb, "micro_batch_id"): 0,
            (ifb, "paused_requests"): 0,
            (general, "timestamp"): self.stamp_us, (general, "iteration_counter"): self.iteration,
        }  # fmt: skip

    def _publish(self, values):
        """Set the gauges whose values changed, at most once every stats_check_period_ms."""
        now = time.monotonic()
        if now - self.published_at < self.stats_period_s:
            return
        changed = {key: value for key, value in values.items() if self.published.get(key) != value}
        if not changed:
            return
        self.published_at = now
        try:
            for key, value in changed.items():
                self.metrics[1][key].set(value)
        except Exception as exc:  # a metric the server refused: serving goes on without it
            pb_utils.Logger.log_warn(f"reference tensorrt_llm: metrics not updated: {exc}")
            return
        self.published.update(changed)

    def _step(self, job):
        """Make one token; True when the request is done (its last response not yet sent)."""
        torch = self.torch
        if self._stopped(job):
            return True
        x = job.next_input if job.next_input is not None else torch.tensor([job.prompt], device=self.device)
        with torch.inference_mode():
            out = self.model(input_ids=x, past_key_values=job.past, use_cache=True)
        job.past = out.past_key_values
        logits = job.sampler.penalize(out.logits[0, -1].float(), job.prompt, job.generated)
        if job.guide is not None:
            logits = job.guide.mask(logits)
        if job.end_id is not None and len(job.generated) < job.min_tokens:
            held = logits.clone()
            held[job.end_id] = float("-inf")
            # A grammar that can only end now wins over min_tokens (nothing else is valid).
            if job.guide is None or bool(torch.isfinite(held).any()):
                logits = held
        tok = job.sampler.pick(logits)
        if job.guide is not None:
            job.guide.accept(tok)
        if job.end_id is not None and tok == job.end_id:
            return True
        job.generated.append(tok)
        if job.streaming:
            self._send(job, [tok])
        job.next_input = torch.tensor([[tok]], device=self.device)
        if job.guide is not None and job.guide.done:
            return True
        if len(job.generated) >= job.max_new:
            return True
        return any(job.generated[-len(s) :] == s for s in job.stops)

    def _finish(self, job):
        job.past = None
        if job.stopped:
            pb_utils.Logger.log_info(
                f"reference tensorrt_llm: request {job.request_id!r} stopped after {len(job.generated)} "
                f"of {job.max_new} tokens"
            )
        if job.streaming or job.stopped:
            job.sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        else:
            self._send(job, job.generated, pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        job.held = None
        job.guide = None

    def _send(self, job, tokens, flags=0):
        tensors, response = self._response(tokens, job.outputs)
        job.held = tensors  # referenced until the next response of this job, well after send() returns
        job.sender.send(response, flags=flags)

    @staticmethod
    def _response(tokens, names):
        """(arrays and tensors, response) with just the ``names`` outputs; the caller keeps the first."""
        arrays = {
            "output_ids": np.array(tokens, dtype=np.int32).reshape(1, 1, -1),
            "sequence_length": np.array([[len(tokens)]], dtype=np.int32),
        }
        tensors = [pb_utils.Tensor(n, arrays[n]) for n in names]
        return (arrays, tensors), pb_utils.InferenceResponse(output_tensors=tensors)

    def finalize(self):
        self.running = False
        self.worker.join(timeout=5)
        if not self.worker.is_alive():  # every Metric goes before its MetricFamily, as the stub requires
            self.metrics[1].clear()
            self.metrics[0].clear()
