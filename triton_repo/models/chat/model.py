"""``chat``: decoupled streaming chat model (Triton Python backend, BLS).

Text in, text out, per request: render the Swallow family's chat format (with earlier turns, if given),
tokenize with the model's own tokenizer, call ``tensorrt_llm`` (TensorRT-LLM engine or the reference
backend; same contract) in streaming mode, and detokenise incrementally (exact for Japanese: no U+FFFD
for characters split across tokens). Generation ends at the model's end token and at stop words, which
are not in the output. Every response carries ``num_output_tokens``: the tokens generated so far, and
``text_output`` when it has text: a response with an empty BYTES element crashed this Triton release's
Python stub (heap corruption, reproduced by tests/integration/test_exact_streaming.py), so none is sent.

``execute`` serves its requests one after another on the stub's main thread, as upstream's BLS model
does: BLS calls and response senders driven from extra threads crashed this Triton release's Python
stub under load (heap corruption), so streams run in parallel across model instances
(``instance_group``: ``swallow-trt package --chat-instances``), each a process of its own. When a request ends before its
generation does (a stop string seen in the text, or the client cancelled), the chat model sends
``tensorrt_llm`` a ``stop`` request with the same request id, so the engine stops working for nobody.
"""

import itertools
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils

CANCEL_CHECK_S = 0.05


def _opt(request, name):
    t = pb_utils.get_input_tensor_by_name(request, name)
    return None if t is None else t.as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        from swallow_trt.triton_repo.pipeline import Prompter, model_parameters

        params = model_parameters(args)
        self.prompter = Prompter.from_parameters(params)
        self.llm = params.get("llm_model", "tensorrt_llm")
        self.ids = itertools.count()
        self.prefix = f"chat-{os.getpid()}-{time.monotonic_ns()}"

    def execute(self, requests):
        for request in requests:
            self._serve(request)
        return None

    def _serve(self, request):
        from swallow_trt.triton_repo.pipeline import RequestError

        sender = request.get_response_sender()
        try:
            self._chat(request, sender)
        except RequestError as exc:
            self._fail(sender, str(exc))
        except Exception as exc:  # a failed LLM call: an error response, the server stays healthy
            self._fail(sender, f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _fail(sender, message):
        sender.send(
            pb_utils.InferenceResponse(error=pb_utils.TritonError(message)),
            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
        )

    @staticmethod
    def _response(text, count):
        tensors = [pb_utils.Tensor("num_output_tokens", np.array([count], dtype=np.int32))]
        if text:
            tensors.append(pb_utils.Tensor("text_output", np.array([text.encode("utf-8")], dtype=object)))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _inputs(self, request):
        from swallow_trt.triton_repo.pipeline import RequestError, history_of, int_of, text_of, texts_of

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
        ids = self.prompter.encode_chat(text, history, system)
        end_id = -1 if ignore_eos or self.prompter.end_id is None else self.prompter.end_id
        # The family's stop words are its end-of-turn tokens: ignore_eos ignores them too.
        family = [] if ignore_eos else list(self.prompter.stop_words)
        tensors = [
            pb_utils.Tensor("input_ids", np.array([ids], dtype=np.int32)),
            pb_utils.Tensor("input_lengths", np.array([[len(ids)]], dtype=np.int32)),
            pb_utils.Tensor("request_output_len", np.array([[max_tokens]], dtype=np.int32)),
            pb_utils.Tensor("streaming", np.array([[True]], dtype=bool)),
            pb_utils.Tensor("stop_words_list", self.prompter.stop_words_array(stops, family)),
            pb_utils.Tensor("end_id", np.array([[end_id]], dtype=np.int32)),
            pb_utils.Tensor("min_tokens", np.array([[min_tokens]], dtype=np.int32)),
        ]
        return tensors, [*family, *stops]

    def _chat(self, request, sender):
        from swallow_trt.triton_repo.detok import IncrementalDetokenizer
        from swallow_trt.triton_repo.pipeline import StopFilter

        tensors, stops = self._inputs(request)
        rid = f"{self.prefix}-{next(self.ids)}"
        llm = pb_utils.InferenceRequest(
            model_name=self.llm,
            inputs=tensors,
            requested_output_names=["output_ids", "sequence_length"],
            request_id=rid,
        )
        detok = IncrementalDetokenizer(self.prompter.tokenizer, prompt_ids=None)
        filt = StopFilter(stops)
        count, ended, checked = 0, False, time.monotonic()
        for response in llm.exec(decoupled=True):
            if response.has_error():
                if ended:
                    continue
                raise RuntimeError(response.error().message())
            out = pb_utils.get_output_tensor_by_name(response, "output_ids")
            if ended or out is None:
                continue  # drain the stream to its final response
            tokens = out.as_numpy().reshape(-1).tolist()
            count += len(tokens)
            text = filt.feed(detok.push(tokens))
            if text:
                sender.send(self._response(text, count))
            cancelled = False
            if time.monotonic() - checked > CANCEL_CHECK_S:
                checked = time.monotonic()
                cancelled = request.is_cancelled()
            if filt.stopped or cancelled:
                ended = True
                self._stop(rid)
                if cancelled:
                    sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                    sender = None
        if sender is not None:
            sender.send(
                self._response(filt.feed(detok.flush()) + filt.close(), count),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
            )

    def _stop(self, rid):
        """End ``tensorrt_llm``'s generation of request ``rid`` (the C++ backend's ``stop`` input)."""
        stop = pb_utils.InferenceRequest(
            model_name=self.llm,
            inputs=[
                pb_utils.Tensor("input_ids", np.array([[0]], dtype=np.int32)),
                pb_utils.Tensor("input_lengths", np.array([[1]], dtype=np.int32)),
                pb_utils.Tensor("request_output_len", np.array([[1]], dtype=np.int32)),
                pb_utils.Tensor("stop", np.array([[True]], dtype=bool)),
            ],
            requested_output_names=["output_ids"],
            request_id=rid,
        )
        for _ in stop.exec(decoupled=True):
            pass
