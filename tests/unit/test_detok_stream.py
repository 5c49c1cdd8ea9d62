"""IncrementalDetokenizer on tokenizers' DecodeStream: the cases the bare stream gets wrong, all 1,145
JSQuAD paragraphs, and the fallback (WindowDetokenizer) where a tokenizer has no usable Rust backend.

Both tokenizer styles of the Swallow families (tests.fixtures.tiny): ``llama31`` (byte-level BPE, like
Llama-3) and ``llama2`` (SentencePiece-style BPE with ``<0xNN>`` byte fallback, like Llama-2 / Mistral).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import cache
from typing import Any

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from swallow_trt.text.detok import MAX_PENDING, IncrementalDetokenizer, WindowDetokenizer
from tests.fixtures.counting import CountingTokenizer
from tests.fixtures.tiny import japanese_paragraphs, make_tokenizer

FFFD = "\ufffd"
STYLES = ("llama31", "llama2", "qwen3", "gpt_oss")  # as test_detok.py: Qwen2 BPE 151k, o200k-style 201k


@cache
def tokenizer(kind: str) -> Any:
    return make_tokenizer(kind)


@cache
def encoded(kind: str) -> tuple[tuple[int, ...], ...]:
    tok = tokenizer(kind)
    return tuple(tuple(tok.encode(text, add_special_tokens=False)) for text in japanese_paragraphs())


@cache
def byte_token(kind: str) -> dict[int, int]:
    """byte -> the id that decodes to that single byte (``<0xNN>``, or the byte-level alphabet)."""
    tok = tokenizer(kind)
    if kind == "llama2":
        names = [f"<0x{b:02X}>" for b in range(256)]
    else:
        from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

        alphabet = bytes_to_unicode()
        names = [alphabet[b] for b in range(256)]
    return dict(enumerate(tok.convert_tokens_to_ids(names)))


def as_bytes(kind: str, data: bytes) -> list[int]:
    ids = byte_token(kind)
    return [ids[b] for b in data]


def streamed(d: Any, pieces: Sequence[Sequence[int]]) -> tuple[list[str], str]:
    return [d.push(list(p)) for p in pieces], d.flush()


def one_by_one(ids: Sequence[int]) -> list[list[int]]:
    return [[i] for i in ids]


def random_chunks(ids: Sequence[int], rng: random.Random) -> list[list[int]]:
    out, i = [], 0
    while i < len(ids):
        k = rng.randint(1, 7)
        out.append(list(ids[i : i + k]))
        i += k
    return out


def stream_1024(kind: str, d: Any, counting: CountingTokenizer) -> bool:
    """Stream 1,024 ids of text one by one through ``d``, counting only its per-token decode work."""
    ids = [i for para in encoded(kind)[:8] for i in para][:1024]
    counting.calls = counting.ids = 0  # the per-tokenizer checks (cached afterwards) are not per token
    return "".join(d.push(i) for i in ids) + d.flush() == tokenizer(kind).decode(ids)


class NoBackend(CountingTokenizer):
    """A tokenizer that offers ``decode`` only, like a slow (Python / SentencePiece) tokenizer."""

    _tokenizer = None


class OwnDecode(CountingTokenizer):
    """A fast tokenizer whose ``decode`` is not its backend's (a subclass overriding it)."""

    def decode(self, ids: list[int], skip_special_tokens: bool = False, **kwargs: Any) -> str:
        return (
            super().decode(ids, skip_special_tokens=skip_special_tokens, **kwargs).replace("東", "東\u200b")
        )


# ------------------------------------------------------------------------------------- every paragraph


