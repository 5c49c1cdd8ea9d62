"""Incremental detokenisation for streamed generation, exact for Japanese text and O(1) per token.

Decoding each streamed chunk of token ids on its own breaks every character whose UTF-8 bytes are split
across tokens (byte-level BPE of Llama-3; the ``<0xNN>`` byte-fallback tokens of Llama-2 / Mistral
Swallow) into U+FFFD, and loses the spaces SentencePiece strips at the start of a decode.
:class:`IncrementalDetokenizer` emits only text that is final.

Contract (``push`` outputs joined, then ``flush``)::

    "".join(d.push(chunk) for chunk in chunks) + d.flush()
        == tokenizer.decode(ids, skip_special_tokens=skip)                    # no prompt_ids
        == tokenizer.decode(prompt + ids, skip_special_tokens=skip)[len(P):]  # with prompt_ids

where ``ids`` is every id pushed and ``P = tokenizer.decode(prompt, skip_special_tokens=skip)`` with any
trailing U+FFFD removed (a prompt that ends inside a character: the completed character is then output).
The prompt form assumes, as any streaming does, that ``P`` is a prefix of the decode of prompt + output.

How. The per-token work is ``tokenizers.decoders.DecodeStream`` (Rust) on the fast tokenizer's backend:
it decodes the ids since its last output together with those of that output, and returns the text
beyond it once the decode does not end in U+FFFD (the prefix / read offset technique of HF TGI and
vLLM). Around it, this module keeps what the stream alone gets wrong:

- flush: the stream has no end; the ids it holds are decoded here, with the context it uses;
- a prompt: the stream is seeded with the prompt's tail from a *clean point* (the end of a complete
  character with visible text after it), so what a decode does at its start (SentencePiece strips one
  leading space) happens in the prompt. A tail that ends inside a character makes the stream's first
  output repeat the tail's text; that many characters are dropped;
- byte-fallback tokens (``<0xNN>``, decoder ``ByteFallback``) decode all-or-nothing: a stray byte after a
  valid character turns the whole run, the character included, into U+FFFD, which the stream (having
  emitted the character) reports as "Invalid prefix encountered". An open run at the end of what was
  pushed is therefore held back and given to the stream with the id that closes it (detected once per
  tokenizer). A run longer than :data:`MAX_PENDING` ids (a string of emoji) is given up to its last
  complete character: the one case where the output can differ from the full decode is such a run that
  a later invalid byte of the same run turns into U+FFFD as a whole; "Invalid prefix" is then recovered
  from by re-seeding the stream: the characters emitted stand, the ids after them come out as the full
  decode has them (one U+FFFD per byte);
- bounded: after MAX_PENDING ids without output (invalid bytes, empty tokens), the text of a full decode
  of them is emitted up to the latest token boundary that a decode of either side reproduces (so the
  U+FFFD emitted are those of really invalid bytes), and the stream is re-seeded from there. Only if no
  such boundary exists for 4 x MAX_PENDING ids (tokens that each end inside a character) is the text
  emitted as it decodes and the context dropped;
- special tokens that ``skip_special_tokens`` drops are never given to the stream (so a byte-fallback run
  split by one is still one run, as in the full decode); with ``skip_special_tokens=False`` they are
  ordinary tokens;
- transformers' ``clean_up_tokenization_spaces`` (true in many Llama ``tokenizer_config.json``) rewrites
  `` .``, `` n't`` ... across token boundaries; the backend never does, so the same rewriting is applied
  to the output as a stream (each rule holds back at most 3 characters). With a prompt, the rewriting
  applies to the output alone.

Where there is no usable backend (a slow tokenizer, anything else with ``decode(ids,
skip_special_tokens=...)``, a ``decode`` that differs from its backend's, a clean-up that is not
transformers' own), :class:`WindowDetokenizer` does the same through ``decode`` on a small window of ids
per push (about 7 ids decoded per token; see its section below).

No heavy imports at import time: the tokenizer is passed in, and ``tokenizers`` is imported only when it
has a backend (it is then loaded already). One instance per request; an instance is not thread-safe.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, Final, NamedTuple, Protocol

__all__ = ["MAX_PENDING", "SHIFT_EVERY", "IncrementalDetokenizer", "SupportsDecode", "WindowDetokenizer"]

REPLACEMENT: Final = "\ufffd"
# Ids held without output (or in one open byte-fallback run) before the text they decode to is emitted.
MAX_PENDING: Final = 16
# WindowDetokenizer: clean points between two moves of the context (window of about 4-10 ids).
SHIFT_EVERY: Final = 4
# Ids decoded both ways, once per tokenizer, to check that its Rust backend decodes as it does.
_CHECKED_IDS: Final = 8192
# Prompt ids examined, from the end, for the start of the context; past that the whole prompt is used.
_PROMPT_WALK: Final = 64

# transformers' PreTrainedTokenizerBase.clean_up_tokenization, applied in this order.
_CLEANUP_RULES: Final = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)
_STANDARD_CLEANUP: Final = "PreTrainedTokenizerBase.clean_up_tokenization"


class SupportsDecode(Protocol):
    """What the detokeniser needs of a tokenizer."""

    def decode(self, token_ids: list[int], skip_special_tokens: bool = ...) -> str: ...


class _Profile(NamedTuple):
    """What is learnt once per tokenizer (cached while the tokenizer lives)."""

    byte_ids: dict[int, int]  # id -> byte of the <0xNN> tokens when runs decode all-or-nothing, else {}
    skipped: frozenset[int]  # ids that skip_special_tokens=True removes before decoding
    stream: bool  # tokenizer._tokenizer is a tokenizers.Tokenizer whose decode is tokenizer.decode's


_PROFILES: weakref.WeakKeyDictionary[Any, _Profile] = weakref.WeakKeyDictionary()


def _byte_run_ids(tok: Any) -> dict[int, int]:
    """id -> byte of the 256 ``<0xNN>`` tokens, if a run of them decodes all-or-nothing (``ByteFallback``)."""
    to_ids = getattr(tok, "convert_tokens_to_ids", None)
    to_tokens = getattr(tok, "convert_ids_to_tokens", None)
    if not callable(to_ids) or not callable(to_tokens):
        return {}
    names = [f"<0x{b:02X}>" for b in range(256)]
    try:
        ids = list(to_ids(names))
        back = list(to_tokens([i if isinstance(i, int) else 0 for i in ids]))
    except Exception:
        return {}
    found = {
        b: i
        for b, (i, name, got) in enumerate(zip(ids, names, back, strict=True))
        if isinstance(i, int) and got == name
    }
    probe = (0xE3, 0x81, 0x82, 0x80)  # "あ" then a stray continuation byte
    if not all(b in found for b in probe):
        return {}
    text = tok.decode([found[b] for b in probe], skip_special_tokens=True)
    return {i: b for b, i in found.items()} if text == REPLACEMENT * len(probe) else {}


def _skipped_ids(tok: Any) -> frozenset[int]:
    """Special ids that ``skip_special_tokens=True`` drops (checked: each decodes alone to "")."""
    candidates: set[int] = set()
    added = getattr(tok, "added_tokens_decoder", None)
    if isinstance(added, dict):
        candidates.update(i for i, t in added.items() if isinstance(i, int) and getattr(t, "special", False))
    candidates.update(i for i in getattr(tok, "all_special_ids", None) or () if isinstance(i, int))
    return frozenset(i for i in candidates if tok.decode([i], skip_special_tokens=True) == "")


def _streams(tok: Any, skipped: frozenset[int]) -> bool:
    """The tokenizer's Rust backend decodes as ``tokenizer.decode`` does (spaces clean-up aside).

    Checked, once per tokenizer, on up to :data:`_CHECKED_IDS` ids spread over the vocabulary and the
    special ids, rather than assumed: a subclass may override ``decode`` (a slow tokenizer has no backend
    at all). The whole of a 200k vocabulary would take a second."""
    backend = getattr(tok, "_tokenizer", None)
    if backend is None:
        return False
    try:
        from tokenizers import Tokenizer
        from tokenizers.decoders import DecodeStream  # noqa: F401  (absent before tokenizers 0.21)
    except ImportError:
        return False
    if not isinstance(backend, Tokenizer):
        return False
    try:
        n = backend.get_vocab_size(with_added_tokens=True)
        sample = [*range(0, n, -(-n // _CHECKED_IDS)), *sorted(skipped)]
        return all(
            tok.decode(sample, skip_special_tokens=skip, clean_up_tokenization_spaces=False)
            == backend.decode(sample, skip_special_tokens=skip)
            for skip in (True, False)
        )
    except Exception:  # a decode with another signature: the window algorithm needs only decode(ids)
        return False


def _prompt_start(decode: Any, prompt: list[int], byte_ids: dict[int, int]) -> int:
    """Latest k with prompt[k-1] ending a complete character and visible text in prompt[k:]."""
    k = len(prompt) - 1
    stop = max(0, len(prompt) - _PROMPT_WALK)
    while k > stop:
        if prompt[k - 1] not in byte_ids:
            before = decode(prompt[k - 1 : k])
            if before and before[-1] != REPLACEMENT and decode(prompt[k:]):
                return k
        k -= 1
    return 0


def _char_end(run: list[int], byte_of: dict[int, int]) -> int:
    """In a run of byte-fallback ids, the end of its last complete UTF-8 character (or ``len(run)``)."""
    n = len(run)
    start = n - 1  # the last character's lead byte: back over (at most 3) continuation bytes
    while start > max(0, n - 4) and byte_of[run[start]] & 0xC0 == 0x80:
        start -= 1
    lead = byte_of[run[start]]
    need = 2 if lead & 0xE0 == 0xC0 else 3 if lead & 0xF0 == 0xE0 else 4 if lead & 0xF8 == 0xF0 else 1
    return start if n - start < need else n


def _profile(tok: Any) -> _Profile:
    try:
        cached = _PROFILES.get(tok)
    except TypeError:  # neither hashable nor weakly referenceable: learnt per request
        cached = None
    if cached is not None:
        return cached
    skipped = _skipped_ids(tok)
    profile = _Profile(_byte_run_ids(tok), skipped, _streams(tok, skipped))
    with contextlib.suppress(TypeError):
        _PROFILES[tok] = profile
    return profile


def _standard_cleanup(tok: Any) -> bool:
    """The tokenizer cleans up spaces with transformers' own rules (which this module streams)."""
    if not getattr(tok, "clean_up_tokenization_spaces", False):
        return False
    method = getattr(type(tok), "clean_up_tokenization", None)
    return getattr(method, "__qualname__", "") == _STANDARD_CLEANUP


