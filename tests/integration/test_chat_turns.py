"""160 Japanese chat turns (tests/fixtures/ja_turns.py, not JSQuAD) through ``chat`` on the real server,
for the Llama-2, Llama-3 and Alpaca formats, one stream at a time and four at once on ONE chat instance
(its coroutines serve them concurrently). A replay ``tensorrt_llm`` model answers each rendered prompt
(history included) with the token ids of that turn's answer. Every streamed answer must equal the full
decode of its ids, no piece may carry U+FFFD, no request is sent twice, and the server log must show no
dead stub: a crash is a failure here, not something to retry."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc")
pytest.importorskip("torch")

from swallow_trt.text.chat import Message, adds_bos, render
from swallow_trt.triton_repo.client import stream_chat
from swallow_trt.triton_repo.repo import RepoSpec, write_repo
from tests.fixtures.ja_turns import conversations
from tests.fixtures.tiny import make_checkpoint, make_tokenizer
from tests.fixtures.triton import serving

pytestmark = [pytest.mark.integration, pytest.mark.requires_triton]
REPLAY = Path(__file__).resolve().parents[1] / "triton_models" / "replay" / "model.py"
DEAD = ("is not healthy", "unaligned fastbin", "unaligned tcache", "double free", "corrupted", "Segmentation")


def _table(tok, chat_format: str, convos: list[list[tuple[str, str]]]) -> tuple[dict, list[list[str]]]:
    """Replay table {rendered prompt ids -> answer ids} and, per conversation, the expected answers (the
    full decode of each answer's ids: what an exact incremental detokeniser must produce)."""
    table: dict[str, list[int]] = {}
    expected: list[list[str]] = []
    for convo in convos:
        history: list[Message] = []
        answers = []
        for question, answer in convo:
            prompt = render(chat_format, [*history, Message("user", question)], default_system=None)
            key = ",".join(map(str, tok.encode(prompt, add_special_tokens=adds_bos(chat_format))))
            ids = tok.encode(answer, add_special_tokens=False)
            table[key] = ids
            streamed = tok.decode(ids, skip_special_tokens=True)
            answers.append(streamed)
            # The client sends back what it received: the next turn's history holds the streamed text.
            history += [Message("user", question), Message("assistant", streamed)]
        expected.append(answers)
    return table, expected


def _converse(url: str, convo: list[tuple[str, str]]) -> list[list[str]]:
    history: list[tuple[str, str]] = []
    out = []
    for question, _ in convo:
        pieces = list(stream_chat(url, question, max_tokens=4096, history=history, timeout_s=120))
        out.append(pieces)
        history += [("user", question), ("assistant", "".join(pieces))]
    return out


@pytest.mark.parametrize(
    ("kind", "chat_format"), [("llama2", "llama2"), ("llama31", "llama3"), ("llama2", "alpaca-ja")]
)
def test_japanese_turns_exact_without_stub_death(tmp_path: Path, kind: str, chat_format: str) -> None:
    tok = make_tokenizer(kind)
    ckpt = make_checkpoint(tmp_path / "ckpt", kind, vocab_size=max(len(tok), 4096))
    repo = write_repo(
        RepoSpec(checkpoint=ckpt, chat_format=chat_format, end_id=None, max_input_len=8192, chat_instances=1),
        tmp_path / "repo",
    )
    convos = conversations()
    assert sum(len(c) for c in convos) == 160
    table, expected = _table(tok, chat_format, convos)
    version = repo / "tensorrt_llm" / "1"
    shutil.copyfile(REPLAY, version / "model.py")
    (version / "replay.json").write_text(json.dumps(table))
    log_path = tmp_path / "server.log"
    with serving(repo, log_path, timeout_s=600) as server:
        # Concurrency 1: the 20 conversations one after another.
        sequential = [_converse(server.grpc_url, c) for c in convos]
        # Concurrency 4: four conversations at a time, all on the one chat instance.
        with ThreadPoolExecutor(4) as pool:
            concurrent = list(pool.map(lambda c: _converse(server.grpc_url, c), convos))
    log = log_path.read_text(errors="replace")
    assert not [m for m in DEAD if m in log], log[-3000:]
    for results in (sequential, concurrent):
        for c, (got, want) in enumerate(zip(results, expected, strict=True)):
            for t, (pieces, text) in enumerate(zip(got, want, strict=True)):
                assert "".join(pieces) == text, f"conversation {c} turn {t}"
                assert all("\ufffd" not in p for p in pieces), f"conversation {c} turn {t}"


def test_one_chat_instance_interleaves_streams(tmp_path: Path) -> None:
    """Eight streams on ONE chat instance run at once: every stream gets its first piece before any
    stream gets its last (a chat model that served one request at a time would finish the first stream
    before the second began). Asserted on the order of events, not on times."""
    import threading

    from tests.fixtures.schedule_repo import schedule_repo

    schedule = {"first_token_ms": "0", "token_interval_ms": "20", "require_forced_length": "false"}
    repo = schedule_repo(tmp_path, schedule, chat_instances=1)
    events: list[tuple[int, str]] = []
    lock = threading.Lock()

    def run(n: int, url: str) -> None:
        for i, _ in enumerate(stream_chat(url, f"こんにちは{n}", max_tokens=60, timeout_s=120)):
            with lock:
                events.append((n, "first" if i == 0 else "piece"))
        with lock:
            events.append((n, "last"))

    with serving(repo, tmp_path / "server.log", timeout_s=600) as server:
        threads = [threading.Thread(target=run, args=(n, server.grpc_url)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(n for n, kind in events if kind == "last") == list(range(8))
    first_last = next(i for i, (_, kind) in enumerate(events) if kind == "last")
    last_first = max(i for i, (_, kind) in enumerate(events) if kind == "first")
    assert last_first < first_last, events
