"""Triton model configs as ``model_config_pb2.ModelConfig`` messages, written with protobuf text_format.

The ``tensorrt_llm`` model's tensors follow the shipped contract (data/tensorrtllm-backend-model.json,
the engine-era inflight_batcher_llm layout) exactly: names, data types, dims, optional, reshape and
ragged batching come from that file, not from a template, so nothing like ``${...}`` can be left behind.
Every config carries the contract's ``required_parameter_keys`` (the 1.x backend's guided-decoding setup
reads ``tokenizer_dir``, ``guided_decoding_backend`` and ``xgrammar_tokenizer_info_path`` with no
fallback, so a config without one fails to load); :func:`check_required_parameters` says which is
missing, and the repository writer calls it before writing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

LOGITS_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16"}


@cache
def contract() -> dict[str, Any]:
    from swallow_trt import __file__ as pkg_file

    data: dict[str, Any] = json.loads(
        (Path(pkg_file).parent / "data" / "tensorrtllm-backend-model.json").read_text()
    )
    return data


@dataclass(frozen=True)
class TrtllmModelSettings:
    engine_dir: str
    max_batch_size: int
    decoupled: bool = True
    logits_dtype: str = "float32"
    kv_cache_free_gpu_mem_fraction: float = 0.9
    batch_scheduler_policy: str = "guaranteed_no_evict"
    enable_chunked_context: bool = False
    gpu_device_ids: tuple[int, ...] = ()
    max_beam_width: int = 1
    max_queue_delay_microseconds: int = 0
    max_queue_size: int = 0
    exclude_input_in_output: bool = True
    backend: str = "tensorrtllm"
    instances: int = 1
    # Guided decoding: on with xgrammar unless guided_decoding_backend is "" (the backend's "off").
    tokenizer_dir: str = ""
    guided_decoding_backend: str = "xgrammar"
    xgrammar_tokenizer_info_path: str = ""
    # Prefix reuse of the KV cache; needs an engine built with paged context FMHA.
    enable_kv_cache_reuse: bool = False

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if self.batch_scheduler_policy not in contract()["parameter_values"]["batch_scheduler_policy"]:
            raise ValueError(
                f"batch_scheduler_policy {self.batch_scheduler_policy!r} is not one the backend knows"
            )
        if self.logits_dtype not in LOGITS_DTYPES:
            raise ValueError(f"logits dtype {self.logits_dtype!r}")
        if self.guided_decoding_backend not in ("", "xgrammar"):
            raise ValueError(f"guided_decoding_backend {self.guided_decoding_backend!r}: xgrammar or ''")
        if self.guided_decoding_backend and not self.xgrammar_tokenizer_info_path:
            raise ValueError("guided decoding with xgrammar needs xgrammar_tokenizer_info_path")


def _dtype(name: str, logits: str) -> Any:
    from tritonclient.grpc import model_config_pb2 as mc

    if name.startswith("${"):
        name = LOGITS_DTYPES[logits]  # the only placeholder in the contract: ${logits_datatype}
    return mc.DataType.Value(name)


def _io(message: Any, spec: dict[str, Any], logits: str, is_input: bool) -> None:
    message.name = spec["name"]
    message.data_type = _dtype(spec["data_type"], logits)
    message.dims.extend(spec["dims"])
    if is_input:
        message.optional = bool(spec.get("optional", False))
        message.allow_ragged_batch = bool(spec.get("allow_ragged_batch", False))
    if spec.get("reshape_to_scalar"):
        message.reshape.shape.extend([])
        message.reshape.SetInParent()


def _param(config: Any, key: str, value: Any) -> None:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list | tuple):
        text = ",".join(str(v) for v in value)
    else:
        text = str(value)
    config.parameters[key].string_value = text


def tensorrt_llm_config(
    s: TrtllmModelSettings, name: str = "tensorrt_llm", reference_parameters: dict[str, Any] | None = None
) -> Any:
    """The ``tensorrt_llm`` model: the C++ backend (``tensorrtllm``) or the reference backend (``python``),
    with the same tensor contract. ``reference_parameters`` (the reference backend only) carry what the
    C++ backend reads from the engine, e.g. ``max_input_len``."""
    from tritonclient.grpc import model_config_pb2 as mc

    c = contract()
    config = mc.ModelConfig(name=name, backend=s.backend, max_batch_size=s.max_batch_size)
    config.model_transaction_policy.decoupled = s.decoupled
    config.dynamic_batching.preferred_batch_size.append(s.max_batch_size)
    config.dynamic_batching.max_queue_delay_microseconds = s.max_queue_delay_microseconds
    if s.max_queue_size:
        config.dynamic_batching.default_queue_policy.max_queue_size = s.max_queue_size
    for spec in c["inputs"]:
        _io(config.input.add(), spec, s.logits_dtype, True)
    for spec in c["outputs"]:
        _io(config.output.add(), spec, s.logits_dtype, False)
    group = config.instance_group.add()
    group.count = s.instances
    group.kind = mc.ModelInstanceGroup.KIND_CPU
    _param(config, "gpt_model_type", "inflight_fused_batching")
    _param(config, "gpt_model_path", s.engine_dir)
    _param(config, "max_beam_width", s.max_beam_width)
    _param(config, "batch_scheduler_policy", s.batch_scheduler_policy)
    _param(config, "kv_cache_free_gpu_mem_fraction", s.kv_cache_free_gpu_mem_fraction)
    _param(config, "enable_chunked_context", s.enable_chunked_context)
    _param(config, "exclude_input_in_output", s.exclude_input_in_output)
    _param(config, "enable_kv_cache_reuse", s.enable_kv_cache_reuse)
    _param(config, "tokenizer_dir", s.tokenizer_dir)
    _param(config, "guided_decoding_backend", s.guided_decoding_backend)
    _param(config, "xgrammar_tokenizer_info_path", s.xgrammar_tokenizer_info_path)
    # Upstream's value; the Python backend (the reference backend) accepts only "yes"/"no" here.
    _param(config, "FORCE_CPU_ONLY_INPUT_TENSORS", "no")
    if s.gpu_device_ids:
        _param(config, "gpu_device_ids", s.gpu_device_ids)
    if reference_parameters:
        if s.backend != "python":
            raise ValueError("reference_parameters apply to the reference (python) backend only")
        for key, value in reference_parameters.items():
            _param(config, key, value)
    unknown = set(config.parameters) - set(c["parameter_keys"]) - set(reference_parameters or {})
    if unknown:
        raise ValueError(f"parameters outside the backend contract: {sorted(unknown)}")
    check_required_parameters(config)
    return config


def missing_required_parameters(config: Any) -> list[str]:
    """The contract's required parameter keys a ``tensorrt_llm`` config lacks (in the contract's order)."""
    return [k for k in contract()["required_parameter_keys"]["keys"] if k not in config.parameters]


def check_required_parameters(config: Any) -> None:
    """Refuse a config the 1.x backend would not load: it reads these keys with no fallback."""
    missing = missing_required_parameters(config)
    if missing:
        raise ValueError(
            f"the tensorrt_llm config lacks {', '.join(missing)}: the 1.x backend fails to load it with "
            f"'Cannot find parameter with name: {missing[0]}'"
        )


def to_pbtxt(config: Any) -> str:
    from google.protobuf import text_format

    text: str = text_format.MessageToString(config, as_utf8=True)
    return text


def from_pbtxt(text: str) -> Any:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    return text_format.Parse(text, mc.ModelConfig())


def read_model_config(path: Path, missing: str, hint: str) -> tuple[Any, dict[str, str]]:
    """A repository model's ``config.pbtxt`` and its parameters as plain strings. A missing file is
    ``missing`` with ``hint``; one that does not parse says so, with its parser's message."""
    from swallow_trt.errors import UsageError

    if not path.is_file():
        raise UsageError(missing, hint)
    try:
        config = from_pbtxt(path.read_text(encoding="utf-8"))
    except Exception as exc:  # protobuf's ParseError and friends
        raise UsageError(f"{path} does not parse: {exc}", "re-create it with `swallow-trt package`") from None
    return config, {k: v.string_value for k, v in config.parameters.items()}


