"""``swallow-trt profile``: latency and throughput of a served model, with figures that can be trusted.

Definitions (the README quotes these; every figure is per request unless it says otherwise):

- **start**: the request's *scheduled* send time in open-loop mode (``--request-rate``: Poisson
  arrivals drawn in advance, so a slow server cannot slow the arrivals down and queueing is not hidden,
  i.e. no coordinated omission); its actual send time in closed-loop mode (``--concurrency``: that
  many requests in flight, all starting at once, or spread over ``--ramp-up`` seconds).
- **TTFT**: start -> the first response that carries at least one output token (``--api openai``: the
  first SSE chunk with output text).
- **E2E latency**: start -> the response carrying the last output token.
- **TPOT** (time per output token): (E2E latency - TTFT) / (output tokens - 1). GenAI-Perf and AIPerf
  call this "inter-token latency" (ITL).
- **chunk gap**: the time between two consecutive token-carrying responses of one request. vLLM's
  benchmark calls this "ITL"; with several tokens per response it differs from TPOT, so it is reported
  separately under its own name.
- **output tokens**: counted from the server's own figures (``sequence_length`` per response for the
  ``tensorrt_llm`` model and the ensemble, the cumulative ``num_output_tokens`` for the chat model, the
  ``usage`` of the last chunk (``stream_options.include_usage``) for an OpenAI API), never by
  re-tokenising text.
- **requests/s, output tokens/s**: completed requests and their output tokens over the load point's
  window (first start -> last final response).
- **goodput**: requests/s of the requests that met ``--slo-ttft-ms`` and ``--slo-tpot-ms``.
- Statistics: mean, p50, p90, p95, p99 (linear interpolation between ranks), over the requests that
  completed without error; failed requests are counted and listed separately.

Runs are comparable: prompts have exactly ``--input-tokens`` tokens with the model's tokenizer (see
:mod:`swallow_trt.profiler.prompts`) and the output length is forced where the model allows it
(``min_tokens`` = the output length and no end token). The client is a set of processes
(:mod:`swallow_trt.profiler.loadgen`) that report their own headroom.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from swallow_trt.checks import output_dir
from swallow_trt.errors import EnvironmentProblem, StageFailed, UsageError
from swallow_trt.profiler.loadgen import Target, WorkerPool
from swallow_trt.profiler.perf_report import (
    Point,
    Request,
    Slo,
    summarize,
    write_csv,
    write_json,
    write_plots,
)
from swallow_trt.profiler.records import Job, Kind
from swallow_trt.triton_repo.client import check_grpc_url

if TYPE_CHECKING:
    from swallow_trt.builders.plan import PlanRequest
    from swallow_trt.profiler.prompts import PromptSet

Mode = Literal["closed", "open"]
Api = Literal["triton", "openai"]
DEFAULT_URL: dict[str, str] = {"triton": "127.0.0.1:8001", "openai": "http://127.0.0.1:8000"}
DEFAULT_MODEL: dict[str, str] = {"triton": "tensorrt_llm", "openai": ""}  # "": the first the API lists
STREAMS_PER_PROCESS = 16  # default client processes: one per this many concurrent streams
RATE_PER_PROCESS = 8.0  # ... or per this many requests/s (open loop)
START_DELAY_NS = 150_000_000  # the workers get their job this long before t0


def parse_levels(text: str, option: str, integer: bool) -> tuple[float, ...]:
    """``1,4,16,64`` -> (1, 4, 16, 64); a clear UsageError for anything else."""
    what = "whole numbers of at least 1" if integer else "positive numbers of requests/s"
    example = "1,4,16,64" if integer else "2,8,32"
    levels: list[float] = []
    for part in text.split(","):
        part = part.strip()
        try:
            value = float(int(part)) if integer else float(part)
        except ValueError:
            raise UsageError(
                f"{option} {text!r}: {part!r} is not a number", f"give {what}, e.g. {option} {example}"
            ) from None
        if not math.isfinite(value) or value <= 0 or (integer and value < 1):
            raise UsageError(
                f"{option} {text!r}: {part} is out of range", f"give {what}, e.g. {option} {example}"
            )
        levels.append(value)
    return tuple(levels)


@dataclass(frozen=True)
class ProfileSpec:
    url: str
    model: str
    mode: Mode
    levels: tuple[float, ...]
    input_tokens: int = 512
    output_tokens: int = 256
    dataset: str = "ja"
    num_requests: int | None = None
    duration_s: float | None = None
    warmup: int = 8
    seed: int = 0
    out: Path = Path("profile-out")
    tokenizer: Path | None = None
    repo: Path | None = None  # the served repository: resolves its relative tokenizer_dir
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None
    workers: int | None = None
    ramp_up_s: float = 0.0
    request_timeout_s: float = 300.0
    plan: PlanRequest | None = None
    plots: bool = True
    api: Api = "triton"  # Triton's gRPC (url HOST:PORT), or an OpenAI-compatible API (url http://HOST:PORT)
    api_key: str | None = None  # openai: sent as a bearer token (default: SWALLOW_TRT_API_KEY)

    def __post_init__(self) -> None:
        if self.api not in DEFAULT_URL:
            raise UsageError(
                f"--api {self.api!r} is neither triton nor openai", "pass --api triton or --api openai"
            )
        # Frozen: the API's defaults are filled in once, here.
        if not self.url:
            object.__setattr__(self, "url", DEFAULT_URL[self.api])
        if not self.model and self.api == "triton":
            object.__setattr__(self, "model", DEFAULT_MODEL[self.api])
        positive: dict[str, float | None] = {
            "--input-tokens": self.input_tokens, "--output-tokens": self.output_tokens,
            "--num-requests": self.num_requests, "--duration": self.duration_s, "--workers": self.workers,
            "--slo-ttft-ms": self.slo_ttft_ms, "--slo-tpot-ms": self.slo_tpot_ms,
            "--request-timeout": self.request_timeout_s,
        }  # fmt: skip
        for name, value in positive.items():
            if value is not None and not value > 0:
                raise UsageError(
                    f"{name} must be positive, got {value:g}", f"pass {name} with a positive value"
                )
        if self.ramp_up_s < 0 or (self.ramp_up_s and self.mode == "open"):
            raise UsageError(
                f"--ramp-up {self.ramp_up_s:g} applies to --concurrency only and must not be negative",
                "drop --ramp-up (open loop arrivals follow --request-rate)",
            )
        if self.warmup < 0:
            raise UsageError(
                f"--warmup must not be negative, got {self.warmup}", "pass --warmup 0 to skip it"
            )
        if self.num_requests is not None and self.duration_s is not None:
            raise UsageError("--num-requests and --duration both given", "choose one of them")
        if not self.levels:
            raise UsageError("no load points", "pass --concurrency 1,4,16 or --request-rate 2,8")
        if self.api == "openai":
            from swallow_trt.profiler.openai_client import parse_http_url

            parse_http_url(self.url)
        elif "://" in self.url:
            raise UsageError(
                f"--url {self.url!r} is not HOST:PORT (Triton's gRPC endpoint) but a URL",
                "to profile an OpenAI-compatible API add --api openai; for Triton pass e.g. --url 127.0.0.1:8001",
            )
        else:
            check_grpc_url(self.url)
        output_dir(self.out)

    def requests_for(self, level: float) -> int | None:
        """Requests per load point (None: the duration decides)."""
        if self.duration_s is not None:
            return None
        if self.num_requests is not None:
            return self.num_requests
        return max(32, 4 * int(level)) if self.mode == "closed" else max(32, math.ceil(10 * level))


def choose_mode(concurrency: str | None, request_rate: str | None) -> tuple[Mode, tuple[float, ...]]:
    if (concurrency is None) == (request_rate is None):
        raise UsageError(
            "give exactly one of --concurrency and --request-rate",
            "closed loop: --concurrency 1,4,16,64; open loop (Poisson arrivals): --request-rate 2,8,32",
        )
    if concurrency is not None:
        return "closed", parse_levels(concurrency, "--concurrency", integer=True)
    assert request_rate is not None
    return "open", parse_levels(request_rate, "--request-rate", integer=False)


# --------------------------------------------------------------------------------------------------
# The served model


@dataclass(frozen=True)
class Served:
    target: Target
    tokenizer_dir: Path | None  # from the chat model's config, if any
    chat_format: str
    system_prompt: str | None
    notes: tuple[str, ...] = ()


def _params(config: dict[str, Any]) -> dict[str, str]:
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


def kind_of(config: dict[str, Any]) -> Kind | None:
    inputs = {i["name"] for i in config.get("input", [])}
    if "input_ids" in inputs:
        return "tensorrt_llm"
    if config.get("platform") == "ensemble" and "text_input" in inputs:
        return "ensemble"
    if "text_input" in inputs:
        return "chat"
    return None


def discover(url: str, model: str) -> Served:
    """Connect, check the model streams, and read what the prompts need from the served configs."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    try:
        client = grpcclient.InferenceServerClient(url)
        live = client.is_server_live()
    except InferenceServerException as exc:
        raise EnvironmentProblem(
            f"cannot reach Triton at {url}: {exc.message()}", "start it with `swallow-trt serve --repo REPO`"
        ) from None
    if not live:
        raise EnvironmentProblem(f"Triton at {url} is not live", "wait for it, or check its log")
    try:
        index = client.get_model_repository_index(as_json=True).get("models", [])
        ready = sorted(m["name"] for m in index if m.get("state") == "READY")
        if model not in ready:
            raise UsageError(
                f"model {model!r} is not served (ready) at {url}",
                f"choose --model from: {', '.join(ready) or 'none are ready'}",
            )
        config = client.get_model_config(model, as_json=True)["config"]
        chat_config = config if kind_of(config) == "chat" else None
        if chat_config is None and "chat" in ready:
            chat_config = client.get_model_config("chat", as_json=True)["config"]
    except InferenceServerException as exc:
        raise EnvironmentProblem(
            f"Triton at {url} failed a query: {exc.message()}", "check the server log"
        ) from None
    finally:
        client.close()
    kind = kind_of(config)
    if kind is None:
        raise UsageError(
            f"model {model!r} has neither input_ids nor text_input", "profile tensorrt_llm, chat or ensemble"
        )
    if not config.get("model_transaction_policy", {}).get("decoupled", False):
        raise UsageError(f"model {model!r} does not stream (not decoupled)", "profile a decoupled model")
    target = Target(
        name=model,
        kind=kind,
        batched=int(config.get("max_batch_size", 0)) > 0,
        inputs=frozenset(i["name"] for i in config.get("input", [])),
    )
    notes = []
    if not target.forced_length():
        notes.append(f"{model} cannot force the output length (no min_tokens/end control): counts may vary")
    return _served(target, _params(chat_config) if chat_config else {}, notes)


