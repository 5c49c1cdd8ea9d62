"""Every ``swallow-trt`` command in the README is either run here as written, run against a shared server
(tests/integration/test_readme_live_commands.py), or listed with the reason it cannot run on this machine; a
command added to the README without a decision fails here, so the README and the CLI cannot drift."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from swallow_trt.cli.main import app
from tests.conftest import write_hf_config
from tests.fixtures.readme import argv_of, readme_commands

# Run here, in-process, from an empty working directory (pure CPU, no download, no server).
RUN_HERE = (
    "swallow-trt models",
    "swallow-trt targets",
    "swallow-trt plan --model 70b --tp 4 --fp8 --target h100x4",
    "swallow-trt plan --model 8b --int4-awq --target ampere-sm86 --json",
    # ./my-checkpoint stands for the reader's checkpoint: plan reads only its config.json.
    "swallow-trt plan --model ./my-checkpoint --qformat int8_sq --target ampere --gpus 2 --tp 2",
    # The performance estimate and the SLO search (issue 16): pure arithmetic over the plan.
    "swallow-trt plan --model 8b --fp8 --target hopper --isl 1024 --osl 256",
    "swallow-trt plan --model 8b --fp8 --target hopper --isl 1024 --osl 256 --concurrency 64",
    "swallow-trt plan --model 70b --target h100x4 --isl 1024 --osl 256 --rate 4",
    "swallow-trt plan --model 70b --target h100x4 --isl 1024 --osl 256 --slo-ttft-ms 500 --slo-tpot-ms 30",
    "swallow-trt build --model 70b --tp 4 --fp8 --target h100x4 --dry-run",
    "swallow-trt build --model qwen3-30b-a3b --target hopper --runtime pytorch --dry-run",
    "swallow-trt build --model tokyotech-llm/GPT-OSS-Swallow-120B-RL-v0.1-MXFP4 --target h100x4 --dry-run",
    "swallow-trt deploy k8s --model 70b --tp 4 --fp8 --target h100x4 --replicas 2 --gateway "
    "--image registry.example.com/swallow-trt:0.1.0 --namespace llm --out k8s/70b",
)
# Run against the shared reference server, with its address for 127.0.0.1:8001 (the only change).
ON_SHARED_SERVER = (
    "swallow-trt chat --url 127.0.0.1:8001 '日本で一番高い山は？'",
    "swallow-trt profile --url 127.0.0.1:8001 --model chat --concurrency 1,4,8 --input-tokens 128 "
    "--output-tokens 32 --num-requests 16 --out profile-cpu",
)
NOT_HERE = {
    "swallow-trt build --model 70b --tp 4 --fp8": "GPUs and the TensorRT-LLM image (trtllm-build), 140 GB download",
    "swallow-trt quantize --model 70b --fp8 --kv-cache-dtype fp8 --tp 4": "the GPU machine; 140 GB download",
    "swallow-trt quantize --model ./Swallow-7b-instruct-hf --int4-awq --out ckpt/7b-awq": "the reader's own 7B checkpoint",
    "swallow-trt quantize --model 8b --qformat full_prec --tp 2 --json": "16 GB download (tests/integration/test_quantize_stage.py runs quantize on tiny models)",
    "swallow-trt package --engine swallow-trt-out/Llama-3.1-Swallow-70B-Instruct-v0.3-fp8-kvfp8-tp4pp1/engine-h100x4 --target h100x4 --out repo": "an engine built on GPUs",
    "swallow-trt package --model ./Llama-3.1-Swallow-8B-Instruct-v0.3 --out repo": "the reader's own 8B checkpoint",
    "swallow-trt serve --repo repo --grpc-port 8001": "the repository packaged from the reader's model; a server until Ctrl-C (tests/integration/test_serve_cli.py runs serve)",
    "swallow-trt serve --repo repo --grpc-port 8001 --no-openai": "as above",
    "swallow-trt serve --repo swallow-trt-quickstart/repo --grpc-port 8001": "a server until Ctrl-C: the profile command after it runs against the shared reference server instead",
    "swallow-trt openai --triton-url 127.0.0.1:8001 --repo repo --model-name tokyotech-llm/Llama-3.1-Swallow-8B-Instruct-v0.3": "a server until Ctrl-C, for the reader's repository (tests/integration/test_openai_api.py runs the API)",
    "swallow-trt profile --url 127.0.0.1:8001 --model tensorrt_llm --concurrency 1,4,16,64": "a GPU-sized load (256 requests of 512 + 256 tokens at 64 in flight): many minutes on the CPU reference backend",
    "swallow-trt profile --model chat --request-rate 2,8,32 --duration 60 --slo-ttft-ms 500 --slo-tpot-ms 50": "three minutes of load by design",
    "swallow-trt profile --api openai --url http://127.0.0.1:8000 --repo REPO --concurrency 1,16,64": "REPO is a placeholder",
}  # fmt: skip


def test_every_readme_command_is_decided() -> None:
    found = readme_commands()
    decided = [*RUN_HERE, *ON_SHARED_SERVER, *NOT_HERE]
    assert len(decided) == len(set(decided))
    assert sorted(found) == sorted(decided), (
        "README commands without a decision here: "
        f"{sorted(set(found) - set(decided))}; decided but no longer in the README: "
        f"{sorted(set(decided) - set(found))}"
    )


def test_extraction_joins_continuations_and_drops_comments() -> None:
    text = (
        "```\nswallow-trt plan --model 8b \\\n  --target ada   # a comment\n"
        "swallow-trt serve --repo r &\ndocker run x \\\n  swallow-trt build --model 8b\n```\n"
        "```python\nprint('swallow-trt models')\n```\n"
    )
    assert readme_commands(text) == [
        "swallow-trt plan --model 8b --target ada",
        "swallow-trt serve --repo r",
    ]


@pytest.mark.parametrize("command", RUN_HERE)
def test_readme_command_runs_as_written(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWALLOW_TRT_HOST_RAM_GIB", "1024")  # build checks nothing of this host, but says so
    write_hf_config(tmp_path / "my-checkpoint")
    result = CliRunner().invoke(app, argv_of(command))
    assert result.exit_code == 0, (result.exit_code, result.stdout[-2000:], result.stderr[-2000:])
    assert result.stdout.strip()
