"""Triton's gRPC stream messages for ``tensorrt_llm``: a ``ModelInferRequest`` built from numpy inputs, and
the token ids and final flag read back from a response. Shared by the OpenAI API's engine and by the
``chat`` model where it streams over gRPC (Triton 2.51, see chat's docstring). tritonclient and numpy are
imported inside the functions."""

from __future__ import annotations

from typing import Any

FINAL = "triton_final_response"
_DATATYPES = {"int32": "INT32", "uint64": "UINT64", "float32": "FP32", "bool": "BOOL", "object": "BYTES"}


def infer_request(model: str, request_id: str, inputs: list[tuple[str, Any]]) -> Any:
    """A ``ModelInferRequest`` of (name, numpy array) inputs that asks for the empty final response,
    which tritonclient's own request builder refuses to set (a reserved parameter)."""
    from tritonclient.grpc import service_pb2
    from tritonclient.utils import serialize_byte_tensor

    request = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    for name, value in inputs:
        tensor = request.inputs.add(name=name, datatype=_DATATYPES[str(value.dtype)])
        tensor.shape.extend(value.shape)
        if value.dtype == object:
            request.raw_input_contents.append(serialize_byte_tensor(value).item())
        else:
            request.raw_input_contents.append(value.tobytes())
    # Both, though only the ids are read: the C++ backend fails a request whose named outputs lack
    # either (fillTritonResponse in NVIDIA/TensorRT-LLM triton_backend/inflight_batcher_llm/src/
    # model_instance_state.cc at c8c6df08), and the reference backend holds callers to the same rule.
    request.outputs.add(name="output_ids")
    request.outputs.add(name="sequence_length")
    request.parameters[FINAL.replace("final_response", "enable_empty_final_response")].bool_param = True
    return request


def output_ids(response: Any) -> list[int]:
    """The token ids of a ``ModelInferResponse`` (none when it has no ``output_ids``)."""
    for i, output in enumerate(response.outputs):
        if output.name == "output_ids":
            # Triton's raw tensors are little-endian, as is every host the engine runs on: a memoryview
            # cast is the cheapest decode of a response's few int32s.
            ids: list[int] = memoryview(response.raw_output_contents[i]).cast("i").tolist()
            return ids
    return []


def is_final(response: Any) -> bool:
    """Whether a ``ModelInferResponse`` is its request's last (an error response carries the flag too)."""
    return FINAL in response.parameters and bool(response.parameters[FINAL].bool_param)


__all__ = ["FINAL", "infer_request", "is_final", "output_ids"]
