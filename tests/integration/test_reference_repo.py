"""A reference repository (tensorrt_llm reference backend + streaming chat BLS) on the real Triton
server: Japanese streamed over gRPC equals the full decode of the same greedy tokens, with no U+FFFD;
stop words end the text and are not in it; bad requests get error responses while the server stays up."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tritonclient.grpc")
torch = pytest.importorskip("torch")

from swallow_trt.triton_repo.chat import Message, adds_bos, render  # noqa: E402
from swallow_trt.triton_repo.repo import ReferenceRepoSpec, write_reference_repo  # noqa: E402
from swallow_trt.triton_repo.server import TritonServer, leftover_processes  # noqa: E402
from tests.fixtures.tiny import make_checkpoint, make_tokenizer  # noqa: E402

pytestmark = pytest.mark.integration
PROMPT = "日本で一番高い山は何ですか？"
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TritonServer, Path]]:
    root = tmp_path_factory.mktemp("refrepo")
    from transformers import AutoTokenizer

    # The model's vocabulary matches the tokenizer trained in the run, so that its random greedy tokens
    # decode to text (mostly Japanese pieces, many of them partial UTF-8 sequences).
    ckpt = make_checkpoint(root / "Tiny-Swallow", "llama31", vocab_size=len(make_tokenizer("llama31")))
    tok = AutoTokenizer.from_pretrained(ckpt)
    spec = ReferenceRepoSpec(checkpoint=ckpt, chat_format="llama3", end_id=tok.convert_tokens_to_ids("<|eot_id|>"),
                             max_input_len=256)  # fmt: skip
    repo = write_reference_repo(spec, root / "repo")
    server = TritonServer(repo, log_path=root / "server.log")
    server.start(timeout_s=240)
    try:
        yield server, ckpt
    finally:
        server.stop()
        assert leftover_processes(server) == []


def expected_text(ckpt: Path, prompt: str) -> str:
    """What greedy decoding of the same model gives, decoded in one go (the ground truth)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    text = render("llama3", [Message("user", prompt)], default_system=None)
    ids = tok.encode(text, add_special_tokens=adds_bos("llama3"))
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    out: list[int] = []
    x = torch.tensor([ids])
    past = None
    with torch.inference_mode():
        for _ in range(MAX_TOKENS):
            o = model(input_ids=x, past_key_values=past, use_cache=True)
            past = o.past_key_values
            t = int(o.logits[0, -1].argmax())
            if t == eot:
                break
            out.append(t)
            x = torch.tensor([[t]])
    decoded: str = tok.decode(out, skip_special_tokens=True)
    return decoded


def stream_chat(server: TritonServer, text: bytes, **extra: Any) -> tuple[list[str], list[str]]:
    import numpy as np
    import tritonclient.grpc as grpcclient

    results: queue.Queue[Any] = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inputs = [grpcclient.InferInput("text_input", [1], "BYTES")]
    inputs[0].set_data_from_numpy(np.array([text], dtype=object))
    if "max_tokens" in extra:
        i = grpcclient.InferInput("max_tokens", [1], "INT32")
        i.set_data_from_numpy(np.array([extra["max_tokens"]], dtype=np.int32))
        inputs.append(i)
    if "stop" in extra:
        i = grpcclient.InferInput("stop", [len(extra["stop"])], "BYTES")
        i.set_data_from_numpy(np.array([s.encode() for s in extra["stop"]], dtype=object))
        inputs.append(i)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    client.async_stream_infer("chat", inputs, enable_empty_final_response=True)
    pieces: list[str] = []
    errors: list[str] = []
    while True:
        result, error = results.get(timeout=120)
        if error is not None:
            errors.append(str(error))
            break
        out = result.as_numpy("text_output")
        if out is not None:
            pieces.append(out.reshape(-1)[0].decode("utf-8"))
        if result.get_response().parameters["triton_final_response"].bool_param:
            break
    client.stop_stream()
    client.close()
    return pieces, errors


def test_models_ready(served: tuple[TritonServer, Path]) -> None:
    import tritonclient.http as httpclient

    server, _ = served
    client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
    assert client.is_model_ready("tensorrt_llm")
    assert client.is_model_ready("chat")


def test_streamed_japanese_equals_full_decode(served: tuple[TritonServer, Path]) -> None:
    server, ckpt = served
    pieces, errors = stream_chat(server, PROMPT.encode(), max_tokens=MAX_TOKENS)
    assert errors == []
    want = expected_text(ckpt, PROMPT)
    assert len(want) > 5
    assert "".join(pieces) == want
    # Random tokens can form invalid UTF-8, which the full decode shows as U+FFFD too; streaming must
    # not add any of its own (exactness on real text is the replay test's job).
    assert sum(p.count("\ufffd") for p in pieces) == want.count("\ufffd")
    assert len(pieces) > 1  # it streamed


def test_stop_word_ends_the_text(served: tuple[TritonServer, Path]) -> None:
    server, ckpt = served
    want = expected_text(ckpt, PROMPT)
    stop = want[len(want) // 2 : len(want) // 2 + 2]
    assert stop
    pieces, errors = stream_chat(server, PROMPT.encode(), max_tokens=MAX_TOKENS, stop=[stop])
    assert errors == []
    assert "".join(pieces) == want[: want.find(stop)]


@pytest.mark.parametrize(
    ("text", "extra", "needle"),
    [
        (b"   ", {}, "empty prompt"),
        (PROMPT.encode(), {"max_tokens": 0}, "max_tokens must be at least 1"),
        (PROMPT.encode(), {"max_tokens": -3}, "max_tokens must be at least 1"),
        (b"\xff\xfe broken", {}, "not valid UTF-8"),
        (("長い" * 400).encode(), {}, "exceeds max_input_len"),
    ],
)
def test_bad_requests_get_errors_and_the_server_stays_up(
    served: tuple[TritonServer, Path], text: bytes, extra: dict[str, Any], needle: str
) -> None:
    server, _ = served
    pieces, errors = stream_chat(server, text, **extra)
    assert pieces == []
    assert len(errors) == 1
    assert needle in errors[0]
    ok, errs = stream_chat(server, PROMPT.encode(), max_tokens=4)
    assert errs == []
    assert ok
