"""Options shared by several commands, defined once, and the model flags as one object.

The model x format x parallelism x target flags (``--model --target --tp --fp8 ...``) reach a command as
one :class:`ModelFlags`, whose :meth:`ModelFlags.plan_request` is the only mapping from flags to
``builders.plan.PlanRequest``. typer reads options from a function's parameters, so :func:`model_flags`
writes those parameters into the command's signature and folds them back into the object::

    @model_flags(PLAN_FLAGS)
    def plan(flags: ModelFlags, as_json: JsonOpt = False) -> None:
        result = make_plan(flags.plan_request())
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from swallow_trt.builders.plan import PlanRequest

R = TypeVar("R")
DEFAULT_OUT = Path("swallow-trt-out")

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

# Flags of single commands whose meaning another command's flag of the same name does not share.
ExportTpOpt = Annotated[int, typer.Option("--tp", help="Tensor-parallel shards to export.")]
ExportPpOpt = Annotated[int, typer.Option("--pp", help="Pipeline-parallel stages to export.")]
ServeModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="pytorch: the model built.")]
ServeRuntimeOpt = Annotated[
    str | None, typer.Option("--runtime", help="pytorch: serve a `build --runtime pytorch` output.")
]
DryRunOpt = Annotated[
    bool,
    typer.Option("--dry-run", help="Print what would run (plan, commands, files); check and run nothing."),
]
BindHostOpt = Annotated[str, typer.Option("--host", help="Address to bind.")]
PlanModelOpt = Annotated[
    str | None,
    typer.Option("--plan-model", help="Show the planner's roofline floors for this model (alias, id, dir)."),
]


@dataclass(frozen=True)
class ModelFlags:
    """What the model flags of one command line said; the defaults are the flags' defaults.

    ``model`` is None only where the command makes --model optional (serve without --runtime pytorch).
    """

    model: str | None = None
    target: str | None = None
    profile: Path | None = None
    tp: int | None = None
    pp: int | None = None
    fp8: bool = False
    int4_awq: bool = False
    qformat: str | None = None
    kv_cache_dtype: str | None = None
    dtype: str | None = None
    gpu: str | None = None
    gpus: int | None = None
    max_batch_size: int | None = None
    max_input_len: int | None = None
    max_seq_len: int | None = None
    max_num_tokens: int | None = None
    moe_tp_size: int | None = None
    moe_ep_size: int | None = None
    out: Path = DEFAULT_OUT
    runtime: str | None = "auto"

    def plan_request(self) -> PlanRequest:
        """The planner's request: --fp8/--int4-awq/--qformat folded into one format, checked here."""
        from swallow_trt.builders.plan import PlanRequest, choose_qformat
        from swallow_trt.errors import UsageError

        if self.model is None:
            raise UsageError("--model is required here", "pass the --model (and --target) to plan for")
        return PlanRequest(
            model=self.model,
            target=self.target,
            profile_path=self.profile,
            gpu=self.gpu,
            gpus=self.gpus,
            tp=self.tp,
            pp=self.pp,
            qformat=choose_qformat(self.fp8, self.int4_awq, self.qformat),
            kv_cache_dtype=self.kv_cache_dtype.lower() if self.kv_cache_dtype else None,
            dtype=self.dtype,
            max_batch_size=self.max_batch_size,
            max_input_len=self.max_input_len,
            max_seq_len=self.max_seq_len,
            max_num_tokens=self.max_num_tokens,
            moe_tp_size=self.moe_tp_size,
            moe_ep_size=self.moe_ep_size,
            out=self.out,
            runtime="auto" if self.runtime is None else self.runtime,
        )


