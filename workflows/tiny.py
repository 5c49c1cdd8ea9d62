"""Tiny random-weight Hugging Face checkpoints with the Swallow shapes that matter.

Used by ``swallow-trt quickstart`` (its model) and, through ``tests/fixtures/tiny.py``, by the tests and the
benchmarks; nothing else in the package imports it. Every checkpoint is built in the test run, offline, in a
second or two, from the transformers config class of its architecture, with a tokenizer trained on the
Japanese paragraphs shipped in the package (``swallow_trt/data/jsquad-v1.3-ja.jsonl``).

What is kept from the real Swallow releases: the architecture class, attention layout (MHA / GQA), vocabulary
size, positions, RoPE theta and Llama-3.1 rope scaling, sliding window, the MoE layout of Mixtral, the
BOS/EOS ids of the config, bf16 weights and untied embeddings. What is shrunk: hidden 512, intermediate
1024, 2 layers, 8 heads of 64, so that INT4-AWQ group-128 divisibility holds at TP 1, 2 and 4 (1024 / tp
and 512 / tp are multiples of 128). The weights are random; the models generate noise.

API::

    KINDS                                   # ("llama2", "llama31", "mistral", "mixtral")
    KINDS_2026                              # ("qwen3", "qwen3_moe", "gpt_oss")
    shape(kind, **overrides) -> dict        # config kwargs of that kind
    make_checkpoint(dir, kind, seed=0, name_or_path=None, **overrides) -> dir      # model.safetensors
    make_sharded_checkpoint(dir, kind, max_shard_size="20MB", ...) -> dir          # + index.json
    make_tokenizer(kind) -> PreTrainedTokenizerFast                                # trained once per style
    corrupt_truncate(path, keep_bytes)
    make_bad_checkpoint(dir, problem) -> dir

Tokenizers (trained on the shipped text, ~4,000 tokens, deterministic, cached per process per style):

- ``llama31``: byte-level BPE like Llama-3 (the Llama-3 split regex, ByteLevel pre-tokenizer and decoder)
  with ``<|begin_of_text|>`` (BOS), ``<|end_of_text|>``, ``<|eot_id|>`` (EOS), ``<|start_header_id|>``,
  ``<|end_header_id|>`` and a Llama-3 header-style chat template. The special tokens have small ids (0-4),
  not Llama-3's 128000+; ``config.json`` / ``generation_config.json`` keep the real Llama-3.1 ids (the
  shapes are what matter), the tokenizer files record the small ones.
- ``llama2`` / ``mistral`` / ``mixtral``: SentencePiece-style BPE with byte fallback, laid out like the
  Llama-2 tokenizer: ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, ``<0x00>``..``<0xFF>`` 3..258, then the merges.
  Rare characters (the alphabet is limited to the most frequent ones) go through byte fallback.
- ``qwen3`` / ``qwen3_moe``: Qwen2-style byte-level BPE (Qwen's split regex, NFC, no BOS) of the real size,
  151,669 ids: the trained merges, decodable filler tokens up to 151,642, then Qwen3's 26 added tokens at
  their real ids (``<|endoftext|>`` 151643, ``<|im_start|>`` 151644, ``<|im_end|>`` 151645, ``<think>``
  151667 and ``</think>`` 151668, the last two not special).
- ``gpt_oss``: o200k-style byte-level BPE (o200k's split regex) of the real size, 201,088 ids, with
  o200k_harmony's special tokens at their real ids (``<|return|>`` 200002, ``<|constrain|>`` 200003,
  ``<|channel|>`` 200005, ``<|start|>`` 200006, ``<|end|>`` 200007, ``<|message|>`` 200008, ``<|call|>``
  200012, the rest reserved; from openai/harmony's src/tiktoken_ext/public_encodings.rs at 55dc3228,
  where 200009 is ``<|reserved_200009|>``: the shared contract's 200009 for ``<|constrain|>`` is wrong).
  Both train in 10-20 s, once per process.

Bad checkpoints (``make_bad_checkpoint`` builds a llama2-kind one and breaks it; to break one by hand):

- ``missing_shard``: a sharded checkpoint (``make_sharded_checkpoint``) with one of the files the
  ``model.safetensors.index.json`` weight map lists deleted.
- ``index_missing_file``: a sharded checkpoint whose index no longer mentions one shard (its tensors are
  dropped from the weight map) while the file stays on disk: the index is incomplete, the weights those
  tensors hold are missing to any loader that trusts it.
- ``truncated``: ``model.safetensors`` cut short with ``corrupt_truncate(path, size // 2)`` (the header
  still parses, the data does not reach the offsets it declares).
- ``pickle_only``: saved with ``save_pretrained(..., safe_serialization=False)`` (``pytorch_model.bin``)
  and every ``*.safetensors`` removed.
- ``unsupported_arch``: ``config.json`` ``"architectures"`` edited to ``["GPT2LMHeadModel"]``.

Heavy libraries (torch, transformers, tokenizers) are imported inside the functions, so importing this
module and calling ``shape`` needs none of them.

Self-check (builds each kind, loads it back, runs a forward pass, checks determinism and timings)::

    .venv/bin/python -m swallow_trt.workflows.tiny
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerFast

KINDS: Final = ("llama2", "llama31", "mistral", "mixtral")
# The 2026 generation, kept apart so the suites that loop over KINDS do not grow by them unasked.
KINDS_2026: Final = ("qwen3", "qwen3_moe", "gpt_oss")
Kind = Literal["llama2", "llama31", "mistral", "mixtral", "qwen3", "qwen3_moe", "gpt_oss"]
Problem = Literal["missing_shard", "truncated", "pickle_only", "unsupported_arch", "index_missing_file"]
PROBLEMS: Final[tuple[Problem, ...]] = (
    "missing_shard",
    "truncated",
    "pickle_only",
    "unsupported_arch",
    "index_missing_file",
)

TOKENIZER_VOCAB_SIZE: Final = 4000

_COMMON: Final[dict[str, Any]] = {
    "hidden_size": 512,
    "intermediate_size": 1024,
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "torch_dtype": "bfloat16",
    "tie_word_embeddings": False,
}

_SHAPES: Final[dict[str, dict[str, Any]]] = {
    "llama2": {
        "architectures": ["LlamaForCausalLM"],
        "num_key_value_heads": 8,
        "vocab_size": 43176,
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    },
    "llama31": {
        "architectures": ["LlamaForCausalLM"],
        "num_key_value_heads": 4,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        "bos_token_id": 128000,
        "eos_token_id": [128001, 128008, 128009],
    },
    "mistral": {
        "architectures": ["MistralForCausalLM"],
        "num_key_value_heads": 4,
        "vocab_size": 42800,
        "max_position_embeddings": 4096,
        "sliding_window": 4096,
        "rope_theta": 10000.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    },
    "mixtral": {
        "architectures": ["MixtralForCausalLM"],
        "num_key_value_heads": 4,
        "vocab_size": 32000,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "max_position_embeddings": 32768,
        "rope_theta": 1e6,
        "sliding_window": None,
        "bos_token_id": 1,
        "eos_token_id": 2,
    },
    # Qwen3-Swallow: head_dim 128 independent of hidden / heads (8 x 128 = 1024 != 512), GQA, q/k norm,
    # the real 151,936 vocab (embedding and lm_head untied), rope theta 1e6, no sliding window.
    "qwen3": {
        "architectures": ["Qwen3ForCausalLM"],
        "num_key_value_heads": 4,
        "head_dim": 128,
        "vocab_size": 151936,
        "max_position_embeddings": 40960,
        "rope_theta": 1e6,
        "use_sliding_window": False,
        "sliding_window": None,
        "attention_bias": False,
        "bos_token_id": 151643,
        "eos_token_id": [151645, 151643],
    },
    # Qwen3-Swallow-30B-A3B: 128 experts, top-8, renormalised top-k weights, no shared expert, every
    # layer MoE; the expert width is shrunk to 256 (768 at full size) so that AWQ group 128 holds at TP 2.
    "qwen3_moe": {
        "architectures": ["Qwen3MoeForCausalLM"],
        "num_key_value_heads": 4,
        "head_dim": 128,
        "vocab_size": 151936,
        "max_position_embeddings": 40960,
        "rope_theta": 1e6,
        "use_sliding_window": False,
        "sliding_window": None,
        "num_experts": 128,
        "num_experts_per_tok": 8,
        "moe_intermediate_size": 256,
        "norm_topk_prob": True,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "bos_token_id": 151643,
        "eos_token_id": [151645, 151643],
    },
    # GPT-OSS-Swallow: alternating sliding (128) / full attention, attention bias and sinks, 32 experts
    # top-4 with biases, head_dim 64, yarn rope, the real 201,088 vocab. BF16 weights (the Swallow repos
    # that are not -MXFP4).
    "gpt_oss": {
        "architectures": ["GptOssForCausalLM"],
        "num_key_value_heads": 4,
        "head_dim": 64,
        "intermediate_size": 512,
        "vocab_size": 201088,
        "max_position_embeddings": 131072,
        "rope_theta": 150000.0,
        "rope_scaling": {
            "rope_type": "yarn",
            "factor": 32.0,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "truncate": False,
            "original_max_position_embeddings": 4096,
        },
        "sliding_window": 128,
        "layer_types": ["sliding_attention", "full_attention"],
        "attention_bias": True,
        "num_local_experts": 32,
        "num_experts_per_tok": 4,
        "bos_token_id": 199998,
        "eos_token_id": [200002, 199999, 200012],
    },
}

Style = Literal["byte_level", "sentencepiece", "qwen2", "o200k"]
# The tokenizer style of each kind.
_STYLE: Final[dict[str, Style]] = {
    "llama2": "sentencepiece",
    "llama31": "byte_level",
    "mistral": "sentencepiece",
    "mixtral": "sentencepiece",
    "qwen3": "qwen2",
    "qwen3_moe": "qwen2",
    "gpt_oss": "o200k",
}

# Qwen2/Qwen3's split regex (digits one at a time) and its added tokens from 151643, in order, with
# their "special" flags as Qwen3's tokenizer_config.json has them (the think and tool tokens are not
# special, so they survive skip_special_tokens).
_QWEN2_SPLIT: Final = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN3_FIRST_ADDED: Final = 151643
QWEN3_ADDED: Final = (
    *(
        (name, True)
        for name in (
            "<|endoftext|>",
            "<|im_start|>",
            "<|im_end|>",
            "<|object_ref_start|>",
            "<|object_ref_end|>",
            "<|box_start|>",
            "<|box_end|>",
            "<|quad_start|>",
            "<|quad_end|>",
            "<|vision_start|>",
            "<|vision_end|>",
            "<|vision_pad|>",
            "<|image_pad|>",
            "<|video_pad|>",
        )
    ),
    *(
        (name, False)
        for name in (
            "<tool_call>",
            "</tool_call>",
            "<|fim_prefix|>",
            "<|fim_middle|>",
            "<|fim_suffix|>",
            "<|fim_pad|>",
            "<|repo_name|>",
            "<|file_sep|>",
            "<tool_response>",
            "</tool_response>",
            "<think>",
            "</think>",
        )
    ),
)
# o200k's split regex and o200k_harmony's special tokens (199998..201087; tiktoken's o200k_harmony).
_O200K_SPLIT: Final = "|".join(
    (
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    )
)
HARMONY_FIRST_ADDED: Final = 199998
HARMONY_NAMED: Final = {
    199998: "<|startoftext|>",
    199999: "<|endoftext|>",
    200002: "<|return|>",
    200003: "<|constrain|>",
    200005: "<|channel|>",
    200006: "<|start|>",
    200007: "<|end|>",
    200008: "<|message|>",
    200012: "<|call|>",
    200018: "<|endofprompt|>",
}
HARMONY_VOCAB_SIZE: Final = 201088

# The split regex of the Llama-3 tokenizer (tiktoken cl100k style).
_LLAMA3_SPLIT: Final = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_SPECIALS: Final = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
)
# Llama-3 Instruct's header-style template (the BOS token opens the conversation).
LLAMA3_CHAT_TEMPLATE: Final = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
_SP_SPECIALS: Final = ("<unk>", "<s>", "</s>")
_SP_BYTES: Final = tuple(f"<0x{b:02X}>" for b in range(256))
# The characters the SentencePiece-style tokenizer keeps as pieces; the rarer ones use byte fallback.
_SP_ALPHABET: Final = 1000

_SAFETENSORS_INDEX: Final = "model.safetensors.index.json"

# Trained tokenizers (tokenizer.json text), one per style, trained at most once per process.
_TOKENIZER_CACHE: dict[str, str] = {}


def shape(kind: str, **overrides: Any) -> dict[str, Any]:
    """The config kwargs of ``kind`` (a new dict; ``overrides`` replace or add keys)."""
    if kind not in _SHAPES:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS + KINDS_2026)}")
    kwargs: dict[str, Any] = {**_COMMON, **json.loads(json.dumps(_SHAPES[kind]))}
    kwargs.update(overrides)
    return kwargs


def eos_ids(kind: str, **overrides: Any) -> list[int]:
    """The EOS ids of the config of ``kind`` as a list."""
    eos = shape(kind, **overrides)["eos_token_id"]
    return list(eos) if isinstance(eos, list | tuple) else [int(eos)]


@cache
def japanese_paragraphs() -> tuple[str, ...]:
    """The Japanese Wikipedia paragraphs shipped in the package (JSQuAD v1.3, CC BY-SA 4.0)."""
    import swallow_trt

    path = Path(swallow_trt.__file__).parent / "data" / "jsquad-v1.3-ja.jsonl"
    with path.open(encoding="utf-8") as f:
        return tuple(json.loads(line)["text"] for line in f if line.strip())


# --------------------------------------------------------------------------------------------- tokenizers


def _train_byte_level() -> Tokenizer:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_SIZE,
        special_tokens=list(_LLAMA3_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(japanese_paragraphs(), trainer=trainer)
    bos = _LLAMA3_SPECIALS[0]
    bos_id = tok.token_to_id(bos)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{bos}:0 $A:0",
                pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                special_tokens=[(bos, bos_id)],
            ),
        ]
    )
    return tok


def _alphabet(texts: Iterable[str], size: int = _SP_ALPHABET) -> list[str]:
    """The ``size`` most frequent characters of ``texts`` (ties: the lower code point first)."""
    counts = Counter(ch for text in texts for ch in text)
    return sorted(counts, key=lambda ch: (-counts[ch], ch))[:size]


def _train_sentencepiece() -> Tokenizer:
    """BPE with byte fallback laid out like the Llama-2 tokenizer.

    Whitespace: the normalizer prepends "▁" and turns every space into "▁" (as the Llama-2 tokenizer.json
    does); the Metaspace pre-tokenizer then only splits before each "▁" and never prepends another (with
    ``prepend_scheme="first"`` a paragraph that already starts with a space would get no "▁" and lose that
    space on decode, since the Strip decoder always removes one). The decoder undoes it: "▁" -> " ",
    byte-fallback tokens -> bytes, fuse, strip the one leading space.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)

    # Train the merges on the normalised text, then lay the vocabulary out as Llama-2 does: the special
    # tokens, the 256 byte-fallback tokens, then the trained pieces in their order.
    draft = Tokenizer(models.BPE(unk_token="<unk>"))
    draft.normalizer = normalizer
    draft.pre_tokenizer = pre_tokenizer
    # The alphabet is chosen here, ties broken by code point: the trainer's own ``limit_alphabet`` cut
    # breaks ties between equally frequent characters in hash order (a different vocabulary each run).
    alphabet = _alphabet(normalizer.normalize_str(text) for text in japanese_paragraphs())
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_SIZE - len(_SP_BYTES),
        special_tokens=list(_SP_SPECIALS),
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet),
        show_progress=False,
    )
    draft.train_from_iterator(japanese_paragraphs(), trainer=trainer)
    trained = json.loads(draft.to_str())["model"]
    pieces = sorted(trained["vocab"].items(), key=lambda item: item[1])
    vocab: dict[str, int] = {}
    for token in (*_SP_SPECIALS, *_SP_BYTES, *(piece for piece, _ in pieces)):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in trained["merges"]]

    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    )
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(content=" ", left=1, right=0),
        ]
    )
    tok.add_special_tokens(list(_SP_SPECIALS))
    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", vocab["<s>"])]
    )
    return tok