TensorSpec = tuple[str, str, list[int], bool]  # name, data type, dims, optional (inputs only)

# The sampling and guided-decoding inputs of the ensemble and chat (upstream ensemble's names) and the
# tensorrt_llm inputs they feed.
SAMPLING_TO_LLM: dict[str, str] = {
    "temperature": "temperature",
    "top_k": "runtime_top_k",
    "top_p": "runtime_top_p",
    "seed": "seed",
    "repetition_penalty": "repetition_penalty",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "guided_decoding_guide_type": "guided_decoding_guide_type",
    "guided_decoding_guide": "guided_decoding_guide",
}


def sampling_inputs() -> list[TensorSpec]:
    """The sampling inputs as optional [1] tensors of the ``tensorrt_llm`` contract's data types."""
    dtypes = {i["name"]: i["data_type"] for i in contract()["inputs"]}
    return [(outer, dtypes[llm], [1], True) for outer, llm in SAMPLING_TO_LLM.items()]


CHAT_INPUTS: list[TensorSpec] = [
    ("text_input", "TYPE_STRING", [1], False),
    ("max_tokens", "TYPE_INT32", [1], True),
    ("min_tokens", "TYPE_INT32", [1], True),
    ("ignore_eos", "TYPE_BOOL", [1], True),
    ("system_prompt", "TYPE_STRING", [1], True),
    ("history", "TYPE_STRING", [1], True),
    ("stop", "TYPE_STRING", [-1], True),
    *sampling_inputs(),
    # Reasoning families only (chat.check_reasoning): qwen3 thinking on/off, harmony low|medium|high.
    ("enable_thinking", "TYPE_BOOL", [1], True),
    ("reasoning_effort", "TYPE_STRING", [1], True),
    # A first response at once, with the serving stub's ``instance`` token (chat's docstring).
    ("report_instance", "TYPE_BOOL", [1], True),
]
CHAT_OUTPUTS: list[TensorSpec] = [
    ("text_output", "TYPE_STRING", [1], False),
    ("num_output_tokens", "TYPE_INT32", [1], False),
    ("reasoning_output", "TYPE_STRING", [1], False),  # the reasoning, apart from the answer
    ("instance", "TYPE_STRING", [1], False),  # the serving stub's token, with report_instance
]
ENSEMBLE_INPUTS: list[TensorSpec] = [
    ("text_input", "TYPE_STRING", [1], False),
    ("max_tokens", "TYPE_INT32", [1], True),
    ("min_tokens", "TYPE_INT32", [1], True),
    ("end_id", "TYPE_INT32", [1], True),
    ("stop_words", "TYPE_STRING", [-1], True),
]
PREPROCESSING_OUTPUTS: list[TensorSpec] = [
    ("input_ids", "TYPE_INT32", [-1], False),
    ("input_lengths", "TYPE_INT32", [1], False),
    ("request_output_len", "TYPE_INT32", [1], False),
    ("end_id", "TYPE_INT32", [1], False),
    ("min_tokens", "TYPE_INT32", [1], False),
    ("stop_words_list", "TYPE_INT32", [2, -1], False),
]
POSTPROCESSING_INPUTS: list[TensorSpec] = [
    ("output_ids", "TYPE_INT32", [-1, -1], False),
    ("sequence_length", "TYPE_INT32", [-1], False),
]
TEXT_OUTPUT: list[TensorSpec] = [("text_output", "TYPE_STRING", [-1], False)]


