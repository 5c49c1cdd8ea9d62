"""A reference repository (tensorrt_llm reference backend, preprocessing/postprocessing/ensemble, streaming
chat BLS) on the real Triton server: Japanese streamed over gRPC equals the full decode of the same greedy
tokens, with no U+FFFD; stop words end the text and are not in it; the ensemble gives the same tokens;
32 concurrent streams complete; clients that disconnect mid-stream stop their generation and nobody
else's; bad requests get error responses while the server stays up. The repository is served after being
moved away from where package wrote it (every path inside is relative to it). Guided decoding: a
JSON-schema request through the ensemble returns JSON that validates; a seeded sampled request repeats
itself, other seeds differ, and temperature 0 is greedy."""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tritonclient.grpc")
torch = pytest.importorskip("torch")

from swallow_trt.text.chat import Message, adds_bos, render  # noqa: E402
from swallow_trt.triton_repo.server import TritonServer  # noqa: E402
from tests.fixtures.ensemble import ensemble_call  # noqa: E402
from tests.fixtures.guided import SCHEMA, valid  # noqa: E402
from tests.fixtures.triton import ReferenceServed  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.requires_triton]
PROMPT = "日本で一番高い山は何ですか？"
MAX_TOKENS = 24


@pytest.fixture
def served(reference_triton: ReferenceServed) -> ReferenceServed:
    """The shared reference server (tests/conftest.py): the repository, written by package and moved
    elsewhere before it is served, of a tiny random Llama-3.1 whose greedy tokens decode to text."""
    return reference_triton


def greedy_ids(ckpt: Path, ids: list[int], eot: int | None, max_tokens: int = MAX_TOKENS) -> list[int]:
    """Greedy decoding of the same model with transformers (the ground truth)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    out: list[int] = []
    x = torch.tensor([ids])
    past = None
    with torch.inference_mode():
        for _ in range(max_tokens):
            o = model(input_ids=x, past_key_values=past, use_cache=True)
            past = o.past_key_values
            t = int(o.logits[0, -1].argmax())
            if t == eot:
                break
            out.append(t)
            x = torch.tensor([[t]])
    return out


def expected_text(ckpt: Path, prompt: str, history: tuple[tuple[str, str], ...] = ()) -> str:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt)
    turns = [Message(role, content) for role, content in history]  # type: ignore[arg-type]
    text = render("llama3", [*turns, Message("user", prompt)], default_system=None)
    ids = tok.encode(text, add_special_tokens=adds_bos("llama3"))
    decoded: str = tok.decode(
        greedy_ids(ckpt, ids, tok.convert_tokens_to_ids("<|eot_id|>")), skip_special_tokens=True
    )
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
    for name, value in extra.items():  # sampling and guided-decoding options
        if name in ("max_tokens", "stop"):
            continue
        triton_type, np_type = ENSEMBLE_TYPES[name]
        i = grpcclient.InferInput(name, [1], triton_type)
        i.set_data_from_numpy(np.array([value.encode() if isinstance(value, str) else value], dtype=np_type))
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


def test_models_ready(served: ReferenceServed) -> None:
    import tritonclient.http as httpclient

    server = served.server
    client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
    for name in ("tensorrt_llm", "preprocessing", "postprocessing", "ensemble", "chat"):
        assert client.is_model_ready(name), name


def test_streamed_japanese_equals_full_decode(served: ReferenceServed) -> None:
    server, ckpt = served.server, served.checkpoint
    pieces, errors = stream_chat(server, PROMPT.encode(), max_tokens=MAX_TOKENS)
    assert errors == []
    want = expected_text(ckpt, PROMPT)
    assert len(want) > 5
    assert "".join(pieces) == want
    # Random tokens can form invalid UTF-8, which the full decode shows as U+FFFD too; streaming must
    # not add any of its own (exactness on real text is the replay test's job).
    assert sum(p.count("\ufffd") for p in pieces) == want.count("\ufffd")
    assert len(pieces) > 1  # it streamed


def test_stop_word_ends_the_text(served: ReferenceServed) -> None:
    server, ckpt = served.server, served.checkpoint
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
    served: ReferenceServed, text: bytes, extra: dict[str, Any], needle: str
) -> None:
    server = served.server
    pieces, errors = stream_chat(server, text, **extra)
    assert pieces == []
    assert len(errors) == 1
    assert needle in errors[0]
    ok, errs = stream_chat(server, PROMPT.encode(), max_tokens=4)
    assert errs == []
    assert ok


@pytest.mark.parametrize("named", [("output_ids",), ("sequence_length",), ("output_ids", "sequence_length")])
def test_named_outputs_must_include_ids_and_length(served: ReferenceServed, named: tuple[str, ...]) -> None:
    """As the C++ backend: a request that names its outputs without both output_ids and sequence_length
    fails at its first response (which is final); naming both streams as usual."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    server = served.server
    values = {"input_ids": [[5, 6, 7]], "input_lengths": [[3]], "request_output_len": [[3]]}
    inputs = []
    for name, value in {**values, "streaming": [[True]]}.items():
        arr = np.array(value, dtype=bool if name == "streaming" else np.int32)
        inputs.append(grpcclient.InferInput(name, list(arr.shape), "BOOL" if arr.dtype == bool else "INT32"))
        inputs[-1].set_data_from_numpy(arr)
    results: queue.Queue[Any] = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    outputs = [grpcclient.InferRequestedOutput(n) for n in named]
    client.async_stream_infer("tensorrt_llm", inputs, outputs=outputs, enable_empty_final_response=True)
    got: list[Any] = []
    try:
        while True:
            result, error = results.get(timeout=120)
            got.append(error if error is not None else result)
            if error is not None or result.get_response().parameters["triton_final_response"].bool_param:
                break
    finally:
        client.stop_stream()
        client.close()
    if len(named) == 2:
        assert all(isinstance(r, grpcclient.InferResult) for r in got)
        assert sum(r.as_numpy("output_ids").size for r in got if r.as_numpy("output_ids") is not None) == 3
    else:
        missing = ({"output_ids", "sequence_length"} - set(named)).pop()
        assert len(got) == 1
        assert f"{missing} tensor must be present in list of output tensors" in str(got[0])


