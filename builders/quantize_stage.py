"""The quantize/convert stage: HF Swallow checkpoint -> TensorRT-LLM checkpoint (nvidia-modelopt).

Validation, resources and checkpoint checks run here, in the parent, before any heavy import; the
calibration and export run in a child (``swallow_trt.quantize.worker``) whose output goes to a
temporary sibling of the final directory, is validated against the HF config, and only then renamed
into place with its manifest (see ``builders/stage.py``).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from swallow_trt import __version__
from swallow_trt.arch import ModelArch
from swallow_trt.builders.plan import (
    DEFAULT_OUT,
    GIB,
    check_engine_export,
    check_format,
    check_format_arch,
    check_kv,
    check_kv_arch,
    check_pp,
    check_tp,
    host_plan,
    stage_root,
)
from swallow_trt.builders.stage import StageDir, stage_key
from swallow_trt.checks import at_least, output_dir
from swallow_trt.errors import EnvironmentProblem, ProcessFailure, UsageError
from swallow_trt.proc import ManagedProcess
from swallow_trt.profiles import Profile, get_target
from swallow_trt.quantize.calib import calibration_file, calibration_texts
from swallow_trt.quantize.checkpoint import CheckpointInfo, fetch_checkpoint, inspect_checkpoint
from swallow_trt.quantize.formats import DTYPE_BYTES, FORMATS
from swallow_trt.quantize.validate import Expected, complete_config, raise_if_invalid, validate_export
from swallow_trt.quantize.worker import CalibSettings, WorkerSpec
from swallow_trt.registry import check_buildable, resolve_model

LOG_NAME = "quantize.log"
SPEC_NAME = "worker-spec.json"
TOOL_PACKAGES = ("torch", "transformers", "nvidia-modelopt", "safetensors", "accelerate")


class Reporter(Protocol):
    def phase(self, message: str) -> None: ...
    def calib(self, done: int, total: int) -> None: ...
    def warn(self, message: str) -> None: ...


class SilentReporter:
    def phase(self, message: str) -> None:
        pass

    def calib(self, done: int, total: int) -> None:
        pass

    def warn(self, message: str) -> None:
        pass


@dataclass(frozen=True)
class QuantizeRequest:
    model: str
    qformat: str | None = None
    kv_cache_dtype: str | None = None
    tp: int = 1
    pp: int = 1
    dtype: str | None = None
    calibration: CalibSettings = field(default_factory=CalibSettings)
    out: Path | None = None
    target: str | None = None
    revision: str | None = None
    allow_pickle: bool = False
    force: bool = False


@dataclass(frozen=True)
class QuantizeResult:
    out: Path
    cached: bool
    manifest: dict[str, Any]


def tool_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"swallow-trt": __version__, "python": sys.version.split()[0]}
    for pkg in TOOL_PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def check_calibration(cal: CalibSettings) -> None:
    """The calibration options, before anything runs (``build --dry-run`` too); a file is not read here."""
    for flag, value, low in (
        ("--calib-size", cal.calib_size, 1),
        ("--calib-max-seq-len", cal.calib_max_seq_len, 16),
        ("--eval-samples", cal.eval_samples, 0),
        ("--eval-seq-len", cal.eval_seq_len, 16),
    ):
        at_least(flag, value, low)
    calibration_file(cal.calib)


def _check_numbers(req: QuantizeRequest) -> None:
    at_least("--tp", req.tp, 1)
    at_least("--pp", req.pp, 1)
    check_calibration(req.calibration)


def resolve_formats(
    req: QuantizeRequest, arch: ModelArch, name: str, profile: Profile | None
) -> tuple[str, str, str]:
    """(qformat, kv dtype, dtype) after the same rules as ``plan``: architecture and TP/PP always,
    the GPU generation's when a --target is given."""
    qformat = req.qformat or (profile.formats.default if profile else "fp8")
    if qformat not in FORMATS:
        raise UsageError(f"unknown --qformat {qformat!r}", "choose one of: " + ", ".join(FORMATS))
    kv = req.kv_cache_dtype or (
        profile.formats.kv_cache_dtype if profile and qformat != "full_prec" else "auto"
    )
    if profile is not None:
        check_format(profile, arch, qformat, name, explicit=req.qformat is not None)
        check_kv(profile, arch, kv, name)
    else:
        check_format_arch(arch, qformat, name)
        check_kv_arch(arch, kv, name)
    if qformat == "nvfp4":
        raise UsageError(
            "nvfp4 engines need Blackwell (sm100), which no shipped target covers yet", "use --fp8"
        )
    check_tp(arch, req.tp, qformat, name)
    check_pp(arch, req.pp, name)
    dtype = req.dtype or (
        arch.torch_dtype if arch.torch_dtype in DTYPE_BYTES and arch.torch_dtype != "float32" else "bfloat16"
    )
    if dtype not in ("bfloat16", "float16"):
        raise UsageError(f"unknown --dtype {dtype!r}", "choose bfloat16 or float16")
    return qformat, kv, dtype


