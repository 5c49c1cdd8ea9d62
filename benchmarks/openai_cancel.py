"""How fast a client that goes away stops its generation in ``tensorrt_llm``, through the OpenAI API.

The schedule model (tests/triton_models/schedule) stands in for ``tensorrt_llm`` at a fixed per-token
delay and honours the ``stop`` input as the C++ backend does; its own record says, per request, when its
stop request arrived (``stopped``, CLOCK_MONOTONIC in the model's process) and when it sent its final
response (``ended``). Each client (raw HTTP/1.1 on asyncio, in this process) posts a chat completion with
a prompt of a length no other request has (that is how records are matched to requests), and closes its
connection: streaming, once it has read ``--pieces`` content pieces; not streaming, ``--first-token-ms`` +
(pieces - 1) x ``--token-ms`` after it sent the request (about that many tokens made, less the API's own
delay). Latency = the
model's stamp - the client's ``time.monotonic_ns()`` just before the close (same clock, same host).
Printed per mode: p50 / p90 / max of the stop latency (disconnect -> stop request in the model) and of the
end latency (disconnect -> the generation's final response), the tokens sent after the disconnect, and
how many generations were not stopped by a stop request at all.

    python benchmarks/openai_cancel.py [--requests 40] [--pieces 5] [--token-ms 20] [--concurrency 4]
                                       [--json out.json]

Target (issue 12): a client that disconnects, streaming or not, cancels the generation in
``tensorrt_llm`` within 100 ms (held to the end latency's max).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "日本で一番高い山は何ですか？"
TARGET_MS = 100.0
_TEXT = re.compile(rb'"content":"[^"]')  # a content piece (the role chunk's content is "")


def prompts(repo: Path, count: int) -> list[tuple[str, int]]:
    """``count`` prompts with pairwise different token counts, as the API renders and encodes them."""
    from transformers import AutoTokenizer

    from swallow_trt.text.chat import Message, adds_bos, render

    tok = AutoTokenizer.from_pretrained(repo / "chat" / "tokenizer")
    out: list[tuple[str, int]] = []
    seen: set[int] = set()
    j = 0
    while len(out) < count:
        text = PROMPT + " 山" * j
        j += 1
        rendered = render("llama3", [Message("user", text)], default_system=None)
        n = len(tok.encode(rendered, add_special_tokens=adds_bos("llama3")))
        if n not in seen:
            seen.add(n)
            out.append((text, n))
    return out


async def one(host: str, port: int, model: str, text: str, stream: bool, args: argparse.Namespace) -> int:
    """Post one request and disconnect early; returns the client's disconnect time (monotonic ns)."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": text}],
                       "max_tokens": args.tokens, "stream": stream}).encode()  # fmt: skip
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip
    await writer.drain()
    if stream:
        buf = b""
        while len(_TEXT.findall(buf)) < args.pieces:
            chunk = await reader.read(65536)
            if not chunk:
                raise RuntimeError(f"the API ended the stream early: {buf[-300:]!r}")
            buf += chunk
        if not buf.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"the API answered {buf[:300]!r}")
    else:
        await asyncio.sleep((args.first_token_ms + (args.pieces - 1) * args.token_ms) / 1e3)
    gone = time.monotonic_ns()
    writer.close()
    return gone


