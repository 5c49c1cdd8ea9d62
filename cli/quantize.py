"""``swallow-trt quantize``: HF Swallow checkpoint -> TensorRT-LLM checkpoint with nvidia-modelopt."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from swallow_trt.cli.options import (
    AllowPickleOpt,
    CalibLenOpt,
    CalibOpt,
    CalibSizeOpt,
    DtypeOpt,
    EvalLenOpt,
    EvalSamplesOpt,
    ForceOpt,
    Fp8Opt,
    Int4AwqOpt,
    JsonOpt,
    KvOpt,
    ModelOpt,
    QformatOpt,
    RevisionOpt,
    SeedOpt,
    TargetOpt,
)
from swallow_trt.cli.output import emit_json, guarded, out

if TYPE_CHECKING:
    from swallow_trt.builders.quantize_stage import QuantizeResult

HELP = """Quantize and convert a Swallow checkpoint into a TensorRT-LLM checkpoint (config.json + rank{N}.safetensors).

Runs nvidia-modelopt calibration on CUDA when present, otherwise on the CPU, exports one shard per
TP x PP rank, validates the export against the HF config, and measures what the format costs on
held-out Japanese text (perplexity, KL divergence, top-1 agreement). The output is keyed by its
inputs: re-running with the same inputs is a cache hit; an interrupted run leaves nothing behind.

Calibration defaults to Japanese (`--calib ja`: JSQuAD Wikipedia paragraphs shipped with the tool,
CC BY-SA 4.0). Upstream's default is English news; Swallow serves Japanese, and ranges calibrated on
English under-represent the Japanese vocabulary and the activations it drives.

Examples:

  swallow-trt quantize --model 70b --fp8 --kv-cache-dtype fp8 --tp 4

  swallow-trt quantize --model ./Swallow-7b-instruct-hf --int4-awq --calib my-ja-corpus.jsonl --out ckpt/7b-awq

  swallow-trt quantize --model 8b --qformat full_prec --tp 2 --json
"""


class ConsoleReporter:
    """Progress on stderr: a live bar on a terminal, a line per 10% otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self._bar: Any = None
        self._task: Any = None
        self._last_decile = -1

    def phase(self, message: str) -> None:
        self._close_bar()
        if not self.quiet:
            sys.stderr.write(f"• {message}\n")

    def warn(self, message: str) -> None:
        self._close_bar()
        sys.stderr.write(f"warning: {message}\n")

    def calib(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.tty:
            if self._bar is None:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

                self._bar = Progress(
                    "calibrating", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
                )
                self._bar.start()
                self._task = self._bar.add_task("calib", total=total)
            self._bar.update(self._task, completed=done)
        else:
            decile = done * 10 // max(total, 1)
            if decile != self._last_decile:
                self._last_decile = decile
                sys.stderr.write(f"  calibration {done}/{total}\n")

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def close(self) -> None:
        self._close_bar()


@guarded
def quantize(
    model: ModelOpt,
    qformat: QformatOpt = None,
    fp8: Fp8Opt = False,
    int4_awq: Int4AwqOpt = False,
    kv_cache_dtype: KvOpt = None,
    tp: Annotated[int, typer.Option("--tp", help="Tensor-parallel shards to export.")] = 1,
    pp: Annotated[int, typer.Option("--pp", help="Pipeline-parallel stages to export.")] = 1,
    dtype: DtypeOpt = None,
    calib: CalibOpt = "ja",
    calib_size: CalibSizeOpt = 512,
    calib_max_seq_len: CalibLenOpt = 512,
    seed: SeedOpt = 0,
    eval_samples: EvalSamplesOpt = 8,
    eval_seq_len: EvalLenOpt = 256,
    target: TargetOpt = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Output directory (default: swallow-trt-out/<model>-<format>-.../checkpoint)."
        ),
    ] = None,
    revision: RevisionOpt = None,
    allow_pickle: AllowPickleOpt = False,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    from swallow_trt.builders.plan import choose_qformat
    from swallow_trt.builders.quantize_stage import QuantizeRequest, run_quantize
    from swallow_trt.quantize.worker import CalibSettings

    req = QuantizeRequest(
        model=model,
        qformat=choose_qformat(fp8, int4_awq, qformat),
        kv_cache_dtype=kv_cache_dtype.lower() if kv_cache_dtype else None,
        tp=tp,
        pp=pp,
        dtype=dtype,
        calibration=CalibSettings(calib, calib_size, calib_max_seq_len, seed, eval_samples, eval_seq_len),
        out=out_dir,
        target=target,
        revision=revision,
        allow_pickle=allow_pickle,
        force=force,
    )
    reporter = ConsoleReporter(quiet=as_json)
    try:
        result = run_quantize(req, reporter)
    finally:
        reporter.close()
    if as_json:
        emit_json({"out": str(result.out), "cached": result.cached, "manifest": result.manifest})
    else:
        render(result)


def render(result: QuantizeResult) -> None:
    m = result.manifest
    inputs = m["inputs"]
    state = "cache hit (nothing to do)" if result.cached else "built"
    out(f"{state}: {result.out}")
    out(
        f"  {inputs['model']}: {inputs['qformat']} weights, {inputs['kv_cache_dtype']} KV cache, {inputs['dtype']}, "
        f"TP {inputs['tp']} x PP {inputs['pp']}, on {m.get('device')}"
    )
    c = inputs["calib"]
    out(f"  calibration: {c['source']}, {c['size']} x {c['max_seq_len']} tokens, seed {c['seed']}")
    q = m.get("quality") or {}
    if q.get("measured"):
        out(
            f"  quality on {q['tokens']} held-out Japanese tokens: perplexity {q['perplexity_original']:.3f} -> "
            f"{q['perplexity_quantized']:.3f}, KL {q['kl_divergence']:.5f} nats/token, "
            f"top-1 agreement {q['top1_agreement'] * 100:.1f}%"
        )
    else:
        out(f"  quality: not measured ({q.get('reason', 'n/a')})")
    v = m.get("validation") or {}
    out(f"  export validated against the HF config: {v.get('tensors_checked')} tensors checked")
    for w in v.get("warnings") or []:
        out(f"  note: {w}")
    t = m.get("timings") or {}
    if t:
        out("  timings: " + ", ".join(f"{k.removesuffix('_s')} {val:.1f}s" for k, val in t.items()))
    out(f"  manifest: {result.out / 'manifest.json'}")
