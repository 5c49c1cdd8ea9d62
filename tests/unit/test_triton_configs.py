"""The tensorrt_llm model config follows the backend contract exactly and round-trips as ModelConfig."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import model_config_pb2 as mc

from swallow_trt.triton_repo.configs import (
    TrtllmModelSettings,
    contract,
    from_pbtxt,
    tensorrt_llm_config,
    to_pbtxt,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "contracts" / "tensorrtllm-backend-model.json"


@pytest.mark.parametrize("logits", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("backend", ["tensorrtllm", "python"])
def test_config_follows_contract(logits: str, backend: str) -> None:
    s = TrtllmModelSettings(
        engine_dir="/engines/70b", max_batch_size=64, logits_dtype=logits, enable_chunked_context=True,
        gpu_device_ids=(0, 1, 2, 3), backend=backend,
    )  # fmt: skip
    text = to_pbtxt(tensorrt_llm_config(s))
    assert "${" not in text
    config = from_pbtxt(text)
    assert config.backend == backend
    assert config.max_batch_size == 64
    assert config.model_transaction_policy.decoupled is True
    c = contract()
    assert [i.name for i in config.input] == [i["name"] for i in c["inputs"]]
    assert [o.name for o in config.output] == [o["name"] for o in c["outputs"]]
    for msg, spec in [
        *zip(config.input, c["inputs"], strict=True),
        *zip(config.output, c["outputs"], strict=True),
    ]:
        want = (
            spec["data_type"]
            if not spec["data_type"].startswith("${")
            else {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16"}[logits]
        )
        assert mc.DataType.Name(msg.data_type) == want, msg.name
        assert list(msg.dims) == spec["dims"], msg.name
        assert msg.HasField("reshape") == bool(spec.get("reshape_to_scalar")), msg.name
    for msg, spec in zip(config.input, c["inputs"], strict=True):
        assert msg.optional == spec["optional"], msg.name
        assert msg.allow_ragged_batch == spec["allow_ragged_batch"], msg.name
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert set(params) <= set(c["parameter_keys"])
    assert params["gpt_model_type"] == "inflight_fused_batching"
    assert params["gpt_model_path"] == "/engines/70b"
    assert params["enable_chunked_context"] == "true"
    assert params["gpu_device_ids"] == "0,1,2,3"
    assert params["kv_cache_free_gpu_mem_fraction"] == "0.9"


def test_bad_settings_refused() -> None:
    with pytest.raises(ValueError, match="batch_scheduler_policy"):
        TrtllmModelSettings(engine_dir="e", max_batch_size=8, batch_scheduler_policy="fastest")
    with pytest.raises(ValueError, match="max_batch_size"):
        TrtllmModelSettings(engine_dir="e", max_batch_size=0)


@pytest.mark.skipif(not SHARED.is_file(), reason="shared/contracts not present beside this checkout")
def test_shipped_contract_is_current() -> None:
    shipped = Path(__file__).resolve().parents[2] / "core" / "data" / "tensorrtllm-backend-model.json"
    assert json.loads(shipped.read_text()) == json.loads(SHARED.read_text())