def check_resources(
    arch: ModelArch, qformat: str, dtype: str, req: QuantizeRequest, out: Path, download: bool
) -> None:
    host = host_plan(arch, qformat, DTYPE_BYTES[dtype], req.tp, req.pp)
    if host.host_ram_bytes is not None and host.ram_bytes > host.host_ram_bytes and not req.force:
        raise EnvironmentProblem(
            f"the quantize stage needs about {host.ram_bytes / GIB:.1f} GiB of host RAM for "
            f"{arch.total_params / 1e9:.1f} B parameters; this host has {host.host_ram_bytes / GIB:.1f} GiB",
            "run it on a larger host, or pass --force to try anyway",
        )
    need = host.trtllm_checkpoint_bytes + (host.hf_checkpoint_bytes if download else 0)
    probe = out
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need > free and not req.force:
        raise EnvironmentProblem(
            f"the quantize stage needs about {need / GIB:.1f} GiB of disk under {probe}; {free / GIB:.1f} GiB is free",
            "free some space, choose another --out, or pass --force to try anyway",
        )


def run_worker(spec: WorkerSpec, temp: Path, reporter: Reporter) -> tuple[dict[str, Any], list[str]]:
    spec_path = temp / SPEC_NAME
    spec_path.write_text(json.dumps(asdict(spec), indent=2))
    argv = [sys.executable, "-m", "swallow_trt.quantize.worker", str(spec_path)]
    log_path = temp / LOG_NAME
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    # Events on stdout, the rest (the libraries' output, tracebacks) in the log. This thread waits for
    # the worker, so the death signal, which follows it, is safe to set.
    worker = ManagedProcess(
        argv, name="the quantize worker", log_path=log_path, env=env, output="pipe", tie_to_parent=True
    )
    done: dict[str, Any] | None = None
    with worker.start():
        for line in worker.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = {}
            kind = event.get("event") if isinstance(event, dict) else None
            if kind == "phase":
                reporter.phase(str(event.get("message", event.get("name"))))
            elif kind == "calib":
                reporter.calib(int(event["done"]), int(event["total"]))
            elif kind == "done":
                done = event
            else:
                worker.note(line)
        rc = worker.wait()
    if rc != 0 or done is None:
        raise worker.failed(
            ProcessFailure.EXITED,
            summary=None if rc != 0 else "the quantize worker exited without reporting its result",
            hint="fix the cause and re-run; the output directory was left untouched",
        )
    return done, argv