def _cleanup_stream(held: list[str], text: str, final: bool) -> str:
    """Apply the cleanup rules to the next piece of a stream; ``held`` keeps each rule's undecided tail.

    Each rule is ``str.replace`` (left to right, non-overlapping) on the output of the rule before. A
    piece is cut after the end of its last match, at the first position from which the rest is a proper
    prefix of the pattern (a match could start there); the part before is final, the rest waits.
    """
    for n, (pattern, repl) in enumerate(_CLEANUP_RULES):
        buf = held[n] + text
        cut = len(buf)
        if not final:
            end = 0
            at = buf.find(pattern)
            while at >= 0:
                end = at + len(pattern)
                at = buf.find(pattern, end)
            for k in range(max(end, len(buf) - len(pattern) + 1), len(buf)):
                if pattern.startswith(buf[k:]):
                    cut = k
                    break
        held[n] = buf[cut:]
        text = buf[:cut].replace(pattern, repl)
    return text


class _Detokenizer:
    """What both algorithms share: the ids kept, and the streamed clean-up of the output."""

    __slots__ = ("_held", "_skipped")

    _held: list[str] | None  # the clean-up rules' undecided tails, None without clean-up
    _skipped: frozenset[int]

    def _keep(self, ids: Iterable[Any]) -> list[int]:
        if self._skipped:
            skipped = self._skipped
            return [i for i in map(int, ids) if i not in skipped]
        return list(map(int, ids))

    def _finish(self, out: str, *, final: bool) -> str:
        if self._held is not None and (out or final):
            out = _cleanup_stream(self._held, out, final)
        return out


