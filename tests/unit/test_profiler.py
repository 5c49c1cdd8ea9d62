"""The profiler's parts that need no server: option parsing and its errors, the request tensors of each
target (the chat and ensemble contracts included), the metric definitions, arrival schedules, job
splitting, and exact-length Japanese prompts with real tokenizers."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from swallow_trt.errors import UsageError
from swallow_trt.profiler.loadgen import Target, request_tensors
from swallow_trt.profiler.perf_report import Point, Request, Slo, percentile, stats, summarize
from swallow_trt.profiler.records import Rec, WorkerResult
from swallow_trt.profiler.run import (
    ProfileSpec,
    choose_mode,
    closed_jobs,
    kind_of,
    open_jobs,
    parse_levels,
    poisson_offsets,
)
from tests.fixtures.ports import free_port

MS = 1_000_000


# --------------------------------------------------------------------------------------------------
# Options


def test_levels_parse() -> None:
    assert parse_levels("1,4,16,64", "--concurrency", integer=True) == (1, 4, 16, 64)
    assert parse_levels(" 2, 8.5 ,32", "--request-rate", integer=False) == (2, 8.5, 32)


@pytest.mark.parametrize(
    ("text", "integer"),
    [("0", True), ("a,b", True), ("1,,4", True), ("1.5", True), ("-2", True), ("0", False), ("nan", False),
     ("inf", False), ("", False), ("2;8", False)],
)  # fmt: skip
def test_nonsense_levels_are_usage_errors(text: str, integer: bool) -> None:
    with pytest.raises(UsageError) as err:
        parse_levels(text, "--concurrency" if integer else "--request-rate", integer=integer)
    assert err.value.hint
    assert "e.g." in err.value.hint


def test_exactly_one_mode() -> None:
    assert choose_mode("1,4", None) == ("closed", (1.0, 4.0))
    assert choose_mode(None, "2") == ("open", (2.0,))
    for both in ((None, None), ("1", "2")):
        with pytest.raises(UsageError, match="exactly one of --concurrency and --request-rate"):
            choose_mode(*both)


@pytest.mark.parametrize(
    ("kw", "message"),
    [({"num_requests": 0}, "--num-requests must be positive"), ({"duration_s": -1.0}, "--duration must be positive"),
     ({"num_requests": 5, "duration_s": 2.0}, "both given"), ({"warmup": -1}, "--warmup"),
     ({"url": "http://localhost:8001"}, "is not HOST:PORT"), ({"slo_ttft_ms": 0.0}, "--slo-ttft-ms"),
     ({"mode": "open", "ramp_up_s": 1.0}, "--ramp-up"), ({"input_tokens": 0}, "--input-tokens")],
)  # fmt: skip
def test_spec_validation(kw: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"url": "127.0.0.1:8001", "model": "m", "mode": "closed", "levels": (1.0,)}
    with pytest.raises(UsageError, match=message):
        ProfileSpec(**(base | kw))


def test_default_request_counts() -> None:
    spec = ProfileSpec(url="h:1", model="m", mode="closed", levels=(1.0, 64.0))
    assert [spec.requests_for(x) for x in spec.levels] == [32, 256]
    spec = ProfileSpec(url="h:1", model="m", mode="open", levels=(2.0, 8.0))
    assert [spec.requests_for(x) for x in spec.levels] == [32, 80]
    assert ProfileSpec(url="h:1", model="m", mode="open", levels=(2.0,), duration_s=5).requests_for(2) is None


# --------------------------------------------------------------------------------------------------
# Targets and their request tensors

TRTLLM_INPUTS = frozenset(
    {"input_ids", "input_lengths", "request_output_len", "end_id", "min_tokens", "streaming"}
)


def _by_name(tensors: list[Any]) -> dict[str, Any]:
    return {t.name: t for t in tensors}


def test_tensorrt_llm_request_forces_the_length() -> None:
    target = Target("tensorrt_llm", "tensorrt_llm", batched=True, inputs=TRTLLM_INPUTS)
    t = _by_name(request_tensors(target, [5, 6, 7], 32))
    assert set(t) == {"input_ids", "input_lengths", "request_output_len", "streaming", "min_tokens", "end_id"}
    assert t["input_ids"].values == (5, 6, 7)
    assert t["input_ids"].shape == (1, 3)
    assert t["input_lengths"].values == (3,)
    assert t["input_lengths"].shape == (1, 1)
    assert t["request_output_len"].values == t["min_tokens"].values == (32,)
    assert t["end_id"].values == (-1,)
    assert t["streaming"].values == (True,)
    assert target.forced_length()
    with pytest.raises(TypeError):
        request_tensors(target, "text", 4)


def test_chat_request_contract() -> None:
    """text_input BYTES [1], max_tokens/min_tokens INT32 [1], ignore_eos BOOL [1]; no batch dimension."""
    target = Target(
        "chat",
        "chat",
        batched=False,
        inputs=frozenset({"text_input", "max_tokens", "min_tokens", "ignore_eos"}),
    )
    t = _by_name(request_tensors(target, "日本で一番高い山は？", 64))
    assert set(t) == {"text_input", "max_tokens", "min_tokens", "ignore_eos"}
    assert t["text_input"].datatype == "BYTES"
    assert t["text_input"].shape == (1,)
    assert t["text_input"].values == ("日本で一番高い山は？".encode(),)
    assert t["max_tokens"].values == t["min_tokens"].values == (64,)
    assert t["ignore_eos"].values == (True,)
    assert t["ignore_eos"].datatype == "BOOL"
    # A chat model without the optional inputs: only what it declares, and the report says so.
    old = Target("chat", "chat", batched=False, inputs=frozenset({"text_input", "max_tokens"}))
    assert set(_by_name(request_tensors(old, "x", 4))) == {"text_input", "max_tokens"}
    assert not old.forced_length()


def test_ensemble_request_contract() -> None:
    """text_input (raw), max_tokens, min_tokens, end_id -1, stream true; batched ensembles get [1, 1]."""
    inputs = frozenset({"text_input", "max_tokens", "min_tokens", "end_id", "stream", "bad_words"})
    for batched, shape in ((False, (1,)), (True, (1, 1))):
        t = _by_name(request_tensors(Target("ensemble", "ensemble", batched, inputs), "富士山", 16))
        assert set(t) == {"text_input", "max_tokens", "min_tokens", "end_id", "stream"}
        assert all(x.shape == shape for x in t.values())
        assert t["end_id"].values == (-1,)
        assert t["stream"].values == (True,)
        assert t["min_tokens"].values == (16,)


def test_inputs_build_for_tritonclient() -> None:
    pytest.importorskip("tritonclient.grpc")
    from swallow_trt.profiler.loadgen import _infer_inputs

    target = Target(
        "chat", "chat", batched=False, inputs=frozenset({"text_input", "max_tokens", "ignore_eos"})
    )
    built = {i.name(): i for i in _infer_inputs(request_tensors(target, "こんにちは", 8))}
    assert built["text_input"].datatype() == "BYTES"
    assert built["text_input"].shape() == [1]
    assert built["ignore_eos"].datatype() == "BOOL"


def test_kind_from_the_served_config() -> None:
    def cfg(*names: str, **extra: Any) -> dict[str, Any]:
        return {"input": [{"name": n} for n in names]} | extra

    assert kind_of(cfg("input_ids", "input_lengths")) == "tensorrt_llm"
    assert kind_of(cfg("text_input", "max_tokens", platform="ensemble")) == "ensemble"
    assert kind_of(cfg("text_input", "max_tokens", backend="python")) == "chat"
    assert kind_of(cfg("TEXT")) is None


# --------------------------------------------------------------------------------------------------
# Metrics, defined once


def _rec(index: int, start_ms: float, chunks: list[tuple[float, int]], sent_ms: float | None = None) -> Rec:
    r = Rec(index=index, prompt=0, scheduled_ns=int(start_ms * MS))
    r.sent_ns = int((sent_ms if sent_ms is not None else start_ms) * MS)
    r.chunk_ns = [int(t * MS) for t, _ in chunks]
    r.chunk_tokens = [n for _, n in chunks]
    r.tokens = sum(r.chunk_tokens)
    r.final_ns = r.chunk_ns[-1] if chunks else 0
    return r


def test_metric_definitions() -> None:
    # First token 50 ms after the start, then 3 responses of 4, 4 and 3 tokens every 40 ms: 12 tokens.
    req = Request(_rec(0, 1000, [(1050, 1), (1090, 4), (1130, 4), (1170, 3)], sent_ms=1002), worker=0)
    assert req.ttft_ms == 50
    assert req.latency_ms == 170
    assert req.tpot_ms == pytest.approx((170 - 50) / (12 - 1))  # GenAI-Perf's "ITL"
    assert req.chunk_gaps_ms() == [40, 40, 40]  # vLLM's "ITL"
    assert req.late_ms == 2
    one = Request(_rec(1, 0, [(30, 1)]), worker=0)
    assert one.tpot_ms is None
    assert one.chunk_gaps_ms() == []


def test_percentiles_match_numpy() -> None:
    np = pytest.importorskip("numpy")
    values = [float(x) for x in np.random.default_rng(3).exponential(10, 257)]
    s = stats(values)
    for q in (50, 90, 95, 99):
        assert s[f"p{q}"] == pytest.approx(float(np.percentile(values, q)))
    assert s["mean"] == pytest.approx(float(np.mean(values)))
    assert math.isnan(percentile([], 50))
    assert stats([])["n"] == 0


def _worker(records: list[Rec], wall_ms: float = 1000) -> WorkerResult:
    return WorkerResult(worker=0, records=records, wall_ns=int(wall_ms * MS), cpu_s=0.1, callback_busy_ns=MS,
                        responses=sum(len(r.chunk_ns) for r in records))  # fmt: skip


def test_summary_throughput_goodput_and_failures() -> None:
    recs = [_rec(i, i * 100, [(i * 100 + 50 + 50 * (i == 3), 1), (i * 100 + 150, 9)]) for i in range(4)]
    bad = Rec(index=4, prompt=0, scheduled_ns=0, sent_ns=0, error="boom")
    p = Point(
        "open", 10.0, [Request(r, 0) for r in [*recs, bad]], [_worker([*recs, bad])], Slo(ttft_ms=60), 10
    )
    s = summarize(p)
    assert s["requests"] == {"sent": 5, "ok": 4, "failed": 1}
    assert s["errors"] == ["boom"]
    assert s["window_s"] == pytest.approx(0.45)  # first start 0 -> last final 450 ms
    assert s["requests_per_s"] == pytest.approx(4 / 0.45)
    assert s["output_tokens_per_s"] == pytest.approx(40 / 0.45)
    assert s["output_tokens_exact"] is True
    assert s["goodput"]["requests_per_s"] == pytest.approx(3 / 0.45)  # request 3: TTFT 100 ms
    assert s["goodput"]["fraction"] == pytest.approx(3 / 5)
    assert s["ttft_ms"]["max"] == 100
    assert s["tpot_ms"]["p50"] == pytest.approx(100 / 9)
    assert "send_lateness_ms" in s["client"]
    assert s["client"]["warnings"] == []


def test_late_sends_are_flagged() -> None:
    recs = [_rec(i, i * 10, [(i * 10 + 60, 1)], sent_ms=i * 10 + 5) for i in range(10)]
    p = Point("open", 100.0, [Request(r, 0) for r in recs], [_worker(recs)], Slo(), 1)
    s = summarize(p)
    assert s["client"]["send_lateness_ms"]["p99"] == pytest.approx(5)
    assert any("late" in w for w in s["client"]["warnings"])
    assert s["ttft_ms"]["p50"] == 60  # from the schedule, not from the late send


# --------------------------------------------------------------------------------------------------
# Load shapes


def test_poisson_arrivals_are_seeded_and_have_the_rate() -> None:
    a = poisson_offsets(20.0, 4000, None, seed=1)
    assert a == poisson_offsets(20.0, 4000, None, seed=1)
    assert a != poisson_offsets(20.0, 4000, None, seed=2)
    assert a[0] == 0
    assert all(x < y for x, y in itertools.pairwise(a))
    assert (a[-1] / 1e9) / (len(a) - 1) == pytest.approx(1 / 20, rel=0.05)
    timed = poisson_offsets(5.0, None, 3.0, seed=0)
    assert timed[-1] < 3e9
    assert 5 < len(timed) < 30


def test_closed_jobs_split_concurrency_and_requests() -> None:
    jobs = closed_jobs(2, 5, 11, None, t0=1000, timeout_ns=1, ramp_up_s=0.5)
    assert [len(j.slot_starts) for j in jobs] == [3, 2]
    assert [j.count for j in jobs] == [6, 5]
    starts = sorted(s for j in jobs for s in j.slot_starts)
    assert starts == [1000 + int(g * 1e8) for g in range(5)]  # 0.5 s / 5 streams
    assert all(s == 1000 for j in closed_jobs(4, 3, None, 2.0, 1000, 1) for s in j.slot_starts)
    assert len(closed_jobs(4, 3, None, 2.0, 1000, 1)) == 3  # never more workers than streams


def test_open_jobs_deal_arrivals_round_robin() -> None:
    jobs = open_jobs(3, [0, 10, 20, 30, 40], t0=100, timeout_ns=1)
    assert [[i for i, _ in j.schedule] for j in jobs] == [[0, 3], [1, 4], [2]]
    assert jobs[0].schedule == ((0, 100), (3, 130))


# --------------------------------------------------------------------------------------------------
# Exact-length Japanese prompts (real tokenizers trained on the shipped text)


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, Any]:
    pytest.importorskip("transformers")
    from tests.fixtures.tiny import make_tokenizer

    return {kind: make_tokenizer(kind) for kind in ("llama31", "llama2")}


@pytest.mark.parametrize("kind", ["llama31", "llama2"])
@pytest.mark.parametrize("n", [60, 129, 512])
def test_prompts_have_exact_lengths(tokenizers: dict[str, Any], kind: str, n: int) -> None:
    from swallow_trt.profiler.prompts import build_prompts, chat_counter, load_texts, prompt_lengths

    tok = tokenizers[kind]
    texts = load_texts("ja")
    ids = build_prompts(tok, texts, mode="ids", n_tokens=n, n_prompts=8, seed=1)
    assert prompt_lengths(tok, ids) == [n] * 8
    assert len(set(ids.items)) == 8
    raw = build_prompts(tok, texts, mode="raw", n_tokens=n, n_prompts=4, seed=1)
    assert prompt_lengths(tok, raw) == [n] * 4
    fmt = "llama3" if kind == "llama31" else "llama2"
    chat = build_prompts(tok, texts, mode="chat", n_tokens=n, n_prompts=4, seed=1, chat_format=fmt,
                         system_prompt="あなたは誠実で優秀な日本人のアシスタントです。")  # fmt: skip
    count = chat_counter(tok, fmt, "あなたは誠実で優秀な日本人のアシスタントです。")
    assert prompt_lengths(tok, chat, count) == [n] * 4
    for p in (*raw.items, *chat.items):
        assert isinstance(p, str)
        assert "\ufffd" not in p
        assert any("\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff" for ch in p)  # kana or kanji


def test_prompts_from_user_files_and_synthetic(tokenizers: dict[str, Any], tmp_path: Path) -> None:
    from swallow_trt.profiler.prompts import build_prompts, load_texts, prompt_lengths

    tok = tokenizers["llama31"]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(json.dumps({"text": "短い文です。"}, ensure_ascii=False) + "\n", encoding="utf-8")
    txt = tmp_path / "p.txt"
    txt.write_text("一行目の段落。\n\n二行目の段落。\n", encoding="utf-8")
    assert load_texts(str(txt)) == ["一行目の段落。", "二行目の段落。"]
    for dataset in (str(jsonl), str(txt), "synthetic"):
        texts = load_texts(dataset)
        assert (texts is None) == (dataset == "synthetic")
        for mode in ("ids", "raw"):
            p = build_prompts(tok, texts, mode=mode, n_tokens=200, n_prompts=3, seed=0)  # type: ignore[arg-type]
            assert prompt_lengths(tok, p) == [200] * 3, (dataset, mode)


def test_prompt_errors(tokenizers: dict[str, Any], tmp_path: Path) -> None:
    from swallow_trt.profiler.prompts import build_prompts, load_texts

    with pytest.raises(UsageError, match="neither ja, synthetic nor a file"):
        load_texts(str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "x"}\n', encoding="utf-8")
    with pytest.raises(UsageError, match=r"bad\.jsonl:1: no `text` string field"):
        load_texts(str(bad))
    with pytest.raises(UsageError, match="the prompt format alone takes"):
        build_prompts(tokenizers["llama31"], load_texts("ja"), mode="chat", n_tokens=5, n_prompts=1,
                      chat_format="llama3", system_prompt="システム")  # fmt: skip


# --------------------------------------------------------------------------------------------------
# The CLI without a server


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--concurrency", "0"], "--concurrency '0': 0 is out of range"), (["--concurrency", "a,b"], "is not a number"),
     (["--concurrency", "1", "--request-rate", "2"], "exactly one of"), ([], "exactly one of"),
     (["--request-rate", "2", "--ramp-up", "1"], "--ramp-up"),
     (["--concurrency", "1", "--tp", "2"], "add --plan-model")],
)  # fmt: skip
def test_cli_bad_input_is_one_line_and_exit_2(cli: Callable[..., Any], args: list[str], needle: str) -> None:
    result = cli("profile", "--url", "127.0.0.1:1", *args)
    assert result.exit_code == 2, result.stdout
    assert result.stderr.startswith("error: ")
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert " — " in result.stderr


def test_cli_unreachable_server_exits_3(cli: Callable[..., Any], tmp_path: Path) -> None:
    pytest.importorskip("tritonclient.grpc")
    port = free_port()
    result = cli("profile", "--url", f"127.0.0.1:{port}", "--concurrency", "1", "--out", str(tmp_path))
    assert result.exit_code == 3
    assert result.stderr.startswith(f"error: cannot reach Triton at 127.0.0.1:{port}")


def test_help_has_examples_and_stays_light() -> None:
    probe = (
        "import sys\nfrom swallow_trt.cli.main import run\nsys.argv = ['swallow-trt', 'profile', '--help']\n"
        "try:\n    run()\nexcept SystemExit:\n    pass\n"
        "heavy = ('torch', 'transformers', 'tritonclient', 'numpy', 'matplotlib')\n"
        "print('LOADED=' + ','.join(m for m in heavy if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert (
        "swallow-trt profile --url 127.0.0.1:8001 --model tensorrt_llm --concurrency 1,4,16,64" in proc.stdout
    )
    assert proc.stdout.strip().splitlines()[-1] == "LOADED="


def test_relative_tokenizer_dir_resolves_against_repo(tmp_path: Path) -> None:
    """A repository's tokenizer_dir is relative to its root (repositories move between machines): the
    profiler finds it with --repo, and without it says to pass --repo or --tokenizer."""
    from swallow_trt.profiler.run import ProfileSpec, Served, make_prompts
    from tests.fixtures.tiny import make_tokenizer

    make_tokenizer("llama31").save_pretrained(tmp_path / "repo" / "chat" / "tokenizer")
    served = Served(
        target=Target(name="chat", kind="chat", batched=False, inputs=frozenset({"text_input"})),
        tokenizer_dir=Path("chat/tokenizer"),
        chat_format="llama3",
        system_prompt=None,
    )
    base = {"url": "127.0.0.1:1", "model": "chat", "mode": "closed", "levels": (1.0,), "input_tokens": 64}
    with pytest.raises(UsageError, match="chat/tokenizer is not on this machine") as refused:
        make_prompts(ProfileSpec(**base), served, 2)  # type: ignore[arg-type]
    assert "--repo REPO" in refused.value.hint
    _prompts, directory = make_prompts(ProfileSpec(**base, repo=tmp_path / "repo"), served, 2)  # type: ignore[arg-type]
    assert Path(directory) == tmp_path / "repo" / "chat" / "tokenizer"
