"""Reasoning text apart from the answer, from streamed token ids (Qwen3 ``<think>`` blocks, harmony channels).

The split is made on token ids, not on text: harmony's markers (``<|channel|>``, ``<|message|>``,
``<|end|>``, ``<|start|>``) are special tokens that ``skip_special_tokens`` removes from any decode, and a
model's text may contain the characters ``<think>`` without the token. Between markers each part of the
stream goes through its own :class:`~swallow_trt.text.detok.IncrementalDetokenizer` (special tokens
skipped), so the text of each part keeps the detokeniser's exactness for Japanese.

Formats (``chat_format`` of the registry):

- ``qwen3``: ``<think>`` (151667) opens the reasoning and ``</think>`` (151668) closes it; both are
  ordinary added tokens (``special: false``). The reasoning is stripped of newlines at both ends and the
  answer of newlines at its start, as Qwen3's chat template does when it renders an earlier turn
  (``reasoning_content.strip('\\n')``, ``content.lstrip('\\n')``). ``in_reasoning=True`` when the prompt
  already opened the block (:func:`prompt_opens_reasoning`);
- ``harmony`` (gpt-oss): the generation starts in a message header (the prompt ends with
  ``<|start|>assistant``); ``<|channel|>NAME ... <|message|>`` opens a message, ``<|end|>`` closes it,
  ``<|start|>`` opens the next header, ``<|return|>`` / ``<|call|>`` end the turn. Messages on the
  ``analysis`` channel are reasoning; ``final`` and ``commentary`` (preambles, tool calls) are the answer;
- anything else: no reasoning, the text is exactly the incremental detokeniser's.

Contract (``push`` deltas joined, then ``flush``), for a stream whose markers are as above::

    reasoning == "".join(decode(ids of each reasoning part))   # qwen3: each part .strip("\\n")
    content   == "".join(decode(ids of each answer part))      # qwen3: after </think>, .lstrip("\\n")

Interface (for the chat model and the OpenAI API)::

    s = ReasoningSplitter(tokenizer, chat_format)          # or ReasoningSplitter.for_prompt(..., prompt_ids)
    d = s.push(ids)          # Delta(reasoning="...", content="...") of the text that became final
    d = s.flush()            # end of the stream: the rest
    split_reasoning(tokenizer, chat_format, ids) -> Delta   # a whole generation at once

No heavy imports; one instance per request, not thread-safe.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final, NamedTuple

from swallow_trt.text.chat import REASONING_FORMATS
from swallow_trt.text.detok import IncrementalDetokenizer

__all__ = [
    "HARMONY_REASONING_CHANNELS",
    "REASONING_FORMATS",
    "Delta",
    "ReasoningSplitter",
    "prompt_opens_reasoning",
    "split_reasoning",
]

HARMONY_REASONING_CHANNELS: Final = ("analysis",)
# Ids a harmony header may hold before it is taken for answer text (a model that skipped the header).
MAX_HEADER_IDS: Final = 64

_QWEN3_MARKERS: Final = ("<think>", "</think>")
_HARMONY_MARKERS: Final = (
    "<|start|>",
    "<|channel|>",
    "<|message|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|constrain|>",
)


class Delta(NamedTuple):
    """Text that became final: the reasoning's and the answer's."""

    reasoning: str = ""
    content: str = ""

    def __add__(self, other: object) -> Delta:
        if not isinstance(other, Delta):
            return NotImplemented
        return Delta(self.reasoning + other.reasoning, self.content + other.content)


def _marker_ids(tokenizer: Any, names: Sequence[str]) -> dict[str, int] | None:
    """Each marker's id, or None when the tokenizer lacks one (it cannot produce that format)."""
    to_ids = getattr(tokenizer, "convert_tokens_to_ids", None)
    if not callable(to_ids):
        return None
    unk = getattr(tokenizer, "unk_token_id", None)
    out: dict[str, int] = {}
    for name in names:
        tid = to_ids(name)
        if not isinstance(tid, int) or tid == unk:
            return None
        out[name] = tid
    return out