def test_multi_turn_chat_sees_earlier_turns(served: ReferenceServed) -> None:
    from swallow_trt.triton_repo.client import stream_chat as client_stream

    server, ckpt = served.server, served.checkpoint
    history = (("user", "こんにちは"), ("assistant", "こんにちは！ご用件は？"))
    got = "".join(client_stream(server.grpc_url, PROMPT, max_tokens=MAX_TOKENS, history=list(history)))
    assert got == expected_text(ckpt, PROMPT, history)
    assert got != expected_text(ckpt, PROMPT)  # the earlier turns changed the prompt


@pytest.mark.parametrize("stream", [False, True])
def test_ensemble_matches_greedy_decoding(served: ReferenceServed, stream: bool) -> None:
    from transformers import AutoTokenizer

    server, ckpt = served.server, served.checkpoint
    tok = AutoTokenizer.from_pretrained(ckpt)
    raw = "富士山の高さは"
    want = greedy_ids(ckpt, tok.encode(raw), tok.convert_tokens_to_ids("<|eot_id|>"), 12)
    got = ensemble_call(server, raw, stream, max_tokens=12)
    assert [t for _, ids in got for t in ids] == want
    assert len(got) == (len(want) if stream else 1)
    if not stream:
        assert got[0][0] == tok.decode(want, skip_special_tokens=True)
    # The end token ends generation and is not in the output: take the 6th greedy token as end_id.
    end = want[5]
    cut = want.index(end)
    ended = ensemble_call(server, raw, False, max_tokens=12, end_id=end)
    assert ended[0][1] == want[:cut]
    held = ensemble_call(server, raw, False, max_tokens=12, end_id=end, min_tokens=12)
    assert len(held[0][1]) == 12
    assert end not in held[0][1]  # min_tokens keeps the end token from being chosen
    # Output length forced: no end token, at least min_tokens (how the profiler makes runs comparable).
    forced = ensemble_call(server, raw, False, max_tokens=20, min_tokens=20, end_id=-1)
    assert len(forced[0][1]) == 20


def test_32_concurrent_streams(served: ReferenceServed) -> None:
    server, ckpt = served.server, served.checkpoint
    want = expected_text(ckpt, PROMPT)
    results: list[Any] = [None] * 32

    def one(i: int) -> None:
        try:
            results[i] = stream_chat(server, PROMPT.encode(), max_tokens=MAX_TOKENS)
        except Exception as exc:  # recorded, asserted below
            results[i] = ([], [repr(exc)])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert all(r is not None for r in results)
    assert [errs for _, errs in results] == [[]] * 32
    assert {"".join(pieces) for pieces, _ in results} == {want}


