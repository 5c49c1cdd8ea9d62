"""The PyTorch (LLM-API) runtime: TensorRT-LLM's only path for GPT-OSS, and the one after the engine era.

``build --runtime pytorch`` makes two things and no engine: a checkpoint the LLM API loads (ModelOpt's
unified HF export for fp8 / nvfp4, or the HF checkpoint itself, referenced, for full precision and for
GPT-OSS's MXFP4 as it ships) and an LLM-API options YAML generated from the target profile. Every key
of that YAML, nested ones too, and every ``trtllm-serve`` flag is checked against the argument names of
TensorRT-LLM 1.2 recorded in ``data/tensorrt-llm-1.2-llm-api.json``: the LLM API's pydantic models
forbid unknown keys, so a misspelt one would only fail on the GPU machine.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import yaml

import swallow_trt
from swallow_trt.builders.plan import Plan, PlanRequest, stage_root
from swallow_trt.builders.stage import StageDir, stage_key, write_json_atomic
from swallow_trt.errors import InvalidCombinationError, SwallowTrtError, UsageError
from swallow_trt.quantize.formats import FORMATS

CONTRACT = Path(swallow_trt.__file__).parent / "data" / "tensorrt-llm-1.2-llm-api.json"
OPTIONS_NAME = "llm-api-options.yaml"
# ModelOpt's unified HF export writes these, and TensorRT-LLM's PyTorch loader reads them
# (hf_quant_config.json, quant_method "modelopt"); fp8 and nvfp4 were seen exporting on CPU here.
HF_EXPORT_FORMATS = ("fp8", "nvfp4")
# Loaded from the HF checkpoint as it is: nothing is calibrated or written.
AS_IS_FORMATS = ("full_prec", "mxfp4")
KV_DTYPES = {"auto": "auto", "fp8": "fp8"}  # swallow-trt KV dtype -> kv_cache_config.dtype
# Families whose instruct models think in <think>...</think>: trtllm-serve's qwen3 parser splits it off.
# gpt-oss needs none: the OpenAI server's harmony adapter separates its channels by itself.
REASONING_PARSER_BY_CLASS = {"Qwen3ForCausalLM": "qwen3", "Qwen3MoeForCausalLM": "qwen3"}


@functools.cache
def load_contract() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(CONTRACT.read_text(encoding="utf-8"))
    return data


# --- the contract --------------------------------------------------------------------------------


def llm_args_problems(options: Mapping[str, Any], fields: Mapping[str, Any] | None = None, where: str = "") -> list[str]:  # fmt: skip
    """Every key of ``options`` not among the contract's fields, and every value outside a field's
    recorded values, as ``path: problem`` lines (nested configs are walked)."""
    fields = load_contract()["llm_args"]["fields"] if fields is None else fields
    problems = []
    for key, value in options.items():
        path = f"{where}{key}"
        spec = fields.get(key)
        if spec is None:
            problems.append(f"{path}: not an LLM-API argument of TensorRT-LLM 1.2")
            continue
        if "fields" in spec and value is not None:
            if not isinstance(value, Mapping):
                problems.append(f"{path}: expected a mapping ({spec['type']})")
                continue
            problems += llm_args_problems(value, spec["fields"], path + ".")
        elif "values" in spec and value is not None and value not in spec["values"]:
            problems.append(f"{path}: {value!r} is not one of {', '.join(map(str, spec['values']))}")
    return problems


def check_llm_args(options: Mapping[str, Any]) -> None:
    problems = llm_args_problems(options)
    if problems:
        raise SwallowTrtError(
            "LLM-API options outside TensorRT-LLM 1.2's argument names: " + "; ".join(problems),
            f"this is a swallow-trt bug; the names are in {CONTRACT.name}",
        )


def serve_flag_problems(argv: list[str]) -> list[str]:
    """Flags of a ``trtllm-serve`` argv that 1.2's parser lacks, or values outside its choices."""
    serve = load_contract()["trtllm_serve"]
    flags = serve["flags"]
    known = {alias: name for name, spec in flags.items() for alias in [name, *spec.get("aliases", [])]}
    problems = []
    if not argv or argv[0] != serve["command"]:
        return [f"not a {serve['command']} command"]
    i = 2  # argv[1] is MODEL
    while i < len(argv):
        flag = argv[i]
        name = known.get(flag)
        if name is None:
            problems.append(f"{flag}: not a trtllm-serve flag")
            i += 1
            continue
        spec = flags[name]
        if spec["type"] == "flag":
            i += 1
            continue
        if i + 1 >= len(argv):
            problems.append(f"{flag}: no value")
            break
        value = argv[i + 1]
        if "values" in spec and value not in spec["values"] and value not in spec.get("aliases", {}):
            problems.append(f"{flag} {value}: not one of {', '.join(spec['values'])}")
        i += 2
    return problems


