"""Triton's ``llmapi`` model for the PyTorch runtime: TensorRT-LLM's own Python model
(``triton_backend/all_models/llmapi/tensorrt_llm``) with a ``model.yaml`` written from a
``build --runtime pytorch`` output.

model.py reads ``1/model.yaml``: every key but ``triton_config`` goes to ``LLM(**...)`` (so the LLM-API
contract applies to them), ``triton_config`` sets the model's max_batch_size and decoupled policy. The
model's code and config.pbtxt are copied from the TensorRT-LLM tree in the image, unchanged: they must
match the tensorrt_llm they run with, so swallow-trt ships no copy of its own.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from swallow_trt.builders.pytorch_runtime import llm_args_problems, load_contract
from swallow_trt.errors import EnvironmentProblem, SwallowTrtError, UsageError

MODEL = "tensorrt_llm"
# The Dockerfile puts it at the first; the others are where TensorRT-LLM images may keep their source
# tree (unverified here: no image can be pulled on these machines); --llmapi-model overrides.
UPSTREAM_CANDIDATES = (
    Path("/opt/tensorrt_llm/llmapi/tensorrt_llm"),
    Path("/app/tensorrt_llm/triton_backend/all_models/llmapi/tensorrt_llm"),
    Path("/opt/tritonserver/tensorrt_llm/triton_backend/all_models/llmapi/tensorrt_llm"),
)
UPSTREAM_FILES = ("config.pbtxt", "1/model.py", "1/helpers.py")


def find_upstream(explicit: Path | None) -> Path:
    candidates = [explicit] if explicit is not None else list(UPSTREAM_CANDIDATES)
    for d in candidates:
        if all((d / f).is_file() for f in UPSTREAM_FILES):
            return d
    where = str(explicit) if explicit is not None else " or ".join(map(str, UPSTREAM_CANDIDATES))
    raise EnvironmentProblem(
        f"TensorRT-LLM's llmapi Triton model ({', '.join(UPSTREAM_FILES)}) is not at {where}",
        "pass --llmapi-model DIR (triton_backend/all_models/llmapi/tensorrt_llm of the TensorRT-LLM "
        "that will serve it)",
    )


def read_build(build_root: Path) -> dict[str, Any]:
    path = build_root / "build.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UsageError(
            f"{build_root} holds no build.json of a pytorch-runtime build",
            "run `swallow-trt build --runtime pytorch` first and pass its output directory",
        ) from None
    if data.get("runtime") != "pytorch":
        raise UsageError(
            f"{path} is an engine build, not a pytorch-runtime one",
            "package it with --engine, or build with --runtime pytorch",
        )
    return data


def model_yaml(build: dict[str, Any], *, decoupled: bool = True) -> dict[str, Any]:
    """LLM() arguments (the build's options with the checkpoint as ``model``) plus ``triton_config``."""
    options = yaml.safe_load(Path(build["options"]).read_text(encoding="utf-8")) or {}
    doc: dict[str, Any] = {"model": build["checkpoint"]["path"], **options}
    # The model batches inside the LLM API; upstream's own model.yaml keeps Triton's batching off (0).
    doc["triton_config"] = {"max_batch_size": 0, "decoupled": decoupled, "cancellation_check_period_ms": 100}
    problems = model_yaml_problems(doc)
    if problems:
        raise SwallowTrtError("model.yaml outside TensorRT-LLM 1.2's names: " + "; ".join(problems))
    return doc


def model_yaml_problems(doc: dict[str, Any]) -> list[str]:
    allowed = load_contract()["llmapi_model"]["model_yaml"]["triton_config"]
    triton = doc.get("triton_config")
    problems = [] if isinstance(triton, dict) else ["triton_config: missing"]
    if isinstance(triton, dict):
        problems += [f"triton_config.{k}: not read by model.py" for k in triton if k not in allowed]
        problems += [
            f"triton_config.{k}: required" for k, s in allowed.items() if s["required"] and k not in triton
        ]
    return problems + llm_args_problems({k: v for k, v in doc.items() if k != "triton_config"})


def write_llmapi_repo(build_root: Path, out: Path, upstream: Path, *, force: bool = False) -> Path:
    """Write the repository beside ``out`` and rename it into place once complete."""
    out = out.absolute()
    doc = model_yaml(read_build(build_root.absolute()))
    if out.exists() and any(out.iterdir()) and not force:
        raise UsageError(f"{out} exists and is not empty", "choose another --out")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for f in UPSTREAM_FILES:
            (tmp / MODEL / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(upstream / f, tmp / MODEL / f)
        with (tmp / MODEL / "1" / "model.yaml").open("w", encoding="utf-8") as fh:
            fh.write(
                "# Triton llmapi model: LLM() arguments plus triton_config (TensorRT-LLM 1.2), from swallow-trt\n"
            )
            yaml.safe_dump(doc, fh, sort_keys=False, allow_unicode=True)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
