"""Reference ``tensorrt_llm`` model (Triton Python backend): the tensorrtllm backend's tensor contract,
served by transformers on CPU or GPU, so a whole repository runs on a real Triton server without
TensorRT-LLM. Greedy decoding with a KV cache; streaming, end_id, stop_words_list, request_output_len
and cancellation are honoured. One thread per request (decoupled), as the C++ backend batches in flight.
"""

import json
import threading

import numpy as np
import triton_python_backend_utils as pb_utils


def _opt(request, name):
    t = pb_utils.get_input_tensor_by_name(request, name)
    return None if t is None else t.as_numpy()


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


class TritonPythonModel:
    def initialize(self, args):
        import torch
        from transformers import AutoModelForCausalLM

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.model = (
            AutoModelForCausalLM.from_pretrained(params["gpt_model_path"], dtype=dtype).to(self.device).eval()
        )
        self.max_input_len = int(params.get("max_input_len", "0") or 0)
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        self.threads = []

    def execute(self, requests):
        if not self.decoupled:
            return [self._generate(r, None) for r in requests]
        for request in requests:
            t = threading.Thread(target=self._serve, args=(request,), daemon=True)
            t.start()
            self.threads = [x for x in self.threads if x.is_alive()] + [t]
        return None

    def _serve(self, request):
        sender = request.get_response_sender()
        try:
            self._generate(request, sender)
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception as exc:  # any failure becomes an error response; the model stays up
            sender.send(
                pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
            )

    @staticmethod
    def _response(tokens):
        ids = np.array(tokens, dtype=np.int32).reshape(1, 1, -1)
        length = np.array([[len(tokens)]], dtype=np.int32)
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor("output_ids", ids), pb_utils.Tensor("sequence_length", length)]
        )

    def _generate(self, request, sender):
        torch = self.torch
        ids = _opt(request, "input_ids")
        lengths = _opt(request, "input_lengths")
        out_len = _opt(request, "request_output_len")
        if ids is None or lengths is None or out_len is None:
            raise ValueError("input_ids, input_lengths and request_output_len are required")
        n_in = int(np.asarray(lengths).reshape(-1)[0])
        prompt = np.asarray(ids).reshape(-1)[:n_in].tolist()
        max_new = int(np.asarray(out_len).reshape(-1)[0])
        if n_in < 1:
            raise ValueError("empty prompt: input_lengths must be at least 1")
        if self.max_input_len and n_in > self.max_input_len:
            raise ValueError(f"prompt of {n_in} tokens exceeds max_input_len {self.max_input_len}")
        if max_new < 1:
            raise ValueError(f"request_output_len must be at least 1, got {max_new}")
        end = _opt(request, "end_id")
        end_id = None if end is None else int(np.asarray(end).reshape(-1)[0])
        stops = _stop_sequences(_opt(request, "stop_words_list"))
        streaming = _opt(request, "streaming")
        streaming = bool(np.asarray(streaming).reshape(-1)[0]) if streaming is not None else False
        generated = []
        past = None
        x = torch.tensor([prompt], device=self.device)
        with torch.inference_mode():
            for _ in range(max_new):
                if sender is not None and request.is_cancelled():
                    return None
                out = self.model(input_ids=x, past_key_values=past, use_cache=True)
                past = out.past_key_values
                tok = int(out.logits[0, -1].argmax())
                if end_id is not None and tok == end_id:
                    break
                generated.append(tok)
                if streaming and sender is not None:
                    sender.send(self._response([tok]))
                if any(generated[-len(s) :] == s for s in stops):
                    break
                x = torch.tensor([[tok]], device=self.device)
        if streaming and sender is not None:
            return None
        response = self._response(generated)
        if sender is not None:
            sender.send(response)
            return None
        return response

    def finalize(self):
        for t in self.threads:
            t.join(timeout=5)
