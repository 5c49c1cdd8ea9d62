"""Calibration text: the shipped Japanese default, user files, deterministic packing."""

from __future__ import annotations

from pathlib import Path

import pytest

from swallow_trt.errors import ConfigFileError, UsageError
from swallow_trt.quantize.calib import calibration_texts, heldout_texts, pack_token_ids, shipped_texts


def test_default_is_japanese_and_disjoint_from_heldout() -> None:
    calib = calibration_texts("ja")
    held = heldout_texts()
    assert len(calib.texts) + len(held.texts) == len(shipped_texts()) == 1145
    assert not set(calib.texts) & set(held.texts)
    # Japanese: most characters are kana or kanji.
    sample = "".join(calib.texts[:20])
    japanese = sum(1 for ch in sample if "\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff")
    assert japanese / len(sample) > 0.6
    assert calibration_texts("ja").sha256 == calib.sha256


def test_packing_is_exact_and_seeded() -> None:
    texts = [f"段落{i}。" * (i % 7 + 1) for i in range(200)]

    def encode(t: str) -> list[int]:
        return [ord(c) for c in t]

    a = pack_token_ids(encode, texts, 10, 32, seed=1)
    b = pack_token_ids(encode, texts, 10, 32, seed=1)
    c = pack_token_ids(encode, texts, 10, 32, seed=2)
    assert a == b
    assert a != c
    assert len(a) == 10
    assert all(len(s) == 32 for s in a)
    # Too little text: fewer samples, never a short one.
    short = pack_token_ids(encode, texts[:3], 50, 32, seed=0)
    assert all(len(s) == 32 for s in short)
    assert len(short) < 50


def test_user_files(tmp_path: Path) -> None:
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"text": "今日は晴れ。"}\n\n{"text": "明日は雨。"}\n', encoding="utf-8")
    assert calibration_texts(str(jsonl)).texts == ["今日は晴れ。", "明日は雨。"]
    txt = tmp_path / "c.txt"
    txt.write_text("一つ目の段落。\n続き。\n\n二つ目。\n", encoding="utf-8")
    assert calibration_texts(str(txt)).texts == ["一つ目の段落。\n続き。", "二つ目。"]


def test_bad_user_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": "no text field"}\n', encoding="utf-8")
    with pytest.raises(ConfigFileError, match=r"bad\.jsonl:2: no `text`"):
        calibration_texts(str(bad))
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(ConfigFileError, match=r"broken\.jsonl:1"):
        calibration_texts(str(broken))
    with pytest.raises(UsageError, match="does not exist"):
        calibration_texts(str(tmp_path / "missing.jsonl"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(UsageError, match="no text"):
        calibration_texts(str(empty))
