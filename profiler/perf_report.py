"""The profiler's figures (one definition, see :mod:`swallow_trt.profiler.run`) and its reports:
per load point summaries, a plain-text table, JSON and CSV with every request's timestamps, PNG plots.

Only the standard library at import time; matplotlib (Agg) is imported by :func:`write_plots`.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swallow_trt.profiler.records import Rec, WorkerResult

STATS = ("mean", "p50", "p90", "p95", "p99")
LATENESS_WARN_MS = 1.0  # the client's own error budget
BUSY_WARN = 0.5


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def stats(values: Sequence[float]) -> dict[str, float]:
    v = sorted(values)
    if not v:
        return {k: math.nan for k in (*STATS, "min", "max")} | {"n": 0}
    out = {"mean": sum(v) / len(v)} | {f"p{q}": percentile(v, q) for q in (50, 90, 95, 99)}
    return out | {"min": v[0], "max": v[-1], "n": len(v)}


@dataclass(frozen=True)
class Request:
    """One request with its derived figures (ms); times in ns on the run's monotonic clock."""

    rec: Rec
    worker: int

    @property
    def ok(self) -> bool:
        return not self.rec.error and self.rec.final_ns > 0 and self.rec.tokens > 0

    @property
    def ttft_ms(self) -> float:
        return (self.rec.chunk_ns[0] - self.rec.scheduled_ns) / 1e6

    @property
    def latency_ms(self) -> float:
        return (self.rec.chunk_ns[-1] - self.rec.scheduled_ns) / 1e6

    @property
    def tpot_ms(self) -> float | None:
        if self.rec.tokens < 2:
            return None
        return (self.rec.chunk_ns[-1] - self.rec.chunk_ns[0]) / 1e6 / (self.rec.tokens - 1)

    def chunk_gaps_ms(self) -> list[float]:
        t = self.rec.chunk_ns
        return [(b - a) / 1e6 for a, b in itertools.pairwise(t)]

    @property
    def late_ms(self) -> float:
        return (self.rec.sent_ns - self.rec.scheduled_ns) / 1e6


@dataclass(frozen=True)
class Slo:
    ttft_ms: float | None = None
    tpot_ms: float | None = None

    def met(self, r: Request) -> bool:
        tpot = r.tpot_ms
        return (self.ttft_ms is None or r.ttft_ms <= self.ttft_ms) and (
            self.tpot_ms is None or tpot is None or tpot <= self.tpot_ms
        )

    def __bool__(self) -> bool:
        return self.ttft_ms is not None or self.tpot_ms is not None

    def label(self) -> str:
        parts = []
        if self.ttft_ms is not None:
            parts.append(f"TTFT <= {self.ttft_ms:g} ms")
        if self.tpot_ms is not None:
            parts.append(f"TPOT <= {self.tpot_ms:g} ms")
        return ", ".join(parts)


@dataclass
class Point:
    """One load point: its requests, summary and client headroom."""

    mode: str  # closed | open
    level: float  # concurrency or requests/s
    requests: list[Request]
    workers: list[WorkerResult]
    slo: Slo
    expected_tokens: int
    floors: dict[str, Any] | None = None
    interrupted: bool = False
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"concurrency {self.level:g}" if self.mode == "closed" else f"{self.level:g} req/s"


def summarize(p: Point) -> dict[str, Any]:
    ok = [r for r in p.requests if r.ok]
    failed = [r for r in p.requests if not r.ok]
    start = min((r.rec.scheduled_ns for r in p.requests), default=0)
    end = max((r.rec.final_ns for r in ok), default=start)
    window_s = max(end - start, 1) / 1e9
    tokens = sum(r.rec.tokens for r in ok)
    tpots = [t for r in ok if (t := r.tpot_ms) is not None]
    s: dict[str, Any] = {
        "load": {"mode": p.mode, "concurrency" if p.mode == "closed" else "request_rate": p.level},
        "requests": {"sent": len(p.requests), "ok": len(ok), "failed": len(failed)},
        "errors": sorted({r.rec.error for r in failed})[:5],
        "window_s": window_s,
        "requests_per_s": len(ok) / window_s,
        "output_tokens_per_s": tokens / window_s,
        "ttft_ms": stats([r.ttft_ms for r in ok]),
        "tpot_ms": stats(tpots),
        "chunk_gap_ms": stats([g for r in ok for g in r.chunk_gaps_ms()]),
        "latency_ms": stats([r.latency_ms for r in ok]),
        "output_tokens": stats([float(r.rec.tokens) for r in ok]),
        "output_tokens_exact": all(r.rec.tokens == p.expected_tokens for r in ok),
        "interrupted": p.interrupted,
    }
    reported = [r.rec.input_tokens for r in ok if r.rec.input_tokens >= 0]
    if reported:
        s["input_tokens_reported"] = {"min": min(reported), "max": max(reported)}
    if p.slo:
        good = [r for r in ok if p.slo.met(r)]
        s["goodput"] = {
            "slo": {"ttft_ms": p.slo.ttft_ms, "tpot_ms": p.slo.tpot_ms},
            "requests_per_s": len(good) / window_s,
            "fraction": len(good) / len(p.requests) if p.requests else math.nan,
        }
    s["client"] = headroom(p)
    if p.floors:
        s["roofline"] = floors_vs(p.floors, s)
    return s


