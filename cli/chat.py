"""``swallow-trt chat``: stream an answer from a served repository."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from swallow_trt.cli.output import guarded

HELP = """Chat with a served model over gRPC streaming, printing text as it arrives.

With a PROMPT, one answer; without, an interactive multi-turn chat: the model sees the system prompt and
every earlier turn of the session, in the chat format of its family. An empty line or Ctrl-D ends it;
`/reset` forgets the earlier turns.

Examples:

  swallow-trt chat --url 127.0.0.1:8001 "日本で一番高い山は？"

  swallow-trt chat --url 127.0.0.1:8001 --system "簡潔に答えてください。" --max-tokens 128
"""


@guarded
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
) -> None:
    from swallow_trt.errors import UsageError
    from swallow_trt.triton_repo.client import (
        argument_text,
        check_encoding,
        check_grpc_url,
        read_text_line,
        stream_chat,
    )

    check_encoding(encoding)
    check_grpc_url(url)
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

    def answer(text: str) -> str:
        pieces = []
        for piece in stream_chat(
            url, text, model=model, max_tokens=max_tokens, system_prompt=system, stop=stops, history=history
        ):
            pieces.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return "".join(pieces)

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
