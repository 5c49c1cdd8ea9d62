"""``swallow-trt quickstart``: the whole tool chain on a tiny model, on CPU."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from swallow_trt.cli.options import JsonOpt
from swallow_trt.cli.output import emit_json, out

HELP = """Run every stage on a tiny, randomly initialised Swallow-shaped model, without a GPU.

Makes the model, quantizes it to FP8 with TP 2 (modelopt, Japanese calibration) into a real TensorRT-LLM
checkpoint, prints the trtllm-build command a Hopper GPU would run, packages a Triton repository with the
reference backend, starts the Triton server, streams a Japanese chat answer and stops the server. The
weights are random: the answer is Japanese-looking noise; the point is the pipeline. Needs the quantize
and serve extras (scripts/quickstart installs them). A re-run reuses the model and checkpoint.

Examples:

  swallow-trt quickstart

  swallow-trt quickstart --out /tmp/qs --prompt "富士山について教えてください。" --json
"""


def quickstart(
    out_dir: Annotated[Path, typer.Option("--out", help="Working directory.")] = Path(
        "swallow-trt-quickstart"
    ),
    prompt: Annotated[
        str, typer.Option("--prompt", help="The chat message.")
    ] = "日本で一番高い山は何ですか？",
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Most tokens to generate.")] = 48,
    as_json: JsonOpt = False,
) -> None:
    from swallow_trt.cli.output import ConsoleReporter
    from swallow_trt.errors import UsageError
    from swallow_trt.workflows.quickstart import QuickstartRequest, run_quickstart

    if max_tokens < 1:
        raise UsageError(f"--max-tokens must be at least 1, got {max_tokens}", "pass a positive number")
    if not prompt.strip():
        raise UsageError("--prompt is empty", "pass a message, e.g. --prompt 'こんにちは'")
    reporter = ConsoleReporter(quiet=as_json)
    started = False

    def show(piece: str) -> None:
        nonlocal started
        if as_json:
            return
        if not started:
            out(f"\nuser> {prompt}")
            sys.stdout.write("assistant> ")
            started = True
        sys.stdout.write(piece)
        sys.stdout.flush()

    try:
        result = run_quickstart(
            QuickstartRequest(out=out_dir, prompt=prompt, max_tokens=max_tokens), reporter, show
        )
    finally:
        reporter.close()
    if as_json:
        emit_json(result)
        return
    out("\n")
    out(
        "(random weights: the tokens are noise, and a random run of byte tokens can be invalid UTF-8, shown "
        "as U+FFFD exactly as a full decode shows it; a trained model's Japanese streams clean)"
    )
    out(f"done: server stopped. Repository: {result['repo']}")
    out(f"serve it again: swallow-trt serve --repo {result['repo']}")
