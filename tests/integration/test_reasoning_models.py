"""Reasoning models on the real Triton server, on CPU: Qwen3 (dense and MoE tokenizers: the same Qwen2 BPE
of 151,669 ids) and GPT-OSS (the o200k-style vocabulary of 201,088 ids).

- Exact split: a replay ``tensorrt_llm`` model answers each rendered prompt (history included) with ids
  holding a think block (Qwen3) or harmony's analysis and final channels (GPT-OSS) around Japanese text;
  the ``chat`` model must stream the reasoning in ``reasoning_output`` and the answer alone in
  ``text_output``, both exact, over multi-turn conversations whose history carries the answers only. The
  CLI shows the two apart (``--json``) and refuses reasoning options the format cannot honour (exit 2);
  the server answers a request that bypasses that check with an error response.
- Smoke: ``swallow-trt package --model DIR`` finds the qwen3 chat format for a tiny random Qwen3 named
  like a registry model, the reference backend loads it with transformers and streams.
"""

from __future__ import annotations

import datetime
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tritonclient.grpc")
pytest.importorskip("torch")

from swallow_trt.text.chat import Message, adds_bos, render
from swallow_trt.triton_repo.client import ANSWER, REASONING, stream_chat_parts
from swallow_trt.triton_repo.repo import RepoSpec, write_repo
from tests.fixtures.ja_turns import conversations
from tests.fixtures.tiny import make_checkpoint, make_tokenizer
from tests.fixtures.triton import serving

pytestmark = [pytest.mark.integration, pytest.mark.requires_triton]
REPLAY = Path(__file__).resolve().parents[1] / "triton_models" / "replay" / "model.py"
DEAD = ("is not healthy", "unaligned fastbin", "unaligned tcache", "double free", "corrupted", "Segmentation")
CONVERSATIONS, TURNS = 3, 4
MODEL_TYPE = {"qwen3": "qwen3", "qwen3_moe": "qwen3_moe", "gpt_oss": "gpt_oss"}
STOPS = {"qwen3": ("<|im_end|>", "<|endoftext|>"), "harmony": ("<|return|>", "<|call|>", "<|endoftext|>")}


def thinking_of(turn: int) -> bool | None:
    """Qwen3 turns alternate the default (on) and --no-think; every third asks for it explicitly."""
    return None if turn % 3 == 0 else (turn % 3 == 1)


def generated(chat_format: str, reasoning: str, answer: str, thinking: bool | None) -> str:
    """What the model writes after the prompt: the markers are special tokens in the tokenizer."""
    if chat_format == "harmony":
        return (
            f"<|channel|>analysis<|message|>{reasoning}<|end|>"
            f"<|start|>assistant<|channel|>final<|message|>{answer}<|return|>"
        )
    if thinking is False:  # the prompt pre-filled the empty think block
        return f"{answer}<|im_end|>"
    return f"<think>\n{reasoning}\n</think>\n\n{answer}<|im_end|>"


def expected_parts(chat_format: str, reasoning: str, answer: str, thinking: bool | None) -> tuple[str, str]:
    if chat_format == "harmony":
        return reasoning, answer
    if thinking is False:  # no think block in the output: the answer exactly as generated
        return "", answer
    # Qwen3's template form: the reasoning without newlines at its ends, the answer without leading ones.
    return reasoning.strip("\n"), answer.lstrip("\n")


def replay_table(tok: Any, chat_format: str) -> tuple[dict[str, list[int]], list[list[tuple[str, str]]]]:
    """{rendered prompt ids -> generated ids} and, per conversation, the expected (reasoning, answer)."""
    table: dict[str, list[int]] = {}
    expected = []
    today = datetime.date.today()
    # Harmony prompts carry the date: keys for today and tomorrow, so a run across midnight still matches.
    dates = [(today + datetime.timedelta(days=d)).strftime("%Y-%m-%d") for d in (0, 1)]
    for convo in conversations()[:CONVERSATIONS]:
        history: list[Message] = []
        parts = []
        for t, (question, answer) in enumerate(convo[:TURNS]):
            thinking = thinking_of(t) if chat_format == "qwen3" else None
            reasoning = f"「{question}」への答えを考える。\n要点：{answer.strip()[:12]}"
            ids = tok.encode(generated(chat_format, reasoning, answer, thinking), add_special_tokens=False)
            for date in dates:
                prompt = render(
                    chat_format, [*history, Message("user", question)], None, thinking=thinking, date=date
                )
                table[",".join(map(str, tok.encode(prompt, add_special_tokens=adds_bos(chat_format))))] = ids
            want = expected_parts(chat_format, reasoning, answer, thinking)
            parts.append(want)
            history += [Message("user", question), Message("assistant", want[1])]
        expected.append(parts)
    return table, expected