def _filler_tokens(taken: set[str], count: int) -> list[str]:
    """``count`` byte-level tokens for the ids between the trained merges and the added tokens, so that
    the vocabulary has its real size and the added tokens their real ids. Unreachable when encoding
    (no merge makes them) but decodable, like a real vocabulary's: single CJK and kana characters,
    every two-byte sequence (fragments of characters, invalid UTF-8 included), the shipped text's
    character bigrams, then numbered ASCII pieces."""
    table = dict(enumerate(_byte_level_table()))

    def encode(data: bytes) -> str:
        return "".join(table[b] for b in data)

    def candidates() -> Iterable[str]:
        for cp in (*range(0x3041, 0x3100), *range(0x4E00, 0xA000)):
            yield encode(chr(cp).encode("utf-8"))
        for a in range(256):
            for b in range(256):
                yield encode(bytes((a, b)))
        seen: set[str] = set()
        for text in japanese_paragraphs():
            for i in range(len(text) - 1):
                pair = text[i : i + 2]
                if pair not in seen:
                    seen.add(pair)
                    yield encode(pair.encode("utf-8"))
        n = 0
        while True:
            yield encode(f" tok{n}".encode())
            n += 1

    out: list[str] = []
    for token in candidates():
        if len(out) == count:
            break
        if token not in taken:
            taken.add(token)
            out.append(token)
    return out


