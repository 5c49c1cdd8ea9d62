"""Request parsing shared by the chat, preprocessing and postprocessing models."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("transformers")

from swallow_trt.text.chat import Message
from swallow_trt.text.pipeline import Prompter, RequestError, StopFilter, history_of, text_of
from tests.fixtures.tiny import make_tokenizer


def test_text_and_history_parsing() -> None:
    assert text_of(np.array(["富士山".encode()], dtype=object), "t") == "富士山"
    with pytest.raises(RequestError, match="not valid UTF-8"):
        text_of(np.array([b"\xff\xfe"], dtype=object), "t")
    turns = [{"role": "user", "content": "こんにちは"}, {"role": "assistant", "content": "はい"}]
    raw = np.array([json.dumps(turns).encode()], dtype=object)
    assert history_of(raw) == [Message("user", "こんにちは"), Message("assistant", "はい")]
    for bad in (b"{", b"{}", json.dumps([{"role": "system", "content": "x"}]).encode()):
        with pytest.raises(RequestError):
            history_of(np.array([bad], dtype=object))


def test_prompter_rules() -> None:
    p = Prompter(
        make_tokenizer("llama31"), chat_format="llama3", end_id=2, stop_words=["<|eot_id|>"], max_input_len=64
    )
    assert p.check_max_tokens(None) == 256
    with pytest.raises(RequestError, match="at least 1"):
        p.check_max_tokens(0)
    with pytest.raises(RequestError, match="empty prompt"):
        p.encode_chat("  ")
    with pytest.raises(RequestError, match="exceeds max_input_len 64"):
        p.encode_chat("長い" * 200)
    with pytest.raises(RequestError, match="expected 'user'"):
        p.encode_chat("次は？", [Message("assistant", "はい")])
    words = p.stop_words_array(["。"])
    assert words.shape[:2] == (1, 2)
    assert words.dtype == np.int32


@pytest.mark.parametrize(
    ("chunks", "stops", "want"),
    [
        (["こんに", "ちは。さよ", "うなら"], ["さようなら"], "こんにちは。"),
        (["abc"], ["x"], "abc"),
        (["富士", "山"], [], "富士山"),
    ],
)
def test_stop_filter(chunks: list[str], stops: list[str], want: str) -> None:
    f = StopFilter(stops)
    assert "".join(f.feed(c) for c in chunks) + f.close() == want
