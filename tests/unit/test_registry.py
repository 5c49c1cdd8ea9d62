"""Every registry entry is a test case: facts consistent with its family, resolvable by every name."""

from __future__ import annotations

import pytest

from swallow_trt.registry import DEFAULT_SYSTEM_PROMPT, RegisteredModel, load_registry, resolve_model

REGISTRY = load_registry()
ENTRIES = REGISTRY.models

# Vocabulary by family (shared/contracts/swallow-models.md section 2).
VOCAB = {
    "swallow-llama2": 43176,
    "swallow-llama2-nve": 32000,
    "swallow-ms": 42800,
    "swallow-mx": 32000,
    "llama-3-swallow": 128256,
    "llama-3.1-swallow": 128256,
    "llama-3.3-swallow": 128256,
    "qwen3": 151936,
    "qwen3_moe": 151936,
    "gpt_oss": 201088,
}
CLASS = {
    "swallow-ms": "MistralForCausalLM",
    "swallow-mx": "MixtralForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
    "gpt_oss": "GptOssForCausalLM",
}
NEW_FAMILIES = ("qwen3", "qwen3_moe", "gpt_oss")


@pytest.mark.parametrize("m", ENTRIES, ids=lambda m: m.name)
def test_entry_is_consistent(m: RegisteredModel) -> None:
    e, a = m.entry, m.arch
    assert e.repo.startswith("tokyotech-llm/")
    assert a.vocab_size == VOCAB[e.family]
    assert a.hf_class == CLASS.get(e.family, "LlamaForCausalLM")
    assert a.num_attention_heads % a.num_key_value_heads == 0
    if e.family not in NEW_FAMILIES:  # Qwen3 and GPT-OSS set head_dim independently
        assert a.head_dim * a.num_attention_heads == a.hidden_size
    assert e.size.lower() in e.repo.lower()
    assert set(e.confidence.values()) <= {"V", "C", "I", "U"}
    assert "arch" in e.confidence
    if e.kind == "instruct":
        assert e.chat_format != "none"
        assert "chat_format" in e.confidence
    if e.family in NEW_FAMILIES:
        return  # checked by the 2026 tests below
    if e.chat_format == "llama3":
        assert e.stop_words == ["<|eot_id|>"]
        assert 128009 in m.eos_token_ids
    elif e.family.startswith("llama-3"):
        assert e.stop_words == ["<|end_of_text|>"]
    else:
        assert e.stop_words == ["</s>"]
        assert m.eos_token_ids == [2]
    if e.system_prompt is not None:
        assert e.system_prompt == DEFAULT_SYSTEM_PROMPT
    if e.family.startswith("llama-3.1") or e.family.startswith("llama-3.3"):
        assert a.rope_scaling is not None
        assert a.rope_scaling.rope_type == "llama3"
        assert a.max_position_embeddings == 131072
    if e.family == "swallow-ms":
        assert a.max_position_embeddings == 4096
        assert a.sliding_window == 4096
    if e.family == "swallow-mx":
        assert (a.num_local_experts, a.num_experts_per_tok) == (8, 2)
    assert m.family.license


@pytest.mark.parametrize("m", ENTRIES, ids=lambda m: m.name)
def test_entry_resolves_by_every_name(m: RegisteredModel) -> None:
    for spec in (m.repo, m.name, m.repo.upper(), f"  {m.name.lower()} "):
        resolved = resolve_model(spec)
        assert resolved.registered is m
        assert resolved.source == "registry"


def test_aliases_point_at_the_newest_seed_instruct_models() -> None:
    assert resolve_model("8b").display_name == "tokyotech-llm/Llama-3.1-Swallow-8B-Instruct-v0.3"
    assert resolve_model("70B").display_name == "tokyotech-llm/Llama-3.1-Swallow-70B-Instruct-v0.3"
    assert resolve_model("70b").alias == "70b"


