"""``swallow-trt profile --api openai`` against the real OpenAI-compatible API in front of the real Triton
server, whose ``tensorrt_llm`` is the zero-delay schedule model (tests/fixtures/schedule_repo.py) with
its record of what it did (tests/triton_models/schedule): the ground truth.

As in test_profiler_server.py, no assertion compares a duration with a tolerance; what holds under any
load is asserted: the counts are exact (requests; output tokens from the API's usage; the prompt, whose
rendered chat length is exactly --input-tokens, both in the API's usage and in the ids the model
received); every request the profiler timed is one the model served, and the timestamps are causal
(client send <= model arrival <= model's first send <= client's first text; model's last send <= the
client's [DONE]); the closed loop never had more in flight than its concurrency; the summary's figures
are what the definitions give from the per-request records in profile.json; the three routes
(``tensorrt_llm`` and ``chat`` over gRPC, and the API) give the same counts for the same lengths; the
API key is sent; the CLI writes its table, JSON and files.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

pytest.importorskip("tritonclient.grpc")
pytest.importorskip("transformers")
pytest.importorskip("fastapi")

from swallow_trt.openai_api.server import ApiProcess, start_api_process
from swallow_trt.profiler.run import ProfileSpec, run_profile
from swallow_trt.triton_repo.server import TritonServer
from tests.fixtures.ports import free_port
from tests.fixtures.schedule_model import schedule_records
from tests.fixtures.triton import ScheduleServed

pytestmark = [pytest.mark.integration, pytest.mark.requires_triton]
KEY = "sk-profile-0123"
INPUT, OUTPUT = 64, 16


class Deployment(NamedTuple):
    server: TritonServer
    api: ApiProcess
    repo: Path
    record: Path  # the schedule model's record of what it did


@pytest.fixture(scope="module")
def deployment(
    forced_schedule_triton: ScheduleServed, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """The API, with a key, in front of the shared zero-delay schedule server that refuses unforced
    output lengths and records what it did (tests/conftest.py)."""
    server, repo, record = forced_schedule_triton
    api = start_api_process(
        server.grpc_url,
        repo,
        port=free_port(),
        api_key=KEY,
        log_path=tmp_path_factory.mktemp("profile-openai") / "api.log",
    )
    try:
        yield Deployment(server, api, repo, record)
    finally:
        api.stop()


def _spec(deployment: Deployment, out: Path, **kw: Any) -> ProfileSpec:
    api, repo = deployment.api, deployment.repo
    base: dict[str, Any] = {
        "api": "openai", "url": api.url, "model": "", "repo": repo, "api_key": KEY, "mode": "closed",
        "levels": (1.0,), "input_tokens": INPUT, "output_tokens": OUTPUT, "warmup": 2, "out": out, "plots": False,
    }  # fmt: skip
    return ProfileSpec(**(base | kw))


def _new_records(record: Path, seen: int) -> list[dict[str, Any]]:
    """The model's records of the requests it finished since ``seen`` of them, in arrival order."""
    done, _ = schedule_records(record)
    return sorted((m for m in done.values() if m["received"] > seen), key=lambda m: m["received"])


def _served(record: Path) -> int:
    done, _ = schedule_records(record)
    return max((m["received"] for m in done.values()), default=0)


def _recomputed(detail: dict[str, Any]) -> None:
    """The summary's figures from the point's raw records in profile.json (rounded to 0.1 us there)."""
    import numpy as np

    ok = [d for d in detail["requests_detail"] if d["error"] is None]
    assert len(ok) == detail["requests"]["ok"]
    values = {
        "ttft_ms": [d["chunks_ms"][0] - d["scheduled_ms"] for d in ok],
        "latency_ms": [d["chunks_ms"][-1] - d["scheduled_ms"] for d in ok],
        "tpot_ms": [(d["chunks_ms"][-1] - d["chunks_ms"][0]) / (d["output_tokens"] - 1) for d in ok],
        "chunk_gap_ms": [b - a for d in ok for a, b in itertools.pairwise(d["chunks_ms"])],
    }
    for key, v in values.items():
        got = {q: detail[key][f"p{q}"] for q in (50, 90, 99)}
        assert got == pytest.approx({q: float(np.percentile(v, q)) for q in (50, 90, 99)}, abs=5e-4), key
    tokens = sum(d["output_tokens"] for d in ok)
    assert detail["output_tokens_per_s"] == pytest.approx(tokens / detail["window_s"], rel=1e-12)


@pytest.mark.parametrize(("concurrency", "requests"), [(1, 12), (16, 96)])
def test_counts_and_causality_against_the_model(
    deployment: Deployment, tmp_path: Path, concurrency: int, requests: int
) -> None:
    record = deployment.record
    seen = _served(record)
    spec = _spec(deployment, tmp_path, levels=(float(concurrency),), num_requests=requests, warmup=0)
    result = run_profile(spec)
    (point,) = result.points
    s = point.summary
    assert result.meta["api"] == "openai"
    assert result.meta["target_kind"] == "openai"
    assert result.meta["model"] == deployment.repo.name  # the API's model id: the repository's name here
    assert result.meta["output_length_forced"] is True
    assert s["requests"] == {"sent": requests, "ok": requests, "failed": 0}, s["errors"]
    assert s["output_tokens_exact"]  # from the API's usage, which is the engine's own count
    # The rendered chat prompt is exactly --input-tokens: the API's usage says so...
    assert s["input_tokens_reported"] == {"min": INPUT, "max": INPUT}
    models = _new_records(record, seen)
    assert len(models) == requests  # ...and so does the model, for every request it served
    assert all(m["inputs"] == INPUT and sum(m["tokens"]) == OUTPUT and not m["dropped"] for m in models)
    for r in point.requests:
        rec = r.rec
        assert rec.sent_ns <= rec.chunk_ns[0] <= rec.chunk_ns[-1] <= rec.final_ns
        assert rec.chunk_ns == sorted(rec.chunk_ns)
        assert rec.chunk_tokens == []  # the API does not say how many tokens a chunk holds
    if concurrency == 1:  # one request at a time: the k-th the client sent is the k-th the model took
        for r, m in zip(sorted(point.requests, key=lambda r: r.rec.sent_ns), models, strict=True):
            rec = r.rec
            assert rec.sent_ns <= m["arrival"] <= m["sent"][0] <= rec.chunk_ns[0]
            assert m["sent"][-1] <= rec.final_ns
            # text needs a token: the first chunk cannot come before the model's first send
            assert r.ttft_ms >= (m["sent"][0] - rec.sent_ns) / 1e6
    events = sorted(
        [(r.rec.sent_ns, 1) for r in point.requests] + [(r.rec.final_ns, -1) for r in point.requests]
    )
    assert max(itertools.accumulate(step for _, step in events)) <= concurrency
    (detail,) = json.loads((tmp_path / "profile.json").read_text(encoding="utf-8"))["points"]
    _recomputed(detail)