def _served(target: Target, chat_params: dict[str, str], notes: list[str]) -> Served:
    """``target`` with what its prompts need from the chat model's parameters."""
    tok = chat_params.get("tokenizer_dir")
    return Served(
        target=target,
        tokenizer_dir=Path(tok) if tok else None,
        chat_format=chat_params.get("chat_format") or "none",
        system_prompt=chat_params.get("system_prompt") or None,
        notes=tuple(notes),
    )


def _repo_chat_parameters(repo: Path) -> dict[str, str]:
    """The served repository's chat model parameters: the text side the OpenAI API uses too (chat format,
    system prompt, tokenizer)."""
    from swallow_trt.triton_repo.configs import read_model_config

    path = repo / "chat" / "config.pbtxt"
    _, params = read_model_config(
        path,
        f"{path} is missing: --repo must be the repository the API serves",
        "pass the directory given to `swallow-trt serve --repo` / `swallow-trt openai --repo`",
    )
    return params


def discover_openai(spec: ProfileSpec) -> Served:
    """The API's model and whether it can force the output length; the chat format and system prompt the
    API renders prompts with, from the served repository (``--repo``), so prompts have the exact length."""
    from swallow_trt.profiler.openai_client import discover_api, parse_http_url

    if spec.repo is None:
        raise UsageError(
            "--api openai needs the served repository for exact-length prompts (its chat format)",
            "pass --repo REPO (the directory the API serves)",
        )
    params = _repo_chat_parameters(spec.repo)
    info = discover_api(parse_http_url(spec.url), spec.model, spec.api_key)
    notes = ["the OpenAI API reports token counts in its usage chunk only: chunk_tokens are not known"]
    if not info.forced:
        notes.append(
            f"{spec.url} does not take min_tokens/ignore_eos (its /openapi.json lists neither): "
            "the output length is not forced, counts may vary"
        )
    target = Target(
        name=info.model, kind="openai", batched=False,
        inputs=frozenset({"min_tokens", "ignore_eos"} if info.forced else ()),
    )  # fmt: skip
    return _served(target, params, notes)