def test_every_seed_release_is_registered() -> None:
    seeds = [
        "Swallow-7b-hf", "Swallow-7b-instruct-hf", "Swallow-7b-instruct-v0.1", "Swallow-7b-plus-hf",
        "Swallow-13b-hf", "Swallow-13b-instruct-hf", "Swallow-13b-instruct-v0.1",
        "Swallow-70b-hf", "Swallow-70b-instruct-hf", "Swallow-70b-instruct-v0.1",
        "Swallow-7b-NVE-hf", "Swallow-7b-NVE-instruct-hf", "Swallow-13b-NVE-hf", "Swallow-70b-NVE-hf",
        "Swallow-70b-NVE-instruct-hf", "Swallow-MS-7b-v0.1", "Swallow-MS-7b-instruct-v0.1",
        "Swallow-MX-8x7b-NVE-v0.1", "Llama-3-Swallow-8B-v0.1", "Llama-3-Swallow-8B-Instruct-v0.1",
        "Llama-3-Swallow-70B-v0.1", "Llama-3-Swallow-70B-Instruct-v0.1", "Llama-3.1-Swallow-8B-v0.1",
        "Llama-3.1-Swallow-8B-Instruct-v0.1", "Llama-3.1-Swallow-8B-v0.2", "Llama-3.1-Swallow-8B-Instruct-v0.2",
        "Llama-3.1-Swallow-8B-Instruct-v0.3", "Llama-3.1-Swallow-70B-v0.1", "Llama-3.1-Swallow-70B-Instruct-v0.1",
        "Llama-3.1-Swallow-70B-Instruct-v0.3", "Llama-3.3-Swallow-70B-v0.4", "Llama-3.3-Swallow-70B-Instruct-v0.4",
    ]  # fmt: skip
    names = {m.name for m in ENTRIES}
    assert set(seeds) <= names


def test_chat_formats_by_family() -> None:
    fmt = {m.name: m.entry.chat_format for m in ENTRIES}
    assert fmt["Swallow-70b-instruct-hf"] == "alpaca-ja"
    assert fmt["Swallow-7b-instruct-v0.1"] == "llama2"
    assert fmt["Swallow-MS-7b-instruct-v0.1"] == "llama2"
    assert fmt["Llama-3.3-Swallow-70B-Instruct-v0.4"] == "llama3"


# --- the 2026 generation (shared/contracts/swallow-models-2026.md) ----------------------------------
# (hidden, layers, heads, kv heads, head_dim, intermediate, experts, top-k, expert width, params in B)
QWEN3_8B = (4096, 36, 32, 8, 128, 12288, 0, 0, 12288, 8.19)
QWEN3_32B = (5120, 64, 64, 8, 128, 25600, 0, 0, 25600, 32.76)
QWEN3_30B = (2048, 48, 32, 4, 128, 6144, 128, 8, 768, 30.53)
GPT_OSS_20B = (2880, 24, 64, 8, 64, 2880, 32, 4, 2880, 20.91)
GPT_OSS_120B = (2880, 36, 64, 8, 64, 2880, 128, 4, 2880, 116.83)
SHAPES = {"8B": QWEN3_8B, "32B": QWEN3_32B, "30B-A3B": QWEN3_30B, "20B": GPT_OSS_20B, "120B": GPT_OSS_120B}

QWEN3_IDS = [
    f"Qwen3-Swallow-{size}-{stage}-v0.2"
    for size in ("8B", "30B-A3B", "32B")
    for stage in ("CPT", "SFT", "RL")
]
AWQ_IDS = [f"Qwen3-Swallow-{size}-RL-v0.2-AWQ-INT4" for size in ("8B", "30B-A3B", "32B")]
GPTQ_IDS = [f"Qwen3-Swallow-{size}-RL-v0.2-GPTQ-INT4" for size in ("8B", "30B-A3B", "32B")]
GPT_OSS_IDS = [f"GPT-OSS-Swallow-{size}-{stage}-v0.1" for size in ("20B", "120B") for stage in ("SFT", "RL")]
MXFP4_IDS = ["GPT-OSS-Swallow-20B-RL-v0.1-MXFP4", "GPT-OSS-Swallow-120B-RL-v0.1-MXFP4"]
MEDICAL_IDS = [
    "Medical-GPT-OSS-Swallow-120B",
    "Medical-Qwen3-Swallow-8B",
    "Medical-Qwen3-Swallow-30B-A3B",
    "Medical-Qwen3-Swallow-32B",
]
NEW_IDS = QWEN3_IDS + AWQ_IDS + GPTQ_IDS + GPT_OSS_IDS + MXFP4_IDS + MEDICAL_IDS


def _size(name: str) -> str:
    return next(s for s in ("30B-A3B", "120B", "20B", "32B", "8B") if s in name)


