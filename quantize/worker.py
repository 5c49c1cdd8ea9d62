"""The heavy half of the quantize stage, run in a child process (``python -m swallow_trt.quantize.worker``).

A child of its own frees GPU memory when it exits, keeps modelopt's global patches (e.g. KV-cache
quantizer registration) out of the parent, and can be killed cleanly. It reads a JSON spec, writes
progress events as JSON lines on stdout and its log on stderr, and exports into the directory the
parent gives it (a temporary sibling of the final output).
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EVAL_BYTES_LIMIT = 2**30  # reference log-probs kept on the host for the quality report


@dataclass(frozen=True)
class CalibSettings:
    """Calibration text and the held-out quality report: one definition for the CLI, the stages and the worker."""

    calib: str = "ja"
    calib_size: int = 512
    calib_max_seq_len: int = 512
    seed: int = 0
    eval_samples: int = 8
    eval_seq_len: int = 256


@dataclass(frozen=True)
class WorkerSpec:
    checkpoint: str
    weight_format: str
    qformat: str
    kv_cache_dtype: str
    tp: int
    pp: int
    dtype: str
    calibration: CalibSettings
    out_dir: str
    # "trtllm": a TensorRT-LLM checkpoint (engine runtime); "hf": ModelOpt's unified HF checkpoint,
    # which the PyTorch (LLM-API) runtime loads and shards itself (tp/pp are not applied).
    export: str = "trtllm"


def emit(event: str, **data: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **data}, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def log(msg: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def quant_config(qformat: str, kv: str) -> dict[str, Any] | None:
    """The mtq config for ``qformat`` plus KV-cache quantisation; None when nothing is calibrated."""
    import modelopt.torch.quantization as mtq

    from swallow_trt.quantize.formats import FORMATS

    name = FORMATS[qformat].modelopt_cfg
    cfg: dict[str, Any]
    if name is not None:
        cfg = copy.deepcopy(getattr(mtq, name))
    elif kv != "auto":
        cfg = {"quant_cfg": [{"quantizer_name": "*", "enable": False}], "algorithm": "max"}
    else:
        return None
    rules = list(cfg["quant_cfg"])
    if kv == "fp8":
        rules += copy.deepcopy(list(mtq.FP8_KV_CFG["quant_cfg"]))
    elif kv == "int8":
        rules.append({"quantizer_name": "*[kv]_bmm_quantizer", "cfg": {"num_bits": 8, "axis": None}})
    cfg["quant_cfg"] = rules
    return cfg


def _reference_logprobs(model: Any, samples: list[list[int]], device: str) -> list[Any]:
    """The original model's next-token log-probabilities on the held-out samples (float16 on the host)."""
    import torch

    out = []
    with torch.inference_mode():
        for ids in samples:
            logits = model(torch.tensor([ids], device=device)).logits[0, :-1].float()
            out.append(torch.log_softmax(logits, dim=-1).to(torch.float16).cpu())
    return out


def _quality(model: Any, samples: list[list[int]], ref: list[Any], device: str) -> dict[str, Any]:
    """Perplexity of both models, mean per-token KL(original || quantised) over the full vocabulary,
    and top-1 agreement, on held-out Japanese text."""
    import torch

    nll_ref = nll_q = kl = agree = 0.0
    n = 0
    with torch.inference_mode():
        for ids, ref_lp16 in zip(samples, ref, strict=True):
            x = torch.tensor([ids], device=device)
            q_lp = torch.log_softmax(model(x).logits[0, :-1].float(), dim=-1).cpu()
            ref_lp = ref_lp16.float()
            target = x[0, 1:].cpu()[:, None]
            kl += float((ref_lp.exp() * (ref_lp - q_lp)).sum())
            nll_ref += float(-ref_lp.gather(1, target).sum())
            nll_q += float(-q_lp.gather(1, target).sum())
            agree += float((q_lp.argmax(-1) == ref_lp.argmax(-1)).sum())
            n += len(ids) - 1
    return {
        "measured": True,
        "text": "held-out JSQuAD paragraphs (every 10th), never used for calibration",
        "tokens": n,
        "perplexity_original": math.exp(nll_ref / n),
        "perplexity_quantized": math.exp(nll_q / n),
        "kl_divergence": kl / n,
        "top1_agreement": agree / n,
    }