class IncrementalDetokenizer(_Detokenizer):
    """Turn streamed token ids into text, emitting only final text (see the module docstring).

    >>> d = IncrementalDetokenizer(tokenizer, prompt_ids=prompt)   # doctest: +SKIP
    >>> for ids in stream:                                          # doctest: +SKIP
    ...     send(d.push(ids))                                       # "" while a character is incomplete
    >>> send(d.flush())                                             # doctest: +SKIP

    ``flush`` ends the sequence; a ``push`` after it starts a new one, without context.
    """

    __slots__ = (
        "_anchored",
        "_backend",
        "_bytes",
        "_ctx",
        "_drop",
        "_pending",
        "_run",
        "_skip",
        "_stream",
        "_stream_type",
        "_window",
    )

    # Mirror of the stream's state, so that it can be flushed and re-seeded:
    #   _ctx        ids of its last output (or its seed): their text is emitted, they are the context
    #   _pending    ids given to it since, no text yet
    #   _anchored   the stream knows _ctx's text as its prefix; if not (a seed whose text is empty or
    #               ends in U+FFFD), its next output starts with that text, of which _drop chars were
    #               already emitted
    #   _run        an open run of byte-fallback ids at the end, not given to it yet
    _ctx: list[int]
    _pending: list[int]
    _anchored: bool
    _drop: int
    _stream: Any

    def __init__(
        self,
        tokenizer: SupportsDecode,
        *,
        skip_special_tokens: bool = True,
        prompt_ids: Sequence[int] | None = None,
    ) -> None:
        profile = _profile(tokenizer)
        cleanup = _standard_cleanup(tokenizer)
        self._window: WindowDetokenizer | None = None
        if not profile.stream or (getattr(tokenizer, "clean_up_tokenization_spaces", False) and not cleanup):
            self._window = WindowDetokenizer(
                tokenizer, skip_special_tokens=skip_special_tokens, prompt_ids=prompt_ids
            )
            return
        from tokenizers.decoders import DecodeStream

        self._stream_type: Any = DecodeStream
        self._backend: Any = getattr(tokenizer, "_tokenizer")  # noqa: B009  (private to transformers)
        self._skip = skip_special_tokens
        self._bytes = profile.byte_ids
        self._skipped = profile.skipped if skip_special_tokens else frozenset()
        self._held = ["" for _ in _CLEANUP_RULES] if cleanup else None
        self._run: list[int] = []
        self._seed([], 0, "")
        if prompt_ids is not None and len(prompt_ids):
            prompt = self._keep(prompt_ids)
            if prompt:
                tail = prompt[_prompt_start(self._decode, prompt, self._bytes) :]
                text = self._decode(tail)
                self._seed(tail, len(text.rstrip(REPLACEMENT)), text)

    # ------------------------------------------------------------------------------------------ public

    @property
    def buffered_ids(self) -> int:
        """Ids held as context or without output yet (bounded by a small constant plus the last push)."""
        if self._window is not None:
            return self._window.buffered_ids
        return len(self._ctx) + len(self._pending) + len(self._run)

    def push(self, ids: Iterable[int] | int) -> str:
        """Add newly generated ids (an iterable, e.g. a list or numpy array, or one id); return the text
        that became final ("" if none)."""
        if self._window is not None:
            return self._window.push(ids)
        # The common shapes first, without the ABC check (this is the per-token path).
        new: list[int]
        if isinstance(ids, int):
            new = [] if ids in self._skipped else [ids]
        elif isinstance(ids, (list, tuple)):  # a tuple of types: faster than a union here
            if len(ids) == 1:  # what a streaming backend sends: one id per response
                one = int(ids[0])
                new = [] if one in self._skipped else [one]
            else:
                new = self._keep(ids)
        elif isinstance(ids, Iterable) and getattr(ids, "ndim", 1) != 0:
            new = self._keep(ids)
        else:  # a numpy integer or 0-d array
            new = self._keep((ids,))
        if not new:
            return ""
        if self._bytes and (self._run or new[-1] in self._bytes):
            new = self._close_runs(new)
            if not new:
                return ""
        pending = self._pending
        pending += new
        try:
            text = self._stream.step(self._backend, new[0] if len(new) == 1 else new)
        except Exception as exc:
            if "Invalid prefix" not in str(exc):
                raise
            text = self._recover()
        else:
            if text is None:
                if len(pending) <= MAX_PENDING:
                    return ""
                text = self._resync()
            elif self._anchored:  # the stream's new context: the ids since its previous output
                self._ctx, self._pending = pending, []
            else:  # it had no prefix: its context is the whole seed too, whose text was partly emitted
                self._ctx, self._pending, self._anchored = self._ctx + pending, [], True
                text, self._drop = text[self._drop :], max(0, self._drop - len(text))
        return text if self._held is None else self._finish(text, final=False)

    def flush(self) -> str:
        """End of the stream: the rest of the text, exactly as the full decode ends (U+FFFD included)."""
        if self._window is not None:
            return self._window.flush()
        out = ""
        rest = self._pending + self._run
        if rest or not self._anchored:
            out = self._decode(self._ctx + rest)[self._done() :]
        out = self._finish(out, final=True)
        self._run = []
        self._seed([], 0, "")
        if self._held is not None:
            self._held = ["" for _ in _CLEANUP_RULES]
        return out

    # --------------------------------------------------------------------------------------- internals

    def _decode(self, ids: list[int]) -> str:
        return str(self._backend.decode(ids, skip_special_tokens=self._skip))

    def _seed(self, ctx: list[int], emitted: int, text: str) -> None:
        """A new stream whose context is ``ctx`` (decoding to ``text``, ``emitted`` chars of it output)."""
        # DecodeStream takes a seed's text as its prefix only if it is non-empty and does not end in
        # U+FFFD; otherwise its first output starts with that text.
        self._stream = self._stream_type(ids=ctx, skip_special_tokens=self._skip)
        self._anchored = bool(text) and not text.endswith(REPLACEMENT)
        self._drop = 0 if self._anchored else emitted
        self._ctx, self._pending = ctx, []

    def _done(self) -> int:
        """Characters of the decode of ``_ctx + _pending`` already emitted."""
        return len(self._decode(self._ctx)) if self._anchored else self._drop

    def _close_runs(self, new: list[int]) -> list[int]:
        """What can go to the stream now: hold back an open run of byte-fallback ids at the end (past
        MAX_PENDING of them, only the part after the run's last complete character)."""
        seq = self._run + new if self._run else new
        val = self._bytes
        n = b = len(seq)
        while b and seq[b - 1] in val:
            b -= 1
        if n - b > MAX_PENDING:
            b += _char_end(seq[b:], val)
        self._run = seq[b:]
        return seq[:b] if b < n else seq

    def _recover(self) -> str:
        """The stream's prefix no longer decodes the same (a byte-fallback run past MAX_PENDING that
        turned invalid): what was emitted stands; the ids after it are emitted as the full decode has
        them, and the stream starts again after them."""
        pending = self._pending
        right = self._decode(pending)
        if not self._decode(self._ctx + pending).endswith(right):
            return self._resync()
        if right and not right.endswith(REPLACEMENT):
            self._seed(pending, len(right), right)
            return right
        self._seed(pending, 0, right)
        return ""

    def _resync(self) -> str:
        """No output for MAX_PENDING ids: emit what the full decode of them gives and re-seed the stream
        at the latest boundary that is safe."""
        ctx, pending = self._ctx, self._pending
        full = self._decode(ctx + pending)
        done = self._done()
        for j in range(len(pending) - 1, 0, -1):
            # A boundary where decoding each side reproduces the whole: nothing on the right can change
            # the left any more (a character completed across it, a byte-fallback run, a stripped space).
            tail = pending[j:]
            right = self._decode(tail)
            if right and full.endswith(right) and self._decode(ctx + pending[:j]) == full[: -len(right)]:
                if right.endswith(REPLACEMENT):  # may still complete: emitted by the new stream
                    self._seed(tail, 0, right)
                    return full[done : len(full) - len(right)]
                self._seed(tail, len(right), right)
                return full[done:]
        ids = ctx + pending
        if len(ids) > 4 * MAX_PENDING:  # bounded, at the price of exactness (see the module docstring)
            self._seed([], 0, "")
            return full[done:]
        stable = len(full) - 1 if full.endswith(REPLACEMENT) else len(full)
        self._seed(ids, stable, full)
        return full[done:stable]