def _byte_level_table() -> list[str]:
    """GPT-2's bytes_to_unicode: byte b -> its byte-level character (printable bytes map to themselves)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + n)
            n += 1
    return [chars[b] for b in range(256)]


def _train_full_vocab(split: str, first_added: int, added: list[tuple[str, bool]], nfc: bool) -> Tokenizer:
    """A byte-level BPE trained on the shipped text, padded to ``first_added`` ids, then ``added``
    tokens (name, special) from that id on: a Qwen-style or o200k-style tokenizer of the real size."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )

    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    draft = Tokenizer(models.BPE())
    draft.pre_tokenizer = pre
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_SIZE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    draft.train_from_iterator(japanese_paragraphs(), trainer=trainer)
    trained = json.loads(draft.to_str())["model"]
    vocab: dict[str, int] = dict(sorted(trained["vocab"].items(), key=lambda item: item[1]))
    for token in _filler_tokens(set(vocab), first_added - len(vocab)):
        vocab[token] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in trained["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=False))
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    for name, special in added:
        token = AddedToken(name, special=special, normalized=False)
        if special:
            tok.add_special_tokens([token])
        else:
            tok.add_tokens([token])
    return tok


def _train_qwen2() -> Tokenizer:
    tok = _train_full_vocab(_QWEN2_SPLIT, QWEN3_FIRST_ADDED, list(QWEN3_ADDED), nfc=True)
    assert tok.token_to_id("</think>") == QWEN3_FIRST_ADDED + len(QWEN3_ADDED) - 1
    return tok


def _train_o200k() -> Tokenizer:
    added = [
        (HARMONY_NAMED.get(i, f"<|reserved_{i}|>"), True)
        for i in range(HARMONY_FIRST_ADDED, HARMONY_VOCAB_SIZE)
    ]
    tok = _train_full_vocab(_O200K_SPLIT, HARMONY_FIRST_ADDED, added, nfc=False)
    assert all(tok.token_to_id(name) == i for i, name in HARMONY_NAMED.items())
    return tok


_TRAINERS: Final = {
    "byte_level": _train_byte_level,
    "sentencepiece": _train_sentencepiece,
    "qwen2": _train_qwen2,
    "o200k": _train_o200k,
}


def _trained(style: Style) -> Tokenizer:
    from tokenizers import Tokenizer

    if style not in _TOKENIZER_CACHE:
        _TOKENIZER_CACHE[style] = _TRAINERS[style]().to_str()
    return Tokenizer.from_str(_TOKENIZER_CACHE[style])


def make_tokenizer(kind: str, **overrides: Any) -> PreTrainedTokenizerFast:
    """The transformers tokenizer of ``kind`` (trained on the shipped text on first use, then cached)."""
    from transformers import PreTrainedTokenizerFast

    cfg = shape(kind, **overrides)
    style = _STYLE[kind]
    return PreTrainedTokenizerFast(
        tokenizer_object=_trained(style),
        model_max_length=cfg["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"],
        **_TOKENS[style],
    )


# The special tokens each style's tokenizer_config.json names (Qwen3's: no BOS, <|im_end|> EOS).
_TOKENS: Final[dict[str, dict[str, str]]] = {
    "byte_level": {
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|eot_id|>",
        "chat_template": LLAMA3_CHAT_TEMPLATE,
    },
    "sentencepiece": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "qwen2": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    "o200k": {"bos_token": "<|startoftext|>", "eos_token": "<|return|>", "pad_token": "<|endoftext|>"},
}


# -------------------------------------------------------------------------------------------- checkpoints


def _config(kind: str, **overrides: Any) -> PretrainedConfig:
    from transformers import (
        GptOssConfig,
        LlamaConfig,
        MistralConfig,
        MixtralConfig,
        Qwen3Config,
        Qwen3MoeConfig,
    )

    kwargs = shape(kind, **overrides)
    arch = kwargs["architectures"][0]
    cls = {
        "LlamaForCausalLM": LlamaConfig,
        "MistralForCausalLM": MistralConfig,
        "MixtralForCausalLM": MixtralConfig,
        "Qwen3ForCausalLM": Qwen3Config,
        "Qwen3MoeForCausalLM": Qwen3MoeConfig,
        "GptOssForCausalLM": GptOssConfig,
    }.get(arch)
    if cls is None:
        raise ValueError(f"no config class for architecture {arch!r}")
    config: PretrainedConfig = cls(**kwargs)
    return config


def _build_model(kind: str, seed: int, **overrides: Any) -> PreTrainedModel:
    import torch
    from transformers import AutoModelForCausalLM

    config = _config(kind, **overrides)
    torch.manual_seed(seed)
    # Initialised directly in bf16: the same values as fp32-then-cast, without the 4-byte copy of the
    # 128256 x 512 embedding and lm_head.
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model = model.to(torch.bfloat16)
    model.eval()
    result: PreTrainedModel = model
    return result


def _finish(directory: Path, kind: str, name_or_path: str | None, **overrides: Any) -> None:
    """config.json as a real checkpoint has it, generation_config.json, the tokenizer files."""
    from transformers import GenerationConfig

    cfg_path = directory / "config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    # transformers 4.57 writes "dtype"; the published Swallow configs (and older readers) have "torch_dtype".
    dtype = cfg.pop("dtype", None) or shape(kind, **overrides)["torch_dtype"]
    cfg["torch_dtype"] = dtype
    if name_or_path is not None:
        cfg["_name_or_path"] = name_or_path
    cfg_path.write_text(json.dumps(dict(sorted(cfg.items())), indent=2) + "\n", encoding="utf-8")

    kwargs = shape(kind, **overrides)
    eos = kwargs["eos_token_id"]
    GenerationConfig(bos_token_id=kwargs["bos_token_id"], eos_token_id=eos).save_pretrained(directory)
    make_tokenizer(kind, **overrides).save_pretrained(directory)


def make_checkpoint(
    directory: Path,
    kind: str,
    *,
    seed: int = 0,
    name_or_path: str | None = None,
    **overrides: Any,
) -> Path:
    """A tiny random-weight checkpoint of ``kind`` in ``directory`` (created): one ``model.safetensors``.

    Same ``kind``, ``seed`` and ``overrides``: byte-identical ``model.safetensors``. ``name_or_path``
    becomes ``config.json`` ``"_name_or_path"`` (how the registry recognises a release, e.g.
    ``"tokyotech-llm/Llama-3.1-Swallow-8B-Instruct-v0.3"``). ``overrides`` go to :func:`shape`.
    """
    return _save(directory, kind, seed=seed, name_or_path=name_or_path, shard=None, **overrides)


def make_sharded_checkpoint(
    directory: Path,
    kind: str,
    max_shard_size: str | int = "20MB",
    *,
    seed: int = 0,
    name_or_path: str | None = None,
    **overrides: Any,
) -> Path:
    """Like :func:`make_checkpoint`, saved as ``model-0000x-of-0000y.safetensors`` and
    ``model.safetensors.index.json`` (a tensor larger than ``max_shard_size`` gets a shard of its own)."""
    return _save(directory, kind, seed=seed, name_or_path=name_or_path, shard=max_shard_size, **overrides)


def _save(
    directory: Path,
    kind: str,
    *,
    seed: int,
    name_or_path: str | None,
    shard: str | int | None,
    safe: bool = True,
    **overrides: Any,
) -> Path:
    vocab_size = shape(kind, **overrides)["vocab_size"]
    if vocab_size < TOKENIZER_VOCAB_SIZE:
        raise ValueError(f"vocab_size {vocab_size} is below the {TOKENIZER_VOCAB_SIZE} ids of the tokenizer")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = _build_model(kind, seed, **overrides)
    # transformers' default shard size (5GB) keeps these tiny models in one file.
    model.save_pretrained(directory, safe_serialization=safe, max_shard_size=shard or "5GB")
    _finish(directory, kind, name_or_path, **overrides)
    return directory


# ----------------------------------------------------------------------------------------- bad checkpoints


def corrupt_truncate(path: Path, keep_bytes: int) -> None:
    """Cut ``path`` to its first ``keep_bytes`` bytes (a download or copy that stopped part way)."""
    path = Path(path)
    size = path.stat().st_size
    if not 0 <= keep_bytes < size:
        raise ValueError(f"keep_bytes must be in [0, {size}) for {path} ({size} bytes), got {keep_bytes}")
    os.truncate(path, keep_bytes)


def make_bad_checkpoint(directory: Path, problem: Problem, *, seed: int = 0, **overrides: Any) -> Path:
    """A llama2-kind checkpoint in ``directory``, broken in the way ``problem`` names.

    - ``missing_shard``: sharded; one shard listed in the index deleted.
    - ``index_missing_file``: sharded; one shard left out of the index's weight map (the file stays).
    - ``truncated``: ``model.safetensors`` truncated to half its size.
    - ``pickle_only``: only ``pytorch_model.bin`` (saved with ``safe_serialization=False``).
    - ``unsupported_arch``: ``config.json`` ``"architectures": ["GPT2LMHeadModel"]``.
    """
    directory = Path(directory)
    kind = "llama2"
    if problem in ("missing_shard", "index_missing_file"):
        make_sharded_checkpoint(directory, kind, seed=seed, **overrides)
        index_path = directory / _SAFETENSORS_INDEX
        index = json.loads(index_path.read_text(encoding="utf-8"))
        shards = sorted(set(index["weight_map"].values()))
        # The shard of the decoder layers (the embedding and the lm_head each have their own).
        victim = index["weight_map"]["model.layers.0.self_attn.q_proj.weight"]
        if len(shards) < 2:
            raise RuntimeError(f"expected several shards in {directory}, got {shards}")
        if problem == "missing_shard":
            (directory / victim).unlink()
        else:
            index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v != victim}
            index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    elif problem == "truncated":
        make_checkpoint(directory, kind, seed=seed, **overrides)
        weights = directory / "model.safetensors"
        corrupt_truncate(weights, weights.stat().st_size // 2)
    elif problem == "pickle_only":
        _save(directory, kind, seed=seed, name_or_path=None, shard=None, safe=False, **overrides)
        for path in directory.glob("*.safetensors*"):
            path.unlink()
    elif problem == "unsupported_arch":
        make_checkpoint(directory, kind, seed=seed, **overrides)
        cfg_path = directory / "config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        cfg["architectures"] = ["GPT2LMHeadModel"]
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    else:
        raise ValueError(f"unknown problem {problem!r}; expected one of {', '.join(PROBLEMS)}")
    return directory


# ------------------------------------------------------------------------------------------------ self-check


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_tokenizer(kind: str, vocab_size: int, paragraphs: int = 50) -> None:
    tok = make_tokenizer(kind)
    texts = japanese_paragraphs()
    extra = (" 先頭に空白", "末尾に空白 ", "二つ  の空白", "ASCII text, 123 and émoji 🍣", "改行\n\nあり")
    for text in (*texts[:paragraphs], *texts, *extra):
        ids = tok.encode(text, add_special_tokens=False)
        assert max(ids) < min(vocab_size, len(tok)), (kind, max(ids))
        decoded = tok.decode(ids)
        assert decoded == text, (kind, text[:40], decoded[:40])
    byte_tokens = {f"<0x{b:02X}>" for b in range(256)}
    if _STYLE[kind] == "sentencepiece":
        used = {t for text in texts for t in tok.tokenize(text)}
        assert used & byte_tokens, f"{kind}: byte fallback never used on the shipped text"
    with_bos = tok.encode(texts[0])
    assert with_bos[0] == tok.bos_token_id, (kind, with_bos[:3])


def _self_check() -> None:
    import tempfile
    import time

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(min(2, torch.get_num_threads()))
    text = japanese_paragraphs()[0]

    for style in ("byte_level", "sentencepiece"):
        t0 = time.perf_counter()
        first = _trained(style).to_str()
        t_train = time.perf_counter() - t0
        _TOKENIZER_CACHE.pop(style)
        assert _trained(style).to_str() == first, f"{style}: tokenizer training is not deterministic"
        print(f"tokenizer {style}: trained in {t_train:.2f} s, deterministic")

    with tempfile.TemporaryDirectory(prefix="swallow-tiny-") as tmp:
        root = Path(tmp)
        for kind in KINDS:
            t0 = time.perf_counter()
            a = make_checkpoint(root / f"{kind}-a", kind, name_or_path=f"tiny/{kind}")
            t_build = time.perf_counter() - t0
            b = make_checkpoint(root / f"{kind}-b", kind, name_or_path=f"tiny/{kind}")
            c = make_checkpoint(root / f"{kind}-c", kind, seed=1)
            for name in ("model.safetensors", "config.json", "tokenizer.json", "generation_config.json"):
                assert _sha256(a / name) == _sha256(b / name), f"{kind}: {name} differs between builds"
            assert _sha256(a / "model.safetensors") != _sha256(c / "model.safetensors"), kind

            t0 = time.perf_counter()
            model = AutoModelForCausalLM.from_pretrained(a, dtype="auto")
            tok = AutoTokenizer.from_pretrained(a)
            t_load = time.perf_counter() - t0
            cfg = json.loads((a / "config.json").read_text(encoding="utf-8"))
            assert cfg["torch_dtype"] == "bfloat16", cfg
            assert cfg["_name_or_path"] == f"tiny/{kind}", cfg
            assert model.dtype == torch.bfloat16, model.dtype
            assert model.config.vocab_size == shape(kind)["vocab_size"]
            gen = json.loads((a / "generation_config.json").read_text(encoding="utf-8"))
            assert gen["eos_token_id"] == shape(kind)["eos_token_id"], gen

            t0 = time.perf_counter()
            inputs = tok(text, return_tensors="pt")
            with torch.no_grad():
                logits = model(**inputs).logits
            t_fwd = time.perf_counter() - t0
            assert logits.shape == (1, inputs["input_ids"].shape[1], shape(kind)["vocab_size"]), logits.shape
            assert torch.isfinite(logits).all()
            _check_tokenizer(kind, shape(kind)["vocab_size"])
            size_mb = (a / "model.safetensors").stat().st_size / 1e6
            print(
                f"{kind:8s} build {t_build:5.2f} s  load {t_load:5.2f} s  forward {t_fwd:5.2f} s "
                f"({inputs['input_ids'].shape[1]} tokens)  {size_mb:6.1f} MB  deterministic, round-trips"
            )
            for d in (a, b, c):
                shutil.rmtree(d)

        t0 = time.perf_counter()
        s1 = make_sharded_checkpoint(root / "sharded-1", "llama31")
        t_shard = time.perf_counter() - t0
        s2 = make_sharded_checkpoint(root / "sharded-2", "llama31")
        index = json.loads((s1 / _SAFETENSORS_INDEX).read_text(encoding="utf-8"))
        shards = sorted(set(index["weight_map"].values()))
        assert len(shards) > 1, shards
        assert not (s1 / "model.safetensors").exists()
        for name in (*shards, _SAFETENSORS_INDEX):
            assert _sha256(s1 / name) == _sha256(s2 / name), name
        AutoModelForCausalLM.from_pretrained(s1)
        print(f"sharded  build {t_shard:5.2f} s  {len(shards)} shards, deterministic, loads")

        for problem in PROBLEMS:
            t0 = time.perf_counter()
            bad = make_bad_checkpoint(root / f"bad-{problem}", problem)
            t_bad = time.perf_counter() - t0
            try:
                AutoModelForCausalLM.from_pretrained(bad)
            except Exception as exc:
                outcome = f"load fails: {type(exc).__name__}: {str(exc).splitlines()[0][:90]}"
            else:
                outcome = "loads without an error"
            print(f"bad {problem:18s} {t_bad:5.2f} s  {outcome}")


if __name__ == "__main__":
    _self_check()