# Each ModelFlags field's option, in --help order. --model is required unless a command overrides it.
MODEL_FLAG_OPTIONS: dict[str, Any] = {
    "model": ModelOpt,
    "target": TargetOpt,
    "profile": ProfileOpt,
    "tp": TpOpt,
    "pp": PpOpt,
    "fp8": Fp8Opt,
    "int4_awq": Int4AwqOpt,
    "qformat": QformatOpt,
    "kv_cache_dtype": KvOpt,
    "dtype": DtypeOpt,
    "gpu": GpuOpt,
    "gpus": GpusOpt,
    "max_batch_size": MaxBatchOpt,
    "max_input_len": MaxInputOpt,
    "max_seq_len": MaxSeqOpt,
    "max_num_tokens": MaxTokensOpt,
    "moe_tp_size": MoeTpOpt,
    "moe_ep_size": MoeEpOpt,
    "out": OutRootOpt,
    "runtime": RuntimeOpt,
}
PLAN_FLAGS = frozenset(MODEL_FLAG_OPTIONS)
# build builds for every GPU of the target (no --gpu); quantize exports shards (its own --tp/--pp, --out).
BUILD_FLAGS = PLAN_FLAGS - {"gpu"}
QUANTIZE_FLAGS = frozenset(
    {"model", "target", "tp", "pp", "fp8", "int4_awq", "qformat", "kv_cache_dtype", "dtype"}
)
SERVE_FLAGS = frozenset({"model", "target", "tp", "pp", "qformat", "kv_cache_dtype", "out", "runtime"})
# profile's roofline floors: --plan-model stands for --model there (profile's --model is the served model).
PROFILE_FLAGS = frozenset({"model", "target", "tp", "fp8", "int4_awq", "qformat"})


def model_flags(
    names: Collection[str], **overrides: tuple[Any, Any]
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Give a command the model flags ``names`` as one :class:`ModelFlags`, its parameter ``flags``.

    In the command's signature (what typer reads) ``flags`` becomes one parameter per flag, in its place
    (first for plan, so --help lists --model first), each with its option from MODEL_FLAG_OPTIONS and its
    default from ModelFlags (--model: required). ``overrides`` gives a flag another ``(option, default)``
    for one command (serve's optional --model). The command's other parameters must not reuse a flag's name.
    """
    unknown = (set(names) - set(MODEL_FLAG_OPTIONS)) | (set(overrides) - set(names))
    if unknown:
        raise ValueError(f"not model flags of this command: {sorted(unknown)}")
    defaults = {f.name: f.default for f in fields(ModelFlags)}
    chosen = [n for n in MODEL_FLAG_OPTIONS if n in names]

    def decorate(command: Callable[..., R]) -> Callable[..., R]:
        own = inspect.signature(command, eval_str=True).parameters
        if "flags" not in own or own["flags"].annotation is not ModelFlags:
            raise ValueError(f"{command.__name__}: no parameter `flags: ModelFlags`")
        clash = set(own) & set(MODEL_FLAG_OPTIONS)
        if clash:
            raise ValueError(f"{command.__name__}: parameters named like model flags: {sorted(clash)}")
        params = []
        for p in own.values():
            if p.name != "flags":
                params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))
                continue
            for name in chosen:
                option, default = overrides.get(name, (MODEL_FLAG_OPTIONS[name], defaults[name]))
                if name == "model" and name not in overrides:
                    default = inspect.Parameter.empty
                params.append(
                    inspect.Parameter(
                        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=option
                    )
                )

        def wrapper(**kwargs: Any) -> R:  # typer passes every parameter by keyword
            flags = ModelFlags(**{n: kwargs.pop(n) for n in chosen})
            return command(flags=flags, **kwargs)

        wrapper.__name__ = command.__name__
        wrapper.__qualname__ = command.__qualname__
        wrapper.__doc__ = command.__doc__
        wrapper.__module__ = command.__module__
        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate


# `plan`'s workload and SLO options (issue 16): the performance model's inputs.
IslOpt = Annotated[
    int | None, typer.Option("--isl", help="Prompt length in tokens: adds the performance estimate.")
]
OslOpt = Annotated[int | None, typer.Option("--osl", help="Answer length in tokens (with --isl).")]
ConcurrencyOpt = Annotated[
    int | None,
    typer.Option(
        "--concurrency", help="Closed loop: this many streams (default: max throughput, all queued)."
    ),
]
RateOpt = Annotated[
    float | None, typer.Option("--rate", help="Open loop: requests per second, Poisson arrivals.")
]
SloTtftOpt = Annotated[
    float | None,
    typer.Option("--slo-ttft-ms", help="Search format x KV x TP/PP x replicas x batch for TTFT under this."),
]
SloTpotOpt = Annotated[
    float | None, typer.Option("--slo-tpot-ms", help="Search for TPOT (time per output token) under this.")
]