def headroom(p: Point) -> dict[str, Any]:
    """How far the client is from being the bottleneck."""
    cores = os.cpu_count() or 1
    wall = max((w.wall_ns for w in p.workers), default=1) / 1e9
    cpu = sum(w.cpu_s for w in p.workers)
    busy = max((w.callback_busy_ns / max(w.wall_ns, 1) for w in p.workers), default=0.0)
    h: dict[str, Any] = {
        "processes": len(p.workers),
        "cpu_s": cpu,
        "cpu_share_of_machine": cpu / wall / cores,
        "callback_busy_max": busy,
        "responses": sum(w.responses for w in p.workers),
    }
    if p.mode == "open":
        h["send_lateness_ms"] = stats([r.late_ms for r in p.requests if r.rec.sent_ns])
    lags = [
        (c - s) / 1e6
        for r in p.requests
        for c, s in zip(r.rec.chunk_ns, r.rec.server_ns, strict=False)
        if len(r.rec.server_ns) == len(r.rec.chunk_ns)
    ]
    if lags:  # the model's send -> our callback: Triton's response path plus any wait for the client
        # (only where the model reports its send time, on this host's clock: test and replay models)
        h["delivery_lag_ms"] = stats(lags)
    warnings = []
    late = h.get("send_lateness_ms", {}).get("p99", 0.0)
    if late > LATENESS_WARN_MS:
        warnings.append(f"sends were late (p99 {late:.2f} ms): add --workers or lower the load")
    if busy > BUSY_WARN:
        warnings.append(f"a callback thread was {busy:.0%} busy: add --workers")
    h["warnings"] = warnings
    return h


def floors_vs(floors: dict[str, Any], s: dict[str, Any]) -> dict[str, Any]:
    ttft, tpot = s["ttft_ms"]["p50"], s["tpot_ms"]["p50"]
    prefill, decode = floors["prefill_floor_ms"], floors["decode_floor_ms"]
    vs = floors | {
        "ttft_p50_over_prefill_floor": ttft / prefill if prefill else math.nan,
        "tpot_p50_over_decode_floor": tpot / decode if decode else math.nan,
    }
    pred = floors.get("predicted") or {}
    if "ttft_ms" in pred:
        # The plan's prediction for the same ISL/OSL and load (swallow_trt.perf), measured over predicted.
        vs["predicted"] = pred | {
            "ttft_p50_over_predicted": ttft / pred["ttft_ms"] if pred["ttft_ms"] else math.nan,
            "tpot_p50_over_predicted": tpot / pred["tpot_ms"] if pred["tpot_ms"] else math.nan,
            "output_tokens_per_s_over_predicted": s["output_tokens_per_s"] / pred["output_tokens_per_s"]
            if pred["output_tokens_per_s"]
            else math.nan,
        }
    return vs


# --------------------------------------------------------------------------------------------------
# Text