# --- what the profile asks for -------------------------------------------------------------------


def cuda_graph_batch_sizes(max_batch_size: int) -> list[int]:
    """Powers of two up to the max batch size, and the max itself: with padding on, a batch runs in the
    smallest graph that holds it, so few graphs cover every size (each graph costs GPU memory)."""
    sizes = [1 << i for i in range(max_batch_size.bit_length()) if 1 << i <= max_batch_size]
    if sizes[-1] != max_batch_size:
        sizes.append(max_batch_size)
    return sizes


def check_pytorch_format(plan: Plan) -> None:
    """The formats ``build --runtime pytorch`` can make: ModelOpt's HF export, or the checkpoint as is."""
    if plan.qformat not in HF_EXPORT_FORMATS + AS_IS_FORMATS:
        raise InvalidCombinationError(
            f"{plan.qformat} is not built for the pytorch runtime (ModelOpt's HF export here makes "
            + ", ".join(HF_EXPORT_FORMATS)
            + "; full_prec and GPT-OSS's MXFP4 load as they ship)",
            "use --fp8 (Ada/Hopper), --qformat full_prec, or --runtime engine",
        )
    if plan.kv_cache_dtype not in KV_DTYPES:
        raise InvalidCombinationError(
            f"--kv-cache-dtype {plan.kv_cache_dtype}: the LLM API's kv_cache_config.dtype takes auto or fp8",
            "use --kv-cache-dtype fp8 (Ada/Hopper) or auto",
        )


def llm_api_options(plan: Plan) -> dict[str, Any]:
    """The LLM() arguments of the plan: parallel sizes, batch and token limits, and the profile's
    KV-cache fraction, block reuse, chunked prefill, CUDA graphs and scheduler policy."""
    rt = plan.profile.runtime
    options: dict[str, Any] = {
        "backend": "pytorch",
        "tensor_parallel_size": plan.tp,
        "pipeline_parallel_size": plan.pp,
        "max_batch_size": plan.max_batch_size,
        "max_num_tokens": plan.max_num_tokens,
        "max_seq_len": plan.max_seq_len,
        "trust_remote_code": False,
        "enable_chunked_prefill": rt.enable_chunked_context,
        "kv_cache_config": {
            "free_gpu_memory_fraction": rt.kv_cache_free_gpu_mem_fraction,
            # Prefix reuse serves the shared system prompt and multi-turn history of chat traffic.
            "enable_block_reuse": True,
            "dtype": KV_DTYPES[plan.kv_cache_dtype],
            "tokens_per_block": plan.profile.build.tokens_per_block,
        },
        # batch_sizes alone: with max_batch_size too, 1.2 insists they equal its own generated list.
        "cuda_graph_config": {
            "batch_sizes": cuda_graph_batch_sizes(plan.max_batch_size),
            "enable_padding": True,
        },
        "scheduler_config": {"capacity_scheduler_policy": rt.batch_scheduler_policy.upper()},
    }
    if plan.model.arch.is_moe:
        # The plan's memory figures assume this split of the experts; left unset, 1.2's Mapping
        # picks its own.
        options["moe_expert_parallel_size"] = plan.moe_ep_size
        options["moe_tensor_parallel_size"] = plan.moe_tp_size
    check_llm_args(options)
    return options


def reasoning_parser(plan: Plan) -> str | None:
    reg = plan.model.registered
    if reg is not None and (not reg.family.reasoning or reg.entry.kind == "base"):
        return None
    return REASONING_PARSER_BY_CLASS.get(plan.model.arch.hf_class)


def trtllm_serve_argv(model: str, options_file: Path, plan: Plan, host: str = "0.0.0.0", port: int = 8000) -> list[str]:  # fmt: skip
    argv = ["trtllm-serve", model, "--backend", "pytorch", "--host", host, "--port", str(port),
            "--extra_llm_api_options", str(options_file)]  # fmt: skip
    parser = reasoning_parser(plan)
    if parser is not None:
        argv += ["--reasoning_parser", parser]
    problems = serve_flag_problems(argv)
    if problems:
        raise SwallowTrtError("trtllm-serve argv outside 1.2's flags: " + "; ".join(problems))
    return argv


