"""``chat``: decoupled streaming chat model (Triton Python backend, BLS).

Text in, text out, per request: render the Swallow family's chat format, tokenize with the model's own
tokenizer, call ``tensorrt_llm`` (TensorRT-LLM engine or the reference backend; same contract) in
streaming mode, and detokenise incrementally (exact for Japanese: no U+FFFD for characters split across
tokens). Generation ends at the model's end token and at stop words, which are not in the output.
"""

import json
import threading

import numpy as np
import triton_python_backend_utils as pb_utils


def _opt(request, name):
    t = pb_utils.get_input_tensor_by_name(request, name)
    return None if t is None else t.as_numpy()


def _text(value, name):
    raw = np.asarray(value).reshape(-1)[0]
    if isinstance(raw, bytes):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{name} is not valid UTF-8") from None
    return str(raw)


class StopFilter:
    """Emits text up to the first stop string; holds back a tail that could still become one."""

    def __init__(self, stops):
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def feed(self, text):
        if self.stopped:
            return ""
        self.pending += text
        cut = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            out, self.pending, self.stopped = self.pending[:cut], "", True
            return out
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(out) :]
        return out

    def close(self):
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


class TritonPythonModel:
    def initialize(self, args):
        from transformers import AutoTokenizer

        config = json.loads(args["model_config"])
        p = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.tokenizer = AutoTokenizer.from_pretrained(p["tokenizer_dir"])
        self.chat_format = p.get("chat_format", "none")
        self.system_prompt = p.get("system_prompt") or None
        self.end_id = int(p["end_id"]) if p.get("end_id") else None
        self.stop_words = json.loads(p.get("stop_words", "[]"))
        self.max_input_len = int(p.get("max_input_len", "0") or 0)
        self.default_max_tokens = int(p.get("default_max_tokens", "256"))
        self.llm = p.get("llm_model", "tensorrt_llm")
        self.threads = []

    def execute(self, requests):
        for request in requests:
            t = threading.Thread(target=self._serve, args=(request,), daemon=True)
            t.start()
            self.threads = [x for x in self.threads if x.is_alive()] + [t]
        return None

    def _serve(self, request):
        sender = request.get_response_sender()
        try:
            self._chat(request, sender)
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except (
            Exception
        ) as exc:  # bad input or a failed LLM call: an error response, the server stays healthy
            sender.send(
                pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
            )

    def _send(self, sender, text):
        if text:
            out = np.array([text.encode("utf-8")], dtype=object)
            sender.send(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("text_output", out)]))

    def _chat(self, request, sender):
        from swallow_trt.triton_repo.chat import Message, adds_bos, render, stop_words_list
        from swallow_trt.triton_repo.detok import IncrementalDetokenizer

        raw = _opt(request, "text_input")
        if raw is None:
            raise ValueError("text_input is required")
        text = _text(raw, "text_input")
        if not text.strip():
            raise ValueError("empty prompt")
        max_tokens = _opt(request, "max_tokens")
        max_tokens = (
            self.default_max_tokens if max_tokens is None else int(np.asarray(max_tokens).reshape(-1)[0])
        )
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        system = _opt(request, "system_prompt")
        system = _text(system, "system_prompt") if system is not None else self.system_prompt
        user_stops = _opt(request, "stop")
        stops = list(self.stop_words) + (
            [_text([s], "stop") for s in np.asarray(user_stops).reshape(-1)] if user_stops is not None else []
        )
        messages = ([Message("system", system)] if system else []) + [Message("user", text)]
        prompt = render(self.chat_format, messages, default_system=None)
        ids = self.tokenizer.encode(prompt, add_special_tokens=adds_bos(self.chat_format))
        if self.max_input_len and len(ids) > self.max_input_len:
            raise ValueError(f"prompt of {len(ids)} tokens exceeds max_input_len {self.max_input_len}")
        stop_ids = [self.tokenizer.encode(s, add_special_tokens=False) for s in stops]
        words = np.array(stop_words_list(stop_ids), dtype=np.int32).reshape(1, 2, -1)
        inputs = [
            pb_utils.Tensor("input_ids", np.array([ids], dtype=np.int32)),
            pb_utils.Tensor("input_lengths", np.array([[len(ids)]], dtype=np.int32)),
            pb_utils.Tensor("request_output_len", np.array([[max_tokens]], dtype=np.int32)),
            pb_utils.Tensor("streaming", np.array([[True]], dtype=bool)),
            pb_utils.Tensor("stop_words_list", words),
        ]
        if self.end_id is not None:
            inputs.append(pb_utils.Tensor("end_id", np.array([[self.end_id]], dtype=np.int32)))
        llm = pb_utils.InferenceRequest(
            model_name=self.llm, inputs=inputs, requested_output_names=["output_ids", "sequence_length"]
        )
        detok = IncrementalDetokenizer(self.tokenizer, prompt_ids=None)
        filt = StopFilter(stops)
        for response in llm.exec(decoupled=True):
            if response.has_error():
                raise RuntimeError(response.error().message())
            out = pb_utils.get_output_tensor_by_name(response, "output_ids")
            if out is None:
                continue
            self._send(sender, filt.feed(detok.push(out.as_numpy().reshape(-1).tolist())))
            if filt.stopped or request.is_cancelled():
                break
        self._send(sender, filt.feed(detok.flush()) + filt.close())

    def finalize(self):
        for t in self.threads:
            t.join(timeout=5)
