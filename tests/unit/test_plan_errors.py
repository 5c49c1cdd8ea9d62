"""Every validation rule of ``swallow-trt plan`` fails as one ``error: <fact> — <hint>`` line, exit 2.

Each error case has a valid neighbour (see ``test_valid_neighbour_plans``) so that a rule which
rejects everything cannot make these tests pass.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from swallow_trt.cli.main import app
from swallow_trt.errors import SwallowTrtError, UnknownModelError
from swallow_trt.registry import load_registry
from tests.conftest import write_hf_config
from tests.fixtures.cli import usage_error

MX = "tokyotech-llm/Swallow-MX-8x7b-NVE-v0.1"
MS = "tokyotech-llm/Swallow-MS-7b-v0.1"
S7B = "tokyotech-llm/Swallow-7b-hf"
S13B = "tokyotech-llm/Swallow-13b-hf"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SWALLOW_TRT_DEBUG", raising=False)
    monkeypatch.setenv("SWALLOW_TRT_HOST_RAM_GIB", "1024")
    monkeypatch.setenv("SWALLOW_TRT_HOME", str(tmp_path / "home"))


def plan(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, ["plan", *args], env=env)


def write_checkpoint(directory: Path, **overrides: object) -> Path:
    """48 heads over 12 KV heads: TP 8 divides the heads but can neither split nor replicate the KV heads."""
    shape: dict[str, object] = {
        "hidden_size": 768,
        "intermediate_size": 2048,
        "num_hidden_layers": 2,
        "num_attention_heads": 48,
        "num_key_value_heads": 12,
        "vocab_size": 1000,
    }
    return write_hf_config(directory, **{**shape, **overrides})


def hopper_text() -> str:
    return resources.files("swallow_trt.profiles").joinpath("hopper.yaml").read_text(encoding="utf-8")


def replace_line(text: str, old: str, new: list[str]) -> tuple[str, int]:
    """Replace the one line equal to ``old`` by ``new``; return the text and the 1-based line of new[0]."""
    lines = text.splitlines()
    assert lines.count(old) == 1, old
    index = lines.index(old)
    lines[index : index + 1] = new
    return "\n".join(lines) + "\n", index + 1


# --- 1. unknown model -----------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["Llama-3.1-Swallow-8B-Instruct-v0.9", "7b", "80b"])
def test_unknown_model_suggests_real_ids(spec: str) -> None:
    message, hint = usage_error(plan("--model", spec, "--target", "hopper"))
    assert "unknown model" in message
    assert repr(spec) in message
    match = re.search(r"did you mean (.+?)\?", hint)
    assert match, hint
    suggested = match.group(1).split(" or ")
    assert suggested
    registry = load_registry()
    for name in suggested:
        assert registry.get(name) is not None, f"{name!r} is not a real model id or alias"


def test_unknown_model_versioned_suggests_same_family() -> None:
    _, hint = usage_error(plan("--model", "Llama-3.1-Swallow-8B-Instruct-v0.9", "--target", "hopper"))
    assert "tokyotech-llm/Llama-3.1-Swallow-8B-Instruct-v0." in hint


def test_missing_checkpoint_directory(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-checkpoint"
    message, hint = usage_error(plan("--model", str(missing), "--target", "hopper"))
    assert str(missing) in message
    assert "does not exist" in message
    assert "swallow-trt models" in hint


# --- 2. unknown target ----------------------------------------------------------------------------


def test_unknown_target_suggests_hopper() -> None:
    message, hint = usage_error(plan("--model", "8b", "--target", "hoper"))
    assert "unknown target 'hoper'" in message
    assert "did you mean hopper" in hint


# --- 3. FP8-class formats on Ampere ---------------------------------------------------------------


@pytest.mark.parametrize(("target", "sm"), [("ampere", 80), ("ampere-sm86", 86)])
@pytest.mark.parametrize(
    ("flags", "fmt"),
    [(["--fp8"], "fp8"), (["--qformat", "w4a8_awq"], "w4a8_awq"), (["--qformat", "nvfp4"], "nvfp4")],
)
def test_fp8_class_formats_refused_on_ampere(target: str, sm: int, flags: list[str], fmt: str) -> None:
    message, hint = usage_error(plan("--model", "8b", "--target", target, *flags))
    assert fmt in message
    assert f"sm{sm}" in message
    assert target in message
    assert "--int4-awq" in hint
    assert "int8_sq" in hint


# --- 4. AWQ on Mixtral ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "fmt"), [(["--int4-awq"], "int4_awq"), (["--qformat", "w4a8_awq"], "w4a8_awq")]
)
def test_awq_refused_for_swallow_mx(flags: list[str], fmt: str) -> None:
    message, hint = usage_error(plan("--model", MX, "--target", "hopper", *flags))
    assert fmt in message
    assert "AWQ" in message
    assert MX in message
    assert "--fp8" in hint


# --- 5. TP vs attention heads ---------------------------------------------------------------------


def test_tp_must_divide_attention_heads() -> None:
    message, hint = usage_error(plan("--model", S13B, "--tp", "3", "--gpus", "4", "--target", "hopper"))
    assert "TP 3" in message
    assert "40 attention heads" in message
    assert S13B in message
    assert "--tp" in hint
    offered = [int(n) for n in re.findall(r"\d+", hint.split("--tp", 1)[1])]
    assert offered
    assert all(40 % n == 0 for n in offered), hint


# --- 6. TP vs KV heads ----------------------------------------------------------------------------


def test_tp_can_neither_split_nor_replicate_kv_heads(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "tiny-gqa")
    message, hint = usage_error(plan("--model", str(ckpt), "--tp", "8", "--gpus", "8", "--target", "hopper"))
    assert "TP 8" in message
    assert "12 KV heads" in message
    assert "--tp" in hint
    assert "8" not in re.findall(r"\d+", hint)


# --- 7. INT4-AWQ group size -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "tp", "dim", "per_rank"),
    [(S7B, 4, "intermediate_size", 2752), (S13B, 8, "intermediate_size", 1728)],
)
def test_awq_group_divisibility_registry(model: str, tp: int, dim: str, per_rank: int) -> None:
    args = ("--model", model, "--int4-awq", "--tp", str(tp), "--gpus", str(tp), "--target", "hopper")
    message, hint = usage_error(plan(*args))
    assert "int4_awq" in message
    assert dim in message
    assert str(per_rank) in message
    assert "128" in message
    assert "--tp" in hint
    assert "--fp8" in hint


def test_awq_group_divisibility_hidden_size(tmp_path: Path) -> None:
    # hidden 768 / 4 = 192 (not a multiple of 128); intermediate 2048 / 4 = 512 is.
    ckpt = write_checkpoint(tmp_path / "tiny-awq", num_attention_heads=12, num_key_value_heads=4)
    args = ("--model", str(ckpt), "--qformat", "w4a8_awq", "--tp", "4", "--gpus", "4", "--target", "hopper")
    message, hint = usage_error(plan(*args))
    assert "w4a8_awq" in message
    assert "hidden_size" in message
    assert "192" in message
    assert "--tp" in hint


# --- 8. max_seq_len above the model's positions ---------------------------------------------------


def test_max_seq_len_above_positions() -> None:
    message, hint = usage_error(plan("--model", MS, "--max-seq-len", "8192", "--target", "hopper"))
    assert "8192" in message
    assert "4096 positions" in message
    assert "--max-seq-len 4096" in hint


# --- 9. MoE tp x ep -------------------------------------------------------------------------------


@pytest.mark.parametrize(("moe_tp", "moe_ep"), [("2", "2"), (None, "4")])
def test_moe_tp_times_ep_must_equal_tp(moe_tp: str | None, moe_ep: str) -> None:
    args = ["--model", MX, "--tp", "2", "--gpus", "2", "--fp8", "--target", "hopper", "--moe-ep-size", moe_ep]
    if moe_tp is not None:
        args += ["--moe-tp-size", moe_tp]
    message, hint = usage_error(plan(*args))
    assert "moe_tp_size x moe_ep_size must equal tp (2)" in message
    assert "--moe-tp-size" in hint
    assert "--moe-ep-size" in hint


# --- 10. does not fit -----------------------------------------------------------------------------


@pytest.mark.parametrize("where", [["--target", "ampere"], ["--target", "hopper", "--gpu", "H100-SXM5-80GB"]])
def test_does_not_fit_names_shortfall_and_what_would_fit(where: list[str]) -> None:
    message, hint = usage_error(plan("--model", "70b", "--qformat", "full_prec", *where))
    assert "does not fit" in message
    assert re.search(r"short by \d+(\.\d+)? GiB", message), message
    assert hint.startswith("what would fit:"), hint
    assert re.search(r"--(fp8|int4-awq|qformat \w+|tp \d+)", hint), hint
    gpu = re.search(r"does not fit on (\S+) \(", message)
    assert gpu, message
    # Every suggestion must itself be a valid plan on that GPU.
    target = where[1]
    for option in hint.removeprefix("what would fit:").split(";"):
        alt = plan("--model", "70b", "--target", target, "--gpu", gpu.group(1), *option.split())
        assert alt.exit_code == 0, (option, alt.stderr)


# --- 11. TP above the target's GPU count ----------------------------------------------------------


def test_tp_exceeds_target_gpus() -> None:
    message, hint = usage_error(plan("--model", "70b", "--tp", "4", "--fp8", "--target", "hopper"))
    assert "4" in message
    assert "1 GPU" in message
    assert "hopper" in message
    assert "--gpus 4" in hint
    assert "h100x4" in hint


# --- 12. malformed profile YAML -------------------------------------------------------------------


def test_profile_yaml_syntax_error(tmp_path: Path) -> None:
    text, line = replace_line(hopper_text(), "  max_batch_size: 256", ["  max_batch_size: 256: 512"])
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    message, hint = usage_error(plan("--model", "8b", "--profile", str(path)))
    assert f"{path}:{line}:" in message
    assert "malformed YAML" in message
    assert "YAML" in hint


def test_profile_unknown_build_key(tmp_path: Path) -> None:
    text, line = replace_line(hopper_text(), "build:", ["build:", "  max_batch_sise: 8"])
    line += 1  # the inserted key sits on the line after "build:"
    path = tmp_path / "unknown-key.yaml"
    path.write_text(text, encoding="utf-8")
    message, hint = usage_error(plan("--model", "8b", "--profile", str(path)))
    assert f"{path}:{line}:" in message
    assert "build.max_batch_sise" in message
    assert "unknown key" in message
    assert "max_batch_size" in message  # the allowed keys are listed
    assert hint


def test_profile_wrong_type(tmp_path: Path) -> None:
    text, line = replace_line(hopper_text(), "  max_batch_size: 256", ['  max_batch_size: "lots"'])
    path = tmp_path / "wrong-type.yaml"
    path.write_text(text, encoding="utf-8")
    message, hint = usage_error(plan("--model", "8b", "--profile", str(path)))
    assert f"{path}:{line}:" in message
    assert "build.max_batch_size" in message
    assert "lots" in message
    assert "int" in message
    assert hint


# --- 13. format flags -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "names"),
    [(["--fp8", "--int4-awq"], ("fp8", "int4_awq")), (["--fp8", "--qformat", "int8_sq"], ("fp8", "int8_sq"))],
)
def test_conflicting_format_flags(flags: list[str], names: tuple[str, ...]) -> None:
    message, hint = usage_error(plan("--model", "8b", "--target", "hopper", *flags))
    assert "conflicting" in message
    for name in names:
        assert name in message
    assert "--fp8" in hint
    assert "--int4-awq" in hint
    assert "--qformat" in hint


def test_unknown_qformat() -> None:
    message, hint = usage_error(plan("--model", "8b", "--target", "hopper", "--qformat", "int3"))
    assert "unknown --qformat 'int3'" in message
    assert "int4_awq" in hint
    assert "fp8" in hint


# --- 14. non-positive numbers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--tp", "0"), ("--max-batch-size", "-1"), ("--pp", "0"), ("--gpus", "0"), ("--max-seq-len", "0")],
)
def test_non_positive_numbers(flag: str, value: str) -> None:
    message, hint = usage_error(plan("--model", "8b", "--target", "hopper", flag, value))
    assert flag in message
    assert value in message
    assert "at least 1" in message
    assert flag in hint


# --- 15. --target and --profile -------------------------------------------------------------------


def test_target_and_profile_both_given(tmp_path: Path) -> None:
    path = tmp_path / "hopper.yaml"
    path.write_text(hopper_text(), encoding="utf-8")
    message, hint = usage_error(plan("--model", "8b", "--target", "hopper", "--profile", str(path)))
    assert "--target" in message
    assert "--profile" in message
    assert hint


# --- 16. SWALLOW_TRT_DEBUG ------------------------------------------------------------------------


def test_debug_env_raises_the_error() -> None:
    result = plan("--model", "80b", "--target", "hopper", env={"SWALLOW_TRT_DEBUG": "1"})
    assert isinstance(result.exception, SwallowTrtError)
    assert isinstance(result.exception, UnknownModelError)
    assert "80b" in result.exception.message
    assert not result.stderr.startswith("error: ")


# --- valid neighbours -----------------------------------------------------------------------------


NEIGHBOURS = {
    "known id": "--model tokyotech-llm/Llama-3.1-Swallow-8B-Instruct-v0.5 --target hopper",
    "alias 70b": "--model 70b --target hopper",
    "target hopper": "--model 8b --target hopper",
    "int4-awq on ampere": "--model 8b --int4-awq --target ampere",
    "int8_sq on ampere-sm86": "--model 8b --qformat int8_sq --target ampere-sm86",
    "fp8 on Swallow-MX": f"--model {MX} --fp8 --target hopper",
    "13b tp 4": f"--model {S13B} --tp 4 --gpus 4 --target hopper",
    "7b int4-awq tp 2 (5504 = 43 x 128)": f"--model {S7B} --int4-awq --tp 2 --gpus 2 --target hopper",
    "MS max-seq-len 4096": f"--model {MS} --max-seq-len 4096 --target hopper",
    "MX moe 1x2": f"--model {MX} --fp8 --target hopper --tp 2 --gpus 2 --moe-tp-size 1 --moe-ep-size 2",
    "70b full_prec on h100x4": "--model 70b --qformat full_prec --target h100x4",
    "70b tp 4 fp8 on h100x4": "--model 70b --tp 4 --fp8 --target h100x4",
    "70b tp 4 fp8 with --gpus 4": "--model 70b --tp 4 --fp8 --target hopper --gpus 4",
    "qformat int8_sq": "--model 8b --qformat int8_sq --target hopper",
    "tp 1 max-batch-size 1": "--model 8b --tp 1 --max-batch-size 1 --target hopper",
}


@pytest.mark.parametrize("args", list(NEIGHBOURS.values()), ids=list(NEIGHBOURS))
def test_valid_neighbour_plans(args: str) -> None:
    result = plan(*args.split(), "--json")
    assert result.exit_code == 0, result.stderr
    assert result.exception is None
    assert result.stderr == ""
    data = json.loads(result.stdout)
    assert data["gpus"]
    assert any(g["fits"] for g in data["gpus"])


def test_valid_neighbour_local_checkpoint(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "tiny-gqa")
    for tp in ("4", "6"):
        result = plan("--model", str(ckpt), "--tp", tp, "--gpus", "8", "--target", "hopper", "--json")
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["tp"] == int(tp)
    awq = write_checkpoint(tmp_path / "tiny-awq", num_attention_heads=12, num_key_value_heads=4)
    args = ("--model", str(awq), "--qformat", "w4a8_awq", "--tp", "2", "--gpus", "2", "--target", "hopper")
    result = plan(*args)
    assert result.exit_code == 0, result.stderr


def test_valid_neighbour_profile_file(tmp_path: Path) -> None:
    path = tmp_path / "hopper.yaml"
    path.write_text(hopper_text(), encoding="utf-8")
    result = plan("--model", "8b", "--profile", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["target"]["name"] == "hopper"


def test_debug_env_off_for_valid_plan() -> None:
    result = plan("--model", "8b", "--target", "hopper", env={"SWALLOW_TRT_DEBUG": "1"})
    assert result.exit_code == 0
    assert result.exception is None


# --- the 2026 generation: refused repos and runtimes ---------------------------------------------

AWQ_INT4 = [f"tokyotech-llm/Qwen3-Swallow-{s}-RL-v0.2-AWQ-INT4" for s in ("8B", "30B-A3B", "32B")]


@pytest.mark.parametrize("repo", AWQ_INT4)
@pytest.mark.parametrize("command", ["plan", "build"])
def test_swallow_awq_int4_refused(repo: str, command: str) -> None:
    args = [command, "--model", repo, "--target", "hopper"] + (["--dry-run"] if command == "build" else [])
    message, hint = usage_error(CliRunner().invoke(app, args))
    assert "desc_act true" in message
    rl = repo.removesuffix("-AWQ-INT4")
    moe = "A3B" in repo
    flag = "--fp8" if moe else "--int4-awq"
    assert hint.startswith(f"quantize the BF16 RL model {rl} with {flag} ")
    # The valid neighbour: the BF16 RL model it names plans with the flag the hint gives.
    ok = plan("--model", rl, flag, "--target", "hopper", "--gpu", "H200-SXM-141GB", "--json")
    assert ok.exit_code == 0, ok.stderr


def test_private_gptq_int4_refused() -> None:
    message, hint = usage_error(plan("--model", "Qwen3-Swallow-8B-RL-v0.2-GPTQ-INT4", "--target", "hopper"))
    assert "made private on 2026-02-23" in message
    assert "tokyotech-llm/Qwen3-Swallow-8B-RL-v0.2 with --int4-awq" in hint


def qwen3_config(directory: Path, **overrides: object) -> Path:
    shape: dict[str, object] = {"architectures": ["Qwen3ForCausalLM"], "hidden_size": 1024,
                                "intermediate_size": 3072, "num_hidden_layers": 4, "num_attention_heads": 16,
                                "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936}  # fmt: skip
    return write_hf_config(directory, **{**shape, **overrides})


def test_local_awq_desc_act_checkpoint_refused(tmp_path: Path) -> None:
    awq = {"quant_method": "awq", "bits": 4, "group_size": 128, "desc_act": True,
           "meta": {"quantizer": ["gptqmodel:2.2.0"]}}  # fmt: skip
    ckpt = qwen3_config(tmp_path / "Qwen3-Swallow-8B-RL-v0.2-AWQ-INT4", quantization_config=awq)
    message, hint = usage_error(plan("--model", str(ckpt), "--target", "hopper"))
    assert "desc_act true" in message
    # Recognised by its directory name: the hint names the RL model.
    assert "tokyotech-llm/Qwen3-Swallow-8B-RL-v0.2 with --int4-awq" in hint
    other = qwen3_config(tmp_path / "my-awq", quantization_config=awq)
    _, hint = usage_error(plan("--model", str(other), "--target", "hopper"))
    assert "with --int4-awq" in hint
    # Neighbour: the same shapes without the AWQ quantization_config plan.
    plain = qwen3_config(tmp_path / "plain")
    assert plan("--model", str(plain), "--fp8", "--target", "hopper").exit_code == 0


@pytest.mark.parametrize("value", ["tpu", "tensorrt", ""])
def test_unknown_runtime(value: str) -> None:
    message, hint = usage_error(plan("--model", "qwen3-8b", "--runtime", value, "--target", "hopper"))
    assert f"unknown --runtime {value!r}" in message
    assert "engine, pytorch or auto" in hint


@pytest.mark.parametrize(
    "model", ["gpt-oss-20b", "gpt-oss-120b", "tokyotech-llm/GPT-OSS-Swallow-120B-RL-v0.1-MXFP4"]
)
def test_runtime_engine_refused_for_gpt_oss(model: str) -> None:
    message, hint = usage_error(plan("--model", model, "--runtime", "engine", "--target", "h100x4"))
    assert "has no TensorRT engine model" in message
    assert "--runtime pytorch" in hint
    # build --runtime engine refuses it the same way (build's default, auto, picks pytorch).
    message, _ = usage_error(
        CliRunner().invoke(
            app, ["build", "--model", model, "--target", "h100x4", "--runtime", "engine", "--dry-run"]
        )
    )
    assert "has no TensorRT engine model" in message
    for runtime in ("auto", "pytorch"):
        ok = plan("--model", model, "--runtime", runtime, "--target", "h100x4", "--json")
        assert ok.exit_code == 0, ok.stderr
        assert json.loads(ok.stdout)["runtime"] == "pytorch"


def test_runtime_pytorch_refused_for_engine_only_families() -> None:
    message, hint = usage_error(plan("--model", "8b", "--runtime", "pytorch", "--target", "hopper"))
    assert "engine only" in message
    assert hint == "use --runtime engine"
    for runtime in ("engine", "pytorch"):
        assert plan("--model", "qwen3-8b", "--runtime", runtime, "--target", "hopper").exit_code == 0


@pytest.mark.parametrize(
    ("model", "args", "needle"),
    [
        ("qwen3-8b", ["--qformat", "mxfp4"], "no engine can use it"),
        ("gpt-oss-120b", ["--qformat", "mxfp4"], "not an mxfp4 checkpoint"),
        ("tokyotech-llm/GPT-OSS-Swallow-120B-RL-v0.1-MXFP4", ["--qformat", "full_prec"], "ships MXFP4 experts"),
        ("gpt-oss-120b", ["--fp8"], "not a PyTorch-runtime format"),
    ],
)  # fmt: skip
def test_mxfp4_only_as_shipped(model: str, args: list[str], needle: str) -> None:
    message, _ = usage_error(plan("--model", model, *args, "--target", "h100x4"))
    assert needle in message


def test_mxfp4_needs_hopper() -> None:
    message, _ = usage_error(
        plan("--model", "tokyotech-llm/GPT-OSS-Swallow-20B-RL-v0.1-MXFP4", "--target", "ada")
    )
    assert "mxfp4 is not supported on target ada" in message
    ok = plan("--model", "tokyotech-llm/GPT-OSS-Swallow-20B-RL-v0.1-MXFP4", "--target", "hopper")
    assert ok.exit_code == 0, ok.stderr


def test_qwen3_moe_quantised_goes_to_the_runtime_that_can_export_it() -> None:
    """ModelOpt 0.47 cannot export a quantised Qwen3-MoE TensorRT-LLM checkpoint: --runtime engine with
    fp8 is refused before anything runs, and auto (the default) plans the PyTorch runtime instead of a
    plan that build would refuse; full_prec stays on the engine."""
    message, hint = usage_error(
        plan("--model", "qwen3-30b-a3b", "--runtime", "engine", "--fp8", "--target", "ada")
    )
    assert "ModelOpt 0.47" in message
    assert "--runtime pytorch" in hint
    auto = plan("--model", "qwen3-30b-a3b", "--target", "ada", "--json")
    assert auto.exit_code == 0, auto.output
    assert json.loads(auto.stdout)["runtime"] == "pytorch"
    full = plan("--model", "qwen3-30b-a3b", "--target", "hopper", "--qformat", "full_prec", "--json")
    assert full.exit_code == 0, full.output
    assert json.loads(full.stdout)["runtime"] == "engine"