def test_disconnected_clients_stop_their_generation_only(served: ReferenceServed) -> None:
    """Clients that go away after two pieces of a 2,000-token answer: their generation stops (the chat
    model sends tensorrt_llm a stop request; the reference backend logs how far it got) while 16
    other streams finish intact, and the server then serves as before."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    server, ckpt = served.server, served.checkpoint
    want = expected_text(ckpt, PROMPT)
    log_before = server.log_path.read_text(errors="replace")
    quitters = 6

    def quit_early() -> None:
        got: queue.Queue[Any] = queue.Queue()
        client = grpcclient.InferenceServerClient(server.grpc_url)
        inputs = [
            grpcclient.InferInput("text_input", [1], "BYTES"),
            grpcclient.InferInput("max_tokens", [1], "INT32"),
        ]
        inputs[0].set_data_from_numpy(np.array([PROMPT.encode()], dtype=object))
        inputs[1].set_data_from_numpy(np.array([2000], dtype=np.int32))
        client.start_stream(callback=lambda result, error: got.put((result, error)))
        client.async_stream_infer("chat", inputs, enable_empty_final_response=True)
        for _ in range(2):
            _, error = got.get(timeout=120)
            assert error is None
        client.stop_stream(cancel_requests=True)
        client.close()

    results: list[Any] = [None] * 16

    def stay(i: int) -> None:
        results[i] = stream_chat(server, PROMPT.encode(), max_tokens=MAX_TOKENS)

    threads = [threading.Thread(target=quit_early) for _ in range(quitters)]
    threads += [threading.Thread(target=stay, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert [errs for _, errs in results] == [[]] * 16
    assert {"".join(pieces) for pieces, _ in results} == {want}
    deadline = 60.0
    import time

    start = time.monotonic()
    while True:
        new = server.log_path.read_text(errors="replace")[len(log_before) :]
        stopped = [line for line in new.splitlines() if "stopped after" in line and "of 2000 tokens" in line]
        if len(stopped) >= quitters or time.monotonic() - start > deadline:
            break
        time.sleep(0.5)
    assert len(stopped) == quitters, new[-2000:]
    for line in stopped:
        done = int(line.split("stopped after ")[1].split(" ")[0])
        assert done < 1000, line  # stopped long before its 2,000 tokens
    pieces, errors = stream_chat(server, PROMPT.encode(), max_tokens=MAX_TOKENS)
    assert errors == []
    assert "".join(pieces) == want


# Triton data types of the ensemble's optional inputs, as the client sends them.
ENSEMBLE_TYPES = {
    "max_tokens": ("INT32", "int32"), "min_tokens": ("INT32", "int32"), "end_id": ("INT32", "int32"),
    "temperature": ("FP32", "float32"), "top_k": ("INT32", "int32"), "top_p": ("FP32", "float32"),
    "seed": ("UINT64", "uint64"), "repetition_penalty": ("FP32", "float32"),
    "presence_penalty": ("FP32", "float32"), "frequency_penalty": ("FP32", "float32"),
    "guided_decoding_guide_type": ("BYTES", "object"), "guided_decoding_guide": ("BYTES", "object"),
}  # fmt: skip


def ensemble_text(server: TritonServer, text: str, **options: Any) -> tuple[str | None, str | None]:
    """(text, None) or (None, error) of one non-streaming ensemble request (over a gRPC stream: the
    ensemble is decoupled, as tensorrt_llm is)."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    inputs = []
    for name, value in {"text_input": text, **options}.items():
        triton_type, np_type = ENSEMBLE_TYPES.get(name, ("BYTES", "object"))
        if isinstance(value, str):
            value = value.encode()
        t = grpcclient.InferInput(name, [1, 1], triton_type)
        t.set_data_from_numpy(np.array([[value]], dtype=np_type))
        inputs.append(t)
    results: queue.Queue[Any] = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    client.async_stream_infer(
        "ensemble", inputs,
        enable_empty_final_response=True,
    )  # fmt: skip
    texts: list[str] = []
    error = None
    while True:
        result, err = results.get(timeout=120)
        if err is not None:
            error = str(err)
            break
        out = result.as_numpy("text_output")
        if out is not None:
            texts.append(out.reshape(-1)[0].decode("utf-8"))
        if result.get_response().parameters["triton_final_response"].bool_param:
            break
    client.stop_stream()
    client.close()
    if error is not None:
        return None, error
    assert len(texts) == 1, texts
    return texts[0], None