# --- where things go -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PytorchLayout:
    root: Path
    checkpoint: Path  # the exported HF checkpoint, or the source checkpoint as it ships
    exported: bool  # True: the checkpoint is this stage's ModelOpt export
    options: Path
    repo: Path
    model_ref: str  # what trtllm-serve is given as MODEL


def pytorch_layout(req: PlanRequest, plan: Plan, source: Path | None = None) -> PytorchLayout:
    """``source``: the fetched HF checkpoint (None in a dry run: the hub id stands for it)."""
    root = stage_root(req.out, plan.model, plan.qformat, plan.kv_cache_dtype, plan.tp, plan.pp).absolute()
    exported = plan.qformat in HF_EXPORT_FORMATS
    if exported:
        ckpt = root / "hf-checkpoint"
        ref = str(ckpt)
    else:
        ckpt = source or plan.model.local_path or Path(plan.model.hf_ref)
        ref = str(ckpt) if (source or plan.model.local_path) else plan.model.hf_ref
    return PytorchLayout(root, ckpt, exported, root / OPTIONS_NAME, root / "triton-repo-llmapi", ref)


def write_options(path: Path, options: Mapping[str, Any]) -> None:
    check_llm_args(options)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(
            "# LLM-API options for trtllm-serve --extra_llm_api_options (TensorRT-LLM 1.2), from swallow-trt\n"
        )
        yaml.safe_dump(dict(options), f, sort_keys=False, allow_unicode=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --- the checkpoint ------------------------------------------------------------------------------


def check_shipped_checkpoint(config: Mapping[str, Any], qformat: str, name: str) -> None:
    """An as-shipped checkpoint must be what the plan says: MXFP4 experts for mxfp4, unquantised else."""
    method = (config.get("quantization_config") or {}).get("quant_method")
    if qformat == "mxfp4" and method != "mxfp4":
        raise UsageError(
            f"{name}: config.json says quant_method {method!r}, not mxfp4",
            "use the -MXFP4 repo for --qformat mxfp4, or --qformat full_prec",
        )
    if qformat == "full_prec" and method is not None:
        raise UsageError(
            f"{name} ships quantised ({method}); full_prec would load it as it is",
            f"use --qformat {method} or the BF16 repo",
        )


def hf_export_problems(export_dir: Path, source: Mapping[str, Any], qformat: str, kv: str) -> list[str]:
    """The export against the source HF config: the quantisation it declares, and the architecture
    facts the LLM API builds the model from (a silently changed rope or MoE would load and be wrong)."""
    problems = []
    try:
        quant = json.loads((export_dir / "hf_quant_config.json").read_text())["quantization"]
        cfg = json.loads((export_dir / "config.json").read_text())
    except (OSError, ValueError, KeyError) as exc:
        return [f"unreadable export: {exc}"]
    want_algo = FORMATS[qformat].quant_algo
    if quant.get("quant_algo") != want_algo:
        problems.append(f"hf_quant_config quant_algo {quant.get('quant_algo')!r}, expected {want_algo!r}")
    want_kv = {"auto": None, "fp8": "FP8"}[kv]
    if quant.get("kv_cache_quant_algo") != want_kv:
        problems.append(
            f"hf_quant_config kv_cache_quant_algo {quant.get('kv_cache_quant_algo')!r}, expected {want_kv!r}"
        )
    for key in ("architectures", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "rope_theta", "rope_scaling", "max_position_embeddings",
                "tie_word_embeddings", "num_experts", "num_experts_per_tok", "moe_intermediate_size",
                "norm_topk_prob"):  # fmt: skip
        if key in source and cfg.get(key) != source[key]:
            problems.append(f"config.json {key} {cfg.get(key)!r}, the HF checkpoint says {source[key]!r}")
    if not sorted(export_dir.glob("*.safetensors")):
        problems.append("no safetensors weights")
    return problems


@dataclass(frozen=True)
class PytorchBuildResult:
    layout: PytorchLayout
    cached: bool
    manifest: dict[str, Any]
    options: dict[str, Any]
    serve_argv: list[str]


def _copy_tokenizer(source: Path, dest: Path) -> None:
    # trtllm-serve and the llmapi model load the tokenizer from the checkpoint directory.
    from swallow_trt.quantize.checkpoint import TOKENIZER_FILES

    for name in (*TOKENIZER_FILES, "chat_template.jinja", "generation_config.json"):
        if (source / name).is_file() and not (dest / name).exists():
            shutil.copyfile(source / name, dest / name)


def run_pytorch_build(req: Any, plan: Plan, reporter: Any) -> PytorchBuildResult:
    """``req`` is the BuildRequest (builders/build.py). Fetches and checks the checkpoint, exports it
    with ModelOpt where the format needs it (cached by its inputs), and writes the options YAML."""
    from swallow_trt.builders.quantize_stage import LOG_NAME, SPEC_NAME, run_worker, tool_versions
    from swallow_trt.errors import EnvironmentProblem
    from swallow_trt.quantize.calib import calibration_texts
    from swallow_trt.quantize.checkpoint import fetch_checkpoint, inspect_checkpoint
    from swallow_trt.quantize.worker import WorkerSpec

    check_pytorch_format(plan)
    name = plan.model.display_name
    if plan.model.local_path is None:
        reporter.phase(f"fetching {name} from the hub (resumable)")
    ckpt = inspect_checkpoint(fetch_checkpoint(plan.model, req.revision, req.allow_pickle), req.allow_pickle)
    layout = pytorch_layout(req.plan, plan, ckpt.path)
    options = llm_api_options(plan)
    manifest: dict[str, Any]
    cached = False
    if not layout.exported:
        check_shipped_checkpoint(ckpt.config, plan.qformat, name)
        reporter.phase(f"checkpoint loaded as it ships ({plan.qformat}): {ckpt.path}")
        manifest = {
            "stage": "checkpoint",
            "as_shipped": True,
            "path": str(ckpt.path),
            "fingerprint": ckpt.fingerprint,
        }
    else:
        versions = tool_versions()
        if versions["nvidia-modelopt"] is None or versions["torch"] is None:
            raise EnvironmentProblem(
                "the HF export needs torch, transformers and nvidia-modelopt",
                "pip install 'swallow-trt[quantize]'",
            )
        cal = req.calibration
        calib = calibration_texts(cal.calib)
        inputs = {
            "stage": "hf-export",
            "checkpoint": {"path": str(ckpt.path), "fingerprint": ckpt.fingerprint},
            "qformat": plan.qformat,
            "kv_cache_dtype": plan.kv_cache_dtype,
            "dtype": plan.dtype,
            # every calibration and held-out setting, and the text's digest (a changed file re-exports)
            "calibration": {**asdict(cal), "source": calib.name, "sha256": calib.sha256},
            "versions": {k: v for k, v in versions.items() if k != "python"},
        }
        key = stage_key(inputs)
        stage = StageDir(layout.checkpoint)
        with stage.locked(on_wait=reporter.warn):
            hit = stage.check_replaceable(key, req.force)
            if hit is not None:
                manifest, cached = hit, True
            else:
                started = time.time()
                with stage.building(LOG_NAME) as temp:
                    spec = WorkerSpec(checkpoint=str(ckpt.path), weight_format=ckpt.weight_format,
                                      qformat=plan.qformat, kv_cache_dtype=plan.kv_cache_dtype, tp=1, pp=1,
                                      dtype=plan.dtype, calibration=cal, out_dir=str(temp), export="hf")  # fmt: skip
                    done, argv = run_worker(spec, temp, reporter)
                    reporter.phase("validating the HF export against the HF config")
                    problems = hf_export_problems(temp, ckpt.config, plan.qformat, plan.kv_cache_dtype)
                    if problems:
                        raise SwallowTrtError(
                            f"the HF export of {name} disagrees with its HF config: " + "; ".join(problems),
                            "check the transformers / nvidia-modelopt versions the image pins",
                        )
                    _copy_tokenizer(ckpt.path, temp)
                    manifest = stage.commit(
                        temp,
                        {
                            "stage": "hf-export",
                            "key": key,
                            "inputs": inputs,
                            "versions": versions,
                            "device": done.get("device"),
                            "command": [a.replace(str(temp), str(layout.checkpoint)) for a in argv],
                            "timings": {**done.get("timings", {}), "stage_s": time.time() - started},
                            "quality": done.get("quality"),
                            "validation": {"ok": True},
                        },
                        logs=(LOG_NAME, SPEC_NAME),
                    )
    write_options(layout.options, options)
    argv = trtllm_serve_argv(layout.model_ref, layout.options, plan)
    write_json_atomic(
        layout.root / "build.json",
        {
            "runtime": "pytorch",
            "model": name,
            "target": plan.profile.name,
            "qformat": plan.qformat,
            "kv_cache_dtype": plan.kv_cache_dtype,
            "tp": plan.tp,
            "pp": plan.pp,
            "checkpoint": {"path": str(layout.checkpoint), "exported": layout.exported, "cached": cached},
            "options": str(layout.options),
            "serve": argv,
        },
    )
    return PytorchBuildResult(replace(layout), cached, manifest, options, argv)


def pytorch_commands(req: PlanRequest, plan: Plan, layout: PytorchLayout) -> dict[str, list[str]]:
    """Every command of the pytorch path, exactly as build, package and serve run them."""
    ref = plan.model.hf_ref
    same = ["--model", ref, "--target", plan.profile.name, "--qformat", plan.qformat,
            "--kv-cache-dtype", plan.kv_cache_dtype, "--tp", str(plan.tp), "--pp", str(plan.pp),
            "--out", str(req.out)]  # fmt: skip
    return {
        "build": ["swallow-trt", "build", "--runtime", "pytorch", *same],
        "trtllm_serve": trtllm_serve_argv(layout.model_ref, layout.options, plan),
        "package": [
            "swallow-trt",
            "package",
            "--runtime",
            "pytorch",
            "--build",
            str(layout.root),
            "--out",
            str(layout.repo),
        ],
        "serve": ["swallow-trt", "serve", "--runtime", "pytorch", *same],
        "serve_triton": ["swallow-trt", "serve", "--runtime", "pytorch", *same, "--triton"],
    }


def serve_trtllm(argv: list[str]) -> int:
    """Run ``trtllm-serve`` in its own session, on this terminal, until it exits or Ctrl-C / SIGTERM
    stops it (its whole group)."""
    import signal

    from swallow_trt.errors import EnvironmentProblem
    from swallow_trt.proc import ManagedProcess

    exe = shutil.which(argv[0])
    if exe is None:
        raise EnvironmentProblem(
            "trtllm-serve is not on PATH: the pytorch runtime needs TensorRT-LLM",
            "run serve inside the TensorRT-LLM image (see the Dockerfile)",
        )
    server = ManagedProcess([exe, *argv[1:]], name="trtllm-serve", output="inherit")

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        return server.start().wait()
    except KeyboardInterrupt:
        return 0  # wait() stopped the group on its way out
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve_request(req: PlanRequest, triton: bool, repo: Path | None, port: int | None) -> dict[str, Any]:
    """What ``serve --runtime pytorch`` runs, and the files it needs: trtllm-serve on the build's
    checkpoint and options, or (``triton``) Triton on the llmapi repository that package wrote."""
    from swallow_trt.builders.plan import make_plan

    plan = make_plan(req)
    check_pytorch_format(plan)
    layout = pytorch_layout(req, plan)
    options = llm_api_options(plan)
    commands = pytorch_commands(req, plan, layout)
    if triton:
        repo = (repo or layout.repo).absolute()
        run = ["tritonserver", "--model-repository", str(repo)]
        needs = [repo / "tensorrt_llm" / "1" / "model.yaml"]
    else:
        run = trtllm_serve_argv(layout.model_ref, layout.options, plan, port=port or 8000)
        needs = [layout.options] + ([layout.checkpoint / "config.json"] if layout.exported else [])
    return {
        "plan": plan,
        "layout": layout,
        "options": options,
        "commands": commands,
        "run": run,
        "needs": needs,
    }


def llmapi_ready() -> None:
    """What Triton's llmapi model needs to run: TensorRT-LLM importable by the Python backend."""
    import importlib.util

    from swallow_trt.errors import EnvironmentProblem

    if importlib.util.find_spec("tensorrt_llm") is None:
        raise EnvironmentProblem(
            "the llmapi model needs TensorRT-LLM (the tensorrt_llm package), and it is not installed here",
            "run serve inside the TensorRT-LLM image (see the Dockerfile)",
        )


def run_serve(served: dict[str, Any], triton: bool, announce: Any = None) -> int:
    """Refuse what is missing (exit 2: not built yet; exit 3: no TensorRT-LLM here), then run."""
    from swallow_trt.errors import EnvironmentProblem

    missing = [p for p in served["needs"] if not p.exists()]
    if missing:
        step = "package" if triton else "build"
        raise UsageError(
            f"{missing[0]} does not exist: nothing was built for this model, target and format yet",
            "run `" + " ".join(served["commands"][step]) + "` first",
        )
    if not triton:
        if shutil.which(served["run"][0]) is not None and announce is not None:
            announce(served["run"])
        return serve_trtllm(served["run"])
    llmapi_ready()
    if shutil.which("tritonserver") is None:
        raise EnvironmentProblem(
            "tritonserver is not on PATH: the llmapi model runs on the Triton TensorRT-LLM image's server",
            "run serve inside the image (see the Dockerfile), or serve without --triton (trtllm-serve)",
        )
    if announce is not None:
        announce(served["run"])
    return serve_trtllm(served["run"])
