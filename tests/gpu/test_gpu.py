"""Checks that need an NVIDIA GPU (run them on the device machine: python -m pytest tests/gpu).

Skipped where there is no GPU. On a bare CUDA machine (no TensorRT-LLM) the quantize stage's CUDA
path and the exported FP8 scales are checked; inside the TensorRT-LLM image a real engine is built.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"),
]

FAST = ["--calib-size", "8", "--calib-max-seq-len", "64", "--eval-samples", "2", "--eval-seq-len", "64"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swallow_trt.cli.main", *args], capture_output=True, text=True, timeout=1800
    )


def test_fp8_quantize_on_cuda_and_scaled_mm(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from tests.fixtures.tiny import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "ckpt", "llama31")
    out = tmp_path / "fp8"
    res = cli(
        "quantize",
        "--model",
        str(ckpt),
        "--fp8",
        "--kv-cache-dtype",
        "fp8",
        "--out",
        str(out),
        "--json",
        *FAST,
    )
    assert res.returncode == 0, res.stderr
    manifest = json.loads(res.stdout)["manifest"]
    assert manifest["device"] == "cuda"
    shard = load_file(out / "rank0.safetensors", device="cuda")
    w = shard["transformer.layers.0.mlp.fc.weight"]  # [out, in] float8_e4m3fn
    w_scale = shard["transformer.layers.0.mlp.fc.weights_scaling_factor"].float().reshape(())
    a_scale = shard["transformer.layers.0.mlp.fc.activation_scaling_factor"].float().reshape(())
    x = torch.randn(16, w.shape[1], device="cuda", dtype=torch.bfloat16) * 0.5
    x_fp8 = (x.float() / a_scale).clamp(-448, 448).to(torch.float8_e4m3fn)
    y = torch._scaled_mm(x_fp8, w.t(), scale_a=a_scale, scale_b=w_scale, out_dtype=torch.bfloat16)
    ref = x.float() @ (w.float() * w_scale).t()
    rel = (y.float() - ref).norm() / ref.norm()
    assert rel < 0.08, float(rel)


@pytest.mark.skipif(
    shutil.which("trtllm-build") is None, reason="TensorRT-LLM's trtllm-build is not installed"
)
def test_real_engine_build(tmp_path: Path) -> None:
    from swallow_trt.hw import detect_gpus
    from tests.fixtures.tiny import make_checkpoint

    sm = detect_gpus()[0].sm
    target = {80: "ampere", 86: "ampere-sm86", 89: "ada", 90: "hopper"}[sm]
    qformat = "fp8" if sm >= 89 else "full_prec"
    ckpt = make_checkpoint(tmp_path / "Tiny", "llama31")
    res = cli("build", "--model", str(ckpt), "--target", target, "--qformat", qformat, "--max-seq-len", "512",
              "--max-input-len", "256", "--max-batch-size", "8", "--out", str(tmp_path / "out"), "--json", *FAST)  # fmt: skip
    assert res.returncode == 0, res.stderr
    engine = Path(json.loads(res.stdout)["engine"]["path"])
    assert (engine / "rank0.engine").stat().st_size > 0
    manifest = json.loads((engine / "manifest.json").read_text())
    assert manifest["gpu"]["sm"] == sm
    assert manifest["environment"]["tensorrt_llm"].startswith("1.")
