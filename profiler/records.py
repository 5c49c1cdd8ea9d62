"""What the profiler's client processes are given and give back: plain data that crosses process
boundaries, shared by both routes (gRPC in :mod:`swallow_trt.profiler.loadgen`, HTTP/SSE in
:mod:`swallow_trt.profiler.openai_client`) and read by :mod:`swallow_trt.profiler.perf_report`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["tensorrt_llm", "chat", "ensemble", "openai"]


@dataclass(frozen=True)
class Job:
    mode: Literal["closed", "open"]
    t0_ns: int  # nothing is sent before
    first_index: int  # global index of this worker's first request (closed loop: index = first + k * stride)
    stride: int
    slot_starts: tuple[int, ...] = ()  # closed loop: one per request kept in flight, when it starts (ns)
    count: int | None = None  # closed loop: requests to send (None: until the deadline)
    deadline_ns: int | None = None  # closed loop: send nothing after
    schedule: tuple[tuple[int, int], ...] = ()  # open loop: (global index, scheduled send ns)
    timeout_ns: int = 300 * 10**9  # after the last send, wait this long for stragglers


@dataclass
class Rec:
    """One request as a worker saw it (monotonic ns)."""

    index: int
    prompt: int
    scheduled_ns: int
    sent_ns: int = 0
    final_ns: int = 0
    tokens: int = 0
    chunk_ns: list[int] = field(default_factory=list)  # responses that carried tokens
    chunk_tokens: list[int] = field(default_factory=list)
    server_ns: list[int] = field(default_factory=list)  # the server's send time of those, if reported
    input_tokens: int = -1  # as the server reported it, if it does
    error: str = ""


@dataclass
class WorkerResult:
    worker: int
    records: list[Rec]
    wall_ns: int
    cpu_s: float
    callback_busy_ns: int
    responses: int
    stopped: bool = False
