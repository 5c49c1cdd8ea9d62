"""IncrementalDetokenizer: streamed text equals the full decode, no U+FFFD from split characters, O(n).

Both tokenizer styles of the Swallow families, trained on the shipped Japanese text (tests.fixtures.tiny):
``llama31`` (byte-level BPE, like Llama-3) and ``llama2`` (SentencePiece-style BPE with ``<0xNN>`` byte
fallback, like Llama-2 / Mistral Swallow).
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Iterator, Sequence
from functools import cache
from typing import Any

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from swallow_trt.text.detok import MAX_PENDING, SHIFT_EVERY, IncrementalDetokenizer
from tests.fixtures.counting import CountingTokenizer
from tests.fixtures.tiny import japanese_paragraphs, make_tokenizer

FFFD = "\ufffd"
STYLES = ("llama31", "llama2", "qwen3", "gpt_oss")  # qwen3: Qwen2 BPE, 151k; gpt_oss: o200k-style, 201k
N_PARAGRAPHS = 320
# Characters outside the SentencePiece-style alphabet (byte fallback) and split across byte-level tokens.
RARE = "寿司🍣と𠮷野家、鬱蒼とした麤い道で👍🏽😀を見た。𩸽（ほっけ）と𠀋も。"


@cache
def tokenizer(kind: str) -> Any:
    """One tokenizer per style for the module (training is cached by the fixture, building is not)."""
    return make_tokenizer(kind)


@cache
def encoded(kind: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    tok = tokenizer(kind)
    return tuple(
        (text, tuple(tok.encode(text, add_special_tokens=False)))
        for text in japanese_paragraphs()[:N_PARAGRAPHS]
    )


def chunks(ids: Sequence[int], rng: random.Random | None) -> Iterator[list[int]]:
    """One id at a time (rng None), else random chunk sizes 1..7."""
    i = 0
    while i < len(ids):
        k = 1 if rng is None else rng.randint(1, 7)
        yield list(ids[i : i + k])
        i += k


def stream(
    tok: Any, ids: Sequence[int], rng: random.Random | None = None, **kwargs: Any
) -> tuple[list[str], str]:
    d = IncrementalDetokenizer(tok, **kwargs)
    pieces = [d.push(c) for c in chunks(ids, rng)]
    return pieces, d.flush()


def byte_ids(tok: Any) -> set[int]:
    return set(tok.convert_tokens_to_ids([f"<0x{b:02X}>" for b in range(256)]))


# ------------------------------------------------------------------------------------- Japanese paragraphs


@pytest.mark.parametrize("kind", STYLES)
@pytest.mark.parametrize("chunked", [False, True], ids=["one-by-one", "chunks-1-7"])
def test_paragraphs_stream_exactly(kind: str, chunked: bool) -> None:
    tok = tokenizer(kind)
    rng = random.Random(1234) if chunked else None
    split_chars = 0
    for text, ids in encoded(kind):
        pieces, tail = stream(tok, ids, rng)
        assert "".join(pieces) + tail == tok.decode(list(ids)) == text
        assert not any(FFFD in p for p in (*pieces, tail)), text[:40]
        # Streamed, not held to the end: at most a few characters come out of flush.
        assert len(tail) <= 4, (text[:40], tail)
        split_chars += sum(FFFD in tok.decode([i]) for i in ids)
    # The per-token decode (the upstream bug) would have broken characters in this text.
    assert split_chars > 100


# --------------------------------------------------------------------------------- byte fallback, emoji


@pytest.mark.parametrize("kind", STYLES)
@pytest.mark.parametrize("seed", [None, 0, 1, 2])
def test_emoji_and_rare_kanji(kind: str, seed: int | None) -> None:
    tok = tokenizer(kind)
    for text in (RARE, "🍣" * 12 + "が好き", " 𠮷" * 9, "麤" * 8 + "🍣" * 8 + "。", "😀👍🏽", "𠮷"):
        ids = tok.encode(text, add_special_tokens=False)
        if kind == "llama2":
            assert byte_ids(tok) & set(ids), "the text must go through byte fallback"
        else:
            assert any(FFFD in tok.decode([i]) for i in ids), "the text must split characters"
        rng = None if seed is None else random.Random(seed)
        pieces, tail = stream(tok, ids, rng)
        assert "".join(pieces) + tail == tok.decode(ids) == text
        assert not any(FFFD in p for p in (*pieces, tail))


@pytest.mark.parametrize("kind", STYLES)
def test_long_byte_runs_stay_bounded_and_exact(kind: str) -> None:
    tok = tokenizer(kind)
    text = "🍣😀𠮷" * 40  # 480 byte-fallback tokens in one run for llama2
    ids = tok.encode(text, add_special_tokens=False)
    d = IncrementalDetokenizer(tok)
    pieces, most = [], 0
    for i in ids:
        pieces.append(d.push([i]))
        most = max(most, d.buffered_ids)
    out = "".join(pieces) + d.flush()
    assert out == text
    assert not any(FFFD in p for p in pieces)
    assert most <= 2 * MAX_PENDING + SHIFT_EVERY + 4, most
    assert sum(bool(p) for p in pieces) > len(text) // 8  # emitted along the way


@pytest.mark.parametrize("kind", STYLES)
def test_long_stretch_of_invalid_bytes_is_bounded_and_exact(kind: str) -> None:
    tok = tokenizer(kind)
    word = tok.encode("東京です", add_special_tokens=False)
    if kind == "llama2":
        stray = tok.convert_tokens_to_ids("<0x80>")  # a continuation byte with no lead byte
    else:
        stray = next(i for i in range(len(tok)) if tok.decode([i]) == FFFD and tok.decode([i, i]) == FFFD * 2)
    ids = word + [stray] * 200 + word + [stray] * 40
    d = IncrementalDetokenizer(tok)
    pieces, most = [], 0
    for i in ids:
        pieces.append(d.push([i]))
        most = max(most, d.buffered_ids)
    assert "".join(pieces) + d.flush() == tok.decode(ids)
    assert most <= 2 * MAX_PENDING + SHIFT_EVERY + 4, most


# ---------------------------------------------------------------------------------------- prompt context


@pytest.mark.parametrize("kind", STYLES)
def test_prompt_ids(kind: str) -> None:
    tok = tokenizer(kind)
    rng = random.Random(7)
    for text, ids in encoded(kind)[:60]:
        for split in (1, len(ids) // 3, len(ids) // 2, len(ids) - 1):
            prompt, gen = list(ids[:split]), list(ids[split:])
            pieces, tail = stream(tok, gen, rng, prompt_ids=prompt)
            full, head = tok.decode(prompt + gen), tok.decode(prompt)
            if head.endswith(FFFD):  # the prompt ends inside a character: it is completed in the output
                head = head.rstrip(FFFD)
            assert full == text
            assert "".join(pieces) + tail == full[len(head) :]
            assert not any(FFFD in p for p in (*pieces, tail))


def test_prompt_keeps_the_leading_space_sentencepiece_strips() -> None:
    tok = tokenizer("llama2")
    ids = tok.encode("質問: 日本の首都は? 答え: 東京です。", add_special_tokens=False)
    tokens = tok.convert_ids_to_tokens(ids)
    split = max(i for i, t in enumerate(tokens) if t.startswith("▁") and i > 0)
    prompt, gen = ids[:split], ids[split:]
    expected = tok.decode(prompt + gen)[len(tok.decode(prompt)) :]
    assert expected.startswith(" ")
    assert not tok.decode(gen).startswith(" ")  # decoding the output alone loses the space
    for with_bos in (False, True):
        p = [tok.bos_token_id, *prompt] if with_bos else prompt
        pieces, tail = stream(tok, gen, prompt_ids=p)
        assert "".join(pieces) + tail == expected
    pieces, tail = stream(tok, gen)  # no prompt: the start of a sequence, as decode(gen) has it
    assert "".join(pieces) + tail == tok.decode(gen)


@pytest.mark.parametrize("kind", STYLES)
def test_prompt_of_special_tokens_only(kind: str) -> None:
    tok = tokenizer(kind)
    gen = tok.encode(" 東京", add_special_tokens=False)
    special = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id  # Qwen has no BOS
    pieces, tail = stream(tok, gen, prompt_ids=[special])
    assert "".join(pieces) + tail == tok.decode([special, *gen], skip_special_tokens=True)


# ---------------------------------------------------------------------------------------- special tokens


@pytest.mark.parametrize("kind", STYLES)
@pytest.mark.parametrize("skip", [True, False])
def test_special_tokens(kind: str, skip: bool) -> None:
    tok = tokenizer(kind)
    eos, bos = tok.eos_token_id, tok.bos_token_id
    bos = tok.pad_token_id if bos is None else bos  # Qwen has no BOS: its <|endoftext|>
    a = tok.encode("寿司🍣が", add_special_tokens=False)
    b = tok.encode(" 好きです。", add_special_tokens=False)
    # EOS in the middle of a split character, between words, and at the end.
    ids = [bos, *a[:2], eos, *a[2:], eos, *b, eos]
    for seed in (None, 3):
        rng = None if seed is None else random.Random(seed)
        pieces, tail = stream(tok, ids, rng, skip_special_tokens=skip)
        out = "".join(pieces) + tail
        assert out == tok.decode(ids, skip_special_tokens=skip)
        assert (tok.eos_token in out) is (not skip)
        if skip:
            assert out == tok.decode(a + b)
            assert not any(FFFD in p for p in pieces)


# ---------------------------------------------------------------------------------- incomplete sequences


@pytest.mark.parametrize("kind", STYLES)
@pytest.mark.parametrize("text", ["東京🍣", "𠮷🍣", "寿司が鬱", "🍣"])
def test_sequence_ending_inside_a_character(kind: str, text: str) -> None:
    tok = tokenizer(kind)
    full = tok.encode(text, add_special_tokens=False)
    cut = 0
    for drop in (1, 2, 3):
        ids = full[:-drop]
        if not ids or not tok.decode(ids).endswith(FFFD):
            continue
        cut += 1
        for seed in (None, 5):
            rng = None if seed is None else random.Random(seed)
            pieces, tail = stream(tok, ids, rng)
            assert "".join(pieces) + tail == tok.decode(ids)
            assert not any(FFFD in p for p in pieces)  # held back while it could still complete
            assert tail.endswith(FFFD)  # shown at the end, as decode shows it
    assert cut, "no cut ended inside a character"


def test_byte_fallback_run_turning_invalid_is_exact() -> None:
    """ByteFallback decodes a run of <0xNN> tokens all-or-nothing: a stray byte after a valid character
    turns the whole run into U+FFFD, so the character must not have been emitted yet."""
    tok = tokenizer("llama2")
    ids_of = dict(
        zip(range(256), tok.convert_tokens_to_ids([f"<0x{b:02X}>" for b in range(256)]), strict=True)
    )
    a = [ids_of[b] for b in "あ".encode()]
    word = tok.encode("です", add_special_tokens=False)
    for ids in (word + a + [ids_of[0x80]] + word, word + a + a[:2], word + a + a[:2] + word, a + a):
        d = IncrementalDetokenizer(tok)
        pieces = [d.push([i]) for i in ids]
        assert "".join(pieces) + d.flush() == tok.decode(ids)


# ----------------------------------------------------------------------------------------------- edges


@pytest.mark.parametrize("kind", STYLES)
def test_empty_push_and_flush(kind: str) -> None:
    tok = tokenizer(kind)
    d = IncrementalDetokenizer(tok)
    assert d.push([]) == ""
    assert d.push(iter(())) == ""
    assert d.flush() == ""
    ids = tok.encode("東京🍣です", add_special_tokens=False)
    out = []
    for i in ids:
        out.append(d.push([]))
        out.append(d.push(i))  # a bare int is accepted too
    out.append(d.push([]))
    out.append(d.flush())
    assert "".join(out) == "東京🍣です"
    # After flush, a new sequence starts (no context carried over).
    assert d.push(ids) + d.flush() == "東京🍣です"
    assert d.buffered_ids == 0


def test_numpy_ids() -> None:
    np = pytest.importorskip("numpy")
    tok = tokenizer("llama2")
    ids = np.array(tok.encode("寿司🍣と𠮷野家", add_special_tokens=False), dtype=np.int32)
    d = IncrementalDetokenizer(tok, prompt_ids=np.array([tok.bos_token_id]))
    out = d.push(ids[:3]) + "".join(d.push(i) for i in ids[3:]) + d.flush()
    assert out == "寿司🍣と𠮷野家"


def test_skipped_specials_in_prompt_and_stream_only() -> None:
    tok = tokenizer("llama31")
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    d = IncrementalDetokenizer(tok, prompt_ids=[eot, eot])
    assert d.push([eot] * 50) == ""
    assert d.buffered_ids == 0  # skipped special tokens are never stored
    assert d.flush() == ""


def test_cleanup_of_tokenization_spaces_streams_exactly() -> None:
    """Meta's Llama-3 tokenizer_config has clean_up_tokenization_spaces=true: " ." -> "." across tokens."""
    tok = make_tokenizer("llama31")
    tok.clean_up_tokenization_spaces = True
    text = "I don 't know . It 's fine , isn 't it ? Yes ! He said ' ok ' and we 've gone , they 're here ."
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) != text  # the cleanup changed it
    for seed in (None, 0, 1, 2, 3):
        rng = None if seed is None else random.Random(seed)
        pieces, tail = stream(tok, ids, rng)
        assert "".join(pieces) + tail == tok.decode(ids)