def make_prompts(spec: ProfileSpec, served: Served, n_prompts: int) -> tuple[PromptSet, str]:
    from swallow_trt.profiler.prompts import build_prompts, load_texts, load_tokenizer

    texts = load_texts(spec.dataset)
    directory = spec.tokenizer
    if directory is None:
        found = served.tokenizer_dir
        # A repository's paths are relative to its root (it may have been moved): resolve against --repo,
        # else against the repository a Triton on this machine was started with (its argv).
        if found is not None and not found.is_absolute():
            repo = spec.repo
            if repo is None and spec.api == "triton":
                from swallow_trt.profiler.served_repo import local_repository

                chat = served.target.name if served.target.kind == "chat" else "chat"
                repo = local_repository(spec.url, chat)
            if repo is not None:
                found = repo / found
        if found is None or not found.is_dir():
            where = f" ({found} is not on this machine)" if found else ""
            raise UsageError(
                f"no tokenizer for exact-length prompts{where}",
                "pass --repo REPO (the served repository) or --tokenizer DIR (the model's tokenizer directory)",
            )
        directory = found
    tokenizer = load_tokenizer(directory)
    mode = {"tensorrt_llm": "ids", "ensemble": "raw", "chat": "chat", "openai": "chat"}[served.target.kind]
    prompts = build_prompts(
        tokenizer, texts, mode=mode, n_tokens=spec.input_tokens, n_prompts=n_prompts,  # type: ignore[arg-type]
        seed=spec.seed, chat_format=served.chat_format, system_prompt=served.system_prompt,
    )  # fmt: skip
    return prompts, str(directory)