def prompt_opens_reasoning(tokenizer: Any, chat_format: str, prompt_ids: Sequence[int]) -> bool:
    """The prompt ends inside an open ``<think>`` block (templates that pre-fill ``<think>\\n``)."""
    if chat_format != "qwen3":
        return False
    ids = _marker_ids(tokenizer, _QWEN3_MARKERS)
    if ids is None:
        return False
    opened = closed = -1
    for i, t in enumerate(prompt_ids):
        if t == ids["<think>"]:
            opened = i
        elif t == ids["</think>"]:
            closed = i
    return opened > closed


class _Part:
    """One destination (reasoning or answer): a detokeniser, and the newline trimming of Qwen3's template."""

    __slots__ = ("detok", "held", "lead", "tail")

    def __init__(self, tokenizer: Any) -> None:
        self.detok = IncrementalDetokenizer(tokenizer)
        self.lead = False  # drop newlines at the start of the current part
        self.tail = False  # hold newlines at the end until more text follows; drop them at the end
        self.held = ""

    def begin(self, *, lead: bool, tail: bool) -> None:
        self.lead, self.tail, self.held = lead, tail, ""

    def text(self, text: str) -> str:
        if self.lead and text:
            text = text.lstrip("\n")
            self.lead = not text
        if self.tail and text:
            text = self.held + text
            kept = text.rstrip("\n")
            self.held = text[len(kept) :]
            return kept
        return text

    def end(self) -> str:
        out = self.text(self.detok.flush())
        if not self.tail:
            out += self.held
        self.held = ""
        return out


