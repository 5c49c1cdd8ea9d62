"""The real quantize stage (CLI -> modelopt worker -> export -> validation) on tiny random models with
the Swallow shapes that matter, on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("modelopt")
torch = pytest.importorskip("torch")
from safetensors.torch import load_file  # noqa: E402

from swallow_trt.quantize.validate import Expected, validate_export  # noqa: E402
from swallow_trt.registry import ModelArch  # noqa: E402
from tests.fixtures.tiny import KINDS, make_bad_checkpoint, make_checkpoint  # noqa: E402

pytestmark = pytest.mark.integration

FAST = ["--calib-size", "4", "--calib-max-seq-len", "32", "--eval-samples", "2", "--eval-seq-len", "32"]
TP = 4  # largest TP the tiny shapes divide for every format


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    return {kind: make_checkpoint(root / kind, kind) for kind in KINDS}


@pytest.fixture(scope="session")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("quantized")


def hf_weights(ckpt: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in sorted(ckpt.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def arch_of(ckpt: Path) -> ModelArch:
    from swallow_trt.arch import arch_from_hf_config, read_hf_config

    return arch_from_hf_config(read_hf_config(ckpt), "config.json")


def cases() -> Iterator[Any]:
    for kind in KINDS:
        for qformat in ("full_prec", "fp8", "int4_awq"):
            if kind == "mixtral" and qformat == "int4_awq":
                continue  # refused by validation (no ModelOpt AWQ for Mixtral): see the unit tests
            for tp in (1, 2, 4):
                yield pytest.param(kind, qformat, tp, id=f"{kind}-{qformat}-tp{tp}")


def expected_chunks(hf: dict[str, Any], arch: ModelArch, layer: int, tp: int, rank: int) -> dict[str, Any]:
    """The HF tensors of one layer as TensorRT-LLM's rank ``rank`` holds them (full precision)."""
    p = f"model.layers.{layer}."
    kv = arch.num_key_value_heads

    def kv_part(name: str) -> Any:
        w = hf[p + f"self_attn.{name}.weight"]
        if kv >= tp:
            return w.chunk(tp)[rank]
        return w.chunk(kv)[rank * kv // tp]  # replicated: one KV head per rank

    q = hf[p + "self_attn.q_proj.weight"].chunk(tp)[rank]
    out = {
        "attention.qkv": torch.cat([q, kv_part("k_proj"), kv_part("v_proj")]),
        "attention.dense": hf[p + "self_attn.o_proj.weight"].chunk(tp, dim=1)[rank],
        "input_layernorm": hf[p + "input_layernorm.weight"],
        "post_layernorm": hf[p + "post_attention_layernorm.weight"],
    }
    if arch.is_moe:
        e = range(arch.num_local_experts)
        x = p + "block_sparse_moe."
        out["mlp.fc"] = torch.stack(
            [
                torch.cat(
                    [
                        hf[x + f"experts.{i}.w3.weight"].chunk(tp)[rank],
                        hf[x + f"experts.{i}.w1.weight"].chunk(tp)[rank],
                    ]
                )
                for i in e
            ]
        )
        out["mlp.proj"] = torch.stack([hf[x + f"experts.{i}.w2.weight"].chunk(tp, dim=1)[rank] for i in e])
    else:
        # TensorRT-LLM's gated MLP: fc is HF's gate_proj, gate is HF's up_proj.
        out["mlp.fc"] = hf[p + "mlp.gate_proj.weight"].chunk(tp)[rank]
        out["mlp.gate"] = hf[p + "mlp.up_proj.weight"].chunk(tp)[rank]
        out["mlp.proj"] = hf[p + "mlp.down_proj.weight"].chunk(tp, dim=1)[rank]
    return out


LINEARS = ("attention.qkv", "attention.dense", "mlp.fc", "mlp.gate", "mlp.proj")


def check_numerics(ckpt: Path, out: Path, qformat: str, tp: int) -> None:
    hf = hf_weights(ckpt)
    arch = arch_of(ckpt)
    for rank in range(tp):
        shard = load_file(out / f"rank{rank}.safetensors")
        if qformat != "int4_awq":
            # Embedding and lm_head stay in the model dtype and are split by rows.
            assert torch.equal(
                shard["transformer.vocab_embedding.weight"], hf["model.embed_tokens.weight"].chunk(tp)[rank]
            )
            assert torch.equal(shard["lm_head.weight"], hf["lm_head.weight"].chunk(tp)[rank])
        assert torch.equal(shard["transformer.ln_f.weight"], hf["model.norm.weight"])
        for layer in range(arch.num_hidden_layers):
            want = expected_chunks(hf, arch, layer, tp, rank)
            pre = f"transformer.layers.{layer}."
            for name, ref in want.items():
                if name not in LINEARS:
                    assert torch.equal(shard[pre + name + ".weight"], ref), name
                    continue
                w = shard[pre + name + ".weight"]
                if qformat == "full_prec":
                    assert w.dtype == torch.bfloat16
                    assert torch.equal(w, ref), f"rank {rank} {name}: TP shards must concatenate back exactly"
                elif qformat == "fp8":
                    assert w.dtype == torch.float8_e4m3fn
                    scale = shard[pre + name + ".weights_scaling_factor"].float()
                    if scale.dim() == 2:  # MoE: one scale per expert
                        scale = scale[:, :, None]
                    deq = w.float() * scale
                    ref32 = ref.float()
                    # E4M3: 3 mantissa bits (half-ulp 2^-4 relative), subnormal step 2^-9 of the scale.
                    tol = ref32.abs() * 2**-4 + scale * 2**-9 + 1e-7
                    assert bool(((deq - ref32).abs() <= tol).all()), (
                        f"rank {rank} {name}: beyond FP8 rounding"
                    )
                else:
                    assert w.dtype == torch.int8
                    scale = shard[pre + name + ".weights_scaling_factor"].float()
                    pre_scale = shard[pre + name + ".prequant_scaling_factor"].float()
                    u = w.view(torch.uint8).int()
                    lo, hi = u & 0xF, (u >> 4) & 0xF
                    lo = torch.where(lo > 7, lo - 16, lo)
                    hi = torch.where(hi > 7, hi - 16, hi)
                    q = torch.stack([lo, hi], dim=1).reshape(ref.shape)  # two rows per byte
                    s = scale.repeat_interleave(128, dim=1)
                    deq = q.float() * s
                    target = ref.float() / pre_scale[None, :]
                    # Round-to-nearest INT4 with group scales: half a step, plus slack for the bf16
                    # rounding of the AWQ-rescaled weights and of the scales (seen: up to 0.54 steps).
                    tol = s * 0.55 + 1e-6
                    assert bool(((deq - target).abs() <= tol).all()), (
                        f"rank {rank} {name}: beyond INT4 rounding"
                    )


@pytest.mark.parametrize(("kind", "qformat", "tp"), list(cases()))
def test_stage_matrix(
    cli: Callable[..., Any], checkpoints: dict[str, Path], outputs: Path, kind: str, qformat: str, tp: int
) -> None:
    ckpt = checkpoints[kind]
    out = outputs / f"{kind}-{qformat}-tp{tp}"
    kv = "fp8" if qformat == "fp8" else "auto"
    result = cli("quantize", "--model", str(ckpt), "--qformat", qformat, "--kv-cache-dtype", kv,
                 "--tp", str(tp), "--out", str(out), "--json", *FAST)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    manifest = data["manifest"]
    assert data["cached"] is False
    assert manifest["validation"]["ok"] is True
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["mapping"]["tp_size"] == tp
    assert sorted(p.name for p in out.glob("rank*.safetensors")) == [
        f"rank{i}.safetensors" for i in range(tp)
    ]
    if kind == "llama31":
        assert cfg["rotary_scaling"]["rope_type"] == "llama3"
        assert cfg["rotary_base"] == 500000.0
    if kind == "mixtral":
        assert (cfg["moe"]["num_experts"], cfg["moe"]["top_k"]) == (8, 2)
    # Independent re-validation of the final directory.
    exp = Expected(arch=arch_of(ckpt), qformat=qformat, kv_cache_dtype=kv, tp=tp, pp=1, dtype="bfloat16")
    report = validate_export(out, exp)
    assert report.problems == []
    quality = manifest["quality"]
    if qformat == "full_prec":
        assert quality["measured"] is False
    else:
        assert quality["measured"] is True
        assert quality["kl_divergence"] >= 0
        assert 0 <= quality["top1_agreement"] <= 1
    check_numerics(ckpt, out, qformat, tp)
    for name, info in manifest["outputs"].items():
        assert (out / name).stat().st_size == info["bytes"]


def test_cache_hit_does_no_work(
    cli: Callable[..., Any], checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ("quantize", "--model", str(checkpoints["llama2"]), "--fp8", "--out", str(out), "--json", *FAST)
    first = cli(*args)
    assert first.exit_code == 0, first.stderr
    stamp = (out / "rank0.safetensors").stat().st_mtime_ns
    second = cli(*args)
    assert second.exit_code == 0, second.stderr
    assert json.loads(second.stdout)["cached"] is True
    assert (out / "rank0.safetensors").stat().st_mtime_ns == stamp
    # Different inputs on the same output: refused without --force, replaced with it.
    other = cli(
        "quantize", "--model", str(checkpoints["llama2"]), "--qformat", "full_prec", "--out", str(out), *FAST
    )
    assert other.exit_code == 2
    assert "built from other inputs" in other.stderr
    forced = cli(
        "quantize",
        "--model",
        str(checkpoints["llama2"]),
        "--qformat",
        "full_prec",
        "--out",
        str(out),
        "--force",
        *FAST,
    )
    assert forced.exit_code == 0, forced.stderr
    assert json.loads((out / "config.json").read_text())["quantization"]["quant_algo"] is None


@pytest.mark.parametrize(
    "problem", ["missing_shard", "truncated", "pickle_only", "unsupported_arch", "index_missing_file"]
)
def test_bad_checkpoints(cli: Callable[..., Any], tmp_path: Path, problem: str) -> None:
    ckpt = make_bad_checkpoint(tmp_path / "bad", problem)  # type: ignore[arg-type]
    out = tmp_path / "out"
    result = cli("quantize", "--model", str(ckpt), "--fp8", "--out", str(out), *FAST)
    assert result.exit_code == 2, result.stderr
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert not list(tmp_path.glob(".out*"))
    needle = {
        "missing_shard": "absent file",
        "truncated": "truncated",
        "pickle_only": "--allow-pickle",
        "unsupported_arch": "not supported",
        "index_missing_file": "does not reference",
    }[problem]
    assert needle in lines[0]


def test_validation_catches_dropped_rope_scaling(
    outputs: Path, checkpoints: dict[str, Path], cli: Callable[..., Any]
) -> None:
    """The transformers 5.x failure mode: an export without Llama-3.1's rope scaling must be refused."""
    out = outputs / "llama31-fp8-tp2"
    if not out.is_dir():
        result = cli("quantize", "--model", str(checkpoints["llama31"]), "--fp8", "--kv-cache-dtype", "fp8", "--tp", "2",
                     "--out", str(out), *FAST)  # fmt: skip
        assert result.exit_code == 0, result.stderr
    broken = outputs / "llama31-broken"
    broken.mkdir()
    for f in out.iterdir():
        (broken / f.name).symlink_to(f)
    cfg = json.loads((out / "config.json").read_text())
    cfg.pop("rotary_scaling")
    cfg["rotary_base"] = 10000.0
    (broken / "config.json").unlink()
    (broken / "config.json").write_text(json.dumps(cfg))
    (broken / "rank1.safetensors").unlink()
    exp = Expected(
        arch=arch_of(checkpoints["llama31"]),
        qformat="fp8",
        kv_cache_dtype="fp8",
        tp=2,
        pp=1,
        dtype="bfloat16",
    )
    problems = validate_export(broken, exp).problems
    assert any("rotary_scaling missing" in p for p in problems)
    assert any("rotary_base" in p for p in problems)
    assert any("rank1.safetensors is missing" in p for p in problems)


def _run_cli(args: list[str], home: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, SWALLOW_TRT_HOME=str(home))
    return subprocess.Popen(
        [sys.executable, "-m", "swallow_trt.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for(proc: subprocess.Popen[str], needle: str, timeout: float = 120) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    for line in proc.stderr:
        seen.append(line)
        if needle in line:
            return seen
        assert time.monotonic() < deadline, "".join(seen)
    raise AssertionError(f"{needle!r} never appeared:\n{''.join(seen)}")


def _no_worker_left(where: Path) -> bool:
    """No quantize worker of this test is running (its spec file lives under ``where``), whatever other
    runs on the machine are doing."""
    out = subprocess.run(
        ["pgrep", "-f", f"swallow_trt.quantize.worker {where}"], capture_output=True, text=True
    )
    return out.stdout.strip() == ""


def test_kill_9_mid_export_then_rerun_is_identical(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    args = [
        "quantize",
        "--model",
        str(checkpoints["llama31"]),
        "--fp8",
        "--kv-cache-dtype",
        "fp8",
        "--tp",
        "2",
        *FAST,
    ]
    clean = tmp_path / "clean"
    ref = _run_cli([*args, "--out", str(clean)], tmp_path)
    assert ref.wait(300) == 0, ref.stderr.read() if ref.stderr else ""
    killed = tmp_path / "killed"
    proc = _run_cli([*args, "--out", str(killed)], tmp_path)
    _wait_for(proc, "exporting")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while not _no_worker_left(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _no_worker_left(tmp_path), "the worker outlived its killed parent"
    assert not killed.exists(), "a killed run must leave nothing at the final path"
    again = _run_cli([*args, "--out", str(killed)], tmp_path)
    assert again.wait(300) == 0
    assert not list(tmp_path.glob(".killed.tmp-*")), "debris of the killed run must be removed"
    a = json.loads((clean / "manifest.json").read_text())["outputs"]
    b = json.loads((killed / "manifest.json").read_text())["outputs"]
    assert a == b  # same files, same sizes, same SHA-256


def test_ctrl_c_leaves_nothing(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _run_cli(
        ["quantize", "--model", str(checkpoints["llama2"]), "--fp8", "--out", str(out), *FAST], tmp_path
    )
    _wait_for(proc, "loading torch")
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130
    assert not out.exists()
    assert not list(tmp_path.glob(".out.tmp-*"))
    deadline = time.monotonic() + 20
    while not _no_worker_left(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _no_worker_left(tmp_path)


def test_two_runs_on_one_output_serialise(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["quantize", "--model", str(checkpoints["mistral"]), "--fp8", "--out", str(out), *FAST]
    first = _run_cli(args, tmp_path)
    _wait_for(first, "loading torch")
    second = _run_cli([*args, "--json"], tmp_path)
    out2, err2 = second.communicate(timeout=300)
    out1, err1 = first.communicate(timeout=300)
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    assert "waiting for it to finish" in err2
    assert out1.startswith("built: ")
    assert json.loads(out2)["cached"] is True  # it waited, then found the first run's output
    assert (out / "manifest.json").is_file()


@pytest.mark.parametrize(
    ("kind", "qformat", "kv", "tp"),
    [("llama2", "int8_sq", "int8", 2), ("llama31", "w4a8_awq", "fp8", 2), ("mistral", "int8_wo", "auto", 1)],
)
def test_other_formats(
    cli: Callable[..., Any],
    checkpoints: dict[str, Path],
    outputs: Path,
    kind: str,
    qformat: str,
    kv: str,
    tp: int,
) -> None:
    out = outputs / f"{kind}-{qformat}-{kv}-tp{tp}"
    result = cli("quantize", "--model", str(checkpoints[kind]), "--qformat", qformat, "--kv-cache-dtype", kv,
                 "--tp", str(tp), "--out", str(out), *FAST)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    quant = json.loads((out / "config.json").read_text())["quantization"]
    assert (
        quant["quant_algo"]
        == {"int8_sq": "W8A8_SQ_PER_CHANNEL", "w4a8_awq": "W4A8_AWQ", "int8_wo": "W8A16"}[qformat]
    )
    assert quant.get("kv_cache_quant_algo") == {"int8": "INT8", "fp8": "FP8", "auto": None}[kv]


# --- the 2026 generation (issue 13) --------------------------------------------------------------


@pytest.fixture(scope="session")
def qwen3_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt-2026") / "qwen3", "qwen3")


@pytest.mark.parametrize("tp", [1, 2])
@pytest.mark.parametrize("qformat", ["fp8", "int4_awq"])
def test_qwen3_quantizes_and_validates(
    cli: Callable[..., Any], qwen3_checkpoint: Path, outputs: Path, qformat: str, tp: int
) -> None:
    out = outputs / f"qwen3-{qformat}-tp{tp}"
    result = cli("quantize", "--model", str(qwen3_checkpoint), "--qformat", qformat, "--tp", str(tp),
                 *FAST, "--out", str(out), "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    manifest = json.loads(result.stdout)["manifest"]
    assert manifest["validation"]["ok"] is True
    cfg = json.loads((out / "config.json").read_text())
    # Written by the stage: modelopt 0.47 leaves them out, and QWenConfig defaults attn_bias to True.
    assert (cfg["architecture"], cfg["qwen_type"], cfg["attn_bias"]) == ("Qwen3ForCausalLM", "qwen3", False)
    assert cfg["head_size"] == 128  # independent of hidden 512 / 8 heads
    assert cfg["rotary_base"] == 1e6
    rank0 = load_file(out / "rank0.safetensors")
    assert rank0["transformer.layers.0.attention.q_layernorm.weight"].shape == (128,)
    assert rank0["transformer.layers.0.attention.k_layernorm.weight"].shape == (128,)
    # The validator refuses the export as modelopt wrote it (no qwen_type, no attn_bias).
    exp = Expected(arch=arch_of(qwen3_checkpoint), qformat=qformat, kv_cache_dtype="auto", tp=tp, pp=1,
                   dtype="bfloat16")  # fmt: skip
    assert not validate_export(out, exp).problems
    (tmp := outputs / f"qwen3-{qformat}-tp{tp}-raw").mkdir()
    for f in out.glob("rank*.safetensors"):
        (tmp / f.name).symlink_to(f)
    raw = {k: v for k, v in cfg.items() if k not in ("qwen_type", "attn_bias")}
    (tmp / "config.json").write_text(json.dumps(raw))
    problems = validate_export(tmp, exp).problems
    assert any("qwen_type None" in p for p in problems)
    assert any("attn_bias None" in p for p in problems)


def test_qwen3_w4a8_awq_quantizes_and_validates(
    cli: Callable[..., Any], qwen3_checkpoint: Path, outputs: Path
) -> None:
    """Issue 13 asks for w4a8_awq "where ModelOpt exports them": 0.47 does for dense Qwen3 (packed INT4
    weights with AWQ pre-quant scales and FP8 activations), the QK-norms included."""
    out = outputs / "qwen3-w4a8_awq-tp2"
    result = cli("quantize", "--model", str(qwen3_checkpoint), "--qformat", "w4a8_awq", "--tp", "2",
                 *FAST, "--out", str(out), "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["manifest"]["validation"]["ok"] is True
    quant = json.loads((out / "config.json").read_text())["quantization"]
    assert (quant["quant_algo"], quant["pre_quant_scale"]) == ("W4A8_AWQ", True)
    for rank in (0, 1):
        weights = load_file(out / f"rank{rank}.safetensors")
        assert weights["transformer.layers.0.attention.q_layernorm.weight"].shape == (128,)
        assert weights["transformer.layers.0.mlp.fc.weight"].dtype == torch.int8  # two INT4 per byte


def test_qwen3_moe_normalisation_disagreeing_with_norm_topk_prob_is_caught(tmp_path: Path) -> None:
    """A Qwen3-MoE checkpoint config whose MoE normalisation is NONE (QWenConfig.from_hugging_face's own
    choice) while HF says norm_topk_prob: true fails validation; RENORMALIZE passes the same check."""
    from swallow_trt.quantize.validate import MOE_RENORMALIZE, Report, check_config
    from swallow_trt.registry import resolve_model

    arch = resolve_model("qwen3-30b-a3b").arch
    assert arch.norm_topk_prob
    exp = Expected(arch=arch, qformat="fp8", kv_cache_dtype="fp8", tp=1, pp=1, dtype="bfloat16")
    good = {
        "architecture": "Qwen3MoeForCausalLM", "qwen_type": "qwen3_moe", "attn_bias": False,
        "vocab_size": arch.vocab_size, "hidden_size": arch.hidden_size, "intermediate_size": arch.intermediate_size,
        "num_hidden_layers": arch.num_hidden_layers, "num_attention_heads": arch.num_attention_heads,
        "num_key_value_heads": arch.num_key_value_heads, "max_position_embeddings": arch.max_position_embeddings,
        "head_size": arch.head_dim, "rotary_base": arch.rope_theta, "dtype": "bfloat16",
        "mapping": {"tp_size": 1, "pp_size": 1, "world_size": 1, "moe_tp_size": 1, "moe_ep_size": 1},
        "moe": {"num_experts": 128, "top_k": 8, "normalization_mode": MOE_RENORMALIZE},
        "quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8"},
    }  # fmt: skip
    ok = Report()
    check_config(good, exp, ok)
    assert ok.problems == []
    wrong = {**good, "moe": {**good["moe"], "normalization_mode": 0}}
    bad = Report()
    check_config(wrong, exp, bad)
    assert bad.problems == ["moe.normalization_mode 0, HF norm_topk_prob true needs 1 (RENORMALIZE)"]
    # complete_config writes the mode HF's norm_topk_prob implies into an exported config.
    from swallow_trt.quantize.validate import complete_config

    (tmp_path / "config.json").write_text(json.dumps(wrong))
    assert "moe.normalization_mode=1" in complete_config(tmp_path, arch)
    fixed = Report()
    check_config(json.loads((tmp_path / "config.json").read_text()), exp, fixed)
    assert fixed.problems == []