def run_quantize(req: QuantizeRequest, reporter: Reporter | None = None) -> QuantizeResult:
    ui: Reporter = reporter or SilentReporter()
    _check_numbers(req)
    model = resolve_model(req.model)
    check_buildable(model)
    name = model.display_name
    profile = get_target(req.target) if req.target else None
    qformat, kv, dtype = resolve_formats(req, model.arch, name, profile)
    check_engine_export(model.arch, qformat, name)
    cal = req.calibration
    calib = calibration_texts(cal.calib)
    out = (
        (req.out or stage_root(DEFAULT_OUT, model, qformat, kv, req.tp, req.pp) / "checkpoint")
        .expanduser()
        .absolute()
    )
    output_dir(out)
    check_resources(model.arch, qformat, dtype, req, out, download=model.local_path is None)

    if model.local_path is None:
        ui.phase(f"fetching {name} from the hub (resumable)")
    ckpt: CheckpointInfo = inspect_checkpoint(
        fetch_checkpoint(model, req.revision, req.allow_pickle), req.allow_pickle
    )
    ui.phase(
        f"checkpoint {ckpt.path}: {len(ckpt.weight_files)} {ckpt.weight_format} file(s), "
        f"{ckpt.weight_bytes / GIB:.2f} GiB, {ckpt.arch.total_params / 1e9:.2f} B params"
    )
    if not ckpt.has_tokenizer:
        raise UsageError(
            f"{ckpt.path} has no tokenizer (tokenizer.json or tokenizer.model)",
            "calibration uses the model's own tokenizer: copy its tokenizer files into the checkpoint",
        )
    # The checkpoint's own config is the truth: re-check the rules against it.
    if ckpt.arch != model.arch:
        qformat, kv, dtype = resolve_formats(
            replace(req, qformat=qformat, kv_cache_dtype=kv, dtype=dtype),
            ckpt.arch,
            name,
            profile,
        )
    versions = tool_versions()
    if versions["nvidia-modelopt"] is None or versions["torch"] is None or versions["transformers"] is None:
        raise EnvironmentProblem(
            "the quantize stage needs torch, transformers and nvidia-modelopt",
            "pip install 'swallow-trt[quantize]' (on CPU: pip install torch==2.13.0 first)",
        )
    inputs = {
        "stage": "quantize",
        "checkpoint": {
            "path": str(ckpt.path),
            "fingerprint": ckpt.fingerprint,
            "weights": ckpt.weight_format,
        },
        "model": name,
        "qformat": qformat,
        "kv_cache_dtype": kv,
        "tp": req.tp,
        "pp": req.pp,
        "dtype": dtype,
        "calib": {
            "source": calib.name,
            "sha256": calib.sha256,
            "size": cal.calib_size,
            "max_seq_len": cal.calib_max_seq_len,
            "seed": cal.seed,
        },
        "eval": {"samples": cal.eval_samples, "seq_len": cal.eval_seq_len},
        "versions": {k: v for k, v in versions.items() if k != "python"},
    }
    key = stage_key(inputs)
    stage = StageDir(out)
    with stage.locked(on_wait=ui.warn):
        hit = stage.check_replaceable(key, req.force)
        if hit is not None:
            return QuantizeResult(out, True, hit)
        started = time.time()
        with stage.building(LOG_NAME) as temp:
            spec = WorkerSpec(
                checkpoint=str(ckpt.path),
                weight_format=ckpt.weight_format,
                qformat=qformat,
                kv_cache_dtype=kv,
                tp=req.tp,
                pp=req.pp,
                dtype=dtype,
                calibration=cal,
                out_dir=str(temp),
            )
            done, argv = run_worker(spec, temp, ui)
            for field_set in complete_config(temp, ckpt.arch):
                ui.phase(f"checkpoint config: {field_set} (TensorRT-LLM reads it; the export leaves it out)")
            ui.phase("validating the export against the HF config")
            expected = Expected(
                arch=ckpt.arch, qformat=qformat, kv_cache_dtype=kv, tp=req.tp, pp=req.pp, dtype=dtype
            )
            report = validate_export(temp, expected)
            if report.problems:
                (temp / LOG_NAME).open("a").write(
                    "\nvalidation problems:\n" + "\n".join(report.problems) + "\n"
                )
            raise_if_invalid(report, out)
            for w in report.warnings:
                ui.warn(w)
            manifest = {
                "stage": "quantize",
                "key": key,
                "inputs": inputs,
                "versions": versions,
                "device": done.get("device"),
                "command": [a.replace(str(temp), str(out)) for a in argv],
                "timings": {**done.get("timings", {}), "stage_s": time.time() - started},
                "quality": done.get("quality"),
                "validation": {"ok": True, "tensors_checked": report.tensors, "warnings": report.warnings},
                "model": {
                    "registered": model.registered.repo if model.registered else None,
                    "chat_format": model.registered.entry.chat_format if model.registered else None,
                },
            }
            ui.phase("writing checksums and manifest")
            final = stage.commit(temp, manifest, logs=(LOG_NAME, SPEC_NAME))
    return QuantizeResult(out, False, final)