class ReasoningSplitter:
    """Streamed token ids in, reasoning and answer text out (see the module docstring)."""

    def __init__(self, tokenizer: Any, chat_format: str, *, in_reasoning: bool = False) -> None:
        self._tok = tokenizer
        self._parts = (_Part(tokenizer), _Part(tokenizer))  # 0: reasoning, 1: answer
        self._format = "none"
        self._ids: dict[str, int] = {}
        self._target = 1
        if chat_format == "qwen3":
            found = _marker_ids(tokenizer, _QWEN3_MARKERS)
            if found is not None:
                self._format, self._ids = "qwen3", found
                if in_reasoning:
                    self._open(0, lead=True, tail=True)
        elif chat_format == "harmony":
            found = _marker_ids(tokenizer, _HARMONY_MARKERS)
            if found is not None:
                self._format, self._ids = "harmony", found
        # harmony: "header" (collecting a message header), "body", "between" (after <|end|>), "done"
        self._state = "header" if self._format == "harmony" else "body"
        self._header: list[int] = []
        self._by_id = {v: k for k, v in self._ids.items()}

    @classmethod
    def for_prompt(cls, tokenizer: Any, chat_format: str, prompt_ids: Sequence[int]) -> ReasoningSplitter:
        return cls(
            tokenizer, chat_format, in_reasoning=prompt_opens_reasoning(tokenizer, chat_format, prompt_ids)
        )

    @property
    def splits(self) -> bool:
        """Whether this stream can carry reasoning (a reasoning format the tokenizer has the markers of)."""
        return self._format != "none"

    # ------------------------------------------------------------------------------------------ public

    def push(self, ids: Iterable[int] | int) -> Delta:
        """Add newly generated ids; return the text of each destination that became final."""
        if isinstance(ids, Iterable) and getattr(ids, "ndim", 1) != 0:
            seq = [int(i) for i in ids]
        else:  # one id: an int, a numpy integer or 0-d array
            seq = [int(ids)]  # type: ignore[arg-type]
        if self._format == "none":
            return Delta("", self._parts[1].detok.push(seq))
        out = ["", ""]
        run: list[int] = []
        for t in seq:
            marker = self._by_id.get(t)
            if marker is None and self._state == "body":
                run.append(t)
                continue
            if run:
                self._emit(out, run)
                run = []
            if marker is None:
                self._plain(out, t)
            elif self._format == "qwen3":
                self._qwen3(out, marker)
            else:
                self._harmony(out, marker)
        if run:
            self._emit(out, run)
        return Delta(out[0], out[1])

    def flush(self) -> Delta:
        """End of the stream: the rest of both texts. The splitter can then start a new stream."""
        out = ["", ""]
        if self._format == "harmony" and self._state == "header":
            self._header_as_text(out)
        out[self._target] += self._parts[self._target].end()
        other = 1 - self._target
        out[other] += self._parts[other].end()
        self._target = 1
        self._state = "header" if self._format == "harmony" else "body"
        self._header = []
        return Delta(out[0], out[1])

    # --------------------------------------------------------------------------------------- internals

    def _emit(self, out: list[str], ids: list[int]) -> None:
        part = self._parts[self._target]
        out[self._target] += part.text(part.detok.push(ids))

    def _close(self, out: list[str]) -> None:
        out[self._target] += self._parts[self._target].end()

    def _open(self, target: int, *, lead: bool, tail: bool) -> None:
        self._target = target
        self._parts[target].begin(lead=lead, tail=tail)

    def _qwen3(self, out: list[str], marker: str) -> None:
        if marker == "<think>" and self._target != 0:
            self._close(out)
            self._open(0, lead=True, tail=True)
        elif marker == "</think>" and self._target == 0:
            self._close(out)
            self._open(1, lead=True, tail=False)

    def _plain(self, out: list[str], t: int) -> None:
        """A non-marker id outside a harmony message body."""
        if self._state == "done":
            return
        if self._state == "between":  # a header without <|start|>
            self._state, self._header = "header", []
        self._header.append(t)
        if len(self._header) > MAX_HEADER_IDS:  # not a header after all: answer text
            self._header_as_text(out)

    def _header_as_text(self, out: list[str]) -> None:
        ids, self._header = self._header, []
        if any(t in self._by_id for t in ids):
            return  # a header cut short (the stream ended inside it): not text
        self._open(1, lead=False, tail=False)
        self._state = "body"
        self._emit(out, ids)

    def _harmony(self, out: list[str], marker: str) -> None:
        if self._state == "done":
            return
        if marker == "<|message|>" and self._state == "header":
            channel = self._channel(self._header)
            self._header = []
            self._open(0 if channel in HARMONY_REASONING_CHANNELS else 1, lead=False, tail=False)
            self._state = "body"
        elif marker in ("<|end|>", "<|return|>", "<|call|>"):
            if self._state == "body":
                self._close(out)
            self._header = []
            self._state = "between" if marker == "<|end|>" else "done"
        elif marker == "<|start|>":
            if self._state == "body":
                self._close(out)
            self._state, self._header = "header", []
        elif self._state == "header":
            self._header.append(self._ids[marker])
        elif self._state == "between":
            self._state, self._header = "header", [self._ids[marker]]
        # any other marker inside a body (e.g. <|channel|>) is not text

    def _channel(self, header: list[int]) -> str:
        """The channel a header names: the word after ``<|channel|>`` (``final``, ``analysis``,
        ``commentary to=functions.x``: ``commentary``)."""
        text = str(self._tok.decode(header, skip_special_tokens=False))
        _, sep, rest = text.partition("<|channel|>")
        if not sep:
            return "final"
        words = rest.replace("<|", " <|").split()
        return words[0] if words else "final"


def split_reasoning(
    tokenizer: Any, chat_format: str, ids: Sequence[int], *, in_reasoning: bool = False
) -> Delta:
    """The reasoning and the answer of a whole generation."""
    s = ReasoningSplitter(tokenizer, chat_format, in_reasoning=in_reasoning)
    return s.push(list(ids)) + s.flush()
