"""What runs inside the pods ``deploy k8s`` writes, beside ``swallow-trt serve``.

- ``engine_guard``: the init container. Waits until the build Job's manifest (and the repository) exist
  on the volume, then refuses an engine built with another TensorRT-LLM/TensorRT or for another SM
  than this pod's GPUs (the same check ``serve`` makes), and a pod with fewer GPUs than its ranks.
- ``lws_group``: a LeaderWorkerSet group's pods from the environment LWS gives every pod.
- ``leader_server``: the leader's server, every rank of the engine started across the group with the
  same per-rank argv ``serve`` uses on one node (triton_repo.launch.multi_node_argv).
- ``rsh_argv``: Open MPI's remote-shell agent, ``kubectl exec`` into a group pod.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swallow_trt.errors import EnvironmentProblem, UsageError

if TYPE_CHECKING:
    from swallow_trt.triton_repo.server import TritonServer

SERVER_CONTAINER = "server"  # the container of the pods deploy k8s writes that ranks run in
# Open MPI splits its agent on spaces and calls it as ``AGENT HOST COMMAND...`` (deploy/rsh.py).
RSH_AGENT = "python3 -m swallow_trt.deploy.rsh"


def wait_for(paths: list[Path], *, poll_s: float, timeout_s: float | None,
             say: Callable[[str], None], clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
    """Return once every path exists; EnvironmentProblem after ``timeout_s`` (None: wait for ever)."""
    start = clock()
    announced = False
    while True:
        missing = [p for p in paths if not p.exists()]
        if not missing:
            return
        if timeout_s is not None and clock() - start >= timeout_s:
            raise EnvironmentProblem(
                f"{missing[0]} did not appear within {timeout_s:g} s",
                "check the build Job's log (kubectl logs job/<name>-build-...)",
            )
        if not announced:
            say(f"waiting for {missing[0]} (the build Job writes it)")
            announced = True
        sleep(poll_s)


def engine_guard(manifest: Path, repo: Path | None, ranks: int, *, poll_s: float = 10.0,
                 timeout_s: float | None = None, say: Callable[[str], None] = print,
                 probe: Callable[[], Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The init container's check; returns the manifest it passed."""
    from swallow_trt.builders.environment import check_engine_runtime, probe_environment

    if ranks < 1:
        raise UsageError(f"--ranks must be at least 1, got {ranks}", "pass the GPUs of this pod")
    paths = [manifest] + ([repo / "tensorrt_llm" / "config.pbtxt"] if repo is not None else [])
    wait_for(paths, poll_s=poll_s, timeout_s=timeout_s, say=say)
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError) as exc:
        raise EnvironmentProblem(f"{manifest} is not a readable manifest: {exc}", "rebuild it") from None
    env = (probe or probe_environment)()
    check_engine_runtime(data, env)
    if len(env.gpus) < ranks:
        raise EnvironmentProblem(
            f"this pod has {len(env.gpus)} GPU(s) and runs {ranks} rank(s) of the engine",
            "request one nvidia.com/gpu per rank",
        )
    built = data.get("environment") or {}
    say(
        f"engine ready: built with TensorRT-LLM {built.get('tensorrt_llm', '?')}, TensorRT "
        f"{built.get('tensorrt', '?')}, sm{(data.get('gpu') or {}).get('sm', '?')}; "
        f"{len(env.gpus)} GPU(s) here ({env.gpus[0].name if env.gpus else 'none'})"
    )
    return dict(data)


@dataclass(frozen=True)
class LwsGroup:
    leader: str  # the leader pod's name (its hostname)
    size: int
    worker_index: int

    @property
    def pods(self) -> list[str]:
        """Every pod of the group, leader first: LWS names workers ``<leader>-<index>``."""
        return [self.leader] + [f"{self.leader}-{i}" for i in range(1, self.size)]


