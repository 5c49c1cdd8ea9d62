"""The OpenAI-compatible API's overhead against streaming ``tensorrt_llm`` directly over gRPC, in one run.

One load generator (asyncio, in this process) drives, at each concurrency, first ``tensorrt_llm`` of the
zero-delay schedule repository directly (``grpc.aio`` streams, the same requests the API sends), then
the API (``/v1/chat/completions``, streaming, raw HTTP/1.1 with SSE parsing, so the client's cost stays
small and equal across concurrencies). Printed per concurrency: output tokens/s and TTFT p50 of both,
their ratio, and the API process's CPU time per streamed token from its own ``/metrics``
(``process_cpu_seconds_total`` over ``swallow_api_completion_tokens_total``), beside the load generator's
own CPU per token in the direct phase (one plain ``grpc.aio`` stream per request: what the gRPC client
side alone costs on this machine, a floor for any Python client of ``tensorrt_llm``).

    python benchmarks/openai_overhead.py [--tokens 64] [--requests-per-stream 4] [--concurrency 1 16 64 256]

Targets (issue 12): at concurrency 64 at least 0.8x the direct throughput, at most 50 us CPU per token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "日本で一番高い山は何ですか？"
_TEXT = re.compile(rb'"content":"[^"]')


async def direct_one(stub, ids: list[int], tokens: int, rid: str) -> tuple[float, int]:
    """One request on its own ``ModelStreamInfer`` stream, read to its final response: the plainest
    client of ``tensorrt_llm`` (as tritonclient's streaming is used), kept apart from the API's engine
    so that the baseline does not move when the API's transport changes."""
    import numpy as np

    from swallow_trt.triton_repo.grpc_stream import FINAL, infer_request

    inputs = [
        ("input_ids", np.array([ids], dtype=np.int32)),
        ("input_lengths", np.array([[len(ids)]], dtype=np.int32)),
        ("request_output_len", np.array([[tokens]], dtype=np.int32)),
        ("streaming", np.array([[True]], dtype=bool)),
        ("end_id", np.array([[-1]], dtype=np.int32)),
        ("min_tokens", np.array([[tokens]], dtype=np.int32)),
    ]
    requests: asyncio.Queue = asyncio.Queue()
    requests.put_nowait(infer_request("tensorrt_llm", rid, inputs))

    async def iterate():
        while (item := await requests.get()) is not None:
            yield item

    start = time.perf_counter()
    ttft, n = 0.0, 0
    call = stub.ModelStreamInfer(iterate())
    async for message in call:
        if message.error_message:
            raise RuntimeError(message.error_message)
        response = message.infer_response
        if response.raw_output_contents:
            if n == 0:
                ttft = time.perf_counter() - start
            n += len(response.raw_output_contents[0]) // 4
        if FINAL in response.parameters and response.parameters[FINAL].bool_param:
            break
    requests.put_nowait(None)
    return ttft, n


async def api_one(host: str, port: int, model: str, tokens: int) -> tuple[float, int]:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": tokens,
                       "min_tokens": tokens, "stream": True, "stream_options": {"include_usage": True}}).encode()  # fmt: skip
    reader, writer = await asyncio.open_connection(host, port)
    start = time.perf_counter()
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip
    ttft, n, buf = 0.0, 0, b""
    while chunk := await reader.read(65536):
        # The role chunk carries "content":"" and may share a read with the first token's chunk.
        if not ttft and _TEXT.search(chunk):
            ttft = time.perf_counter() - start
        buf += chunk
    writer.close()
    if not buf.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"the API answered {buf[:300]!r}")
    usage = re.findall(rb'"completion_tokens":(\d+)', buf)
    n = int(usage[-1]) if usage else 0
    return ttft, n


async def run_level(fn, concurrency: int, per_stream: int) -> tuple[float, float, int]:
    ttfts: list[float] = []
    total = 0

    async def worker() -> None:
        nonlocal total
        for _ in range(per_stream):
            ttft, n = await fn()
            ttfts.append(ttft)
            total += n

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    return total / wall, statistics.median(ttfts), total


def scrape(url: str) -> tuple[float, float]:
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    cpu = float(re.search(r"^process_cpu_seconds_total (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    tok = float(re.search(r"^swallow_api_completion_tokens_total (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    return cpu, tok


async def measure(grpc_url: str, api_url: str, ids: list[int], args: argparse.Namespace) -> list[dict]:
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    from swallow_trt.openai_api.engine import CHANNEL_ARGS

    channel = grpc.aio.insecure_channel(grpc_url, options=CHANNEL_ARGS)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    host, port = api_url.removeprefix("http://").split(":")
    with urllib.request.urlopen(api_url + "/v1/models", timeout=30) as response:
        model = json.loads(response.read())["data"][0]["id"]  # what the API serves, not a guess
    rows = []
    counter = iter(range(10**9))
    for c in args.concurrency:
        per = max(1, args.requests_per_stream if c > 1 else args.requests_per_stream * 4)
        own0 = time.process_time()
        d_tps, d_ttft, d_tok = await run_level(
            lambda: direct_one(stub, ids, args.tokens, f"bench-{next(counter)}"), c, per
        )
        # The load generator's own CPU per token over gRPC: what a plain grpc.aio client costs.
        client_us = (time.process_time() - own0) / max(d_tok, 1) * 1e6
        cpu0, tok0 = scrape(api_url)
        a_tps, a_ttft, _ = await run_level(lambda: api_one(host, int(port), model, args.tokens), c, per)
        cpu1, tok1 = scrape(api_url)
        us = (cpu1 - cpu0) / max(tok1 - tok0, 1) * 1e6
        rows.append({"concurrency": c, "direct_tok_s": d_tps, "api_tok_s": a_tps, "ratio": a_tps / d_tps,
                     "direct_ttft_p50_ms": d_ttft * 1e3, "api_ttft_p50_ms": a_ttft * 1e3, "api_cpu_us_per_token": us,
                     "direct_client_cpu_us_per_token": client_us})  # fmt: skip
        print(f"c={c:>3}  direct {d_tps:9.0f} tok/s ttft {d_ttft * 1e3:7.2f} ms | api {a_tps:9.0f} tok/s "
              f"ttft {a_ttft * 1e3:7.2f} ms | ratio {a_tps / d_tps:4.2f} | api cpu {us:6.1f} us/token "
              f"| grpc client cpu {client_us:6.1f} us/token", flush=True)  # fmt: skip
    await channel.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--requests-per-stream", type=int, default=4)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from swallow_trt.openai_api.server import start_api_process
    from swallow_trt.text.chat import Message, adds_bos, render
    from swallow_trt.triton_repo.ports import free_ports
    from swallow_trt.triton_repo.server import TritonServer
    from tests.fixtures.schedule_repo import schedule_repo

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        params = {"first_token_ms": "0", "token_interval_ms": "0", "require_forced_length": "true"}
        repo = schedule_repo(root, params, max_batch_size=max(args.concurrency))
        tok = AutoTokenizer.from_pretrained(repo / "chat" / "tokenizer")
        ids = tok.encode(
            render("llama3", [Message("user", PROMPT)], default_system=None),
            add_special_tokens=adds_bos("llama3"),
        )
        server = TritonServer(repo, log_path=root / "server.log", start_timeout_s=1800).start()
        try:
            api = start_api_process(server.grpc_url, repo, port=free_ports("127.0.0.1", 1)[0], log_path=root / "api.log",
                                    max_in_flight=2 * max(args.concurrency))  # fmt: skip
            try:
                rows = asyncio.run(measure(server.grpc_url, api.url, ids, args))
            finally:
                api.stop()
        finally:
            server.stop()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
