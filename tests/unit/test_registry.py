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
}
CLASS = {"swallow-ms": "MistralForCausalLM", "swallow-mx": "MixtralForCausalLM"}


@pytest.mark.parametrize("m", ENTRIES, ids=lambda m: m.name)
def test_entry_is_consistent(m: RegisteredModel) -> None:
    e, a = m.entry, m.arch
    assert e.repo.startswith("tokyotech-llm/")
    assert a.vocab_size == VOCAB[e.family]
    assert a.hf_class == CLASS.get(e.family, "LlamaForCausalLM")
    assert a.num_attention_heads % a.num_key_value_heads == 0
    assert a.head_dim * a.num_attention_heads == a.hidden_size
    assert e.size.lower() in e.repo.lower()
    assert set(e.confidence.values()) <= {"V", "C", "I", "U"}
    assert "arch" in e.confidence
    if e.kind == "instruct":
        assert e.chat_format != "none"
        assert "chat_format" in e.confidence
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