def run(spec: WorkerSpec) -> None:
    t0 = time.perf_counter()
    emit("phase", name="load", message="loading torch, transformers, modelopt")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from swallow_trt.quantize.calib import calibration_texts, heldout_texts, pack_token_ids

    torch.manual_seed(spec.calibration.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[spec.dtype]
    log(f"device {device}, torch {torch.__version__}, dtype {spec.dtype}")
    tokenizer = AutoTokenizer.from_pretrained(spec.checkpoint, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(
        spec.checkpoint,
        dtype=dtype,
        device_map="auto" if device == "cuda" else None,
        use_safetensors=spec.weight_format == "safetensors",
        trust_remote_code=False,
        low_cpu_mem_usage=True,
    ).eval()
    timings = {"load_s": time.perf_counter() - t0}
    emit("phase", name="loaded", message=f"model on {device}", device=device)

    def encode(text: str) -> list[int]:
        ids: list[int] = tokenizer.encode(text, add_special_tokens=False)
        return ids

    cfg = quant_config(spec.qformat, spec.kv_cache_dtype)
    quality: dict[str, Any] = {"measured": False, "reason": "nothing is quantised before export"}
    if cfg is not None:
        n_eval = min(
            spec.calibration.eval_samples,
            max(1, EVAL_BYTES_LIMIT // (spec.calibration.eval_seq_len * model.config.vocab_size * 2)),
        )
        if n_eval < spec.calibration.eval_samples:
            log(f"quality report limited to {n_eval} samples to keep reference log-probs within 1 GiB")
        eval_samples = pack_token_ids(
            encode, heldout_texts().texts, n_eval, spec.calibration.eval_seq_len, spec.calibration.seed + 1
        )
        t = time.perf_counter()
        ref = _reference_logprobs(model, eval_samples, device) if eval_samples else []
        timings["reference_eval_s"] = time.perf_counter() - t
        calib = calibration_texts(spec.calibration.calib)
        samples = pack_token_ids(
            encode,
            calib.texts,
            spec.calibration.calib_size,
            spec.calibration.calib_max_seq_len,
            spec.calibration.seed,
        )
        if not samples:
            raise SystemExit(
                f"calibration set {spec.calibration.calib!r} is too short for one sample of {spec.calibration.calib_max_seq_len} tokens"
            )
        if len(samples) < spec.calibration.calib_size:
            log(
                f"calibration text gives {len(samples)} samples of {spec.calibration.calib_max_seq_len} tokens, not {spec.calibration.calib_size}"
            )
        emit(
            "calib",
            done=0,
            total=len(samples),
            samples=len(samples),
            seq_len=spec.calibration.calib_max_seq_len,
        )

        def forward_loop(m: Any) -> None:
            with torch.inference_mode():
                for i, ids in enumerate(samples, 1):
                    m(torch.tensor([ids], device=device))
                    emit("calib", done=i, total=len(samples))

        import modelopt.torch.quantization as mtq

        t = time.perf_counter()
        model = mtq.quantize(model, cfg, forward_loop)
        timings["calibrate_s"] = time.perf_counter() - t
        if ref:
            emit("phase", name="quality", message="measuring the quantised model on held-out Japanese text")
            t = time.perf_counter()
            quality = _quality(model, eval_samples, ref, device)
            timings["quality_eval_s"] = time.perf_counter() - t
        else:
            quality = {"measured": False, "reason": "--eval-samples 0"}
        emit("quality", **quality)
    elif spec.qformat in ("int8_wo", "int4_wo"):
        quality = {
            "measured": False,
            "reason": "weight-only formats are quantised by trtllm-build, after this stage",
        }

    if spec.export == "hf":
        from modelopt.torch.export import export_hf_checkpoint

        emit("phase", name="export", message="exporting a unified HF checkpoint (ModelOpt)")
        t = time.perf_counter()
        with torch.inference_mode():
            export_hf_checkpoint(model, export_dir=spec.out_dir)
        timings["export_s"] = time.perf_counter() - t
        timings["worker_s"] = time.perf_counter() - t0
        emit("done", quality=quality, timings=timings, device=device, torch=torch.__version__)
        return

    from modelopt.torch.export import export_tensorrt_llm_checkpoint

    emit("phase", name="export", message=f"exporting tp {spec.tp} x pp {spec.pp}")
    t = time.perf_counter()
    with torch.inference_mode():
        export_tensorrt_llm_checkpoint(
            model,
            "llama",
            dtype,
            export_dir=spec.out_dir,
            inference_tensor_parallel=spec.tp,
            inference_pipeline_parallel=spec.pp,
        )
    from swallow_trt.quantize.formats import FORMATS

    if spec.qformat in ("int8_wo", "int4_wo"):
        # ModelOpt exports these unquantised; TensorRT-LLM's own quantize path then sets the algorithm
        # so that trtllm-build quantises the weights as it loads them.
        path = Path(spec.out_dir) / "config.json"
        config = json.loads(path.read_text())
        config.setdefault("quantization", {})["quant_algo"] = FORMATS[spec.qformat].quant_algo
        path.write_text(json.dumps(config, indent=4))
    timings["export_s"] = time.perf_counter() - t
    timings["worker_s"] = time.perf_counter() - t0
    emit("done", quality=quality, timings=timings, device=device, torch=torch.__version__)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m swallow_trt.quantize.worker SPEC.json\n")
        return 2
    data = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    spec = WorkerSpec(**{**data, "calibration": CalibSettings(**data["calibration"])})
    run(spec)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
