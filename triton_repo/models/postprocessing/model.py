"""``postprocessing`` (ensemble last step): token ids -> text with the model's own tokenizer.

Each response of ``tensorrt_llm`` is decoded on its own (an ensemble step keeps no state between the
responses of one request). Without streaming that is the whole answer, decoded exactly. With
``stream=true`` a Japanese character split across two streamed responses cannot be decoded from either
half: stream text through the ``chat`` model (incremental detokenisation, exact), or read the ensemble's
``output_ids`` and decode them client-side.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        from transformers import AutoTokenizer

        from swallow_trt.text.pipeline import model_parameters

        params = model_parameters(args)
        self.tokenizer = AutoTokenizer.from_pretrained(params["tokenizer_dir"])

    def execute(self, requests):
        responses = []
        for request in requests:
            ids = pb_utils.get_input_tensor_by_name(request, "output_ids").as_numpy()
            lengths = pb_utils.get_input_tensor_by_name(request, "sequence_length").as_numpy()
            ids = ids.reshape(ids.shape[0], -1, ids.shape[-1])  # [batch, beams, tokens]
            lengths = lengths.reshape(ids.shape[0], -1)
            texts = [
                [
                    self.tokenizer.decode(
                        ids[b, k, : int(lengths[b, k])].tolist(), skip_special_tokens=True
                    ).encode("utf-8")
                    for k in range(ids.shape[1])
                ]
                for b in range(ids.shape[0])
            ]
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("text_output", np.array(texts, dtype=object))]
                )
            )
        return responses