def roofline_floors(spec: ProfileSpec, level: float) -> dict[str, Any] | None:
    """The planner's floors for this prompt length, at batch = the concurrency (open loop: 1)."""
    if spec.plan is None:
        return None
    from swallow_trt.builders.plan import make_plan

    batch = int(level) if spec.mode == "closed" else 1
    plan = make_plan(
        replace(spec.plan, max_batch_size=batch, max_input_len=spec.input_tokens,
                max_seq_len=spec.input_tokens + spec.output_tokens),
        suggest=False,
    )  # fmt: skip
    g = next((g for g in plan.gpus if g.fits), plan.gpus[0])
    return {
        "gpu": g.gpu.name,
        "target": plan.profile.name,
        "qformat": plan.qformat,
        "tp": plan.tp,
        "batch": batch,
        "prefill_floor_ms": g.prefill_floor_s * 1e3,
        "decode_floor_ms": (g.decode_floor_batch_s if batch > 1 else g.decode_floor_s) * 1e3,
        "predicted": predicted(spec, level),
    }


def predicted(spec: ProfileSpec, level: float) -> dict[str, Any]:
    """What ``plan --isl/--osl`` with the same load predicts for this point (the performance model,
    issue 16), to print beside the measurement; ``error`` where the plan refuses that load."""
    from swallow_trt.builders.estimate import Workload, estimate_plan
    from swallow_trt.errors import SwallowTrtError

    assert spec.plan is not None
    closed = spec.mode == "closed"
    load = Workload(spec.input_tokens, spec.output_tokens, concurrency=int(level) if closed else None,
                    rate=None if closed else level)  # fmt: skip
    try:
        _, est = estimate_plan(spec.plan, load)
    except SwallowTrtError as e:
        return {"error": str(e)}
    j = est.to_json()
    keys = ("ttft_ms", "tpot_ms", "output_tokens_per_s", "requests_per_s", "max_batch_size", "gpu")
    return {k: j[k] for k in keys}


