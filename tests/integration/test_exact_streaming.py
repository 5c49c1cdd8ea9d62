"""Exact streaming through the real server: a replay ``tensorrt_llm`` model (tests/triton_models/replay)
emits the token ids of JSQuAD paragraphs one per response; the chat model's streamed text must equal
each paragraph with zero U+FFFD, for a byte-level BPE and a SentencePiece byte-fallback tokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc")
pytest.importorskip("torch")

from swallow_trt.text.chat import Message, adds_bos, render
from swallow_trt.triton_repo.client import stream_chat
from swallow_trt.triton_repo.repo import RepoSpec, write_repo
from tests.fixtures.tiny import japanese_paragraphs, make_checkpoint, make_tokenizer
from tests.fixtures.triton import serving

pytestmark = [pytest.mark.integration, pytest.mark.requires_triton]
REPLAY = Path(__file__).resolve().parents[1] / "triton_models" / "replay" / "model.py"
N = 300


def stream_once(url: str, text: str) -> list[str]:
    """The streamed pieces of one answer. Sent once: a dead chat stub is a failure, not a retry."""
    return list(stream_chat(url, text, max_tokens=4096, timeout_s=60))


@pytest.mark.parametrize(("kind", "chat_format"), [("llama31", "llama3"), ("llama2", "llama2")])
def test_streamed_text_equals_source(tmp_path: Path, kind: str, chat_format: str) -> None:
    tok = make_tokenizer(kind)
    ckpt = make_checkpoint(tmp_path / "ckpt", kind, vocab_size=max(len(tok), 4096))
    repo = write_repo(
        RepoSpec(checkpoint=ckpt, chat_format=chat_format, end_id=None, max_input_len=4096),
        tmp_path / "repo",
    )
    paragraphs = japanese_paragraphs()[:N]
    table = {}
    for i, text in enumerate(paragraphs):
        prompt = render(chat_format, [Message("user", f"段落{i}")], default_system=None)
        key = ",".join(map(str, tok.encode(prompt, add_special_tokens=adds_bos(chat_format))))
        table[key] = tok.encode(text, add_special_tokens=False)
    version = repo / "tensorrt_llm" / "1"
    shutil.copyfile(REPLAY, version / "model.py")
    (version / "replay.json").write_text(json.dumps(table))
    with serving(repo, tmp_path / "server.log", timeout_s=240) as server:
        # One stream at a time: this test is about exactness (concurrency has its own test, to come).
        results = {i: stream_once(server.grpc_url, f"段落{i}") for i in range(N)}
    # Triton 2.51's stub used to corrupt its heap under this stream of responses (objects freed without
    # the GIL; see triton_repo/models/chat/model.py): the chat model now keeps them alive, so any sign of
    # a dead stub fails the test.
    log = (tmp_path / "server.log").read_text(errors="replace")
    assert not [m for m in ("is not healthy", "unaligned", "double free", "corrupted") if m in log], log[
        -3000:
    ]
    split_chars = 0
    for i, text in enumerate(paragraphs):
        pieces = results[i]
        assert "".join(pieces) == text, f"paragraph {i}"
        assert all("\ufffd" not in p for p in pieces), f"paragraph {i}"
        split_chars += len(pieces) < len(tok.encode(text, add_special_tokens=False))
    # The text really exercised split characters: some tokens held back (fewer pieces than tokens).
    assert split_chars > N // 2
