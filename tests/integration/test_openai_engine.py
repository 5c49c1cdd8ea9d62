"""The OpenAI API's engine against the real Triton server (zero-delay schedule model): 60 concurrent
requests on one engine each get exactly their own token ids, in order, in steps; an error response
fails only the request it belongs to and the engine serves the next one; requests while Triton is gone
fail as unavailable and the engine serves again once Triton is back on its port.
Counts and order only, no timing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tritonclient.grpc")

from swallow_trt.openai_api.engine import Engine, EngineError
from swallow_trt.triton_repo.server import TritonServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    from tests.fixtures.schedule_repo import schedule_repo

    root = tmp_path_factory.mktemp("oai-engine")
    params = {"first_token_ms": "0", "token_interval_ms": "0", "require_forced_length": "true"}
    server = TritonServer(
        schedule_repo(root, params, max_batch_size=128), log_path=root / "server.log", start_timeout_s=600
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def inputs(n: int, forced: bool = True) -> list[tuple[str, Any]]:
    import numpy as np

    return [
        ("input_ids", np.array([[1, 2, 3]], dtype=np.int32)),
        ("input_lengths", np.array([[3]], dtype=np.int32)),
        ("request_output_len", np.array([[n]], dtype=np.int32)),
        ("streaming", np.array([[True]], dtype=bool)),
        ("end_id", np.array([[-1]], dtype=np.int32)),
        ("min_tokens", np.array([[n if forced else 0]], dtype=np.int32)),
    ]


async def drive(engine: Engine, rid: str, n: int, forced: bool) -> tuple[list[int], int, int] | str:
    """(ids, responses, steps) of one request, or the error it ended with."""
    generation = engine.generate(rid, inputs(n, forced))
    ids: list[int] = []
    responses = steps = 0
    try:
        async for batch in generation.tokens():
            steps += 1
            responses += len(batch)
            for part in batch:
                ids.extend(part)
    except EngineError as exc:
        return f"error: {exc}"
    finally:
        generation.close()
    return ids, responses, steps


def test_concurrent_requests_get_their_own_responses(triton: TritonServer) -> None:
    async def main() -> list[Any]:
        engine = Engine(triton.grpc_url)
        jobs = [drive(engine, f"t-{i}", 40 + i, forced=i % 5 != 4) for i in range(60)]
        results = await asyncio.gather(*jobs)
        again = await drive(engine, "t-after", 7, True)  # the engine outlives the errors
        await engine.close()
        return [*results, again]

    results = asyncio.run(main())
    for i, got in enumerate(results[:60]):
        if i % 5 == 4:
            assert isinstance(got, str)
            assert "output length not forced" in got
            continue
        assert not isinstance(got, str), got
        ids, responses, steps = got
        n = 40 + i
        # The schedule model's ids: 10, 11, ... one a response; all of this request's and no other's.
        assert ids == [10 + k for k in range(n)]
        assert responses == n
        assert 1 <= steps <= responses
    assert results[60][:2] == ([10 + k for k in range(7)], 7)


def test_triton_gone_then_back(tmp_path: Path) -> None:
    """Requests on a Triton that is gone fail as unavailable; once one is back on the same port, the
    next request completes on the same engine (its channel reconnects)."""
    from swallow_trt.openai_api.engine import EngineUnavailable
    from tests.fixtures.schedule_repo import schedule_repo

    params = {"first_token_ms": "0", "token_interval_ms": "0", "require_forced_length": "true"}
    repo = schedule_repo(tmp_path, params)
    first = TritonServer(repo, log_path=tmp_path / "server1.log", start_timeout_s=600).start()
    ports = (first.http_port, first.grpc_port, first.metrics_port)

    async def one(engine: Engine, rid: str) -> Any:
        try:
            return await drive(engine, rid, 5, True)
        except EngineUnavailable as exc:
            return f"unavailable: {exc}"

    async def main() -> list[Any]:
        engine = Engine(first.grpc_url)
        out = [await one(engine, "r-1")]
        first.stop()
        out.append(await one(engine, "r-2"))
        again = TritonServer(repo, http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2],
                             log_path=tmp_path / "server2.log", start_timeout_s=600).start()  # fmt: skip
        try:
            for _ in range(300):  # gRPC reconnects within its 1 s back-off; a bound against hangs
                if await engine.ready():
                    break
                await asyncio.sleep(0.2)
            out.append(await one(engine, "r-3"))
        finally:
            await engine.close()
            again.stop()
        return out

    try:
        before, down, after = asyncio.run(main())
    finally:
        first.stop()
    assert before[:2] == ([10, 11, 12, 13, 14], 5)
    assert isinstance(down, str)
    assert down.startswith("unavailable")
    assert after[:2] == ([10, 11, 12, 13, 14], 5)