@pytest.mark.parametrize("name", NEW_IDS)
def test_2026_entry(name: str) -> None:
    m = REGISTRY.get(name)
    assert m is not None, name
    e, a, fam = m.entry, m.arch, m.family
    assert e.family in NEW_FAMILIES
    hidden, layers, heads, kv, hd, inter, experts, topk, width, billions = SHAPES[_size(name)]
    assert (a.hidden_size, a.num_hidden_layers, a.num_attention_heads, a.num_key_value_heads) == (
        hidden,
        layers,
        heads,
        kv,
    )
    assert (a.head_dim, a.intermediate_size, a.num_local_experts, a.num_experts_per_tok) == (
        hd,
        inter,
        experts,
        topk,
    )
    assert a.expert_intermediate_size == width
    assert abs(a.total_params / 1e9 - billions) < 0.01
    assert not a.tie_word_embeddings
    assert fam.license == "Apache-2.0"
    assert fam.max_context == 32768
    assert fam.reasoning
    assert fam.sampling is not None
    assert (fam.sampling.temperature, fam.sampling.top_p) == (0.6, 0.95)
    # Every fact keeps its confidence mark; the architecture is inherited from the base model.
    assert e.confidence["arch"] == "I"
    assert e.confidence["id"] in ("V", "C", "U")
    if e.family == "gpt_oss":
        assert m.runtimes == ["pytorch"]
        assert (a.sliding_window, a.sliding_layers) == (128, layers // 2)
        assert a.attention_bias
        assert a.attention_sinks
        assert a.expert_bias
        assert a.rope_scaling is not None
        assert (a.rope_scaling.rope_type, a.rope_scaling.factor, a.rope_theta) == ("yarn", 32.0, 150000.0)
        assert fam.sampling.reasoning_effort == "medium"
        assert fam.sampling.top_k is None
        assert e.chat_format == "harmony"
        assert e.stop_words[:2] == ["<|return|>", "<|call|>"]
        assert "<|end|>" not in e.stop_words  # a separator in harmony, not a stop
        assert m.eos_token_ids == [200002, 199999, 200012]
        assert a.checkpoint_quant == ("mxfp4" if name.endswith("-MXFP4") else None)
    else:
        assert m.runtimes == ["engine", "pytorch"]
        assert a.qk_norm
        assert not a.attention_bias
        assert a.rope_theta == 1e6
        assert a.max_position_embeddings == 40960
        assert fam.sampling.top_k == 20
        assert m.eos_token_ids == [151645, 151643]
        if e.kind == "instruct":
            assert e.chat_format == "qwen3"
            assert e.stop_words == ["<|im_end|>", "<|endoftext|>"]
        else:
            assert (e.chat_format, e.stop_words) == ("none", ["<|endoftext|>"])
        if e.family == "qwen3_moe":
            assert a.norm_topk_prob
    if name in AWQ_IDS:
        assert (e.status, a.checkpoint_quant, a.checkpoint_desc_act) == ("refused", "awq", True)
        assert e.use_instead == "tokyotech-llm/" + name.removesuffix("-AWQ-INT4")
    elif name in GPTQ_IDS:
        assert e.status == "private"
        assert e.use_instead == "tokyotech-llm/" + name.removesuffix("-GPTQ-INT4")
    else:
        assert e.status == "available"
    if name == "GPT-OSS-Swallow-20B-RL-v0.1-MXFP4":
        assert e.confidence["id"] == "U"  # inferred from "MXFP4 variants of the RL models"


@pytest.mark.parametrize(
    ("alias", "repo"),
    [
        ("qwen3-8b", "Qwen3-Swallow-8B-RL-v0.2"),
        ("qwen3-32b", "Qwen3-Swallow-32B-RL-v0.2"),
        ("qwen3-30b-a3b", "Qwen3-Swallow-30B-A3B-RL-v0.2"),
        ("gpt-oss-20b", "GPT-OSS-Swallow-20B-RL-v0.1"),
        ("gpt-oss-120b", "GPT-OSS-Swallow-120B-RL-v0.1"),
    ],
)
def test_2026_aliases_are_the_rl_models(alias: str, repo: str) -> None:
    for spec in (alias, alias.upper(), f" {alias} "):
        resolved = resolve_model(spec)
        assert resolved.display_name == "tokyotech-llm/" + repo
        assert resolved.alias == alias


def test_models_json_shows_runtimes_and_status() -> None:
    import json

    from typer.testing import CliRunner

    from swallow_trt.cli.main import app

    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["repo"].split("/", 1)[1]: r for r in json.loads(result.stdout)}
    assert rows["GPT-OSS-Swallow-120B-RL-v0.1"]["runtimes"] == ["pytorch"]
    assert rows["Qwen3-Swallow-32B-RL-v0.2"]["runtimes"] == ["engine", "pytorch"]
    assert rows["Qwen3-Swallow-8B-RL-v0.2-AWQ-INT4"]["status"] == "refused"
    assert rows["Qwen3-Swallow-8B-RL-v0.2"]["sampling"] == {
        "temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0, "reasoning_effort": None
    }  # fmt: skip
    assert rows["Llama-3.1-Swallow-8B-Instruct-v0.3"]["runtimes"] == ["engine"]
    table = CliRunner().invoke(app, ["models", "--family", "gpt_oss"])
    assert table.exit_code == 0
    line = next(x for x in table.stdout.splitlines() if x.startswith("GPT-OSS-Swallow-120B-RL-v0.1 "))
    assert "pytorch" in line
    assert "engine" not in line