# --------------------------------------------------------------------------------------------------
# Running


def auto_workers(spec: ProfileSpec) -> int:
    top = max(spec.levels)
    need = (
        math.ceil(top / STREAMS_PER_PROCESS) if spec.mode == "closed" else math.ceil(top / RATE_PER_PROCESS)
    )
    return max(1, min(need, os.cpu_count() or 1))


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def closed_jobs(n_workers: int, concurrency: int, count: int | None, duration_s: float | None, t0: int,
                timeout_ns: int, ramp_up_s: float = 0.0) -> list[Job]:  # fmt: skip
    """Split the concurrency (and the request count, in proportion) over the workers. Slot ``g`` (dealt
    round-robin) starts at ``t0 + g x ramp_up / concurrency``."""
    used = min(n_workers, concurrency)
    counts = _split(count, used) if count is not None else [None] * used
    deadline = t0 + int(duration_s * 1e9) if duration_s is not None else None
    step = ramp_up_s * 1e9 / concurrency
    return [
        Job(mode="closed", t0_ns=t0, first_index=w, stride=used, count=c, deadline_ns=deadline,
            timeout_ns=timeout_ns, slot_starts=tuple(t0 + int(g * step) for g in range(w, concurrency, used)))
        for w, c in enumerate(counts)
    ]  # fmt: skip


def poisson_offsets(rate: float, count: int | None, duration_s: float | None, seed: int) -> list[int]:
    """Arrival offsets (ns) of a Poisson process: exponential gaps, seeded, the first at 0."""
    rng = random.Random(seed)
    out: list[int] = []
    t = 0.0
    while (count is None or len(out) < count) and (duration_s is None or t < duration_s):
        out.append(int(t * 1e9))
        t += rng.expovariate(rate)
    return out


def open_jobs(n_workers: int, offsets: list[int], t0: int, timeout_ns: int) -> list[Job]:
    """Deal the arrivals round-robin over the workers."""
    used = min(n_workers, len(offsets)) or 1
    return [
        Job(mode="open", t0_ns=t0, first_index=w, stride=used, timeout_ns=timeout_ns,
            schedule=tuple((i, t0 + off) for i, off in enumerate(offsets) if i % used == w))
        for w in range(used)
    ]  # fmt: skip


@dataclass
class ProfileResult:
    meta: dict[str, Any]
    points: list[Point] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    interrupted: bool = False