def test_json_schema_guided_request_returns_valid_json(served: ReferenceServed) -> None:
    server = served.server
    guide = {"guided_decoding_guide_type": "json_schema", "guided_decoding_guide": json.dumps(SCHEMA)}
    greedy, error = ensemble_text(server, "富士山について答えてください", max_tokens=256, **guide)
    assert error is None
    assert greedy is not None
    assert valid(json.loads(greedy)), greedy
    sampled = {"temperature": 0.8, "top_p": 0.95, **guide}
    first, _ = ensemble_text(server, "富士山について答えてください", max_tokens=256, seed=11, **sampled)
    again, _ = ensemble_text(server, "富士山について答えてください", max_tokens=256, seed=11, **sampled)
    assert first is not None
    assert valid(json.loads(first)), first
    assert again == first
    # A regex guide as well: the output matches it exactly.
    import re

    code, error = ensemble_text(
        server,
        "郵便番号は",
        max_tokens=32,
        guided_decoding_guide_type="regex",
        guided_decoding_guide=r"[0-9]{3}-[0-9]{4}",
    )
    assert error is None
    assert code is not None
    assert re.fullmatch(r"[0-9]{3}-[0-9]{4}", code), code


def test_seeded_sampling_repeats_and_temperature_zero_is_greedy(served: ReferenceServed) -> None:
    from transformers import AutoTokenizer

    server, ckpt = served.server, served.checkpoint
    raw = "富士山の高さは"
    sampled = {"max_tokens": 16, "end_id": -1, "temperature": 0.8, "top_p": 0.95}
    runs = {seed: ensemble_text(server, raw, seed=seed, **sampled)[0] for seed in range(5)}
    assert ensemble_text(server, raw, seed=3, **sampled)[0] == runs[3]
    assert len(set(runs.values())) > 1  # different seeds (usually) differ: at least two of five
    tok = AutoTokenizer.from_pretrained(ckpt)
    greedy = tok.decode(greedy_ids(ckpt, tok.encode(raw), None, 16), skip_special_tokens=True)
    assert greedy not in runs.values() or len(set(runs.values())) > 1
    zero, error = ensemble_text(server, raw, max_tokens=16, end_id=-1, temperature=0.0, top_p=0.95, seed=4)
    assert error is None
    assert zero == greedy
    top1, _ = ensemble_text(server, raw, max_tokens=16, end_id=-1, temperature=0.8, top_k=1, seed=4)
    assert top1 == greedy


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"temperature": -1.0}, "temperature must not be negative"),
        ({"top_p": 1.5}, "runtime_top_p must lie in (0, 1]"),
        (
            {"guided_decoding_guide_type": "yaml", "guided_decoding_guide": "x"},
            "unknown guided_decoding_guide_type",
        ),
        (
            {"guided_decoding_guide_type": "json_schema", "guided_decoding_guide": "{nope"},
            "not a JSON schema",
        ),
        (
            {"guided_decoding_guide_type": "regex", "guided_decoding_guide": "([x"},
            "regex guide does not compile",
        ),
    ],
)
def test_bad_sampling_options_get_errors(
    served: ReferenceServed, options: dict[str, Any], needle: str
) -> None:
    server = served.server
    text, error = ensemble_text(server, "富士山", max_tokens=4, **options)
    assert text is None
    assert error is not None
    assert needle in error
    ok, error = ensemble_text(server, "富士山", max_tokens=4)
    assert error is None
    assert ok is not None


def test_chat_json_schema_guided_and_seeded(served: ReferenceServed) -> None:
    """The same guided request through ``chat`` (its sampling inputs go to tensorrt_llm through
    sampling.request_options): valid JSON, and the same seed at temperature 0.8 gives the same text."""
    server = served.server
    guide = {"guided_decoding_guide_type": "json_schema", "guided_decoding_guide": json.dumps(SCHEMA)}
    prompt = "富士山について答えてください".encode()
    pieces, errors = stream_chat(server, prompt, max_tokens=256, **guide)
    assert errors == []
    assert valid(json.loads("".join(pieces))), pieces
    sampled = {"temperature": 0.8, "top_p": 0.95, "seed": 11, **guide}
    first, errors = stream_chat(server, prompt, max_tokens=256, **sampled)
    again, _ = stream_chat(server, prompt, max_tokens=256, **sampled)
    assert errors == []
    assert valid(json.loads("".join(first))), first
    assert "".join(again) == "".join(first)
    bad, errors = stream_chat(server, prompt, max_tokens=4, temperature=-1.0)
    assert bad == []
    assert any("temperature must not be negative" in e for e in errors), errors