@pytest.mark.parametrize("kind", STYLES)
def test_every_jsquad_paragraph_streams_exactly(kind: str) -> None:
    """All 1,145 paragraphs, one id per push; then random chunks; then each with a prompt split."""
    tok = tokenizer(kind)
    paragraphs = encoded(kind)
    assert len(paragraphs) == 1145
    rng = random.Random(11)
    for ids in paragraphs:
        full = tok.decode(list(ids))
        pieces, tail = streamed(IncrementalDetokenizer(tok), one_by_one(ids))
        assert "".join(pieces) + tail == full
        assert not any(FFFD in p for p in pieces)
        pieces, tail = streamed(IncrementalDetokenizer(tok), random_chunks(ids, rng))
        assert "".join(pieces) + tail == full
        split = rng.randrange(1, len(ids))
        head = tok.decode(list(ids[:split])).rstrip(FFFD)
        d = IncrementalDetokenizer(tok, prompt_ids=list(ids[:split]))
        pieces, tail = streamed(d, one_by_one(ids[split:]))
        assert "".join(pieces) + tail == full[len(head) :]


def test_the_stream_does_the_per_token_work() -> None:
    """No Python-level decode per token: tokenizer.decode runs only in the per-tokenizer check (the
    window algorithm calls it about once per token, on about 7 ids)."""
    for kind in STYLES:
        counting = CountingTokenizer(tokenizer(kind))
        d = IncrementalDetokenizer(counting)
        assert stream_1024(kind, d, counting)
        assert counting.calls == 0  # the flush, too, decodes through the backend
        assert d.buffered_ids == 0


# --------------------------------------------------------------------------------------------- prompts


@pytest.mark.parametrize("kind", STYLES)
def test_prompt_that_ends_inside_a_character(kind: str) -> None:
    """The stream seeded with such a prompt repeats the prompt's text in its first output; the
    completed character (and only it) must come out."""
    tok = tokenizer(kind)
    cases = 0
    for ids in encoded(kind)[:80]:
        for split in range(1, len(ids)):
            prompt = list(ids[:split])
            head = tok.decode(prompt)
            if not head.endswith(FFFD):
                continue
            cases += 1
            full = tok.decode(list(ids))
            pieces, tail = streamed(IncrementalDetokenizer(tok, prompt_ids=prompt), one_by_one(ids[split:]))
            out = "".join(pieces) + tail
            assert out == full[len(head.rstrip(FFFD)) :]
            assert out[:1] == full[len(head.rstrip(FFFD))]  # the character the prompt began
            assert not any(FFFD in p for p in pieces)
    assert cases > 30


@pytest.mark.parametrize("kind", STYLES)
def test_prompt_ending_inside_a_character_and_nothing_generated(kind: str) -> None:
    tok = tokenizer(kind)
    prompt = tok.encode("寿司🍣", add_special_tokens=False)[:-1]
    head = tok.decode(prompt)
    assert head.endswith(FFFD)
    d = IncrementalDetokenizer(tok, prompt_ids=prompt)
    assert d.flush() == head[len(head.rstrip(FFFD)) :]  # as decode(prompt + [])[len(P):] has it


# ------------------------------------------------------------------------------- byte-fallback runs


def stray_cases() -> list[list[int]]:
    """Byte-fallback runs that a stray byte makes invalid as a whole (``llama2``)."""
    word = list(tokenizer("llama2").encode("です", add_special_tokens=False))
    a = as_bytes("llama2", "あ".encode())
    emoji = as_bytes("llama2", "🍣".encode())
    stray = as_bytes("llama2", b"\x80")
    return [
        word + a + stray + word,  # a valid character, then a stray continuation byte
        word + a + a[:2] + word,  # a character, then an incomplete one closed by a word
        word + emoji + a[:1] + emoji + word,  # a lead byte with no continuation inside the run
        word + stray + a + word,  # the stray byte first
        a + a[:2],  # the stream ends inside the run
    ]


def test_bare_decode_stream_fails_on_a_broken_run() -> None:
    """Why the wrapper holds runs back: the stream emits the character, then cannot go on."""
    from tokenizers.decoders import DecodeStream

    tok = tokenizer("llama2")
    stream = DecodeStream(skip_special_tokens=True)
    ids = stray_cases()[0]  # word + "あ" + stray byte + word
    word = len(tok.encode("です", add_special_tokens=False))
    assert [stream.step(tok._tokenizer, i) for i in ids[:-word]][-2:] == ["あ", None]
    with pytest.raises(Exception, match="Invalid prefix"):
        stream.step(tok._tokenizer, ids[-word])