@pytest.mark.parametrize("kind", STYLES)
def test_fuzz_mixed_valid_invalid_and_special(kind: str) -> None:
    """Random mixes of text, random ids (partial characters, stray bytes) and special tokens."""
    tok = tokenizer(kind)
    rng = random.Random(2024)
    alphabet = [*"abc xyz.,!?' nあいうカタ漢字語", "🍣", "𠮷", "鬱", "麤", "é", "\n", "  "]
    specials = sorted(set(tok.all_special_ids))
    raw_bytes = sorted(byte_ids(tok)) if kind == "llama2" else []
    vocab = len(tok)
    for _ in range(300):
        ids: list[int] = []
        for _ in range(rng.randint(0, 12)):
            r = rng.random()
            if r < 0.6:
                text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 5)))
                ids += tok.encode(text, add_special_tokens=False)
            elif r < 0.8:
                ids.append(rng.randrange(vocab))
            elif r < 0.9:
                ids.append(rng.choice(specials))
            elif raw_bytes:
                ids.append(rng.choice(raw_bytes))
        skip = rng.random() < 0.5
        pieces, tail = stream(tok, ids, rng, skip_special_tokens=skip)
        assert "".join(pieces) + tail == tok.decode(ids, skip_special_tokens=skip), ids


# ------------------------------------------------------------------------------------------------ cost