def lws_group(environ: Mapping[str, str]) -> LwsGroup:
    """The group from LWS's environment (kubernetes-sigs/lws v0.10.0, 2161f38f: pkg/utils/pod/pod_utils.go
    sets LWS_LEADER_ADDRESS = ``<lws>-<group>.<subdomain>.<namespace>``, whose first label is the leader
    pod's name, and LWS_GROUP_SIZE; worker pods are the StatefulSet ``<lws>-<group>``'s, named
    ``<leader pod>-<index>`` (pkg/controllers/pod_controller.go, GetParentNameAndOrdinal))."""
    try:
        address = environ["LWS_LEADER_ADDRESS"]
        size = int(environ["LWS_GROUP_SIZE"])
        index = int(environ.get("LWS_WORKER_INDEX", "0"))
    except (KeyError, ValueError):
        raise UsageError(
            "LWS_LEADER_ADDRESS / LWS_GROUP_SIZE are missing or not numbers: not a LeaderWorkerSet pod",
            "run this inside a pod of the LeaderWorkerSet `deploy k8s` writes",
        ) from None
    leader = address.split(".", 1)[0]
    if size < 1 or not leader:
        raise UsageError(f"LWS_GROUP_SIZE {size} / LWS_LEADER_ADDRESS {address!r} make no group", "")
    return LwsGroup(leader, size, index)


def leader_server(repo: Path, group: LwsGroup, gpus_per_node: int, **server_kwargs: Any) -> TritonServer:
    """The leader's (not yet started) server: the engine's ranks over the group's pods, rank 0 here.
    The engine's SM/version were checked by the init container; here the rank count must match."""
    from swallow_trt.triton_repo.launch import _tensorrtllm_install, inspect_repo, multi_node_argv
    from swallow_trt.triton_repo.server import TritonServer

    info = inspect_repo(repo)
    if info.backend != "tensorrtllm":
        raise UsageError(f"{repo} is not an engine repository", "deploy leader serves TensorRT-LLM engines")
    if info.world_size != group.size * gpus_per_node:
        raise UsageError(
            f"the engine has {info.world_size} ranks; the group has {group.size} pod(s) of {gpus_per_node} GPU(s)",
            "regenerate the manifests with `swallow-trt deploy k8s` for this engine",
        )
    import shutil

    mpirun = shutil.which("mpirun")
    if mpirun is None:
        raise EnvironmentProblem("mpirun is not on PATH", "run inside the Triton TensorRT-LLM image")
    hosts = group.pods

    class GroupServer(TritonServer):
        def command(self) -> list[str]:
            return multi_node_argv(super().command(), hosts, gpus_per_node, RSH_AGENT)

    return GroupServer(repo, install=_tensorrtllm_install(), world_size=info.world_size, mpirun=mpirun,
                       **server_kwargs)  # fmt: skip


def wait_for_group(group: LwsGroup, *, timeout_s: float, poll_s: float = 5.0,
                   run: Callable[[list[str]], int] | None = None, say: Callable[[str], None] = print,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
    """Before mpirun: every worker pod's server container answers ``kubectl exec`` (LWS starts the
    workers after the leader, and their init containers take as long as the leader's), so no rank is
    started into a pod that is not there yet. EnvironmentProblem after ``timeout_s``."""
    import subprocess

    def kubectl(argv: list[str]) -> int:
        return subprocess.run(argv, capture_output=True, timeout=60).returncode

    call = run or kubectl
    start = clock()
    for pod in group.pods[1:]:
        argv = rsh_argv(pod, ["true"])
        while call(argv) != 0:
            if clock() - start >= timeout_s:
                raise EnvironmentProblem(
                    f"worker pod {pod} did not answer kubectl exec within {timeout_s:g} s",
                    f"kubectl describe pod {pod} (its engine-guard init container may be waiting)",
                )
            sleep(poll_s)
        say(f"worker {pod} is up")


def rsh_argv(host: str, command: list[str], namespace: str | None = None) -> list[str]:
    """Open MPI calls its agent as ``AGENT HOST COMMAND...``; this is the ``kubectl exec`` that runs
    COMMAND in HOST's server container (the leader's ServiceAccount may get pods and create pods/exec)."""
    if not host or not command:
        raise UsageError("deploy rsh needs a pod and a command", "Open MPI passes both")
    argv = ["kubectl", "exec", host, "-c", SERVER_CONTAINER]
    if namespace:
        argv += ["-n", namespace]
    # Open MPI hands the remote command as words meant for a shell (it sets up PATH and the orted).
    return [*argv, "--", "/bin/sh", "-c", " ".join(command)]


def wait_until_stopped() -> int:
    """A worker pod's process: its ranks are started in it by the leader (kubectl exec); it only has to
    live, and end at once on SIGTERM (as PID 1, ``sleep`` would ignore it for the whole grace period)."""
    import signal
    import threading

    stopped = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        received.append(signum)
        stopped.set()

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, on_signal)
    while not stopped.wait(3600):
        pass
    return received[0]
