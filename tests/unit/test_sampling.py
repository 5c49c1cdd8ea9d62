"""Sampling and guided-decoding options: request_options checks a request's inputs and gives the
tensorrt_llm tensors (contract dtypes, [1, 1]); the Sampler keeps TensorRT-LLM's semantics (greedy at
temperature 0, top_k 1 or neither top_k nor top_p; seeded per request; OpenAI-style presence/frequency
penalties); xgrammar's matcher on the repository's tokenizer info turns random logits into text that
parses against a JSON schema and ends only where the grammar may end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")

from swallow_trt.text.pipeline import RequestError  # noqa: E402
from swallow_trt.triton_repo.configs import contract  # noqa: E402
from swallow_trt.triton_repo.sampling import Sampler, Sampling, read_sampling, request_options  # noqa: E402
from tests.fixtures.guided import SCHEMA, valid  # noqa: E402


def getter(**values: Any) -> Any:
    def get(name: str) -> Any:
        if name not in values:
            return None
        v = values[name]
        if isinstance(v, str):
            return np.array([v.encode()], dtype=object)
        return np.array([v])

    return get


def test_request_options_give_tensorrt_llm_tensors() -> None:
    got = dict(
        request_options(
            getter(temperature=0.8, top_k=40, top_p=0.9, seed=7, repetition_penalty=1.1, presence_penalty=0.5,
                   frequency_penalty=-0.2, guided_decoding_guide_type="json_schema",
                   guided_decoding_guide=json.dumps(SCHEMA))
        )
    )  # fmt: skip
    dtypes = {i["name"]: i["data_type"] for i in contract()["inputs"]}
    want_np = {
        "TYPE_FP32": np.float32,
        "TYPE_INT32": np.int32,
        "TYPE_UINT64": np.uint64,
        "TYPE_STRING": object,
    }
    assert sorted(got) == sorted(
        ["temperature", "runtime_top_k", "runtime_top_p", "seed", "repetition_penalty", "presence_penalty",
         "frequency_penalty", "guided_decoding_guide_type", "guided_decoding_guide"]
    )  # fmt: skip
    for name, array in got.items():
        assert array.shape == (1, 1), name
        assert array.dtype == want_np[dtypes[name]], name
    assert got["runtime_top_k"][0, 0] == 40
    assert got["guided_decoding_guide_type"][0, 0] == b"json_schema"
    assert request_options(getter()) == []  # nothing given, nothing added


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"temperature": -0.1}, "temperature must not be negative"),
        ({"temperature": float("nan")}, "temperature must be finite"),
        ({"top_p": 0.0}, r"top_p must lie in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p must lie in \(0, 1\]"),
        ({"top_k": -1}, "top_k must not be negative"),
        ({"repetition_penalty": 0.0}, "repetition_penalty must be positive"),
        ({"seed": -3}, "seed must be an unsigned 64-bit integer"),
        (
            {"guided_decoding_guide_type": "yaml", "guided_decoding_guide": "x"},
            "unknown guided_decoding_guide_type",
        ),
        ({"guided_decoding_guide": "{}"}, "guided_decoding_guide needs guided_decoding_guide_type"),
        ({"guided_decoding_guide_type": "regex"}, "needs a guided_decoding_guide"),
        (
            {"guided_decoding_guide_type": "json_schema", "guided_decoding_guide": "{not json"},
            "not a JSON schema",
        ),
        ({"guided_decoding_guide_type": "json_schema", "guided_decoding_guide": "[1]"}, "JSON schema object"),
    ],
)
def test_bad_options_are_request_errors(values: dict[str, Any], needle: str) -> None:
    with pytest.raises(RequestError, match=needle):
        request_options(getter(**values))


def test_greedy_rules() -> None:
    assert Sampling().greedy  # TensorRT-LLM's defaults (top_k 0, top_p 0) decode greedily
    assert Sampling(temperature=0.0, top_p=0.9).greedy
    assert Sampling(top_k=1, temperature=2.0).greedy
    assert not Sampling(top_k=40).greedy
    assert not Sampling(top_p=0.95, temperature=0.8).greedy
    logits = torch.randn(500, generator=torch.Generator().manual_seed(1))
    assert Sampler(Sampling(temperature=0.0, top_p=0.9)).pick(logits) == int(logits.argmax())


def test_seeded_sampling_is_reproducible_and_seeds_differ() -> None:
    logits = torch.randn(500, generator=torch.Generator().manual_seed(2))

    def run(seed: int) -> list[int]:
        sampler = Sampler(Sampling(temperature=0.8, top_p=0.95, seed=seed))
        return [sampler.pick(logits) for _ in range(20)]

    assert run(5) == run(5)
    assert len({tuple(run(s)) for s in range(6)}) > 1


def test_penalties() -> None:
    logits = torch.tensor([2.0, 1.0, -1.0, 0.5])
    s = Sampler(Sampling(presence_penalty=0.5, frequency_penalty=0.25))
    got = s.penalize(logits.clone(), context=[3], generated=[0, 0, 1])
    assert got.tolist() == pytest.approx([2.0 - 0.5 - 0.5, 1.0 - 0.5 - 0.25, -1.0, 0.5])  # prompt not counted
    rep = Sampler(Sampling(repetition_penalty=2.0)).penalize(logits.clone(), context=[3], generated=[2])
    assert rep.tolist() == pytest.approx([2.0, 1.0, -2.0, 0.25])  # over prompt and output, HF's rule


def test_guided_json_schema_on_random_logits(tmp_path: Path) -> None:
    pytest.importorskip("xgrammar")
    from transformers import AutoTokenizer

    from swallow_trt.triton_repo.guided import Guides, write_tokenizer_info
    from tests.fixtures.tiny import make_tokenizer

    make_tokenizer("llama31").save_pretrained(tmp_path / "tok")
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    end = tok.convert_tokens_to_ids("<|eot_id|>")
    info = write_tokenizer_info(tmp_path / "tok", tmp_path / "info.json", end)
    vocab = len(tok) + 8  # a padded logits width, as engines have
    guides = Guides(info, vocab)
    for seed in range(3):
        matcher = guides.matcher("json_schema", json.dumps(SCHEMA), end)
        sampler = Sampler(Sampling(temperature=1.0, top_k=50, seed=seed))
        gen = torch.Generator().manual_seed(100 + seed)
        out: list[int] = []
        for _ in range(400):
            logits = matcher.mask(torch.randn(vocab, generator=gen))
            token = sampler.pick(logits)
            matcher.accept(token)
            if token == end:
                break
            out.append(token)
        else:
            pytest.fail("the grammar never let the end token through")
        assert valid(json.loads(tok.decode(out)))
    with pytest.raises(ValueError, match="does not compile"):
        guides.compile("regex", "([unclosed")


def test_read_sampling_reads_tensorrt_llm_names() -> None:
    s = read_sampling(getter(runtime_top_k=3, runtime_top_p=0.5, seed=9))
    assert (s.top_k, s.top_p, s.seed) == (3, 0.5, 9)
