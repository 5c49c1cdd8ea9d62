"""The start-up cache of shipped data: hits skip YAML entirely, any change or damage is a miss."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from swallow_trt.datacache import cached_load
from swallow_trt.profiles import Profile
from swallow_trt.schema import load_file

PROBE = """
import json, sys
from swallow_trt.registry import load_registry
from swallow_trt.profiles import load_shipped
reg = load_registry()
p = load_shipped("hopper")
print(json.dumps({"yaml": "yaml" in sys.modules, "models": len(reg.models), "sm": p.sm}))
"""


def _probe(home: Path) -> dict[str, object]:
    env = dict(os.environ, SWALLOW_TRT_HOME=str(home))
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_second_run_skips_yaml(tmp_path: Path) -> None:
    cold = _probe(tmp_path)
    warm = _probe(tmp_path)
    assert cold["yaml"] is True
    assert warm["yaml"] is False
    assert cold["models"] == warm["models"]
    assert warm["sm"] == 90
    assert len(list((tmp_path / "cache").glob("*.pickle"))) == 2


def test_corrupt_entry_is_a_miss(tmp_path: Path) -> None:
    _probe(tmp_path)
    for entry in (tmp_path / "cache").glob("*.pickle"):
        entry.write_bytes(b"not a pickle")
    again = _probe(tmp_path)
    assert again["models"]
    assert again["sm"] == 90


def test_changed_file_is_a_miss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = Path(__file__).resolve().parents[2] / "profiles" / "hopper.yaml"
    data = tmp_path / "hopper.yaml"
    data.write_text(src.read_text())
    monkeypatch.setenv("SWALLOW_TRT_HOME", str(tmp_path / "home"))
    first = cached_load(data, [], lambda: load_file(Profile, data))
    assert first.build.max_batch_size == 256
    data.write_text(src.read_text().replace("max_batch_size: 256", "max_batch_size: 128"))
    second = cached_load(data, [], lambda: load_file(Profile, data))
    assert second.build.max_batch_size == 128
    third = cached_load(data, [], lambda: (_ for _ in ()).throw(AssertionError("should be a hit")))
    assert third == second
