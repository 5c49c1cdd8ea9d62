"""What the pods of a Kubernetes deployment run: the multi-node launch (against serve's single-node one),
the LeaderWorkerSet group from its environment, the remote-shell agent and the init container's guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swallow_trt.builders.environment import BuildEnvironment
from swallow_trt.deploy.runtime import RSH_AGENT, engine_guard, lws_group, rsh_argv, wait_for
from swallow_trt.errors import EnvironmentProblem, UsageError
from swallow_trt.hw import DetectedGpu
from swallow_trt.triton_repo.launch import multi_node_argv
from swallow_trt.triton_repo.server import TritonInstall, TritonServer

INSTALL = TritonInstall(
    Path("/opt/tritonserver/bin/tritonserver"), Path("/opt/tritonserver/backends"), None, None, "system"
)


def _single(tmp_path: Path, world: int) -> list[str]:
    server = TritonServer(tmp_path, install=INSTALL, world_size=world, mpirun="/usr/bin/mpirun", host="0.0.0.0",
                          http_port=8000, grpc_port=8001, metrics_port=8002)  # fmt: skip
    return server.command()


def test_multi_node_argv_keeps_every_rank_of_the_single_node_launch(tmp_path: Path) -> None:
    single = _single(tmp_path, 8)
    hosts = ["llm-0", "llm-0-1"]
    multi = multi_node_argv(single, hosts, 4, RSH_AGENT)
    assert multi[:2] == single[:2] == ["/usr/bin/mpirun", "--allow-run-as-root"]
    assert multi[2:9] == ["--host", "llm-0:4,llm-0-1:4", "--map-by", "slot",
                           "--mca", "plm_rsh_agent", "python3 -m swallow_trt.deploy.rsh"]  # fmt: skip
    # Every rank's argv, in rank order, exactly as serve runs it on one node.
    assert multi[9:] == single[2:]
    ranks = " ".join(multi[9:]).split(" : ")
    assert len(ranks) == 8
    assert "--load-model=tensorrt_llm" not in ranks[0]  # rank 0 (first slot of the leader) serves
    assert all("--load-model=tensorrt_llm" in r for r in ranks[1:])
    assert multi_node_argv(single, hosts, 4)[2:6] == ["--host", "llm-0:4,llm-0-1:4", "--map-by", "slot"]


def test_multi_node_argv_refuses_what_does_not_fit(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a multi-rank"):
        multi_node_argv(_single(tmp_path, 1), ["a"], 1)
    with pytest.raises(ValueError, match="8 ranks do not fill 3 host"):
        multi_node_argv(_single(tmp_path, 8), ["a", "b", "c"], 4)


def test_lws_group_from_the_pod_environment() -> None:
    group = lws_group(
        {"LWS_LEADER_ADDRESS": "llm-1.llm.serving", "LWS_GROUP_SIZE": "3", "LWS_WORKER_INDEX": "0"}
    )
    assert group.pods == ["llm-1", "llm-1-1", "llm-1-2"]
    with pytest.raises(UsageError, match="not a LeaderWorkerSet pod"):
        lws_group({"LWS_GROUP_SIZE": "2"})


def test_rsh_agent_is_kubectl_exec_into_the_server_container() -> None:
    assert rsh_argv("llm-1-1", ["PATH=/x", ";", "orted", "-mca", "ess", "env"]) == [
        "kubectl", "exec", "llm-1-1", "-c", "server", "--", "/bin/sh", "-c", "PATH=/x ; orted -mca ess env",
    ]  # fmt: skip
    with pytest.raises(UsageError):
        rsh_argv("llm-1-1", [])


def _env(n: int, sm: int = 90, trt: str = "10.13.3.9") -> BuildEnvironment:
    return BuildEnvironment(tensorrt_llm="1.2.0", tensorrt=trt, trtllm_build=None,
                            gpus=[DetectedGpu("NVIDIA H100 80GB HBM3", sm, 81559)] * n)  # fmt: skip


def test_engine_guard_passes_a_matching_engine_and_refuses_the_rest(tmp_path: Path) -> None:
    manifest = tmp_path / "engine" / "manifest.json"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"environment": {"tensorrt_llm": "1.2.0", "tensorrt": "10.13.3.9"},
                                    "gpu": {"name": "NVIDIA H100 80GB HBM3", "sm": 90, "count": 4}}))  # fmt: skip
    lines: list[str] = []
    assert engine_guard(manifest, None, 4, say=lines.append, probe=lambda: _env(4))["gpu"]["sm"] == 90
    assert "sm90" in lines[-1]
    with pytest.raises(EnvironmentProblem, match="built for sm90"):
        engine_guard(manifest, None, 4, say=lines.append, probe=lambda: _env(4, sm=89))
    with pytest.raises(EnvironmentProblem, match=r"TensorRT 10\.13\.3\.9, this runtime has 10\.14"):
        engine_guard(manifest, None, 4, say=lines.append, probe=lambda: _env(4, trt="10.14"))
    with pytest.raises(EnvironmentProblem, match="2 GPU"):
        engine_guard(manifest, None, 4, say=lines.append, probe=lambda: _env(2))


def test_wait_for_polls_until_the_files_appear_or_the_deadline() -> None:
    now = [0.0]
    target = Path("/nonexistent-swallow-trt/manifest.json")
    lines: list[str] = []

    def sleep(s: float) -> None:
        now[0] += s

    with pytest.raises(EnvironmentProblem, match="did not appear within 30 s"):
        wait_for([target], poll_s=10, timeout_s=30, say=lines.append, clock=lambda: now[0], sleep=sleep)
    assert now[0] == 30
    assert len(lines) == 1


def test_worker_process_ends_at_once_on_sigterm() -> None:
    import os
    import signal
    import threading

    from swallow_trt.deploy.runtime import wait_until_stopped

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        assert wait_until_stopped() == signal.SIGTERM
    finally:
        timer.cancel()
        for s, handler in previous.items():
            signal.signal(s, handler)


def test_leader_waits_for_every_worker_to_answer_exec() -> None:
    from swallow_trt.deploy.runtime import LwsGroup, wait_for_group

    group = LwsGroup("llm-0", 3, 0)
    calls: list[list[str]] = []
    answers = iter([1, 1, 0, 0])  # llm-0-1 answers on the third try, llm-0-2 at once

    def kubectl(argv: list[str]) -> int:  # stands in for kubectl exec against a cluster
        calls.append(argv)
        return next(answers)

    now = [0.0]
    lines: list[str] = []
    wait_for_group(group, timeout_s=60, poll_s=5, run=kubectl, say=lines.append, clock=lambda: now[0],
                   sleep=lambda s: now.__setitem__(0, now[0] + s))  # fmt: skip
    assert [c[2] for c in calls] == ["llm-0-1", "llm-0-1", "llm-0-1", "llm-0-2"]
    assert calls[0] == ["kubectl", "exec", "llm-0-1", "-c", "server", "--", "/bin/sh", "-c", "true"]
    assert lines == ["worker llm-0-1 is up", "worker llm-0-2 is up"]
    with pytest.raises(EnvironmentProblem, match="llm-0-1 did not answer kubectl exec within 10 s"):
        wait_for_group(group, timeout_s=10, poll_s=5, run=lambda argv: 1, say=lines.append,
                       clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))  # fmt: skip