def run_profile(
    spec: ProfileSpec,
    *,
    on_point: Callable[[Point], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ProfileResult:
    """Profile every load point in turn; reports under ``spec.out``. Ctrl-C: the partial reports are
    written and KeyboardInterrupt re-raised."""
    say = progress or (lambda _m: None)
    floors = {level: roofline_floors(spec, level) for level in spec.levels}  # bad plan input fails first
    if spec.api == "openai":
        from swallow_trt.settings import load_settings

        spec = replace(spec, api_key=spec.api_key or load_settings().api_key)
        served = discover_openai(spec)
    else:
        served = discover(spec.url, spec.model)
    counts = [spec.requests_for(level) for level in spec.levels]
    pool_size = max((c or 256) for c in counts)
    prompts, tokenizer_dir = make_prompts(spec, served, pool_size)
    n_workers = spec.workers or auto_workers(spec)
    meta: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "url": spec.url,
        "api": spec.api,
        "model": served.target.name,
        "target_kind": served.target.kind,
        "mode": spec.mode,
        "levels": list(spec.levels),
        "input_tokens": spec.input_tokens,
        "input_tokens_counted_as": prompts.counted_as,
        "output_tokens": spec.output_tokens,
        "output_length_forced": served.target.forced_length(),
        "dataset": spec.dataset,
        "distinct_prompts": len(prompts),
        "tokenizer": tokenizer_dir,
        "seed": spec.seed,
        "warmup": spec.warmup,
        "client_processes": n_workers,
        "machine_cpus": os.cpu_count(),
        "notes": list(served.notes),
        "clock": "CLOCK_MONOTONIC; times in the files are ms from the first load point's start",
    }
    result = ProfileResult(meta=meta)
    spec.out.mkdir(parents=True, exist_ok=True)
    timeout_ns = int(spec.request_timeout_s * 1e9)
    slo = Slo(spec.slo_ttft_ms, spec.slo_tpot_ms)
    base_ns = 0
    say(
        f"starting {n_workers} client process(es) for {served.target.name} ({served.target.kind}) at {spec.url}"
    )
    with WorkerPool(n_workers, spec.url, served.target, list(prompts.items), spec.output_tokens,
                    api_key=spec.api_key) as pool:  # fmt: skip
        if spec.warmup:
            say(f"warm-up: {spec.warmup} request(s)")
            t0 = time.monotonic_ns() + START_DELAY_NS
            warm = int(min(spec.warmup, max(spec.levels) if spec.mode == "closed" else 4))
            _, interrupted = pool.run(
                closed_jobs(len(pool), warm, spec.warmup, None, t0, timeout_ns, spec.ramp_up_s)
            )
            if interrupted:
                raise KeyboardInterrupt
        for level, count in zip(spec.levels, counts, strict=True):
            p = Point(spec.mode, level, [], [], slo, spec.output_tokens, floors[level])
            t0 = time.monotonic_ns() + START_DELAY_NS
            base_ns = base_ns or t0
            if spec.mode == "closed":
                jobs = closed_jobs(
                    len(pool), int(level), count, spec.duration_s, t0, timeout_ns, spec.ramp_up_s
                )
            else:
                offsets = poisson_offsets(level, count, spec.duration_s, spec.seed + len(result.points))
                jobs = open_jobs(len(pool), offsets, t0, timeout_ns)
            say(f"{p.label}: {count or f'{spec.duration_s:g} s of'} requests")
            workers, interrupted = pool.run(jobs)
            p.workers = workers
            p.requests = sorted(
                (Request(r, w.worker) for w in workers for r in w.records), key=lambda r: r.rec.index
            )
            p.interrupted = interrupted
            p.summary = summarize(p)
            result.points.append(p)
            if interrupted:
                result.interrupted = True
                _write(spec, result, base_ns)
                raise KeyboardInterrupt
            if on_point:
                on_point(p)
            if p.summary["requests"]["ok"] == 0:
                _write(spec, result, base_ns)
                raise StageFailed(
                    f"every request at {p.label} failed: {'; '.join(p.summary['errors']) or 'no response'}",
                    "check the server log; --input-tokens may exceed the model's max_input_len",
                )
    _write(spec, result, base_ns)
    return result


def _write(spec: ProfileSpec, result: ProfileResult, base_ns: int) -> None:
    meta = result.meta | {"interrupted": result.interrupted}
    files = [spec.out / "profile.json", spec.out / "requests.csv"]
    write_json(files[0], meta, result.points, base_ns)
    write_csv(files[1], result.points, base_ns)
    if spec.plots and result.points and not result.interrupted:
        files += write_plots(spec.out, result.points)
    result.files = files


def summary_json(result: ProfileResult) -> dict[str, Any]:
    """What ``--json`` prints: the run and each point's summary (the per-request data is in the files)."""
    from swallow_trt.profiler.perf_report import json_safe

    data: dict[str, Any] = json_safe({
        "meta": result.meta,
        "points": [p.summary for p in result.points],
        "files": [str(f) for f in result.files],
    })  # fmt: skip
    return data