@pytest.mark.parametrize("kind", STYLES)
@pytest.mark.parametrize("chunked", [False, True], ids=["one-by-one", "chunks-1-7"])
def test_cost_is_linear(kind: str, chunked: bool) -> None:
    tok = tokenizer(kind)
    ids: list[int] = []
    for _text, para in encoded(kind):
        ids += para
        if len(ids) >= 1024:
            break
    ids = ids[:1024]
    text = tok.decode(ids)
    counting = CountingTokenizer(tok)
    d = IncrementalDetokenizer(counting)
    counting.ids = counting.calls = 0  # the per-tokenizer probe (cached afterwards) is not per-token work
    pieces, most = [], 0
    for c in chunks(ids, random.Random(9) if chunked else None):
        pieces.append(d.push(c))
        most = max(most, d.buffered_ids)
    out = "".join(pieces) + d.flush()
    n = len(ids)
    assert out == text
    assert counting.ids <= 40 * n, counting.ids  # re-decoding everything would be n(n+1)/2 = 524,800
    assert counting.calls <= 2 * n, counting.calls
    assert most <= 2 * MAX_PENDING + SHIFT_EVERY + 8, most
    # Linear, not quadratic: twice the stream costs about twice the work.
    counting.ids = 0
    d = IncrementalDetokenizer(counting)
    for c in chunks(ids + ids, random.Random(9) if chunked else None):
        d.push(c)
    d.flush()
    assert counting.ids <= 40 * 2 * n


def test_module_has_no_heavy_imports() -> None:
    probe = (
        "import sys; import swallow_trt.text.detok; "
        "print(sorted(m for m in ('torch', 'transformers', 'tokenizers', 'numpy') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "[]"
