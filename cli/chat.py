"""``swallow-trt chat``: stream an answer from a served repository."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from swallow_trt.cli.options import JsonOpt
from swallow_trt.cli.output import emit_json

HELP = """Chat with a served model over gRPC streaming, printing text as it arrives.

With a PROMPT, one answer; without, an interactive multi-turn chat: the model sees the system prompt and
every earlier turn of the session, in the chat format of its family. An empty line or Ctrl-D ends it;
`/reset` forgets the earlier turns.

Reasoning models (Qwen3-Swallow, GPT-OSS-Swallow) think before they answer: the reasoning is shown apart,
dimmed on a terminal and under a `[reasoning]` line otherwise, the answer under `[answer]`; with --json,
each turn prints {"reasoning": ..., "content": ...}. Earlier turns are sent without their reasoning.

Examples:

  swallow-trt chat --url 127.0.0.1:8001 "日本で一番高い山は？"

  swallow-trt chat --url 127.0.0.1:8001 --system "簡潔に答えてください。" --max-tokens 128

  swallow-trt chat --no-think "こんにちは"                    # Qwen3: answer without thinking

  swallow-trt chat --reasoning-effort low --json "1+1は？"    # GPT-OSS: shorter reasoning, JSON out
"""

DIM, RESET = "\x1b[2m", "\x1b[0m"


def chat(
    prompt: Annotated[
        str | None, typer.Argument(help="The message; omit for an interactive session.")
    ] = None,
    url: Annotated[str, typer.Option("--url", help="Triton gRPC address host:port.")] = "127.0.0.1:8001",
    system: Annotated[
        str | None, typer.Option("--system", help="System prompt (default: the model's).")
    ] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="Most tokens to generate.")] = None,
    stop: Annotated[list[str] | None, typer.Option("--stop", help="Stop string (repeatable).")] = None,
    model: Annotated[str, typer.Option("--model-name", help="Streaming model in the repository.")] = "chat",
    encoding: Annotated[
        str | None,
        typer.Option(
            "--encoding",
            help="Your terminal's encoding (e.g. shift_jis) for the prompt and the answer (default: the locale's).",
        ),
    ] = None,
    think: Annotated[
        bool | None,
        typer.Option(
            "--think/--no-think", help="Qwen3: think before answering (default: on, as the cards advise)."
        ),
    ] = None,
    reasoning_effort: Annotated[
        str | None,
        typer.Option(
            "--reasoning-effort", help="GPT-OSS: low, medium (default, as the cards advise) or high."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    from swallow_trt.errors import UsageError
    from swallow_trt.text.chat import REASONING_EFFORTS
    from swallow_trt.triton_repo.client import (
        ANSWER,
        REASONING,
        argument_text,
        check_encoding,
        check_grpc_url,
        read_text_line,
        stream_chat_parts,
    )

    check_encoding(encoding)
    check_grpc_url(url)
    if reasoning_effort is not None and reasoning_effort not in REASONING_EFFORTS:
        raise UsageError(
            f"unknown --reasoning-effort {reasoning_effort!r}", f"use one of {', '.join(REASONING_EFFORTS)}"
        )
    if max_tokens is not None and max_tokens < 1:
        raise UsageError(f"--max-tokens must be at least 1, got {max_tokens}", "pass a positive number")
    if prompt is not None:
        prompt = argument_text(prompt, "the prompt", encoding)
        if not prompt.strip():
            raise UsageError(
                "the prompt is empty",
                'pass a message (swallow-trt chat "こんにちは"), or none for an interactive chat',
            )
    if system is not None:
        system = argument_text(system, "--system", encoding)
    stops = [argument_text(s, "--stop", encoding) for s in stop or []]
    if any(not s for s in stops):
        raise UsageError("--stop is empty", "pass a non-empty stop string, e.g. --stop '。'")
    # The answer may hold characters the terminal's encoding lacks: shown as '?', not a crash mid-stream.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace", **({"encoding": encoding} if encoding else {}))

    history: list[tuple[str, str]] = []

    dim = sys.stdout.isatty()

    def answer(text: str) -> str:
        parts: dict[str, list[str]] = {REASONING: [], ANSWER: []}
        shown = None
        for kind, piece in stream_chat_parts(
            url,
            text,
            model=model,
            max_tokens=max_tokens,
            system_prompt=system,
            stop=stops,
            history=history,
            thinking=think,
            reasoning_effort=reasoning_effort,
        ):
            parts[kind].append(piece)
            if as_json:
                continue
            if kind != shown:
                if kind == REASONING:
                    sys.stdout.write(DIM if dim else "[reasoning]\n")
                elif shown == REASONING:
                    sys.stdout.write(f"{RESET}\n\n" if dim else "\n[answer]\n")
                shown = kind
            sys.stdout.write(piece)
            sys.stdout.flush()
        reply = "".join(parts[ANSWER])
        if as_json:
            emit_json({"reasoning": "".join(parts[REASONING]), "content": reply})
        else:
            sys.stdout.write((RESET if dim and shown == REASONING else "") + "\n")
        return reply

    if prompt is not None:
        answer(prompt)
        return
    while True:
        sys.stdout.write("> ")
        sys.stdout.flush()
        line = read_text_line(sys.stdin, "the prompt (stdin)", encoding)
        if line is None or not line.strip():
            break
        if line.strip() == "/reset":
            history.clear()
            continue
        reply = answer(line)
        history.extend([("user", line), ("assistant", reply)])
