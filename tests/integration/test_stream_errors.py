"""An error that ``tensorrt_llm`` sends mid-stream reaches the clients as an error, on the real Triton 2.51.

The stand-in is the schedule model (tests/triton_models/schedule) with ``fail_after_tokens``: after K
tokens it sends an error response, as the final response for an odd ``request_output_len`` and followed
by an empty final response for an even one (the two ways a decoupled model can fail a request). Each client
must get an error, never a silent success or a wait that only its own timeout ends (STREAM_GUARD_S is a
bound against hangs, not a figure). One server and one OpenAI API for the whole module.

``chat`` calls ``tensorrt_llm`` over the server's gRPC endpoint on Triton 2.51, because that release's BLS
loses error responses (python_backend r24.10, src/infer_response.cc InferResponse::SaveToSharedMemory at
01d0ad82, fixed upstream in 7f21b67; chat's docstring has the details): its client gets the error too.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

pytest.importorskip("tritonclient.grpc")

from swallow_trt.openai_api.server import ApiProcess, start_api_process
from swallow_trt.triton_repo.server import TritonServer, leftover_processes
from tests.fixtures.ports import free_port
from tests.fixtures.schedule_repo import schedule_repo

pytestmark = [pytest.mark.integration, pytest.mark.requires_triton]
K = 3  # tokens before the stand-in fails
STREAM_GUARD_S = 60.0
FAILED = f"generation failed after {K} tokens (test stand-in)"
ERROR_IS_FINAL, ERROR_THEN_FINAL = 7, 8  # request lengths: odd and even pick the stand-in's way to fail


class Failing(NamedTuple):
    server: TritonServer
    api: ApiProcess


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Failing]:
    root = tmp_path_factory.mktemp("stream-errors")
    params = {"fail_after_tokens": str(K), "require_forced_length": "false", "first_token_ms": "5",
              "token_interval_ms": "5"}  # fmt: skip
    server = TritonServer(schedule_repo(root, params), log_path=root / "server.log", start_timeout_s=600)
    api = None
    try:
        server.start()
        api = start_api_process(server.grpc_url, server.repo, port=free_port(), log_path=root / "api.log")
        yield Failing(server, api)
    finally:
        if api is not None:
            api.stop()
        server.stop()
    assert leftover_processes(server) == []


def _grpc_stream(server: TritonServer, model: str, inputs: list[Any]) -> tuple[int, str | None]:
    """(responses with outputs, the first error) of one stream; the client stops at an error or at the
    final response, as a client must (tritonclient hands an error response over without its flags)."""
    import tritonclient.grpc as grpcclient

    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    responses = 0
    last = time.monotonic()
    try:
        client.async_stream_infer(model, inputs, enable_empty_final_response=True)
        while True:
            result, error = results.get(timeout=STREAM_GUARD_S)
            if error is not None:
                # A figure for the report (no assertion on time): from the last token to the error.
                print(f"{model}: error {time.monotonic() - last:.3f} s after the last token")
                return responses, str(error)
            last = time.monotonic()
            response = result.get_response()
            responses += bool(response.outputs)
            if response.parameters["triton_final_response"].bool_param:
                return responses, None
    finally:
        client.stop_stream(cancel_requests=True)
        client.close()


def _tensor(name: str, value: Any, dtype: str, np_dtype: Any) -> Any:
    import numpy as np
    import tritonclient.grpc as grpcclient

    array = np.array(value, dtype=np_dtype)
    tensor = grpcclient.InferInput(name, list(array.shape), dtype)
    tensor.set_data_from_numpy(array)
    return tensor


@pytest.mark.parametrize("length", [ERROR_IS_FINAL, ERROR_THEN_FINAL])
def test_tensorrt_llm_client_gets_the_error(failing: Failing, length: int) -> None:
    import numpy as np

    inputs = [
        _tensor("input_ids", [[1, 2, 3]], "INT32", np.int32),
        _tensor("input_lengths", [[3]], "INT32", np.int32),
        _tensor("request_output_len", [[length]], "INT32", np.int32),
        _tensor("streaming", [[True]], "BOOL", bool),
    ]
    responses, error = _grpc_stream(failing.server, "tensorrt_llm", inputs)
    assert responses == K
    assert error is not None
    assert FAILED in error


@pytest.mark.parametrize("length", [ERROR_IS_FINAL, ERROR_THEN_FINAL])
def test_ensemble_client_gets_the_error(failing: Failing, length: int) -> None:
    import numpy as np

    inputs = [
        _tensor("text_input", [["日本の首都は".encode()]], "BYTES", object),
        _tensor("stream", [[True]], "BOOL", bool),
        _tensor("max_tokens", [[length]], "INT32", np.int32),
    ]
    responses, error = _grpc_stream(failing.server, "ensemble", inputs)
    assert responses == K
    assert error is not None
    assert FAILED in error


@pytest.mark.parametrize("length", [ERROR_IS_FINAL, ERROR_THEN_FINAL])
def test_chat_client_gets_the_error(failing: Failing, length: int) -> None:
    from swallow_trt.errors import StageFailed
    from swallow_trt.triton_repo.client import stream_chat

    pieces: list[str] = []
    with pytest.raises(StageFailed) as caught:
        pieces.extend(
            stream_chat(failing.server.grpc_url, "日本の首都は", max_tokens=length, timeout_s=STREAM_GUARD_S)
        )
    assert FAILED in caught.value.message
    assert "answered with an error" in caught.value.message  # not the client's own timeout


def test_chat_still_answers_after_errors(failing: Failing) -> None:
    """chat's instance is healthy after the failures above: a request of K tokens ends normally."""
    from swallow_trt.triton_repo.client import stream_chat

    assert "".join(
        stream_chat(failing.server.grpc_url, "日本の首都は", max_tokens=K, timeout_s=STREAM_GUARD_S)
    )


