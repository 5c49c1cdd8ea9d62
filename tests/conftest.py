from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from swallow_trt.cli.main import app


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Caches and outputs go to a temporary SWALLOW_TRT_HOME, never the developer's own."""
    import os

    os.environ["SWALLOW_TRT_HOME"] = str(tmp_path_factory.mktemp("swallow-trt-home"))


@pytest.fixture
def cli() -> Callable[..., Any]:
    """Run the real CLI in-process; returns the click Result (stdout and stderr separate)."""
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
        return runner.invoke(app, list(args), env=env, catch_exceptions=False)

    return invoke


@pytest.fixture
def plan_json(cli: Callable[..., Any]) -> Callable[..., dict[str, Any]]:
    def run(*args: str) -> dict[str, Any]:
        result = cli("plan", *args, "--json")
        assert result.exit_code == 0, result.stderr
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    return run


def write_hf_config(directory: Path, **overrides: Any) -> Path:
    """A small Llama config.json (the shapes are what matter to the planner, not the weights)."""
    cfg: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 1024,
        "intermediate_size": 2816,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
        "vocab_size": 43176,
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "torch_dtype": "bfloat16",
    }
    cfg.update(overrides)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(cfg))
    return directory
