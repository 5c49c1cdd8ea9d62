"""The model of trtllm-build's post-parse rules (builders/engine_rules.py): branch for branch against
the stand-in's independent reading of upstream's code, and what plan / build --dry-run show for the
issue's three reference commands."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from swallow_trt.builders.build import build_timing_cache
from swallow_trt.builders.engine_rules import (
    PINNED_IMAGE_TAG,
    AttentionRequest,
    pinned_tensorrt,
    timing_cache_name,
    upstream_attention,
    upstream_max_num_tokens,
)
from swallow_trt.builders.environment import BuildEnvironment
from swallow_trt.builders.plan import PlanRequest, make_plan
from swallow_trt.hw import DetectedGpu
from swallow_trt.quantize.formats import FORMATS

ROOT = Path(__file__).resolve().parents[2]


def _stub() -> ModuleType:
    loader = SourceFileLoader("trtllm_build_stub", str(ROOT / "tests" / "stubs" / "bin" / "trtllm-build"))
    module = ModuleType(loader.name)
    loader.exec_module(module)
    return module


STUB = _stub()
ALGOS = sorted({f.quant_algo for f in FORMATS.values()}, key=str)
BOOLS = (False, True)


@pytest.mark.parametrize(
    ("sm", "algo", "kv_algo"), list(itertools.product((80, 86, 89, 90, 100), ALGOS, (None, "FP8", "INT8")))
)
def test_attention_rules_match_the_stand_in(sm: int, algo: str | None, kv_algo: str | None) -> None:
    for fmha, paged, fp8 in itertools.product(BOOLS, BOOLS, BOOLS):
        ours = upstream_attention(sm, algo, kv_algo, AttentionRequest(fmha, paged, fp8))
        config: dict[str, Any] = {
            "max_seq_len": 4096,
            "plugin_config": {
                "context_fmha": fmha,
                "use_paged_context_fmha": paged,
                "use_fp8_context_fmha": fp8,
            },
        }
        warnings = STUB.post_parse(config, {"quant_algo": algo, "kv_cache_quant_algo": kv_algo}, sm)
        plugin = config["plugin_config"]
        assert (ours.context_fmha, ours.use_paged_context_fmha, ours.use_fp8_context_fmha) == (
            plugin["context_fmha"], plugin["use_paged_context_fmha"], plugin["use_fp8_context_fmha"],
        ), (fmha, paged, fp8)  # fmt: skip
        # Each setting we say upstream changes comes with upstream's own log line.
        for message in ours.changes.values():
            assert any(message in w for w in warnings), (message, warnings)
        # Fixed point: what upstream builds, asked for explicitly, is left as it is.
        again = upstream_attention(sm, algo, kv_algo, AttentionRequest(
            ours.context_fmha, ours.use_paged_context_fmha, ours.use_fp8_context_fmha))  # fmt: skip
        assert not again.changes


@pytest.mark.parametrize(
    ("tokens", "batch", "seq", "inp", "fmha", "expected"),
    [
        (8192, 256, 8192, 4096, True, 8192),
        (8192, 1, 2048, 1024, True, 2048),  # clipped to max_batch_size x max_seq_len
        (16, 8, 4096, 2048, True, 32),  # raised to tokens_per_block
        (512, 8, 4096, 2048, False, 2048),  # raised to max_input_len without context FMHA
        (20000, 64, 8192, 4096, True, 20000),  # above 16384: a warning, not a change
    ],
)
def test_max_num_tokens_clamps_match_the_stand_in(
    tokens: int, batch: int, seq: int, inp: int, fmha: bool, expected: int
) -> None:
    ours, why = upstream_max_num_tokens(tokens, max_batch_size=batch, max_seq_len=seq, max_input_len=inp,
                                        tokens_per_block=32, context_fmha=fmha)  # fmt: skip
    config: dict[str, Any] = {"max_num_tokens": tokens, "max_batch_size": batch, "max_seq_len": seq,
                              "max_input_len": inp, "plugin_config": {"context_fmha": fmha}}  # fmt: skip
    STUB.post_parse(config, {}, 90)
    assert ours == config["max_num_tokens"] == expected
    assert (why is None) == (tokens == expected)


def test_int4_awq_on_hopper_keeps_chunked_context_with_a_bf16_kv_cache() -> None:
    plan = make_plan(PlanRequest(model="8b", target="hopper", qformat="int4_awq"))
    s = plan.settings
    assert plan.kv_cache_dtype == "auto"
    assert "twice the KV memory" in s.kv_cache_dtype.reason
    assert "--kv-cache-dtype fp8" in s.kv_cache_dtype.reason
    assert (s.use_paged_context_fmha.value, s.chunked_context.value, s.use_fp8_context_fmha.value) == (
        True,
        True,
        False,
    )


def test_explicit_fp8_kv_wins_and_the_plan_says_chunked_context_is_off() -> None:
    plan = make_plan(PlanRequest(model="8b", target="hopper", qformat="int4_awq", kv_cache_dtype="fp8"))
    s = plan.settings
    assert plan.kv_cache_dtype == "fp8"
    assert s.kv_cache_dtype.reason == "--kv-cache-dtype given"
    assert s.use_paged_context_fmha.value is False
    assert (
        "FP8 Paged Context FMHA is disabled because FP8 context FMHA is disabled"
        in s.use_paged_context_fmha.reason
    )
    assert s.chunked_context.value is False
    assert "--kv-cache-dtype auto keeps it" in s.chunked_context.reason
    assert any(n.startswith("chunked context is off") for n in plan.notes)
    argv = plan.commands["engine"]
    assert argv[argv.index("--use_paged_context_fmha") + 1] == "disable"


def test_int8_kv_loses_paged_context_fmha_everywhere() -> None:
    plan = make_plan(PlanRequest(model="8b", target="ampere", qformat="int4_awq", kv_cache_dtype="int8"))
    assert plan.settings.use_paged_context_fmha.value is False
    assert "int8 kv cache" in plan.settings.use_paged_context_fmha.reason
    assert plan.settings.chunked_context.value is False


def test_without_chunked_context_max_num_tokens_must_cover_the_prompt() -> None:
    from swallow_trt.errors import InvalidCombinationError

    with pytest.raises(InvalidCombinationError) as info:
        make_plan(PlanRequest(model="8b", target="hopper", qformat="int4_awq", kv_cache_dtype="fp8",
                              max_num_tokens=1024))  # fmt: skip
    assert "--kv-cache-dtype auto" in (info.value.hint or "")
    # With chunked context kept, a step smaller than the prompt is fine.
    plan = make_plan(PlanRequest(model="8b", target="hopper", qformat="int4_awq", max_num_tokens=1024))
    assert plan.max_num_tokens == 1024
    assert plan.settings.chunked_context.value


def test_profile_can_prefer_the_fp8_kv_cache(tmp_path: Path) -> None:
    text = (ROOT / "profiles" / "hopper.yaml").read_text()
    assert "keep_chunked_context: true" in text
    mine = tmp_path / "small-kv.yaml"
    mine.write_text(text.replace("keep_chunked_context: true", "keep_chunked_context: false"))
    plan = make_plan(PlanRequest(model="8b", profile_path=mine, qformat="int4_awq"))
    assert plan.kv_cache_dtype == "fp8"
    assert plan.settings.chunked_context.value is False


def test_fp8_on_ada_gets_fp8_context_fmha_even_if_the_profile_says_no(tmp_path: Path) -> None:
    plan = make_plan(PlanRequest(model="8b", target="ada", qformat="fp8"))
    assert plan.settings.use_fp8_context_fmha.value is True
    mine = tmp_path / "ada-no-fp8-fmha.yaml"
    mine.write_text((ROOT / "profiles" / "ada.yaml").read_text().replace(
        "use_fp8_context_fmha: true", "use_fp8_context_fmha: false"))  # fmt: skip
    forced = make_plan(PlanRequest(model="8b", profile_path=mine, qformat="fp8"))
    assert forced.settings.use_fp8_context_fmha.value is True
    assert (
        "FP8 Context FMHA is enabled to support FP8 Paged Context FMHA"
        in forced.settings.use_fp8_context_fmha.reason
    )
    argv = forced.commands["engine"]
    assert argv[argv.index("--use_fp8_context_fmha") + 1] == "enable"


def test_max_num_tokens_is_clamped_in_the_plan() -> None:
    plan = make_plan(PlanRequest(model="8b", target="hopper", max_batch_size=1, max_seq_len=2048))
    assert plan.max_num_tokens == 2048
    assert plan.engine.max_num_tokens == 2048
    assert any("clipped to max_batch_size x max_seq_len = 2048" in n for n in plan.notes)
    tiny = make_plan(PlanRequest(model="8b", target="hopper", max_num_tokens=16))
    assert tiny.max_num_tokens == 32
    assert "raised to tokens_per_block 32" in tiny.settings.max_num_tokens.reason


def test_timing_cache_is_keyed_by_gpu_model_and_tensorrt() -> None:
    h100 = make_plan(PlanRequest(model="8b", target="hopper", gpu="H100-SXM5-80GB")).engine.timing_cache
    h200 = make_plan(PlanRequest(model="8b", target="hopper", gpu="H200-SXM-141GB")).engine.timing_cache
    assert h100 is not None
    assert h200 is not None
    assert h100 != h200
    assert h100.parent == h200.parent
    assert f"trt{pinned_tensorrt()}" in h100.name
    assert "sm90" in h100.name
    gpu = DetectedGpu("NVIDIA H100 80GB HBM3", 90, 81559)
    built = build_timing_cache(h100, BuildEnvironment("1.2.1", "10.14.1.48", "/bin/trtllm-build", [gpu]))
    assert built == h100.parent / timing_cache_name(gpu.name, 90, "10.14.1.48")
    assert built.name == "nvidia-h100-80gb-hbm3-sm90-trt10.14.1.48.cache"
    # TensorRT's version unknown: no cache is shared (TensorRT refuses a mismatched one).
    assert build_timing_cache(h100, BuildEnvironment("1.2.1", None, "/bin/trtllm-build", [gpu])) is None


def test_pinned_tensorrt_is_the_dockerfile_default_image() -> None:
    arg = re.search(r"^ARG TRITON_TAG=(\S+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert arg is not None
    assert arg.group(1) == PINNED_IMAGE_TAG
    assert pinned_tensorrt() == "10.13.3.9"


LABELS = ("KV cache dtype", "context FMHA", "paged context FMHA", "FP8 context FMHA", "chunked context",
          "max_num_tokens", "timing cache")  # fmt: skip
REFERENCE = {
    "int4_awq-hopper": (
        ["--model", "8b", "--int4-awq", "--target", "hopper"],
        ("auto", True, True, False, True),
    ),
    "fp8-ada": (["--model", "8b", "--fp8", "--target", "ada"], ("fp8", True, True, True, True)),
    "fp8-h100x4": (
        ["--model", "70b", "--tp", "4", "--fp8", "--target", "h100x4"],
        ("fp8", True, True, True, True),
    ),
}


@pytest.mark.parametrize("name", REFERENCE)
@pytest.mark.parametrize("command", [["plan"], ["build", "--dry-run"]])
def test_reference_commands_show_effective_settings(
    cli: Callable[..., Any], name: str, command: list[str]
) -> None:
    args, (kv, fmha, paged, fp8, chunked) = REFERENCE[name]
    text = cli(*command, *args)
    assert text.exit_code == 0, text.stderr
    lines = {label: next(x for x in text.stdout.splitlines() if x.strip().startswith(label + " "))
             for label in LABELS}  # fmt: skip
    for label, want in (("paged context FMHA", paged), ("FP8 context FMHA", fp8), ("chunked context", chunked),
                        ("context FMHA", fmha)):  # fmt: skip
        shown = lines[label].split()[len(label.split())]
        assert shown == ("on" if want else "off"), lines[label]
        assert len(lines[label].split()) > len(label.split()) + 2, f"no reason shown: {lines[label]}"
    as_json = cli(*command, *args, "--json")
    data = json.loads(as_json.stdout)
    settings = (data["plan"] if command[0] == "build" else data)["engine_settings"]
    assert settings["kv_cache_dtype"]["value"] == kv
    assert [settings[k]["value"] for k in ("context_fmha", "use_paged_context_fmha", "use_fp8_context_fmha",
                                           "chunked_context")] == [fmha, paged, fp8, chunked]  # fmt: skip
    assert all(d["reason"] for d in settings.values())
    assert isinstance(settings["max_num_tokens"]["value"], int)


@pytest.mark.parametrize(("kv", "chunked"), [(None, True), ("fp8", False), ("int8", False)])
def test_stand_in_engine_config_decides_chunked_context_as_planned(tmp_path: Path, kv: str | None,
                                                                   chunked: bool) -> None:  # fmt: skip
    """The plan's argv through the stand-in trtllm-build: the engine's config.json has exactly the
    planned settings, and the repository reader (what `package --engine` uses) follows it."""
    import subprocess
    import sys

    from swallow_trt.builders.engine_stage import overridden
    from swallow_trt.quantize.formats import KV_QUANT_ALGO
    from swallow_trt.triton_repo.repo import read_engine

    plan = make_plan(PlanRequest(model="8b", target="hopper", qformat="int4_awq", kv_cache_dtype=kv))
    ckpt, engine = tmp_path / "ckpt", tmp_path / "engine"
    ckpt.mkdir()
    quant = {"quant_algo": "W4A16_AWQ", "kv_cache_quant_algo": KV_QUANT_ALGO[plan.kv_cache_dtype]}
    (ckpt / "config.json").write_text(json.dumps({"mapping": {"world_size": 1}, "quantization": quant}))
    (ckpt / "rank0.safetensors").write_bytes(b"weights")
    argv = plan.commands["engine"]
    argv[argv.index("--checkpoint_dir") + 1] = str(ckpt)
    argv[argv.index("--output_dir") + 1] = str(engine)
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "stubs" / "bin" / "trtllm-build"), *argv[1:]],
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert "WARNING" not in proc.stdout, proc.stdout
    config = json.loads((engine / "config.json").read_text())
    assert overridden(plan.engine, config) == []
    assert read_engine(engine).enable_chunked_context is chunked is plan.settings.chunked_context.value


def test_does_not_fit_suggests_the_fp8_kv_cache_when_it_was_traded_for_chunked_context() -> None:
    from swallow_trt.errors import DoesNotFitError

    with pytest.raises(DoesNotFitError) as info:
        make_plan(PlanRequest(model="8b", target="ada", gpu="L4", qformat="int4_awq", max_seq_len=131072))
    assert "--kv-cache-dtype fp8 (without chunked context)" in (info.value.hint or "")
    fits = make_plan(PlanRequest(model="8b", target="ada", gpu="L4", qformat="int4_awq", max_seq_len=131072,
                                 kv_cache_dtype="fp8"))  # fmt: skip
    assert fits.gpus[0].fits
    assert fits.settings.chunked_context.value is False
