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
        help="full_prec, fp8, int4_awq, w4a8_awq, int8_sq, int8_wo, int4_wo, nvfp4 (default: the target's).",
    ),
]
KvOpt = Annotated[
    str | None,
    typer.Option(
        "--kv-cache-dtype",
        help="fp8, int8 or auto (model dtype). Default: the target's for quantised formats.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