@pytest.mark.parametrize("case", range(5))
@pytest.mark.parametrize("seed", [None, 1, 2, 3])
def test_byte_fallback_run_broken_by_a_stray_byte(case: int, seed: int | None) -> None:
    tok = tokenizer("llama2")
    ids = stray_cases()[case]
    chunks = one_by_one(ids) if seed is None else random_chunks(ids, random.Random(seed))
    pieces, tail = streamed(IncrementalDetokenizer(tok), chunks)
    assert "".join(pieces) + tail == tok.decode(ids)


@pytest.mark.parametrize("skip", [True, False])
def test_special_token_inside_a_byte_fallback_run(skip: bool) -> None:
    """skip_special_tokens drops the id before decoding: the run on both sides is one run."""
    tok = tokenizer("llama2")
    word = tok.encode("です", add_special_tokens=False)
    a = as_bytes("llama2", "あ".encode())
    eos = tok.eos_token_id
    for ids in (word + a[:2] + [eos] + a[2:] + word, word + a + [eos] + as_bytes("llama2", b"\x80") + word):
        pieces, tail = streamed(IncrementalDetokenizer(tok, skip_special_tokens=skip), one_by_one(ids))
        assert "".join(pieces) + tail == tok.decode(ids, skip_special_tokens=skip)


def test_long_run_broken_late_keeps_what_was_emitted() -> None:
    """The one inexact case: a run longer than MAX_PENDING is emitted by character, and a stray byte of
    the same run later makes the full decode U+FFFD throughout. The stream's 'Invalid prefix' is
    recovered from: what was emitted stands, the rest comes out as the full decode has it."""
    tok = tokenizer("llama2")
    word = tok.encode("東京です", add_special_tokens=False)
    run = as_bytes("llama2", ("🍣" * 10).encode())
    ids = word + run + as_bytes("llama2", b"\x80") + word
    pieces, tail = streamed(IncrementalDetokenizer(tok), one_by_one(ids))
    out = "".join(pieces) + tail
    emitted = out.count("🍣")
    assert 0 < emitted < 10
    unsent = len(run) - 4 * emitted + 1  # each byte not yet emitted as a character, and the stray one
    assert out == "東京です" + "🍣" * emitted + FFFD * unsent + tok.decode(word + word)[len("東京です") :]


# --------------------------------------------------------------------------------- flush and the cap


@pytest.mark.parametrize("kind", STYLES)
def test_flush_returns_what_the_stream_holds(kind: str) -> None:
    tok = tokenizer(kind)
    word = tok.encode("東京", add_special_tokens=False)
    for end in (b"\x80", "あ".encode()[:2], b"\xe3\x80\xe3"):
        ids = word + as_bytes(kind, end)
        d = IncrementalDetokenizer(tok)
        pieces = [d.push(i) for i in ids]
        assert "".join(pieces) == "東京"
        assert d.flush() == tok.decode(ids)[2:]


@pytest.mark.parametrize("kind", STYLES)
def test_cap_emits_invalid_bytes_but_not_an_open_character(kind: str) -> None:
    """Past MAX_PENDING ids without output the held text is emitted: U+FFFD for each invalid byte, not
    for a character that the next id may still complete."""
    tok = tokenizer(kind)
    word = tok.encode("東京です", add_special_tokens=False)
    a = as_bytes(kind, "あ".encode())
    strays = 5 * MAX_PENDING
    ids = word + as_bytes(kind, b"\x80") * strays + word + a[:2]
    d = IncrementalDetokenizer(tok)
    pieces, most = [], 0
    for i in ids:
        pieces.append(d.push(i))
        most = max(most, d.buffered_ids)
    sent = "".join(pieces)
    assert sent.count(FFFD) == strays  # every stray byte, and nothing for the open "あ"
    assert sum(FFFD in p for p in pieces) >= strays // (MAX_PENDING + 1)  # along the way, not at the end
    assert most <= 2 * MAX_PENDING + 4, most
    rest = [d.push(a[2]), *(d.push(i) for i in word), d.flush()]
    assert sent + "".join(rest) == tok.decode(ids + a[2:] + word)