def _f(x: float, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


METRIC_ROWS = (
    ("TTFT (ms)", "ttft_ms"),
    ("TPOT (ms/token)", "tpot_ms"),
    ("chunk gap (ms, vLLM 'ITL')", "chunk_gap_ms"),
    ("E2E latency (ms)", "latency_ms"),
    ("output tokens/request", "output_tokens"),
)


def point_rows(s: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    headers = ["metric", *STATS, "max"]
    rows = [[label, *(_f(s[key][k]) for k in (*STATS, "max"))] for label, key in METRIC_ROWS]
    return headers, rows


def point_lines(p: Point) -> list[str]:
    """The lines under a point's table: throughput, goodput, client headroom, roofline."""
    s = p.summary
    req = s["requests"]
    lines = [
        f"throughput: {s['requests_per_s']:,.2f} req/s, {s['output_tokens_per_s']:,.1f} output tokens/s "
        f"over {s['window_s']:.2f} s; {req['ok']}/{req['sent']} ok"
        + ("" if s["output_tokens_exact"] else f" (output tokens NOT all {p.expected_tokens})")
    ]
    if "goodput" in s:
        g = s["goodput"]
        lines.append(
            f"goodput ({p.slo.label()}): {g['requests_per_s']:,.2f} req/s ({g['fraction']:.0%} of requests)"
        )
    c = s["client"]
    client = (
        f"client: {c['processes']} process(es), CPU {c['cpu_share_of_machine']:.0%} of the machine, "
        f"callback busy <= {c['callback_busy_max']:.0%}"
    )
    if "send_lateness_ms" in c:
        client += f", send lateness p99 {c['send_lateness_ms']['p99']:.3f} ms"
    if "delivery_lag_ms" in c:
        client += f", model send -> callback p99 {c['delivery_lag_ms']['p99']:.3f} ms"
    lines.append(client)
    lines += [f"warning: {w}" for w in c["warnings"]]
    if s["errors"]:
        lines.append(f"errors: {'; '.join(s['errors'])}")
    if "roofline" in s:
        r = s["roofline"]
        lines.append(
            f"roofline ({r['gpu']}, {r['qformat']}, TP {r['tp']}): prefill floor {r['prefill_floor_ms']:.3f} ms "
            f"(TTFT p50 = {_f(r['ttft_p50_over_prefill_floor'], 1)}x), decode floor {r['decode_floor_ms']:.3f} ms/token "
            f"at batch {r['batch']} (TPOT p50 = {_f(r['tpot_p50_over_decode_floor'], 1)}x)"
        )
        pred = r.get("predicted") or {}
        if "ttft_ms" in pred:
            lines.append(
                f"plan predicts (swallow_trt.perf, {pred['gpu']}): TTFT {pred['ttft_ms']:,.1f} ms (measured p50 = "
                f"{_f(pred['ttft_p50_over_predicted'])}x), TPOT {pred['tpot_ms']:,.2f} ms "
                f"({_f(pred['tpot_p50_over_predicted'])}x), {pred['output_tokens_per_s']:,.0f} output tokens/s "
                f"({_f(pred['output_tokens_per_s_over_predicted'])}x)"
            )
        elif pred.get("error"):
            lines.append(f"plan predicts nothing for this load: {pred['error']}")
    return lines


def overview_rows(points: Sequence[Point]) -> tuple[list[str], list[list[str]]]:
    headers = ["load", "req/s", "out tok/s", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "E2E p50", "ok"]
    rows = []
    for p in points:
        s = p.summary
        rows.append([
            p.label + (" (partial)" if p.interrupted else ""),
            _f(s["requests_per_s"]),
            _f(s["output_tokens_per_s"], 1),
            _f(s["ttft_ms"]["p50"]),
            _f(s["ttft_ms"]["p99"]),
            _f(s["tpot_ms"]["p50"]),
            _f(s["tpot_ms"]["p99"]),
            _f(s["latency_ms"]["p50"]),
            f"{s['requests']['ok']}/{s['requests']['sent']}",
        ])  # fmt: skip
    return headers, rows


# --------------------------------------------------------------------------------------------------
# Files


def _rel(t_ns: int, base_ns: int) -> float | None:
    return None if t_ns == 0 else round((t_ns - base_ns) / 1e6, 4)


def request_json(r: Request, base_ns: int) -> dict[str, Any]:
    rec = r.rec
    return {
        "index": rec.index,
        "worker": r.worker,
        "prompt": rec.prompt,
        "scheduled_ms": _rel(rec.scheduled_ns, base_ns),
        "sent_ms": _rel(rec.sent_ns, base_ns),
        "chunks_ms": [_rel(t, base_ns) for t in rec.chunk_ns],
        "chunk_tokens": rec.chunk_tokens,
        "server_send_ms": [_rel(t, base_ns) for t in rec.server_ns] or None,
        "final_ms": _rel(rec.final_ns, base_ns),
        "output_tokens": rec.tokens,
        "input_tokens_reported": rec.input_tokens if rec.input_tokens >= 0 else None,
        "error": rec.error or None,
    }


CSV_FIELDS = ("load", "index", "worker", "prompt", "scheduled_ms", "sent_ms", "first_token_ms", "last_token_ms",
              "final_ms", "output_tokens", "chunks", "ttft_ms", "tpot_ms", "latency_ms", "error")  # fmt: skip


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, meta: dict[str, Any], points: Sequence[Point], base_ns: int) -> None:
    doc = {
        "meta": meta,
        "points": [
            p.summary | {"requests_detail": [request_json(r, base_ns) for r in p.requests]} for p in points
        ],
    }
    _atomic_write(path, json.dumps(json_safe(doc), ensure_ascii=False, indent=1, allow_nan=False))


def json_safe(value: Any) -> Any:
    """NaN -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_csv(path: Path, points: Sequence[Point], base_ns: int) -> None:
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_FIELDS)
    for p in points:
        for r in p.requests:
            rec = r.rec
            has = bool(rec.chunk_ns)
            tpot = r.tpot_ms if has else None
            w.writerow([
                p.label, rec.index, r.worker, rec.prompt, _rel(rec.scheduled_ns, base_ns), _rel(rec.sent_ns, base_ns),
                _rel(rec.chunk_ns[0], base_ns) if has else "", _rel(rec.chunk_ns[-1], base_ns) if has else "",
                _rel(rec.final_ns, base_ns) or "", rec.tokens, len(rec.chunk_ns),
                f"{r.ttft_ms:.4f}" if has else "", f"{tpot:.4f}" if tpot is not None else "",
                f"{r.latency_ms:.4f}" if has else "", rec.error,
            ])  # fmt: skip
    _atomic_write(path, buf.getvalue())


def write_plots(out: Path, points: Sequence[Point]) -> list[Path]:
    """throughput_latency.png (latency percentiles against output tokens/s across load points) and
    distributions.png (TTFT and TPOT CDFs per load point); roofline floors dashed where known."""
    import warnings

    with warnings.catch_warnings():  # matplotlib 3.9 uses pyparsing names that pyparsing 3.2 deprecates
        warnings.simplefilter("ignore", DeprecationWarning)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

    shown = [p for p in points if p.summary["requests"]["ok"]]
    files = []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, key, title, floor in (
        (axes[0], "ttft_ms", "TTFT (ms)", "prefill_floor_ms"),
        (axes[1], "tpot_ms", "TPOT (ms/token)", "decode_floor_ms"),
        (axes[2], "latency_ms", "E2E latency (ms)", None),
    ):
        x = [p.summary["output_tokens_per_s"] for p in shown]
        for q, style in (("p50", "o-"), ("p99", "s--")):
            ax.plot(x, [p.summary[key][q] for p in shown], style, label=q)
        for p, xi in zip(shown, x, strict=True):
            ax.annotate(
                p.label, (xi, p.summary[key]["p50"]), fontsize=7, textcoords="offset points", xytext=(3, 3)
            )
        if floor and shown and shown[0].floors:
            ax.plot(
                x, [p.floors[floor] if p.floors else math.nan for p in shown], "k:", label="roofline floor"
            )
        _style(ax, "output tokens/s", title)
    files.append(_save(plt, fig, out / "throughput_latency.png"))

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, title, key in ((axes[0], "TTFT (ms)", "ttft"), (axes[1], "TPOT (ms/token)", "tpot")):
        for p in shown:
            v = sorted(_values(p, key))
            if v:
                ax.step(v, [(i + 1) / len(v) for i in range(len(v))], where="post", label=p.label)
        ax.set_ylabel("fraction of requests")
        _style(ax, title, f"{title}: distribution")
    files.append(_save(plt, fig, out / "distributions.png"))
    return files


def _style(ax: Any, xlabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _values(p: Point, key: str) -> list[float]:
    ok = [r for r in p.requests if r.ok]
    if key == "ttft":
        return [r.ttft_ms for r in ok]
    return [t for r in ok if (t := r.tpot_ms) is not None]