def python_model_config(
    name: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    parameters: dict[str, Any],
    *,
    max_batch_size: int = 0,
    decoupled: bool = False,
    instances: int = 1,
) -> Any:
    """A Python-backend model of the repository (chat, preprocessing, postprocessing)."""
    from tritonclient.grpc import model_config_pb2 as mc

    config = mc.ModelConfig(name=name, backend="python", max_batch_size=max_batch_size)
    if decoupled:
        config.model_transaction_policy.decoupled = True
    _tensors(config, inputs, outputs)
    group = config.instance_group.add()
    group.count = instances
    group.kind = mc.ModelInstanceGroup.KIND_CPU
    for key, value in parameters.items():
        _param(config, key, value)
    return config


def _tensors(config: Any, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> None:
    from tritonclient.grpc import model_config_pb2 as mc

    for tensor, dtype, dims, optional in inputs:
        i = config.input.add(name=tensor, data_type=mc.DataType.Value(dtype), optional=optional)
        i.dims.extend(dims)
    for tensor, dtype, dims, _ in outputs:
        o = config.output.add(name=tensor, data_type=mc.DataType.Value(dtype))
        o.dims.extend(dims)


def chat_config(parameters: dict[str, Any], name: str = "chat", instances: int = 1) -> Any:
    """The decoupled streaming ``chat`` model (BLS): Japanese text in, text out, stops stripped. Each
    instance serves many streams at once (its ``execute`` is a coroutine)."""
    return python_model_config(
        name, CHAT_INPUTS, CHAT_OUTPUTS, parameters, decoupled=True, instances=instances
    )


def preprocessing_config(parameters: dict[str, Any], max_batch_size: int, instances: int = 1) -> Any:
    """Upstream's preprocessing (triton_backend/all_models/inflight_batcher_llm/preprocessing/config.pbtxt
    at 08dc37e): dynamic batching up to the batch size with no queue delay, one CPU instance by
    default."""
    config = python_model_config(
        "preprocessing", ENSEMBLE_INPUTS, PREPROCESSING_OUTPUTS, parameters, max_batch_size=max_batch_size,
        instances=instances,
    )  # fmt: skip
    config.dynamic_batching.preferred_batch_size.append(max_batch_size)
    config.dynamic_batching.max_queue_delay_microseconds = 0
    return config


def postprocessing_config(parameters: dict[str, Any], max_batch_size: int, instances: int = 1) -> Any:
    """Upstream's postprocessing (same directory, at 89fd9b7): ``dynamic_batching {}``, one CPU instance
    by default."""
    config = python_model_config(
        "postprocessing", POSTPROCESSING_INPUTS, TEXT_OUTPUT, parameters, max_batch_size=max_batch_size,
        instances=instances,
    )  # fmt: skip
    config.dynamic_batching.SetInParent()
    return config


def ensemble_config(max_batch_size: int, llm: str = "tensorrt_llm") -> Any:
    """text -> preprocessing -> tensorrt_llm -> postprocessing -> text. ``stream`` (BOOL) is passed to
    ``tensorrt_llm``'s ``streaming`` and the sampling inputs to theirs (``top_k`` -> ``runtime_top_k``, as
    upstream's ensemble does; the backend checks them); ``output_ids`` and ``sequence_length`` come
    straight from it."""
    from tritonclient.grpc import model_config_pb2 as mc

    config = mc.ModelConfig(name="ensemble", platform="ensemble", max_batch_size=max_batch_size)
    _tensors(
        config,
        [*ENSEMBLE_INPUTS, ("stream", "TYPE_BOOL", [1], True), *sampling_inputs()],
        [*TEXT_OUTPUT, *POSTPROCESSING_INPUTS],
    )
    pre = [n for n, *_ in PREPROCESSING_OUTPUTS]
    steps: list[tuple[str, dict[str, str], dict[str, str]]] = [
        ("preprocessing", {n: n for n, *_ in ENSEMBLE_INPUTS}, {n: f"_{n}" for n in pre}),
        (
            llm,
            {**{n: f"_{n}" for n in pre}, "streaming": "stream", **{v: k for k, v in SAMPLING_TO_LLM.items()}},
            {"output_ids": "output_ids", "sequence_length": "sequence_length"},
        ),
        ("postprocessing", {"output_ids": "output_ids", "sequence_length": "sequence_length"},
         {"text_output": "text_output"}),
    ]  # fmt: skip
    for model, input_map, output_map in steps:
        step = config.ensemble_scheduling.step.add(model_name=model, model_version=-1)
        for k, v in input_map.items():
            step.input_map[k] = v
        for k, v in output_map.items():
            step.output_map[k] = v
    return config
