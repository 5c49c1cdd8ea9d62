"""The CPU quickstart: every stage of the tool chain on a tiny model, on a machine without a GPU.

1. a tiny Swallow-shaped model (Llama-3.1 layout, 2 layers, hidden 512, a ~4,000-token byte-level BPE
   tokenizer trained on the shipped Japanese text) with RANDOM weights: it streams Japanese pieces, not
   sense;
2. the real quantize stage (modelopt FP8 calibration on Japanese text, TP 2) into a TensorRT-LLM
   checkpoint;
3. the ``trtllm-build`` command a Hopper GPU would run on that checkpoint (printed, not run);
4. a repository with the reference backend (transformers on CPU behind the TensorRT-LLM tensor contract);
5. the Triton server from nvidia-pytriton, one streamed Japanese chat answer, and a clean stop.

It orchestrates the quantize stage and the Triton repository, hence its imports of both.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from swallow_trt.builders.quantize_stage import QuantizeRequest, Reporter, SilentReporter, run_quantize
from swallow_trt.checks import output_dir
from swallow_trt.quantize.worker import CalibSettings

# Named like the registry's release so that its chat format (Llama-3 header) and stop word apply.
TINY_NAME = "tokyotech-llm/Llama-3.1-Swallow-8B-Instruct-v0.3"
DEFAULT_PROMPT = "日本で一番高い山は何ですか？"
CALIBRATION = CalibSettings(calib="ja", calib_size=8, calib_max_seq_len=64, eval_samples=2, eval_seq_len=64)


@dataclass(frozen=True)
class QuickstartRequest:
    out: Path
    prompt: str = DEFAULT_PROMPT
    max_tokens: int = 48
    # A server that fails to start exits (a model that fails to load stops it), which the wait sees at
    # once; the deadline only bounds a hang, so it is far above a healthy start on a loaded 2-core machine
    # (300 s was hit at a load average of 15).
    ready_timeout_s: float = 1800.0


def _tiny_model(directory: Path) -> Path:
    from swallow_trt.workflows.tiny import make_checkpoint, make_tokenizer

    if (directory / "config.json").is_file() and (directory / "model.safetensors").is_file():
        return directory
    temp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(temp, ignore_errors=True)
    make_checkpoint(temp, "llama31", name_or_path=TINY_NAME, vocab_size=len(make_tokenizer("llama31")))
    shutil.rmtree(directory, ignore_errors=True)
    temp.rename(directory)
    return directory


def run_quickstart(
    req: QuickstartRequest,
    reporter: Reporter | None = None,
    on_text: Callable[[str], None] = lambda piece: None,
) -> dict[str, Any]:
    from swallow_trt.builders.engine_args import trtllm_build_argv
    from swallow_trt.builders.plan import PlanRequest, make_plan
    from swallow_trt.triton_repo.client import stream_chat
    from swallow_trt.triton_repo.package import PackageRequest, package
    from swallow_trt.triton_repo.server import TritonServer

    ui: Reporter = reporter or SilentReporter()
    output_dir(req.out)
    out = req.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    t = time.time()
    ui.phase(
        "1/5 making a TINY RANDOMLY INITIALISED Swallow-shaped model (Llama-3.1 layout, 2 layers, "
        "hidden 512): it streams Japanese pieces, not sense"
    )
    model = _tiny_model(out / "Tiny-Swallow")
    timings["model_s"] = time.time() - t

    t = time.time()
    ui.phase("2/5 quantize: modelopt FP8 calibration on Japanese text, TP 2 -> TensorRT-LLM checkpoint")
    ckpt = run_quantize(
        QuantizeRequest(
            model=str(model), qformat="fp8", tp=2, calibration=CALIBRATION, out=out / "checkpoint-fp8-tp2"
        ),
        ui,
    )
    timings["quantize_s"] = time.time() - t

    plan = make_plan(PlanRequest(model=str(model), target="h100x4", tp=2, qformat="fp8", out=out))
    build_argv = trtllm_build_argv(
        replace(plan.engine, checkpoint_dir=ckpt.out, output_dir=out / "engine-h100x4")
    )
    ui.phase("3/5 on a Hopper GPU the engine would be built with (not run here: no GPU):")
    ui.phase("    " + " ".join(build_argv))

    t = time.time()
    repo = out / "repo"
    shutil.rmtree(repo, ignore_errors=True)  # the quickstart's own output: rewritten on each run
    ui.phase(f"4/5 packaging a Triton repository with the reference backend -> {repo}")
    packaged = package(PackageRequest(out=repo, model=str(model), max_input_len=512, max_batch_size=8))
    timings["package_s"] = time.time() - t

    t = time.time()
    ui.phase(
        "5/5 starting Triton (nvidia-pytriton's server, CPU) and streaming a Japanese chat answer "
        f"(loading the models can take minutes on a busy machine; giving up after {req.ready_timeout_s:g} s)"
    )
    pieces: list[str] = []
    with TritonServer(repo, log_path=out / "tritonserver.log", start_timeout_s=req.ready_timeout_s) as server:
        timings["server_start_s"] = time.time() - t
        t = time.time()
        for piece in stream_chat(server.grpc_url, req.prompt, max_tokens=req.max_tokens):
            pieces.append(piece)
            on_text(piece)
        timings["chat_s"] = time.time() - t
    return {
        "model": str(model),
        "random_weights": True,
        "checkpoint": {"path": str(ckpt.out), "cached": ckpt.cached, "quality": ckpt.manifest.get("quality")},
        "trtllm_build": build_argv,
        "repo": str(packaged.repo),
        "prompt": req.prompt,
        "answer": "".join(pieces),
        "streamed_pieces": len(pieces),
        "timings": timings,
    }