# ------------------------------------------------------------------------------ without a Rust backend


class WindowDetokenizer(_Detokenizer):
    """The same contract as :class:`IncrementalDetokenizer` through ``tokenizer.decode`` alone (a window of
    ids decoded per push; see the module docstring): what that class falls back to where the tokenizer has
    no ``tokenizers`` backend, and the reference it is measured against."""

    __slots__ = (
        "_bytes",
        "_clean",
        "_clean_len",
        "_cleanup",
        "_ids",
        "_pos",
        "_read",
        "_skip",
        "_tok",
    )

    # The window is self._ids. Its decode, in "window characters":
    #   _read       end of the context: ids[:_read] is text already emitted
    #   _clean      latest clean point (>= _read): decode(ids[:_clean]) is final and has _clean_len chars
    #   _pos        window characters already emitted (>= _clean_len)

    def __init__(
        self,
        tokenizer: SupportsDecode,
        *,
        skip_special_tokens: bool = True,
        prompt_ids: Sequence[int] | None = None,
    ) -> None:
        self._tok = tokenizer
        self._skip = skip_special_tokens
        profile = _profile(tokenizer)
        self._bytes = profile.byte_ids
        self._skipped = profile.skipped if skip_special_tokens else frozenset()
        self._cleanup = _standard_cleanup(tokenizer)
        self._held = None
        self._ids: list[int] = []
        self._read = self._clean = self._clean_len = self._pos = 0
        self._reset()
        if prompt_ids is not None and len(prompt_ids):
            self._seed(self._keep(prompt_ids))

    # ------------------------------------------------------------------------------------------ public

    @property
    def buffered_ids(self) -> int:
        """Ids held in the window (bounded by a small constant plus the size of the last push)."""
        return len(self._ids)

    def push(self, ids: Iterable[int] | int) -> str:
        """Add newly generated ids (an iterable, e.g. a list or numpy array, or one id); return the text
        that became final ("" if none)."""
        if isinstance(ids, Iterable) and getattr(ids, "ndim", 1) != 0:
            new = self._keep(ids)
        else:  # one id: an int, a numpy integer or 0-d array
            new = self._keep((ids,))
        if not new:
            return ""
        self._ids.extend(new)
        return self._finish(self._advance(), final=False)

    def flush(self) -> str:
        """End of the stream: the rest of the text, exactly as the full decode ends (U+FFFD included)."""
        out = ""
        if len(self._ids) > self._clean:
            out = self._decode(self._ids)[self._pos :]
        out = self._finish(out, final=True)
        self._reset()
        return out

    # --------------------------------------------------------------------------------------- internals

    def _reset(self) -> None:
        self._ids = []
        self._read = self._clean = self._clean_len = self._pos = 0
        self._held = ["" for _ in _CLEANUP_RULES] if self._cleanup else None

    def _decode(self, ids: list[int]) -> str:
        if self._cleanup:
            tok: Any = self._tok
            text = tok.decode(ids, skip_special_tokens=self._skip, clean_up_tokenization_spaces=False)
        else:
            text = self._tok.decode(ids, skip_special_tokens=self._skip)
        return str(text)

    def _seed(self, prompt: list[int]) -> None:
        """Start the window at a clean point in the prompt's tail; the prompt's text counts as emitted."""
        ids = prompt[_prompt_start(self._decode, prompt, self._bytes) :]
        text = self._decode(ids)
        stable = len(text.rstrip(REPLACEMENT))
        self._ids, self._pos = ids, stable
        if ids and stable == len(text) and stable:
            self._clean, self._clean_len = len(ids), stable

    def _advance(self) -> str:
        ids, n, c = self._ids, len(self._ids), self._clean
        end = n
        if self._bytes and ids[-1] in self._bytes:  # hold back an open run of byte-fallback tokens
            end = self._run_end(c)
        if end <= c:
            return ""
        text = self._decode(ids if end == n else ids[:end])
        stable = len(text.rstrip(REPLACEMENT)) if text[-1:] == REPLACEMENT else len(text)
        out = ""
        if stable > self._pos:
            out = text[self._pos : stable]
            self._pos = stable
        if stable == len(text) and stable > self._clean_len:
            self._clean, self._clean_len = end, stable
        elif end - c > MAX_PENDING:
            out += self._bound(text, end)
        if self._clean - self._read >= SHIFT_EVERY:
            self._shift()
        return out

    def _run_end(self, c: int) -> int:
        """Where the text can end: before an open run of byte tokens at the end of the window; in a run
        longer than MAX_PENDING, after its last complete UTF-8 character."""
        ids, val = self._ids, self._bytes
        n = b = len(ids)
        lo = max(c, n - MAX_PENDING - 1)
        while b > lo and ids[b - 1] in val:
            b -= 1
        return b if n - b <= MAX_PENDING else b + _char_end(ids[b:], val)

    def _bound(self, text: str, end: int) -> str:
        """No clean point for MAX_PENDING ids: use the latest one among them, else emit the text as is."""
        ids = self._ids
        for k in range(end - 1, max(self._clean, end - MAX_PENDING - 1), -1):
            head = self._decode(ids[:k])
            if len(head) > self._clean_len and head[-1] != REPLACEMENT and text.startswith(head):
                self._clean, self._clean_len = k, len(head)
                return ""
        out = text[self._pos :]
        self._pos = self._clean_len = len(text)
        self._clean = end
        return out

    def _shift(self) -> None:
        """Drop the old context; ids[read:clean] becomes the context."""
        r, c = self._read, self._clean
        context = len(self._decode(self._ids[r:c]))
        del self._ids[:r]
        self._pos += context - self._clean_len
        self._read = self._clean = c - r
        self._clean_len = context
