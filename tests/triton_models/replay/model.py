"""Test-only ``tensorrt_llm`` stand-in (the C++ backend cannot run here): the same tensor contract, replaying
a fixed table {input ids -> output ids} written beside it (replay.json), one token per streamed response.
Used to prove the pipeline (chat format, BLS, incremental detokenisation) exact on real Japanese text.
Responses are sent from ``execute`` itself (the stub's main thread), one request after another."""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        path = os.path.join(args["model_repository"], args["model_version"], "replay.json")
        with open(path, encoding="utf-8") as f:
            self.table = json.load(f)

    def execute(self, requests):
        for request in requests:
            self._serve(request)
        return None

    def _serve(self, request):
        sender = request.get_response_sender()
        ids = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy().reshape(-1)
        n = int(pb_utils.get_input_tensor_by_name(request, "input_lengths").as_numpy().reshape(-1)[0])
        key = ",".join(str(int(t)) for t in ids[:n])
        out = self.table.get(key)
        if out is None:
            sender.send(
                pb_utils.InferenceResponse(error=pb_utils.TritonError("no replay entry for this prompt")),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
            )
            return
        for tok in out:
            t = np.array([[[tok]]], dtype=np.int32)
            length = np.array([[1]], dtype=np.int32)
            sender.send(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("output_ids", t),
                        pb_utils.Tensor("sequence_length", length),
                    ]
                )
            )
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