def converse(url: str, chat_format: str, convo: list[tuple[str, str]]) -> list[tuple[list[str], list[str]]]:
    history: list[tuple[str, str]] = []
    out = []
    for t, (question, _) in enumerate(convo[:TURNS]):
        thinking = thinking_of(t) if chat_format == "qwen3" else None
        pieces: dict[str, list[str]] = {REASONING: [], ANSWER: []}
        order = []
        for kind, piece in stream_chat_parts(
            url, question, max_tokens=4096, history=history, thinking=thinking, timeout_s=120
        ):
            pieces[kind].append(piece)
            order.append(kind)
        # All reasoning arrives before any of the answer.
        assert order == sorted(order, key=lambda k: k != REASONING), order
        out.append((pieces[REASONING], pieces[ANSWER]))
        history += [("user", question), ("assistant", "".join(pieces[ANSWER]))]
    return out


def tokenizer_checkpoint(directory: Path, kind: str) -> Path:
    """The tokenizer and a config: all a replayed repository reads of a checkpoint."""
    make_tokenizer(kind).save_pretrained(directory)
    (directory / "config.json").write_text(json.dumps({"model_type": MODEL_TYPE[kind]}), encoding="utf-8")
    return directory


def raw_error(url: str, inputs: dict[str, tuple[Any, str]]) -> str:
    """The error a bare streaming request gets (no client-side checks)."""
    import queue

    import numpy as np
    import tritonclient.grpc as grpcclient

    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    tensors = []
    for name, (value, dtype) in inputs.items():
        t = grpcclient.InferInput(name, [1], dtype)
        t.set_data_from_numpy(np.array([value], dtype=object if dtype == "BYTES" else bool))
        tensors.append(t)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        client.async_stream_infer("chat", tensors)
        _, error = results.get(timeout=120)
    finally:
        client.stop_stream(cancel_requests=True)
        client.close()
    return str(error)


def openai_parts(grpc_url: str, repo: Path, question: str, log_path: Path) -> list[tuple[str, str, str]]:
    """(reasoning_content, reasoning, content) of one question through the OpenAI API, non-streamed and
    streamed."""
    import openai

    from swallow_trt.openai_api.server import start_api_process
    from tests.fixtures.ports import free_port

    api = start_api_process(grpc_url, repo, port=free_port(), model_name="tiny", log_path=log_path)
    try:
        client = openai.OpenAI(base_url=api.url + "/v1", api_key="none", max_retries=0, timeout=300)
        messages = [{"role": "user", "content": question}]
        whole = client.chat.completions.create(model="tiny", messages=messages, max_tokens=4096)
        message = whole.choices[0].message.model_dump()
        out = [
            (message.get("reasoning_content") or "", message.get("reasoning") or "", message["content"] or "")
        ]
        parts = {"reasoning_content": "", "reasoning": "", "content": ""}
        for chunk in client.chat.completions.create(
            model="tiny", messages=messages, max_tokens=4096, stream=True
        ):
            if chunk.choices:
                delta = chunk.choices[0].delta.model_dump()
                for name in parts:
                    parts[name] += delta.get(name) or ""
        out.append((parts["reasoning_content"], parts["reasoning"], parts["content"]))
        return out
    finally:
        api.stop()