@pytest.mark.parametrize("kind", STYLES)
def test_cap_when_every_id_ends_inside_a_character(kind: str) -> None:
    """E3 80 is the start of a character (U+3000 is E3 80 80) until the next E3 breaks it: every decode
    ends in U+FFFD, so the stream never outputs; the cap cuts between the pairs, exactly."""
    tok = tokenizer(kind)
    lead = as_bytes(kind, b"\xe3")
    stray = as_bytes(kind, b"\x80")
    ids = tok.encode("東京", add_special_tokens=False) + (lead + stray) * 3 * MAX_PENDING
    for seed in (None, 4):
        chunks = one_by_one(ids) if seed is None else random_chunks(ids, random.Random(seed))
        d = IncrementalDetokenizer(tok)
        pieces = []
        for c in chunks:
            pieces.append(d.push(c))
            assert d.buffered_ids <= 2 * MAX_PENDING + 8
        assert "".join(pieces) + d.flush() == tok.decode(ids)


# ----------------------------------------------------------------------------- clean-up, specials


@pytest.mark.parametrize("kind", STYLES)
def test_cleanup_of_tokenization_spaces_with_a_prompt(kind: str) -> None:
    tok = make_tokenizer(kind)
    tok.clean_up_tokenization_spaces = True
    text = "He said ' ok ' and I don 't know . It 's fine , isn 't it ? 東京です ! they 're here ."
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) != tok.decode(ids, clean_up_tokenization_spaces=False)
    for split in (0, 3, len(ids) // 2):
        rng = random.Random(split)
        prompt, gen = ids[:split], ids[split:]
        d = IncrementalDetokenizer(tok, prompt_ids=prompt or None)
        pieces, tail = streamed(d, random_chunks(gen, rng))
        # The prompt's text is not the output's: the rewriting applies to the output alone.
        raw = tok.decode(ids, clean_up_tokenization_spaces=False)
        head = tok.decode(prompt, clean_up_tokenization_spaces=False) if prompt else ""
        assert "".join(pieces) + tail == tok.clean_up_tokenization(raw[len(head) :])


# ---------------------------------------------------------------------------------------- fallback


@pytest.mark.parametrize("wrapper", [NoBackend, OwnDecode])
@pytest.mark.parametrize("kind", STYLES)
def test_fallback_without_a_usable_backend_is_exact(wrapper: type[CountingTokenizer], kind: str) -> None:
    tok = wrapper(tokenizer(kind))
    rng = random.Random(5)
    for ids in encoded(kind)[:40]:
        full = tok.decode(list(ids))
        pieces, tail = streamed(IncrementalDetokenizer(tok), random_chunks(ids, rng))
        assert "".join(pieces) + tail == full
    for ids in stray_cases() if kind == "llama2" else ():
        pieces, tail = streamed(IncrementalDetokenizer(tok), one_by_one(ids))
        assert "".join(pieces) + tail == tok.decode(ids)
    # It is the window algorithm doing the work: it decodes through tokenizer.decode.
    tok.calls = 0
    d = IncrementalDetokenizer(tok)
    d.push(list(encoded(kind)[0]))
    assert tok.calls > 0


@pytest.mark.parametrize("kind", STYLES)
def test_window_algorithm_cost_is_linear(kind: str) -> None:
    counting = NoBackend(tokenizer(kind))
    assert stream_1024(kind, WindowDetokenizer(counting), counting)
    assert counting.ids <= 40 * 1024  # re-decoding everything would be n(n+1)/2 = 524,800
    assert counting.calls <= 2 * 1024