async def drive(url: str, model: str, jobs: list[tuple[str, bool]], args: argparse.Namespace) -> list[int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    gate = asyncio.Semaphore(args.concurrency)

    async def limited(text: str, stream: bool) -> int:
        async with gate:
            return await one(host, int(port), model, text, stream, args)

    return await asyncio.gather(*(limited(text, stream) for text, stream in jobs))


def read_records(path: Path, want: int, timeout_s: float = 120) -> dict[int, dict[str, Any]]:
    """The model's records keyed by prompt length, once ``want`` are there (or ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        records = [json.loads(line) for line in lines]
        by_len = {r["inputs"]: r for r in records if "inputs" in r}
        if len(by_len) >= want or time.monotonic() > deadline:
            return by_len
        time.sleep(0.2)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summarise(mode: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    stopped = [r for r in rows if r["stop_ms"] is not None]
    ends = [r["end_ms"] for r in rows if r["end_ms"] is not None]
    stops = [r["stop_ms"] for r in stopped]
    after = [r["tokens_after"] for r in rows]
    out: dict[str, Any] = {"mode": mode, "requests": len(rows), "stopped_by_stop_input": len(stopped),
                           "unmatched": sum(1 for r in rows if r["end_ms"] is None)}  # fmt: skip
    for name, values in (("stop_ms", stops), ("end_ms", ends)):
        if values:
            out |= {
                f"{name}_p50": pct(values, 0.5),
                f"{name}_p90": pct(values, 0.9),
                f"{name}_max": max(values),
            }
    out |= {"tokens_after_p50": pct(after, 0.5), "tokens_after_max": max(after)} if after else {}
    out["meets_100ms"] = bool(ends) and out["unmatched"] == 0 and out["end_ms_max"] <= TARGET_MS
    return out


def measure(
    repo: Path, record: Path, grpc_url: str, api_url: str, args: argparse.Namespace
) -> dict[str, Any]:
    with urllib.request.urlopen(api_url + "/v1/models", timeout=30) as response:
        model = json.loads(response.read())["data"][0]["id"]  # what the API serves, not a guess
    texts = prompts(repo, 2 * args.requests)
    result: dict[str, Any] = {"modes": [], "rows": []}
    for i, (mode, stream) in enumerate((("streaming", True), ("non-streaming", False))):
        batch = texts[i * args.requests : (i + 1) * args.requests]
        gone = asyncio.run(drive(api_url, model, [(t, stream) for t, _ in batch], args))
        records = read_records(record, (i + 1) * args.requests)
        rows = []
        for (_, n), t in zip(batch, gone, strict=True):
            rec = records.get(n)
            rows.append({
                "mode": mode, "prompt_tokens": n, "disconnect_ns": t,
                "stop_ms": (rec["stopped"] - t) / 1e6 if rec and "stopped" in rec else None,
                "end_ms": (rec["ended"] - t) / 1e6 if rec and "ended" in rec else None,
                "tokens_before": sum(k for s, k in zip(rec["sent"], rec["tokens"], strict=True) if s <= t) if rec else 0,
                "tokens_after": sum(k for s, k in zip(rec["sent"], rec["tokens"], strict=True) if s > t) if rec else 0,
                "dropped": rec["dropped"] if rec else None,
            })  # fmt: skip
        summary = summarise(mode, rows)
        result["modes"].append(summary)
        result["rows"] += rows
    metrics = urllib.request.urlopen(api_url + "/metrics", timeout=30).read().decode()
    found = re.search(r"^swallow_api_disconnects_total (\S+)$", metrics, re.M)
    result["api_disconnects_total"] = float(found.group(1)) if found else None
    return result


def _fmt(v: Any) -> str:
    return f"{v:.1f}" if isinstance(v, float) else str(v)


def print_table(result: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"schedule model: first token {args.first_token_ms} ms, {args.token_ms} ms/token; "
          f"{args.requests} requests per mode, concurrency {args.concurrency}, disconnect after {args.pieces} pieces")  # fmt: skip
    cols = ["mode", "requests", "stopped_by_stop_input", "stop_ms_p50", "stop_ms_p90", "stop_ms_max",
            "end_ms_p50", "end_ms_p90", "end_ms_max", "tokens_after_p50", "tokens_after_max", "meets_100ms"]  # fmt: skip
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for m in result["modes"]:
        print("| " + " | ".join(_fmt(m.get(c, "-")) for c in cols) + " |")
    print(f"API disconnects counted: {result['api_disconnects_total']}; load average before "
          f"{result['loadavg_before']}, after {result['loadavg_after']}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=40, help="requests per mode")
    parser.add_argument("--pieces", type=int, default=5, help="content pieces read before disconnecting")
    parser.add_argument("--token-ms", type=float, default=20.0, help="the schedule model's per-token delay")
    parser.add_argument("--first-token-ms", type=float, default=20.0)
    parser.add_argument("--tokens", type=int, default=1000, help="max_tokens (never reached before the cut)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write the summary and every request's row here")
    args = parser.parse_args()

    from swallow_trt.openai_api.server import start_api_process
    from swallow_trt.triton_repo.server import TritonServer
    from tests.fixtures.ports import free_port
    from tests.fixtures.schedule_repo import schedule_repo

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        record = root / "record.jsonl"
        params = {"first_token_ms": str(args.first_token_ms), "token_interval_ms": str(args.token_ms),
                  "require_forced_length": "false", "record_path": str(record)}  # fmt: skip
        repo = schedule_repo(root, params, max_batch_size=max(64, args.concurrency))
        server = TritonServer(repo, log_path=root / "server.log", start_timeout_s=1800).start()
        try:
            api = start_api_process(server.grpc_url, repo, port=free_port(), log_path=root / "api.log")
            try:
                before = [round(x, 2) for x in os.getloadavg()]
                result = measure(repo, record, server.grpc_url, api.url, args)
                result["loadavg_before"] = before
                result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
            finally:
                api.stop()
        finally:
            server.stop()
    result["args"] = vars(args) | {"json": str(args.json) if args.json else None}
    print_table(result, args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