@pytest.mark.parametrize(
    ("kind", "chat_format"), [("qwen3", "qwen3"), ("qwen3_moe", "qwen3"), ("gpt_oss", "harmony")]
)
def test_reasoning_and_answer_stream_apart_and_exact(
    tmp_path: Path, kind: str, chat_format: str, cli: Callable[..., Any]
) -> None:
    tok = make_tokenizer(kind)
    ckpt = tokenizer_checkpoint(tmp_path / "ckpt", kind)
    repo = write_repo(
        RepoSpec(
            checkpoint=ckpt,
            chat_format=chat_format,
            end_id=None,
            stop_words=STOPS[chat_format],
            max_input_len=8192,
            chat_instances=1,
        ),
        tmp_path / "repo",
    )
    table, expected = replay_table(tok, chat_format)
    version = repo / "tensorrt_llm" / "1"
    shutil.copyfile(REPLAY, version / "model.py")
    (version / "replay.json").write_text(json.dumps(table))
    log_path = tmp_path / "server.log"
    convos = conversations()[:CONVERSATIONS]
    with serving(repo, log_path, timeout_s=600) as server:
        results = [converse(server.grpc_url, chat_format, c) for c in convos]
        first_question = convos[0][0][0]
        api_parts = openai_parts(server.grpc_url, repo, first_question, tmp_path / "api.log")
        shown = cli("chat", "--url", server.grpc_url, "--json", first_question)
        wrong = ("--reasoning-effort", "high") if chat_format == "qwen3" else ("--no-think",)
        refused = cli("chat", "--url", server.grpc_url, *wrong, first_question)
        effort = "high" if chat_format == "qwen3" else "max"
        server_error = raw_error(
            server.grpc_url,
            {
                "text_input": (first_question.encode(), "BYTES"),
                "reasoning_effort": (effort.encode(), "BYTES"),
            },
        )
    log = log_path.read_text(errors="replace")
    assert not [m for m in DEAD if m in log], log[-3000:]
    for c, (got, want) in enumerate(zip(results, expected, strict=True)):
        for t, ((reasoning, answer), (want_reasoning, want_answer)) in enumerate(zip(got, want, strict=True)):
            assert ("".join(reasoning), "".join(answer)) == (want_reasoning, want_answer), (
                f"conversation {c} turn {t}"
            )
            assert all("\ufffd" not in p for p in (*reasoning, *answer)), f"conversation {c} turn {t}"
            # Markup never reaches the text.
            assert not any(
                m in "".join(answer) for m in ("<think>", "</think>", "<|channel|>", "<|message|>")
            )
    # The OpenAI API returns the same split: reasoning as reasoning_content and reasoning, the answer in
    # content, streamed (deltas) and not.
    for reasoning_content, reasoning, content in api_parts:
        assert (reasoning_content, content) == expected[0][0]
        assert reasoning == reasoning_content
    assert shown.exit_code == 0, shown.stderr
    assert json.loads(shown.stdout) == dict(zip(("reasoning", "content"), expected[0][0], strict=True))
    assert refused.exit_code == 2
    assert len(refused.stderr.strip().splitlines()) <= 2, refused.stderr  # the line and its hint
    assert "Qwen3 has no reasoning effort" in refused.stderr or "gpt-oss always reasons" in refused.stderr
    assert (
        "Qwen3 has no reasoning effort" if chat_format == "qwen3" else "unknown reasoning effort"
    ) in server_error


def test_reference_backend_loads_and_streams_a_tiny_qwen3(tmp_path: Path, cli: Callable[..., Any]) -> None:
    """The real reference backend (transformers on CPU) serves a tiny random Qwen3 packaged by the CLI.
    A random model's text is noise: asserted is that the stream runs to its end with text in it."""
    ckpt = make_checkpoint(tmp_path / "Qwen3-Swallow-8B-RL-v0.2", "qwen3")
    repo = tmp_path / "repo"
    packaged = cli("package", "--model", str(ckpt), "--out", str(repo), "--json")
    assert packaged.exit_code == 0, packaged.stderr
    assert '"chat_format": "qwen3"' in packaged.stdout
    log_path = tmp_path / "server.log"
    with serving(repo, log_path, timeout_s=900) as server:
        pieces = list(
            stream_chat_parts(server.grpc_url, "日本で一番高い山は？", max_tokens=12, timeout_s=600)
        )
        no_think = list(
            stream_chat_parts(server.grpc_url, "こんにちは", max_tokens=6, thinking=False, timeout_s=600)
        )
    log = log_path.read_text(errors="replace")
    assert not [m for m in DEAD if m in log], log[-3000:]
    assert pieces, "no text streamed"
    assert all(kind in (REASONING, ANSWER) and text for kind, text in (*pieces, *no_think))
