"""Prompts of an exact token length for the profiler, in Japanese by default.

Text comes from the JSQuAD paragraphs shipped with the package (``--dataset ja``), a user file (``.jsonl``
with a ``text`` field per line, or plain text with one paragraph per line), or random token ids
(``synthetic``). Every prompt is exactly ``n_tokens`` tokens *as the server will count them*:

- ``ids`` (the ``tensorrt_llm`` target): token ids sent as they are; BOS first when the tokenizer adds one;
- ``raw`` (the ensemble): text whose ``tokenizer.encode(text)`` (special tokens added, as preprocessing
  does) has exactly ``n_tokens`` ids;
- ``chat`` (the chat model): a user message whose rendered chat prompt (the family's format and the
  served system prompt, :mod:`swallow_trt.text.chat`) encodes to exactly ``n_tokens`` ids.

Text is cut at a character boundary (never inside a character, so never U+FFFD from the cut), found by
bisection on the character count and checked by encoding; token counts are not monotone in the text, so
a cut that misses by one is retried a few characters further or from another starting point.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from swallow_trt.errors import UsageError

PromptMode = Literal["ids", "raw", "chat"]
MAX_POOL = 256  # distinct prompts; requests cycle through them


@dataclass(frozen=True)
class PromptSet:
    mode: PromptMode
    n_tokens: int
    items: tuple[tuple[int, ...] | str, ...]
    counted_as: str  # how n_tokens is counted, for the report

    def __len__(self) -> int:
        return len(self.items)


def load_texts(dataset: str) -> list[str] | None:
    """The source paragraphs of ``--dataset``; None for ``synthetic``."""
    if dataset == "synthetic":
        return None
    from swallow_trt.quantize.calib import read_jsonl, shipped_texts

    if dataset == "ja":
        return shipped_texts()
    path = Path(dataset)
    if not path.is_file():
        raise UsageError(
            f"--dataset {dataset!r} is neither ja, synthetic nor a file",
            "pass ja, synthetic or a .jsonl/.txt path",
        )
    if path.suffix == ".jsonl":
        texts = read_jsonl(path)
    else:
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise UsageError(f"{path} holds no text", "give a file with at least one paragraph")
    return texts


def load_tokenizer(directory: Path) -> Any:
    from transformers import AutoTokenizer

    if not directory.is_dir():
        raise UsageError(
            f"tokenizer directory {directory} does not exist", "pass --tokenizer DIR (the model's)"
        )
    loader: Any = AutoTokenizer  # untyped upstream
    try:
        return loader.from_pretrained(str(directory))
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot load a tokenizer from {directory}: {exc}", "pass the model's checkpoint dir"
        ) from None


def _normal_ids(tokenizer: Any) -> list[int]:
    special = set(tokenizer.all_special_ids)
    return [i for i in range(len(tokenizer)) if i not in special]


def _stream(texts: list[str] | None, tokenizer: Any, rng: random.Random, start: int, n: int) -> str:
    """Comfortably more than ``n`` tokens of source text from paragraph ``start`` on (or decoded random
    ids); a short user file is repeated."""
    if texts is None:
        normal = _normal_ids(tokenizer)
        decoded: str = tokenizer.decode([rng.choice(normal) for _ in range(2 * n + 64)])
        return decoded
    parts: list[str] = []
    size, i = 0, start
    while size < 4 * n + 256:
        parts.append(texts[i % len(texts)])
        size += len(parts[-1])
        i += 1
    return "".join(parts)


def _id_stream(
    texts: list[str] | None, tokenizer: Any, rng: random.Random, start: int, need: int
) -> list[int]:
    if texts is None:
        normal = _normal_ids(tokenizer)
        return [rng.choice(normal) for _ in range(need)]
    ids: list[int] = []
    i = start
    while len(ids) < need:
        ids += tokenizer.encode(texts[i % len(texts)], add_special_tokens=False)
        i += 1  # a short user file is repeated
    return ids[:need]


def cut_to_tokens(count: Callable[[str], int], text: str, n: int, tries: int = 24) -> str | None:
    """A prefix of ``text`` (or of a suffix of it, when no prefix fits) with ``count(prefix) == n``."""
    for shift in range(tries):
        source = text[shift:]
        lo, hi = 1, len(source)
        if count(source) < n:
            return None
        while lo < hi:  # the longest prefix with count <= n
            mid = (lo + hi + 1) // 2
            if count(source[:mid]) <= n:
                lo = mid
            else:
                hi = mid - 1
        for length in range(max(1, lo - 4), min(len(source), lo + 8) + 1):
            if count(source[:length]) == n:
                return source[:length]
    return None


def chat_counter(tokenizer: Any, chat_format: str, system_prompt: str | None) -> Callable[[str], int]:
    """Tokens of the prompt the chat model builds for a user message (its format and system prompt)."""
    from swallow_trt.text.chat import Message, adds_bos, render

    add = adds_bos(chat_format)
    head = [Message("system", system_prompt)] if system_prompt else []

    def count(text: str) -> int:
        prompt = render(chat_format, [*head, Message("user", text)], default_system=None)
        return len(tokenizer.encode(prompt, add_special_tokens=add))

    return count


def build_prompts(
    tokenizer: Any,
    texts: list[str] | None,
    *,
    mode: PromptMode,
    n_tokens: int,
    n_prompts: int,
    seed: int = 0,
    chat_format: str = "none",
    system_prompt: str | None = None,
) -> PromptSet:
    """``n_prompts`` (at most MAX_POOL) distinct prompts of exactly ``n_tokens`` tokens."""
    if n_tokens < 1:
        raise UsageError(f"--input-tokens must be at least 1, got {n_tokens}", "pass a positive number")
    rng = random.Random(seed)
    n_prompts = max(1, min(n_prompts, MAX_POOL))
    starts = [rng.randrange(len(texts)) if texts else 0 for _ in range(n_prompts)]
    if mode == "ids":
        bos = tokenizer.bos_token_id
        adds = bos is not None and tokenizer.encode("あ", add_special_tokens=True)[:1] == [bos]
        head = [int(bos)] if adds else []
        items: list[tuple[int, ...] | str] = [
            tuple(head + _id_stream(texts, tokenizer, rng, s, n_tokens - len(head)))[:n_tokens]
            for s in starts
        ]
        counted = "token ids sent" + (" (BOS first)" if head else "")
        return PromptSet("ids", n_tokens, tuple(items), counted)
    if mode == "chat":
        count = chat_counter(tokenizer, chat_format, system_prompt)
        counted = (
            f"the rendered {chat_format} chat prompt"
            if chat_format != "none"
            else "the user message (no chat format)"
        ) + (" with the served system prompt" if system_prompt else "")
    else:

        def count(text: str) -> int:
            return len(tokenizer.encode(text, add_special_tokens=True))

        counted = "the raw prompt, special tokens added"
    floor = count("")
    if n_tokens <= floor:
        raise UsageError(
            f"--input-tokens {n_tokens} leaves no room for text: the prompt format alone takes {floor} tokens",
            f"use --input-tokens {floor + 1} or more",
        )
    items = []
    for s in starts:
        cut = None
        for attempt in range(4):
            cut = cut_to_tokens(count, _stream(texts, tokenizer, rng, s + attempt * 7, n_tokens), n_tokens)
            if cut is not None:
                break
        if cut is None:
            raise UsageError(
                f"cannot cut the dataset to exactly {n_tokens} tokens",
                "use a longer --dataset or fewer tokens",
            )
        items.append(cut)
    return PromptSet(mode, n_tokens, tuple(items), counted)


def prompt_lengths(
    tokenizer: Any, prompts: PromptSet, counter: Callable[[str], int] | None = None
) -> list[int]:
    """Token counts of ``prompts`` (what the tests check)."""
    out: list[int] = []
    for p in prompts.items:
        if isinstance(p, str):
            out.append(counter(p) if counter else len(tokenizer.encode(p, add_special_tokens=True)))
        else:
            out.append(len(p))
    return out
