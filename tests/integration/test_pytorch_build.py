"""``build --runtime pytorch`` for real on CPU: ModelOpt's unified HF export of a tiny random Qwen3 in
fp8 (calibrated on the shipped Japanese text), validated against its HF config, cached by its inputs,
with the options YAML beside it; then ``package --runtime pytorch`` writes Triton's llmapi model from it.
TensorRT-LLM's llmapi model.py is not installable here: a stand-in directory with its three file names
takes its place, as only the copying and the model.yaml are under test."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from swallow_trt.builders.pytorch_runtime import llm_args_problems
from swallow_trt.triton_repo.llmapi import UPSTREAM_FILES
from tests.fixtures.tiny import make_checkpoint

FAST = ["--calib-size", "4", "--calib-max-seq-len", "32", "--eval-samples", "1", "--eval-seq-len", "32"]


def test_build_package_qwen3_fp8_hf_export(cli: Callable[..., Any], tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "qwen3", "qwen3")
    out = tmp_path / "out"
    args = ["build", "--runtime", "pytorch", "--model", str(ckpt), "--target", "hopper", "--fp8",
            "--kv-cache-dtype", "fp8", "--max-batch-size", "8", "--out", str(out), *FAST, "--json"]  # fmt: skip
    first = cli(*args)
    assert first.exit_code == 0, first.stderr
    built = json.loads(first.stdout)
    export = Path(built["checkpoint"]["path"])
    assert built["checkpoint"] == {"path": str(export), "exported": True, "cached": False}
    quant = json.loads((export / "hf_quant_config.json").read_text())["quantization"]
    assert (quant["quant_algo"], quant["kv_cache_quant_algo"]) == ("FP8", "FP8")
    assert (export / "tokenizer.json").is_file()  # trtllm-serve loads the tokenizer from here
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["stage"] == "hf-export"
    assert manifest["validation"]["ok"] is True
    options = yaml.safe_load(Path(built["options_file"]).read_text())
    assert llm_args_problems(options) == []
    assert options["kv_cache_config"]["dtype"] == "fp8"
    assert options["cuda_graph_config"]["batch_sizes"] == [1, 2, 4, 8]
    assert built["serve"][:2] == ["trtllm-serve", str(export)]

    again = cli(*args)
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["checkpoint"]["cached"] is True

    upstream = tmp_path / "llmapi" / "tensorrt_llm"
    for f in UPSTREAM_FILES:
        (upstream / f).parent.mkdir(parents=True, exist_ok=True)
        (upstream / f).write_text(f"# stand-in for TensorRT-LLM's {f}\n")
    repo = tmp_path / "repo"
    root = Path(built["manifest"]).parent
    packaged = cli("package", "--runtime", "pytorch", "--build", str(root), "--out", str(repo),
                   "--llmapi-model", str(upstream), "--json")  # fmt: skip
    assert packaged.exit_code == 0, packaged.stderr
    doc = yaml.safe_load((repo / "tensorrt_llm" / "1" / "model.yaml").read_text())
    assert doc["model"] == str(export)
    assert doc["triton_config"] == {
        "max_batch_size": 0,
        "decoupled": True,
        "cancellation_check_period_ms": 100,
    }
    assert llm_args_problems({k: v for k, v in doc.items() if k != "triton_config"}) == []
    assert {k: v for k, v in doc.items() if k not in ("model", "triton_config")} == options
    for f in UPSTREAM_FILES:
        assert (repo / "tensorrt_llm" / f).read_text() == (upstream / f).read_text()


def test_build_qwen3_moe_fp8_hf_export(cli: Callable[..., Any], tmp_path: Path) -> None:
    """A quantised Qwen3-MoE goes to the PyTorch runtime (ModelOpt 0.47 cannot export its TensorRT-LLM
    checkpoint): every expert's projections come out FP8 with their scales, the router stays BF16 and
    is excluded, and the MoE facts the LLM API builds the model from survive the export."""
    from safetensors import safe_open

    ckpt = make_checkpoint(tmp_path / "moe", "qwen3_moe")
    source = json.loads((ckpt / "config.json").read_text())
    out = tmp_path / "out"
    result = cli("build", "--runtime", "pytorch", "--model", str(ckpt), "--target", "hopper", "--fp8",
                 "--max-batch-size", "8", "--out", str(out), *FAST, "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    built = json.loads(result.stdout)
    export = Path(built["checkpoint"]["path"])
    assert json.loads((export / "manifest.json").read_text())["validation"]["ok"] is True
    quant = json.loads((export / "hf_quant_config.json").read_text())["quantization"]
    assert quant["quant_algo"] == "FP8"
    layers = source["num_hidden_layers"]
    assert {f"model.layers.{i}.mlp.gate" for i in range(layers)} <= set(quant["exclude_modules"])
    cfg = json.loads((export / "config.json").read_text())
    for key in ("num_experts", "num_experts_per_tok", "moe_intermediate_size", "norm_topk_prob"):
        assert cfg[key] == source[key], key
    with safe_open(str(export / "model.safetensors"), "pt") as f:
        names = set(f.keys())
        for e in range(source["num_experts"]):
            for proj in ("gate_proj", "up_proj", "down_proj"):
                prefix = f"model.layers.0.mlp.experts.{e}.{proj}"
                assert str(f.get_tensor(f"{prefix}.weight").dtype) == "torch.float8_e4m3fn", prefix
                assert {f"{prefix}.weight_scale", f"{prefix}.input_scale"} <= names, prefix
        assert str(f.get_tensor("model.layers.0.mlp.gate.weight").dtype) == "torch.bfloat16"
    assert llm_args_problems(yaml.safe_load(Path(built["options_file"]).read_text())) == []
