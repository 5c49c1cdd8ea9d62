"""The tensorrt_llm model config follows the backend contract exactly and round-trips as ModelConfig; every
config carries the keys the 1.x backend reads without a fallback, and one without them is reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import model_config_pb2 as mc

from swallow_trt.triton_repo.configs import (
    SAMPLING_TO_LLM,
    TrtllmModelSettings,
    chat_config,
    check_required_parameters,
    contract,
    ensemble_config,
    from_pbtxt,
    missing_required_parameters,
    tensorrt_llm_config,
    to_pbtxt,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "contracts" / "tensorrtllm-backend-model.json"


@pytest.mark.parametrize("logits", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("backend", ["tensorrtllm", "python"])
def test_config_follows_contract(logits: str, backend: str) -> None:
    s = TrtllmModelSettings(
        engine_dir="/engines/70b", max_batch_size=64, logits_dtype=logits, enable_chunked_context=True,
        gpu_device_ids=(0, 1, 2, 3), backend=backend, tokenizer_dir="chat/tokenizer",
        xgrammar_tokenizer_info_path="tensorrt_llm/xgrammar_tokenizer_info.json", enable_kv_cache_reuse=True,
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
    assert params["enable_kv_cache_reuse"] == "true"
    assert params["guided_decoding_backend"] == "xgrammar"
    assert params["tokenizer_dir"] == "chat/tokenizer"
    assert params["xgrammar_tokenizer_info_path"] == "tensorrt_llm/xgrammar_tokenizer_info.json"


REQUIRED = ["tokenizer_dir", "guided_decoding_backend", "xgrammar_tokenizer_info_path"]


def test_contract_names_the_required_keys() -> None:
    assert contract()["required_parameter_keys"]["keys"] == REQUIRED
    assert set(REQUIRED) <= set(contract()["parameter_keys"])


@pytest.mark.parametrize("guided", [True, False])
@pytest.mark.parametrize("backend", ["tensorrtllm", "python"])
def test_every_config_has_the_required_keys(backend: str, guided: bool) -> None:
    extra = {"xgrammar_tokenizer_info_path": "x.json"} if guided else {"guided_decoding_backend": ""}
    s = TrtllmModelSettings(engine_dir="e", max_batch_size=8, backend=backend, **extra)  # type: ignore[arg-type]
    config = from_pbtxt(to_pbtxt(tensorrt_llm_config(s)))
    assert missing_required_parameters(config) == []
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["guided_decoding_backend"] == ("xgrammar" if guided else "")  # "": off, still present
    assert params["enable_kv_cache_reuse"] == "false"  # explicit either way


# The parameters of a tensorrt_llm config as this project wrote it before (and as upstream's 0.18
# template did): no guided-decoding keys. The 1.x backend fails to load it.
OLD_CONFIG = """
name: "tensorrt_llm"
backend: "tensorrtllm"
max_batch_size: 8
parameters { key: "gpt_model_type" value { string_value: "inflight_fused_batching" } }
parameters { key: "gpt_model_path" value { string_value: "/engines/8b" } }
parameters { key: "max_beam_width" value { string_value: "1" } }
"""


def test_a_config_without_the_keys_is_what_the_1x_backend_rejects() -> None:
    old = from_pbtxt(OLD_CONFIG)
    assert missing_required_parameters(old) == REQUIRED
    with pytest.raises(ValueError, match="Cannot find parameter with name: tokenizer_dir"):
        check_required_parameters(old)
    full = tensorrt_llm_config(
        TrtllmModelSettings(engine_dir="e", max_batch_size=8, guided_decoding_backend="")
    )
    for key in REQUIRED:
        one_short = from_pbtxt(to_pbtxt(full))
        del one_short.parameters[key]
        assert missing_required_parameters(one_short) == [key]
        with pytest.raises(ValueError, match=f"lacks {key}"):
            check_required_parameters(one_short)


def test_guided_xgrammar_needs_the_tokenizer_info() -> None:
    with pytest.raises(ValueError, match="xgrammar_tokenizer_info_path"):
        TrtllmModelSettings(engine_dir="e", max_batch_size=8)
    with pytest.raises(ValueError, match="guided_decoding_backend"):
        TrtllmModelSettings(engine_dir="e", max_batch_size=8, guided_decoding_backend="outlines")


def test_sampling_inputs_reach_tensorrt_llm_with_its_types() -> None:
    """The ensemble's and chat's sampling inputs carry the contract's data types; the ensemble maps each
    to its tensorrt_llm input (upstream's names: top_k -> runtime_top_k, top_p -> runtime_top_p)."""
    llm_types = {i["name"]: i["data_type"] for i in contract()["inputs"]}
    ens = ensemble_config(8)
    chat = chat_config({})
    for config in (ens, chat):
        inputs = {i.name: i for i in config.input}
        for outer, llm in SAMPLING_TO_LLM.items():
            assert mc.DataType.Name(inputs[outer].data_type) == llm_types[llm], outer
            assert inputs[outer].optional, outer
    step = next(s for s in ens.ensemble_scheduling.step if s.model_name == "tensorrt_llm")
    for outer, llm in SAMPLING_TO_LLM.items():
        assert step.input_map[llm] == outer


def test_bad_settings_refused() -> None:
    with pytest.raises(ValueError, match="batch_scheduler_policy"):
        TrtllmModelSettings(engine_dir="e", max_batch_size=8, batch_scheduler_policy="fastest")
    with pytest.raises(ValueError, match="max_batch_size"):
        TrtllmModelSettings(engine_dir="e", max_batch_size=0)


@pytest.mark.skipif(not SHARED.is_file(), reason="shared/contracts not present beside this checkout")
def test_shipped_contract_is_current() -> None:
    shipped = Path(__file__).resolve().parents[2] / "core" / "data" / "tensorrtllm-backend-model.json"
    assert json.loads(shipped.read_text()) == json.loads(SHARED.read_text())


def test_pre_and_postprocessing_batch_dynamically_like_upstream() -> None:
    from swallow_trt.triton_repo.configs import postprocessing_config, preprocessing_config

    pre = from_pbtxt(to_pbtxt(preprocessing_config({"tokenizer_dir": "t"}, 64)))
    assert list(pre.dynamic_batching.preferred_batch_size) == [64]
    assert pre.dynamic_batching.max_queue_delay_microseconds == 0
    post = from_pbtxt(to_pbtxt(postprocessing_config({"tokenizer_dir": "t"}, 64)))
    assert post.HasField("dynamic_batching")
    assert [g.count for g in pre.instance_group] == [1]
    assert [g.count for g in post.instance_group] == [1]
