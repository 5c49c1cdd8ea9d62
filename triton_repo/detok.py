"""Incremental detokenisation for streamed generation, exact for Japanese text and O(1) per token.

Decoding each streamed chunk of token ids on its own breaks every character whose UTF-8 bytes are split
across tokens (byte-level BPE of Llama-3; the ``<0xNN>`` byte-fallback tokens of Llama-2 / Mistral
Swallow) into U+FFFD, and loses the spaces SentencePiece strips at the start of a decode.
:class:`IncrementalDetokenizer` keeps a small window of ids per request and emits only text that is final.

Contract (``push`` outputs joined, then ``flush``)::

    "".join(d.push(chunk) for chunk in chunks) + d.flush()
        == tokenizer.decode(ids, skip_special_tokens=skip)                    # no prompt_ids
        == tokenizer.decode(prompt + ids, skip_special_tokens=skip)[len(P):]  # with prompt_ids

where ``ids`` is every id pushed and ``P = tokenizer.decode(prompt, skip_special_tokens=skip)`` with any
trailing U+FFFD removed (a prompt that ends inside a character: the completed character is then output).
The prompt form assumes, as any streaming does, that ``P`` is a prefix of the decode of prompt + output.

How (the prefix / read offset technique of HF TGI and vLLM, made exact and bounded):

- the window is ``ids[prefix:]``; ``ids[prefix:read]`` is context whose text was already emitted. It starts
  at a *clean point* (the end of a complete character with visible text), so its own decode lines up with
  the full decode: what a decode does at its start (SentencePiece strips one leading space) happens in
  the context, never in new text;
- each ``push`` decodes the window once and emits the text after what was already emitted, up to the last
  character that is not U+FFFD: text before a trailing run of U+FFFD is final, the run itself may still
  become a character (it is emitted once the next token shows it is not);
- byte-fallback tokens (``<0xNN>``, decoder ``ByteFallback``) decode all-or-nothing: one invalid byte turns
  the whole run of byte tokens, valid characters included, into U+FFFD. An open run at the end of the
  stream is therefore held back until a non-byte token closes it (detected once per tokenizer);
- the context moves forward every few clean points (:data:`SHIFT_EVERY`), so a push decodes about 4-10
  ids and the state is a handful of ids. Special tokens that ``skip_special_tokens`` drops are never
  stored; with ``skip_special_tokens=False`` they are ordinary tokens;
- bounded: a byte-fallback run longer than :data:`MAX_PENDING` tokens (a string of emoji) is emitted up
  to its last complete character; when MAX_PENDING ids go by without a clean point (invalid bytes,
  tokens that each end inside a character), the latest clean point among them is used, else the text is
  emitted as it decodes (U+FFFD included). The window stays within about 2 x MAX_PENDING + SHIFT_EVERY
  ids plus the last push. The price is the one case where the output can differ from the full decode:
  a byte-fallback run longer than MAX_PENDING that a later invalid byte of the same run turns into
  U+FFFD as a whole, or more than MAX_PENDING tokens in a row that each end inside a character (real
  text ends a character far more often). Everything else, invalid bytes included, stays exact;
- transformers' ``clean_up_tokenization_spaces`` (true in many Llama ``tokenizer_config.json``) rewrites
  `` .``, `` n't`` ... across token boundaries: when the tokenizer has it on, windows are decoded without
  it and the same rewriting is applied as a stream (each rule holds back at most 3 characters). With a
  prompt, the rewriting applies to the output alone.

No heavy imports: the tokenizer is passed in (anything with ``decode(ids, skip_special_tokens=...)``, e.g.
a transformers ``PreTrainedTokenizerFast``). One instance per request; an instance is not thread-safe.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, Final, NamedTuple, Protocol

__all__ = ["MAX_PENDING", "SHIFT_EVERY", "IncrementalDetokenizer", "SupportsDecode"]

REPLACEMENT: Final = "\ufffd"
# Ids past the last clean point before a clean point is searched for, or the text emitted as it is.
MAX_PENDING: Final = 16
# Clean points between two moves of the context (fewer decode calls; window of about 4-10 ids).
SHIFT_EVERY: Final = 4
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


def _profile(tok: Any) -> _Profile:
    try:
        cached = _PROFILES.get(tok)
    except TypeError:  # neither hashable nor weakly referenceable: learnt per request
        cached = None
    if cached is not None:
        return cached
    profile = _Profile(_byte_run_ids(tok), _skipped_ids(tok))
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


class IncrementalDetokenizer:
    """Turn streamed token ids into text, emitting only final text (see the module docstring).

    >>> d = IncrementalDetokenizer(tokenizer, prompt_ids=prompt)   # doctest: +SKIP
    >>> for ids in stream:                                          # doctest: +SKIP
    ...     send(d.push(ids))                                       # "" while a character is incomplete
    >>> send(d.flush())                                             # doctest: +SKIP

    ``flush`` ends the sequence; a ``push`` after it starts a new one, without context.
    """

    __slots__ = (
        "_bytes",
        "_clean",
        "_clean_len",
        "_cleanup",
        "_held",
        "_ids",
        "_pos",
        "_read",
        "_skip",
        "_skipped",
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
        self._held: list[str] | None = None
        self._ids: list[int] = []
        self._read = self._clean = self._clean_len = self._pos = 0
        self._reset()
        if prompt_ids:
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

    def _keep(self, ids: Iterable[Any]) -> list[int]:
        if self._skipped:
            skipped = self._skipped
            return [i for i in map(int, ids) if i not in skipped]
        return list(map(int, ids))

    def _decode(self, ids: list[int]) -> str:
        if self._cleanup:
            tok: Any = self._tok
            text = tok.decode(ids, skip_special_tokens=self._skip, clean_up_tokenization_spaces=False)
        else:
            text = self._tok.decode(ids, skip_special_tokens=self._skip)
        return str(text)

    def _finish(self, out: str, *, final: bool) -> str:
        if self._held is not None and (out or final):
            out = _cleanup_stream(self._held, out, final)
        return out

    def _seed(self, prompt: list[int]) -> None:
        """Start the window at a clean point in the prompt's tail; the prompt's text counts as emitted."""
        ids = prompt[self._prompt_start(prompt) :]
        text = self._decode(ids)
        stable = len(text.rstrip(REPLACEMENT))
        self._ids, self._pos = ids, stable
        if ids and stable == len(text) and stable:
            self._clean, self._clean_len = len(ids), stable

    def _prompt_start(self, prompt: list[int]) -> int:
        """Latest k with ids[k-1] ending a complete character and visible text in prompt[k:]."""
        k = len(prompt) - 1
        stop = max(0, len(prompt) - _PROMPT_WALK)
        while k > stop:
            if prompt[k - 1] not in self._bytes:
                before = self._decode(prompt[k - 1 : k])
                if before and before[-1] != REPLACEMENT and self._decode(prompt[k:]):
                    return k
            k -= 1
        return 0

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
        if n - b <= MAX_PENDING:
            return b
        start = n - 1  # the last character's lead byte: back over (at most 3) continuation bytes
        while start > n - 4 and val[ids[start]] & 0xC0 == 0x80:
            start -= 1
        lead = val[ids[start]]
        need = 2 if lead & 0xE0 == 0xC0 else 3 if lead & 0xF0 == 0xE0 else 4 if lead & 0xF8 == 0xF0 else 1
        return start if n - start < need else n

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
