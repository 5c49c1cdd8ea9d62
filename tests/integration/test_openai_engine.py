"""The OpenAI API's engine against the real Triton server (zero-delay schedule model): 60 concurrent
requests on one engine each get exactly their own token ids, in order, in steps; an error response
fails only the request it belongs to and the engine serves the next one; requests while Triton is gone
fail as unavailable and the engine serves again once Triton is back on its port.
Counts and order only, no timing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tritonclient.grpc")

from swallow_trt.openai_api.engine import Engine, EngineError
from swallow_trt.triton_repo.server import TritonServer
from tests.fixtures.triton import ScheduleServed, StartTriton

pytestmark = [pytest.mark.integration, pytest.mark.requires_triton]


@pytest.fixture
def triton(forced_schedule_triton: ScheduleServed) -> TritonServer:
    """The shared zero-delay schedule server that refuses unforced output lengths (tests/conftest.py)."""
    return forced_schedule_triton.server


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


def test_triton_gone_then_back(tmp_path: Path, start_triton: StartTriton) -> None:
    """Requests on a Triton that is gone fail as unavailable; once one is back on the same port, the
    next request completes on the same engine (its channel reconnects)."""
    from swallow_trt.openai_api.engine import EngineUnavailable
    from tests.fixtures.repos import SCHEDULE_ZERO_DELAY
    from tests.fixtures.schedule_repo import schedule_repo

    repo = schedule_repo(tmp_path, {**SCHEDULE_ZERO_DELAY, "require_forced_length": "true"})
    first = start_triton(repo, log_name="server1.log")
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
        start_triton(
            repo, http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2], log_name="server2.log"
        )
        try:
            for _ in range(300):  # gRPC reconnects within its 1 s back-off; a bound against hangs
                if await engine.ready():
                    break
                await asyncio.sleep(0.2)
            out.append(await one(engine, "r-3"))
        finally:
            await engine.close()
        return out

    before, down, after = asyncio.run(main())
    assert before[:2] == ([10, 11, 12, 13, 14], 5)
    assert isinstance(down, str)
    assert down.startswith("unavailable")
    assert after[:2] == ([10, 11, 12, 13, 14], 5)
