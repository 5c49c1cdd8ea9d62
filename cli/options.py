"""Options shared by several commands, defined once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Alias (8b, 70b), registry id (tokyotech-llm/...; see `swallow-trt models`) or a local HF checkpoint dir.",
    ),
]
TargetOpt = Annotated[
    str | None,
    typer.Option(
        "--target",
        "-t",
        help="GPU target: ampere, ampere-sm86, ada, hopper, h100x4 (default: the GPUs detected).",
    ),
]
ProfileOpt = Annotated[
    Path | None,
    typer.Option("--profile", help="Your own target profile YAML (same schema as the shipped ones)."),
]
TpOpt = Annotated[int | None, typer.Option("--tp", help="Tensor-parallel size (default: the target's).")]
PpOpt = Annotated[int | None, typer.Option("--pp", help="Pipeline-parallel size (default: 1).")]
Fp8Opt = Annotated[bool, typer.Option("--fp8", help="Shorthand for --qformat fp8 (Ada/Hopper).")]
Int4AwqOpt = Annotated[bool, typer.Option("--int4-awq", help="Shorthand for --qformat int4_awq.")]
QformatOpt = Annotated[
    str | None,
    typer.Option(
        "--qformat",
        help="full_prec, fp8, int4_awq, w4a8_awq, int8_sq, int8_wo, int4_wo, nvfp4, mxfp4 (GPT-OSS as it "
        "ships, pytorch runtime only) (default: the target's).",
    ),
]
KvOpt = Annotated[
    str | None,
    typer.Option(
        "--kv-cache-dtype",
        help="fp8, int8 or auto (model dtype). Default: the target's for quantised formats.",
    ),
]
RuntimeOpt = Annotated[
    str,
    typer.Option(
        "--runtime",
        help="engine (trtllm-build), pytorch (TensorRT-LLM's LLM API) or auto: the engine where an engine "
        "model exists, pytorch for GPT-OSS.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
DtypeOpt = Annotated[
    str | None, typer.Option("--dtype", help="bfloat16 or float16 (default: the checkpoint's).")
]
GpuOpt = Annotated[
    str | None, typer.Option("--gpu", help="Only this GPU of the target (e.g. A100-SXM4-40GB).")
]
GpusOpt = Annotated[
    int | None, typer.Option("--gpus", help="GPUs on the machine (default: the target's count).")
]
MaxBatchOpt = Annotated[int | None, typer.Option("--max-batch-size", help="Engine max batch size.")]
MaxInputOpt = Annotated[int | None, typer.Option("--max-input-len", help="Longest prompt, tokens.")]
MaxSeqOpt = Annotated[int | None, typer.Option("--max-seq-len", help="Prompt + output, tokens.")]
MaxTokensOpt = Annotated[int | None, typer.Option("--max-num-tokens", help="Tokens per engine step.")]
MoeTpOpt = Annotated[int | None, typer.Option("--moe-tp-size", help="MoE: TP inside each expert.")]
MoeEpOpt = Annotated[int | None, typer.Option("--moe-ep-size", help="MoE: expert parallelism.")]
OutRootOpt = Annotated[Path, typer.Option("--out", help="Output root of every stage.")]
CalibOpt = Annotated[
    str,
    typer.Option(
        "--calib", help="ja (shipped Japanese text), a .jsonl (field text) / .txt file, or a hub dataset id."
    ),
]
CalibSizeOpt = Annotated[int, typer.Option("--calib-size", help="Calibration samples.")]
CalibLenOpt = Annotated[int, typer.Option("--calib-max-seq-len", help="Tokens per calibration sample.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for sampling the calibration text.")]
EvalSamplesOpt = Annotated[
    int, typer.Option("--eval-samples", help="Held-out Japanese samples for the quality report (0: skip).")
]
EvalLenOpt = Annotated[int, typer.Option("--eval-seq-len", help="Tokens per held-out sample.")]
RevisionOpt = Annotated[str | None, typer.Option("--revision", help="Hub revision (branch, tag or commit).")]
AllowPickleOpt = Annotated[
    bool, typer.Option("--allow-pickle", help="Accept pickle (.bin) weights. Only for checkpoints you trust.")
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Replace outputs built from other inputs; skip the RAM/disk refusal.")
]

# The OpenAI-compatible API's settings, for `openai` and for the API `serve` opens beside Triton.
ApiKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        help="Key every /v1 route of the OpenAI API requires (default: SWALLOW_TRT_API_KEY; none: open).",
    ),
]
MaxBodyOpt = Annotated[
    int | None,
    typer.Option(
        "--max-body-bytes", help="OpenAI API: largest request body accepted (413 above; default: 1 MiB)."
    ),
]
MaxInFlightOpt = Annotated[
    int | None,
    typer.Option(
        "--max-in-flight",
        help="OpenAI API: requests in flight plus queued before 429 (default: twice the engine's max "
        "batch size).",
    ),
]
CorsOriginOpt = Annotated[
    list[str] | None,
    typer.Option("--cors-origin", help="OpenAI API: origin allowed by CORS (repeatable; default: none)."),
]
ApiModelNameOpt = Annotated[
    str | None,
    typer.Option(
        "--model-name", help="Model id the OpenAI API's /v1/models shows (default: the repository's)."
    ),
]