def test_open_loop_sends_on_schedule(deployment: Deployment, tmp_path: Path) -> None:
    spec = _spec(deployment, tmp_path, mode="open", levels=(40.0,), num_requests=24, warmup=0)
    (point,) = run_profile(spec).points
    assert point.summary["requests"] == {"sent": 24, "ok": 24, "failed": 0}
    assert point.summary["output_tokens_exact"]
    scheduled = [r.rec.scheduled_ns for r in point.requests]
    assert scheduled == sorted(scheduled)  # the Poisson arrivals in index order
    assert all(r.rec.scheduled_ns <= r.rec.sent_ns <= r.rec.chunk_ns[0] for r in point.requests)
    assert "send_lateness_ms" in point.summary["client"]


def test_three_routes_one_run(deployment: Deployment, tmp_path: Path) -> None:
    """The same lengths through tensorrt_llm (ids over gRPC), the chat model (text over gRPC) and the API:
    the same counts, the same ids at the engine, the same report."""
    server, _api, repo, record = deployment
    grpc: dict[str, Any] = {"api": "triton", "url": server.grpc_url, "api_key": None}
    runs = {
        "tensorrt_llm": _spec(deployment, tmp_path / "direct", model="tensorrt_llm", **grpc),
        "chat": _spec(deployment, tmp_path / "chat", model="chat", **grpc),
        "openai": _spec(deployment, tmp_path / "openai"),
    }
    docs = {}
    for name, spec in runs.items():
        spec = ProfileSpec(**{**spec.__dict__, "levels": (4.0,), "num_requests": 16, "warmup": 0})
        seen = _served(record)
        (point,) = run_profile(spec).points
        assert point.summary["requests"] == {"sent": 16, "ok": 16, "failed": 0}, name
        assert point.summary["output_tokens_exact"], name
        models = _new_records(record, seen)
        assert [(m["inputs"], sum(m["tokens"])) for m in models] == [(INPUT, OUTPUT)] * 16, name
        docs[name] = json.loads((spec.out / "profile.json").read_text(encoding="utf-8"))
    assert {d["meta"]["target_kind"] for d in docs.values()} == {"tensorrt_llm", "chat", "openai"}
    keys = {name: (set(d["meta"]), set(d["points"][0]), set(d["points"][0]["requests_detail"][0]))
            for name, d in docs.items()}  # fmt: skip
    for name in ("tensorrt_llm", "chat"):  # one report format for every route
        assert keys["openai"][0] == keys[name][0]
        assert keys["openai"][2] == keys[name][2]
        # only what a server may or may not report differs (the chat model reports no prompt length)
        assert keys["openai"][1] ^ keys[name][1] <= {"input_tokens_reported"}, name
    assert docs["openai"]["meta"]["tokenizer"] == str(repo / "chat" / "tokenizer")
    assert (
        docs["chat"]["meta"]["input_tokens_counted_as"] == docs["openai"]["meta"]["input_tokens_counted_as"]
    )


def test_cli_with_the_key_from_settings(
    deployment: Deployment, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    api, repo = deployment.api, deployment.repo
    args = ["profile", "--api", "openai", "--url", api.url, "--repo", str(repo), "--concurrency", "1,2",
            "--num-requests", "4", "--warmup", "1", "--input-tokens", str(INPUT), "--output-tokens", str(OUTPUT)]  # fmt: skip
    result = cli(*args, "--out", str(tmp_path / "a"), env={"SWALLOW_TRT_API_KEY": KEY})
    assert result.exit_code == 0, result.stderr
    for needle in ("concurrency 1 (closed loop)", "concurrency 2 (closed loop)", "TTFT (ms)", "wrote"):
        assert needle in result.stdout, needle
    for name in ("profile.json", "requests.csv", "throughput_latency.png", "distributions.png"):
        assert (tmp_path / "a" / name).is_file(), name
    result = cli(
        *args, "--no-plots", "--json", "--out", str(tmp_path / "b"), env={"SWALLOW_TRT_API_KEY": KEY}
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert [p["requests"]["ok"] for p in data["points"]] == [4, 4]
    assert data["meta"]["api"] == "openai"

    result = cli(*args, "--out", str(tmp_path / "c"), env={"SWALLOW_TRT_API_KEY": ""})
    assert result.exit_code == 2
    assert "wants an API key" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = cli(*args, "--model", "nope", "--out", str(tmp_path / "d"), env={"SWALLOW_TRT_API_KEY": KEY})
    assert result.exit_code == 2
    assert f"choose --model from: {repo.name}" in result.stderr
