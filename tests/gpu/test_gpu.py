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


# --- issue 13: Qwen3 on the engine path, the PyTorch runtime ------------------------------------

needs_trtllm = pytest.mark.skipif(
    shutil.which("trtllm-build") is None or shutil.which("trtllm-serve") is None,
    reason="TensorRT-LLM (trtllm-build, trtllm-serve) is not installed",
)


def test_qwen3_fp8_hf_export_on_cuda(tmp_path: Path) -> None:
    """build --runtime pytorch calibrates on CUDA; each exported FP8 weight times its scale is the HF
    weight to within FP8's resolution."""
    from safetensors.torch import load_file

    from tests.fixtures.tiny import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "qwen3", "qwen3")
    res = cli("build", "--runtime", "pytorch", "--model", str(ckpt), "--target", "hopper", "--fp8",
              "--out", str(tmp_path / "out"), "--json", *FAST)  # fmt: skip
    assert res.returncode == 0, res.stderr
    export = Path(json.loads(res.stdout)["checkpoint"]["path"])
    assert json.loads((export / "manifest.json").read_text())["device"] == "cuda"
    q = load_file(export / "model.safetensors", device="cuda")
    ref = load_file(ckpt / "model.safetensors", device="cuda")
    name = "model.layers.0.mlp.down_proj"
    w = q[f"{name}.weight"]
    assert w.dtype == torch.float8_e4m3fn
    deq = w.float() * q[f"{name}.weight_scale"].float()
    orig = ref[f"{name}.weight"].float()
    assert float((deq - orig).abs().max()) <= float(orig.abs().max()) / 8  # e4m3: 3 mantissa bits


@needs_trtllm
def test_tiny_qwen3_engine_logits_match_hf(tmp_path: Path) -> None:
    """A tiny random Qwen3 (QK-norm, head_dim 128 apart from hidden/heads) built into a BF16 engine
    gives HF's next-token logits on a Japanese prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.fixtures.tiny import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "qwen3", "qwen3")
    out = tmp_path / "out"
    res = cli("build", "--runtime", "engine", "--model", str(ckpt), "--target", "hopper", "--qformat",
              "full_prec", "--max-batch-size", "1", "--max-seq-len", "256", "--max-input-len", "128",
              "--out", str(out), "--json", *FAST)  # fmt: skip
    assert res.returncode == 0, res.stderr
    engine_dir = json.loads(res.stdout)["engine"]["path"]
    from tensorrt_llm.runtime import ModelRunner

    tok = AutoTokenizer.from_pretrained(ckpt)
    ids = tok("東京工業大学の", return_tensors="pt").input_ids
    hf = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.bfloat16).cuda().eval()
    with torch.inference_mode():
        want = hf(ids.cuda()).logits[0, -1].float()
    runner = ModelRunner.from_dir(engine_dir)
    got = runner.generate([ids[0].int()], max_new_tokens=1, end_id=-1, pad_id=0, output_logits=True,
                          return_dict=True)  # fmt: skip
    logits = got["generation_logits"][0][0][0].float().to(want.device)
    assert int(logits.argmax()) == int(want.argmax())
    assert torch.allclose(torch.softmax(logits, -1), torch.softmax(want, -1), atol=2e-2)


@needs_trtllm
def test_tiny_gpt_oss_through_the_llm_api(tmp_path: Path) -> None:
    """A tiny random GPT-OSS (sliding/full attention, sinks, MoE) loads in the LLM API with the options
    build --runtime pytorch writes, and its greedy first token is HF's."""
    import yaml
    from tensorrt_llm import LLM, SamplingParams
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.fixtures.tiny import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "gpt_oss", "gpt_oss")
    res = cli("build", "--runtime", "pytorch", "--model", str(ckpt), "--target", "hopper", "--qformat",
              "full_prec", "--max-batch-size", "4", "--max-seq-len", "256", "--out", str(tmp_path / "out"),
              "--json")  # fmt: skip
    assert res.returncode == 0, res.stderr
    options = yaml.safe_load(Path(json.loads(res.stdout)["options_file"]).read_text())
    tok = AutoTokenizer.from_pretrained(ckpt)
    ids = tok("日本語で", add_special_tokens=False).input_ids
    hf = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.bfloat16).cuda().eval()
    with torch.inference_mode():
        want = int(hf(torch.tensor([ids], device="cuda")).logits[0, -1].argmax())
    llm = LLM(model=str(ckpt), **options)
    try:
        out = llm.generate([ids], SamplingParams(max_tokens=1, temperature=0.0))
    finally:
        llm.shutdown()
    assert out[0].outputs[0].token_ids[0] == want