def _api_request(api: ApiProcess, length: int, stream: bool) -> tuple[int, str]:
    """(status, body) of one chat completion."""
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{api.url}/v1/models", timeout=STREAM_GUARD_S) as response:
        model = json.loads(response.read())["data"][0]["id"]
    body = {"model": model, "messages": [{"role": "user", "content": "日本の首都は"}], "max_tokens": length,
            "stream": stream}  # fmt: skip
    request = urllib.request.Request(
        f"{api.url}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with opener.open(request, timeout=STREAM_GUARD_S) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


@pytest.mark.parametrize("length", [ERROR_IS_FINAL, ERROR_THEN_FINAL])
def test_openai_stream_ends_with_an_error_event(failing: Failing, length: int) -> None:
    status, text = _api_request(failing.api, length, stream=True)
    assert status == 200  # the stream had started: the error is an event in it
    events = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert FAILED in last["error"]["message"]
    pieces = [json.loads(e) for e in events[:-2]]
    assert all(p["choices"][0]["finish_reason"] is None for p in pieces)  # no chunk claims a normal end


@pytest.mark.parametrize("length", [ERROR_IS_FINAL, ERROR_THEN_FINAL])
def test_openai_whole_answer_is_an_error(failing: Failing, length: int) -> None:
    status, text = _api_request(failing.api, length, stream=False)
    assert status >= 400
    assert FAILED in json.loads(text)["error"]["message"]


def test_stand_in_still_serves_shorter_requests(failing: Failing) -> None:
    """The stand-in fails only past K tokens: a request of K tokens ends normally, so the failures above
    are the stand-in's error and not a broken server."""
    import numpy as np

    inputs = [
        _tensor("input_ids", [[1, 2, 3]], "INT32", np.int32),
        _tensor("input_lengths", [[3]], "INT32", np.int32),
        _tensor("request_output_len", [[K]], "INT32", np.int32),
        _tensor("streaming", [[True]], "BOOL", bool),
    ]
    assert _grpc_stream(failing.server, "tensorrt_llm", inputs) == (K, None)
