"""Calibration and held-out text.

The default set is Japanese (``ja``): the JSQuAD v1.3 Wikipedia paragraphs shipped in
``swallow_trt/data`` (CC BY-SA 4.0, see its NOTICE). Upstream's default is English news
(cnn_dailymail); Swallow models serve Japanese, and activation ranges calibrated on English text
under-represent the Japanese-vocabulary rows and the activations they drive, so the default differs.

Every tenth shipped paragraph is held out for the quality report and never used for calibration.
Text is packed (paragraphs joined in a seeded order) and cut into samples of exactly
``max_seq_len`` tokens, so every calibration sample is full length and the set is reproducible.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swallow_trt.errors import ConfigFileError, EnvironmentProblem, UsageError

HELDOUT_EVERY = 10


@dataclass(frozen=True)
class TextSet:
    name: str  # "ja", a path, or a hub dataset id
    texts: list[str]
    sha256: str


def _shipped_path() -> Path:
    from swallow_trt import __file__ as pkg_file

    return Path(pkg_file).parent / "data" / "jsquad-v1.3-ja.jsonl"


def read_jsonl(path: Path) -> list[str]:
    texts = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ConfigFileError(
                f"{path}:{n}: not a JSON line", "one JSON object per line, with a `text` field"
            ) from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise ConfigFileError(
                f"{path}:{n}: no `text` string field", "one JSON object per line, with a `text` field"
            )
        texts.append(row["text"])
    return texts


def _digest(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    return h.hexdigest()


def shipped_texts() -> list[str]:
    return read_jsonl(_shipped_path())


def calibration_file(spec: str) -> Path | None:
    """The file ``--calib`` names (checked to exist, not read), or None for ``ja`` and hub dataset ids."""
    path = Path(spec).expanduser()
    if spec == "ja" or not (path.suffix in (".jsonl", ".txt") or path.exists()):
        return None
    if not path.is_file():
        raise UsageError(
            f"calibration file {spec!r} {'is not a file' if path.exists() else 'does not exist'}",
            "pass --calib ja, a .jsonl/.txt file or a dataset id",
        )
    return path


def calibration_texts(spec: str) -> TextSet:
    """``ja`` | a ``.jsonl`` (field ``text``) or ``.txt`` file | a hub dataset id (needs ``datasets``)."""
    if spec == "ja":
        texts = [t for i, t in enumerate(shipped_texts()) if i % HELDOUT_EVERY]
        return TextSet("ja", texts, _digest(texts))
    path = calibration_file(spec)
    if path is not None:
        if path.suffix == ".jsonl":
            texts = read_jsonl(path)
        elif path.suffix == ".txt":
            # Paragraphs separated by blank lines.
            raw = path.read_text(encoding="utf-8")
            texts = [p.strip() for p in raw.split("\n\n") if p.strip()]
        else:
            raise UsageError(
                f"calibration file {spec!r} is neither .jsonl nor .txt",
                "convert it to .jsonl with a `text` field",
            )
        if not texts:
            raise UsageError(f"calibration file {spec!r} holds no text", "pass a non-empty file")
        return TextSet(str(path.resolve()), texts, _digest(texts))
    return _hub_dataset(spec)


def _hub_dataset(name: str) -> TextSet:
    try:
        import datasets  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise EnvironmentProblem(
            f"--calib {name!r} looks like a hub dataset, but the `datasets` package is not installed",
            "pip install datasets, or pass --calib ja or a local .jsonl/.txt file",
        ) from None
    dataset_name, _, config = name.partition(":")
    try:
        ds: Any = datasets.load_dataset(dataset_name, config or None, split="train")
    except Exception as exc:  # datasets raises many kinds; any failure means the same to the user
        raise UsageError(
            f"cannot load dataset {name!r}: {str(exc).splitlines()[0]}", "check the id or pass a local file"
        ) from None
    column = next((c for c in ("text", "content", "article") if c in ds.column_names), None)
    if column is None:
        raise UsageError(
            f"dataset {name!r} has no text/content/article column", "pass a local .jsonl with a `text` field"
        )
    texts = [t for t in ds[column][:20000] if isinstance(t, str) and t.strip()]
    return TextSet(name, texts, _digest(texts))


def heldout_texts() -> TextSet:
    texts = [t for i, t in enumerate(shipped_texts()) if i % HELDOUT_EVERY == 0]
    return TextSet("ja-heldout", texts, _digest(texts))


def pack_token_ids(encode: Any, texts: list[str], n_samples: int, seq_len: int, seed: int) -> list[list[int]]:
    """Shuffle ``texts`` with ``seed``, encode and concatenate them (newline-separated), and cut the
    stream into ``n_samples`` samples of exactly ``seq_len`` tokens (fewer when the text runs out)."""
    if n_samples < 1 or seq_len < 2:
        return []
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    stream: list[int] = []
    need = n_samples * seq_len
    for i in order:
        stream.extend(encode(texts[i] + "\n"))
        if len(stream) >= need:
            break
    usable = len(stream) // seq_len
    return [stream[k * seq_len : (k + 1) * seq_len] for k in range(min(usable, n_samples))]
