"""``swallow-trt quickstart`` end to end on CPU, as README's main command runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("modelopt")
pytest.importorskip("tritonclient.grpc")

pytestmark = [pytest.mark.integration, pytest.mark.requires_triton]
# Only a hang may fail these runs: a healthy quickstart on a loaded CI machine takes as long as it takes
# (the readiness wait inside is bounded by QuickstartRequest.ready_timeout_s, 1800 s, for the same reason).
HANG_S = 3 * 3600


def test_quickstart(tmp_path: Path) -> None:
    env = dict(os.environ, SWALLOW_TRT_HOME=str(tmp_path / "home"))
    out = tmp_path / "qs"
    run = subprocess.run(
        [sys.executable, "-m", "swallow_trt.cli.main", "quickstart", "--out", str(out), "--max-tokens", "16", "--json"],
        capture_output=True, text=True, env=env, timeout=HANG_S,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    assert result["random_weights"] is True
    ckpt = Path(result["checkpoint"]["path"])
    config = json.loads((ckpt / "config.json").read_text())
    assert config["quantization"]["quant_algo"] == "FP8"
    assert config["mapping"]["tp_size"] == 2
    assert sorted(p.name for p in ckpt.glob("rank*.safetensors")) == [
        "rank0.safetensors",
        "rank1.safetensors",
    ]
    argv = result["trtllm_build"]
    assert argv[0] == "trtllm-build"
    assert argv[argv.index("--checkpoint_dir") + 1] == str(ckpt)
    repo = Path(result["repo"])
    assert {p.parent.name for p in repo.glob("*/config.pbtxt")} == {
        "tensorrt_llm", "preprocessing", "postprocessing", "ensemble", "chat",
    }  # fmt: skip
    assert result["answer"]
    assert result["streamed_pieces"] > 1
    left = subprocess.run(["pgrep", "-f", str(repo)], capture_output=True, text=True)
    assert left.stdout.strip() == "", "a server or stub outlived the quickstart"
    # A second run reuses the model and the quantized checkpoint.
    again = subprocess.run(
        [sys.executable, "-m", "swallow_trt.cli.main", "quickstart", "--out", str(out), "--max-tokens", "4", "--json"],
        capture_output=True, text=True, env=env, timeout=HANG_S,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["checkpoint"]["cached"] is True


def test_quickstart_refuses_bad_input(tmp_path: Path) -> None:
    env = dict(os.environ, SWALLOW_TRT_HOME=str(tmp_path / "home"))
    for args, needle in (
        (["--max-tokens", "0"], "--max-tokens must be at least 1"),
        (["--prompt", " "], "--prompt is empty"),
    ):
        run = subprocess.run(
            [sys.executable, "-m", "swallow_trt.cli.main", "quickstart", "--out", str(tmp_path / "qs"), *args],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert run.returncode == 2
        assert needle in run.stderr
        assert not (tmp_path / "qs").exists()
