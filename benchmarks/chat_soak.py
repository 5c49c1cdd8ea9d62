"""Soak: many streams through ``chat`` for minutes, a share of them disconnecting mid-stream, on the real
Triton server. Nothing may fail and no stub may die.

The repository ``write_repo`` writes for a tiny Llama-3.1-style tokenizer (llama3 chat format, the
default chat instance count), with ``tensorrt_llm`` replaced by the test-only schedule model
(tests/triton_models/schedule) streaming tokens at ``--token-ms`` per token. ``--streams`` client threads
loop for ``--minutes``: each sends a Japanese chat request for a random length of 16-256 tokens; a
``--disconnect`` share of them read a few pieces and close the stream (the client cancels it, the chat
model must tell ``tensorrt_llm`` to stop). Reported: requests completed, disconnected and failed; streamed
pieces; the server log's count of dead-stub and heap-corruption messages; stub processes at the start and
the end (the same PIDs when no stub was lost).

    python benchmarks/chat_soak.py [--minutes 10] [--streams 32] [--disconnect 0.25] [--token-ms 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEAD = ("is not healthy", "unaligned", "double free", "corrupted", "Segmentation fault")
PROMPTS = [
    "日本の四季について教えてください。",
    "おすすめの観光地はどこですか？",
    "TensorRT-LLMの量子化について説明して。",
    "敬語の使い方を例で示してください。",
    "明日の天気はどうなりそうですか？",
]


def _repo(root: Path, token_ms: float) -> Path:
    from tests.fixtures.schedule_repo import schedule_repo

    schedule = {"first_token_ms": "5", "token_interval_ms": str(token_ms), "require_forced_length": "false"}
    return schedule_repo(root, schedule)


def _stubs(server: Any) -> set[int]:
    """The server's Python-backend stub processes (its own PID excluded)."""
    from swallow_trt.triton_repo.server import leftover_processes

    return set(leftover_processes(server)) - {server.pid}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--streams", type=int, default=32, help="concurrent client streams")
    ap.add_argument("--disconnect", type=float, default=0.25, help="share of requests that hang up early")
    ap.add_argument("--token-ms", type=float, default=2.0, help="the LLM model's time per token")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from swallow_trt.errors import SwallowTrtError
    from swallow_trt.triton_repo.client import stream_chat
    from swallow_trt.triton_repo.server import TritonServer

    counts = {"completed": 0, "disconnected": 0, "failed": 0, "pieces": 0}
    errors: list[str] = []
    lock = threading.Lock()
    deadline = 0.0

    def client(n: int, url: str) -> None:
        rng = random.Random(args.seed * 1000 + n)
        while time.monotonic() < deadline:
            hang_up = rng.random() < args.disconnect
            keep = rng.randint(1, 4)
            pieces, outcome = 0, "completed"
            try:
                stream = stream_chat(url, rng.choice(PROMPTS), max_tokens=rng.randint(16, 256), timeout_s=120)
                for _ in stream:
                    pieces += 1
                    if hang_up and pieces >= keep:
                        outcome = "disconnected"
                        stream.close()  # the client cancels its gRPC stream
                        break
            except SwallowTrtError as exc:
                outcome = "failed"
                with lock:
                    errors.append(str(exc))
            with lock:
                counts[outcome] += 1
                counts["pieces"] += pieces

    started, load_before = time.monotonic(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="chat-soak-") as tmp:
        root = Path(tmp)
        repo = _repo(root, args.token_ms)
        log_path = root / "server.log"
        with TritonServer(repo, log_path=log_path, start_timeout_s=600) as server:
            stubs_before = _stubs(server)
            deadline = time.monotonic() + args.minutes * 60
            threads = [
                threading.Thread(target=client, args=(n, server.grpc_url)) for n in range(args.streams)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            stubs_after = _stubs(server)
        log = log_path.read_text(errors="replace")
    dead = {m: log.count(m) for m in DEAD if m in log}
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "minutes": args.minutes,
        "streams": args.streams,
        "disconnect_share": args.disconnect,
        "token_ms": args.token_ms,
        **counts,
        "requests_per_s": (counts["completed"] + counts["disconnected"]) / (args.minutes * 60),
        "errors": sorted(set(errors))[:10],
        "dead_stub_messages": dead,
        "stubs_before": len(stubs_before),
        "stubs_same_at_end": stubs_before == stubs_after,
        "wall_s": time.monotonic() - started,
    }
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        print(
            f"{result['machine']}; {args.streams} streams for {args.minutes:g} min, {args.disconnect:.0%} hang up"
            f" early, LLM {args.token_ms:g} ms/token; load average {load_before:.1f} before,"
            f" {result['load_average_1min']['after']:.1f} after"
        )
        print(
            f"completed {counts['completed']:,}, disconnected {counts['disconnected']:,},"
            f" failed {counts['failed']:,}; {counts['pieces']:,} pieces;"
            f" {result['requests_per_s']:.1f} requests/s"
        )
        print(
            f"stubs: {len(stubs_before)} at the start, {'the same' if result['stubs_same_at_end'] else 'CHANGED'}"
            f" at the end; dead-stub messages in the server log: {dead or 'none'}"
        )
        for e in result["errors"]:
            print(f"  error: {e}")
    return 0 if counts["failed"] == 0 and not dead and result["stubs_same_at_end"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
