"""``preprocessing`` (ensemble step 1): raw text -> the ``tensorrt_llm`` inputs, with the model's own
tokenizer. The ensemble takes raw text (no chat format; the ``chat`` model applies it). The family's
end token and stop words are defaults; a request may add stop words, change end_id (-1: none) and set
min_tokens. Bad input gets an error response for that request only.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


def _opt(request, name):
    t = pb_utils.get_input_tensor_by_name(request, name)
    return None if t is None else t.as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        from swallow_trt.text.pipeline import Prompter, model_parameters

        params = model_parameters(args)
        self.prompter = Prompter.from_parameters(params)

    def execute(self, requests):
        from swallow_trt.text.pipeline import RequestError

        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except RequestError as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses

    def _one(self, request):
        from swallow_trt.text.pipeline import RequestError, int_of, text_of, texts_of

        p = self.prompter
        texts = np.asarray(_opt(request, "text_input"))
        rows = texts.shape[0]
        ids = [p.encode_raw(text_of(texts[i], "text_input")) for i in range(rows)]
        max_tokens = p.check_max_tokens(int_of(_opt(request, "max_tokens"), "max_tokens"))
        min_tokens = int_of(_opt(request, "min_tokens"), "min_tokens", 0)
        if min_tokens < 0:
            raise RequestError(f"min_tokens must not be negative, got {min_tokens}")
        default_end = -1 if p.end_id is None else p.end_id
        end_id = int_of(_opt(request, "end_id"), "end_id", default_end)
        stops = _opt(request, "stop_words")
        stops = texts_of(stops, "stop_words") if stops is not None else []
        width = max(len(x) for x in ids)
        padded = np.full((rows, width), 0 if end_id < 0 else end_id, dtype=np.int32)
        for i, x in enumerate(ids):
            padded[i, : len(x)] = x
        words = p.stop_words_array(stops)

        def column(value):
            return np.full((rows, 1), value, dtype=np.int32)

        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("input_ids", padded),
                pb_utils.Tensor("input_lengths", np.array([[len(x)] for x in ids], dtype=np.int32)),
                pb_utils.Tensor("request_output_len", column(max_tokens)),
                pb_utils.Tensor("end_id", column(end_id)),
                pb_utils.Tensor("min_tokens", column(min_tokens)),
                pb_utils.Tensor("stop_words_list", np.repeat(words, rows, axis=0)),
            ]
        )
