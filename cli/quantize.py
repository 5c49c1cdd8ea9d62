"""``swallow-trt quantize``: HF Swallow checkpoint -> TensorRT-LLM checkpoint with nvidia-modelopt."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from swallow_trt.cli.options import (
    QUANTIZE_FLAGS,
    AllowPickleOpt,
    CalibLenOpt,
    CalibOpt,
    CalibSizeOpt,
    EvalLenOpt,
    EvalSamplesOpt,
    ExportPpOpt,
    ExportTpOpt,
    ForceOpt,
    JsonOpt,
    ModelFlags,
    RevisionOpt,
    SeedOpt,
    model_flags,
)
from swallow_trt.cli.output import ConsoleReporter, emit_json, out

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


@model_flags(QUANTIZE_FLAGS, tp=(ExportTpOpt, 1), pp=(ExportPpOpt, 1))
def quantize(
    flags: ModelFlags,
    calib: CalibOpt = "ja",
    calib_size: CalibSizeOpt = 512,
    calib_max_seq_len: CalibLenOpt = 512,
    seed: SeedOpt = 0,
    eval_samples: EvalSamplesOpt = 8,
    eval_seq_len: EvalLenOpt = 256,
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
    from swallow_trt.builders.quantize_stage import QuantizeRequest, run_quantize
    from swallow_trt.quantize.worker import CalibSettings

    plan = flags.plan_request()
    # quantize's own --tp/--pp default to 1, not to the target's
    assert plan.tp is not None
    assert plan.pp is not None
    req = QuantizeRequest(
        model=plan.model,
        qformat=plan.qformat,
        kv_cache_dtype=plan.kv_cache_dtype,
        tp=plan.tp,
        pp=plan.pp,
        dtype=plan.dtype,
        calibration=CalibSettings(calib, calib_size, calib_max_seq_len, seed, eval_samples, eval_seq_len),
        out=out_dir,
        target=plan.target,
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
