"""From a repository to a running server: which backend its ``tensorrt_llm`` model uses, and for the
TensorRT-LLM backend the checks before anything starts (a system tritonserver with the tensorrtllm
backend, mpirun for more than one rank, an engine built for this runtime) and the rank count; then
``run_until_stopped``, what ``swallow-trt serve`` does with the server and, beside it, a companion process
started once Triton is ready (the OpenAI API): it is stopped first, whatever ends the server. Nothing
here knows what the companion is (``openai_api`` sits above ``triton_repo``)."""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from swallow_trt.errors import EnvironmentProblem, StageFailed, SwallowTrtError, UsageError
from swallow_trt.triton_repo.recovery import Recovery
from swallow_trt.triton_repo.server import (
    DEFAULT_START_TIMEOUT_S,
    Interrupted,
    StopFlag,
    TritonInstall,
    TritonServer,
    find_tritonserver,
)


@dataclass(frozen=True)
class RepoInfo:
    repo: Path
    backend: str  # "tensorrtllm" or "python" (the reference backend)
    engine_dir: Path | None
    world_size: int


def inspect_repo(repo: Path) -> RepoInfo:
    from swallow_trt.triton_repo.configs import from_pbtxt

    repo = repo.absolute()
    if not repo.is_dir() or not any(repo.glob("*/config.pbtxt")):
        raise UsageError(
            f"{repo} is not a model repository (no */config.pbtxt)", "create one with `swallow-trt package`"
        )
    llm_config = repo / "tensorrt_llm" / "config.pbtxt"
    if not llm_config.is_file():
        return RepoInfo(repo, "python", None, 1)
    try:
        config = from_pbtxt(llm_config.read_text())
    except Exception as exc:  # protobuf's ParseError and friends
        raise UsageError(
            f"{llm_config} does not parse: {exc}", "re-create the repository with `swallow-trt package`"
        ) from None
    if config.backend != "tensorrtllm":
        return RepoInfo(repo, config.backend, None, 1)
    engine = Path(config.parameters["gpt_model_path"].string_value)
    engine = engine if engine.is_absolute() else repo / engine  # packaged: relative to the repository
    try:
        mapping = json.loads((engine / "config.json").read_text())["pretrained_config"]["mapping"]
        world = int(mapping.get("world_size") or 1)
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(
            f"the repository's engine {engine} is missing or has no readable config.json",
            "build it with `swallow-trt build` and package again",
        ) from None
    return RepoInfo(repo, "tensorrtllm", engine, world)


def _tensorrtllm_install() -> TritonInstall:
    install = find_tritonserver(prefer_system=True)
    if install.source != "system" or not (install.backend_dir / "tensorrtllm").is_dir():
        raise EnvironmentProblem(
            "serving an engine needs a tritonserver with the tensorrtllm backend, and none is here",
            "run serve inside the Triton TensorRT-LLM image (see the Dockerfile), or package --model for the reference backend",
        )
    return install


def server_for(
    info: RepoInfo,
    *,
    host: str = "127.0.0.1",
    http_port: int | None = None,
    grpc_port: int | None = None,
    metrics_port: int | None = None,
    recovery: Recovery | None = None,
    on_event: Callable[[str], None] | None = None,
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
) -> TritonServer:
    """A (not yet started) server for the repository, which ``start()`` waits for at most
    ``start_timeout_s``; refuses what cannot serve it here."""
    install = None
    mpirun = None
    if info.backend == "tensorrtllm":
        from swallow_trt.builders.environment import check_engine_runtime, probe_environment

        assert info.engine_dir is not None
        install = _tensorrtllm_install()
        if info.world_size > 1:
            mpirun = shutil.which("mpirun")
            if mpirun is None:
                raise EnvironmentProblem(
                    f"the engine has {info.world_size} ranks and mpirun is not on PATH",
                    "run serve inside the Triton TensorRT-LLM image, which ships Open MPI",
                )
        env = probe_environment()
        manifest_path = info.engine_dir / "manifest.json"
        if manifest_path.is_file():
            check_engine_runtime(json.loads(manifest_path.read_text()), env)
        if len(env.gpus) < info.world_size:
            raise EnvironmentProblem(
                f"the engine has {info.world_size} ranks and this machine has {len(env.gpus)} GPU(s)",
                "serve it on a machine with one GPU per rank",
            )
    return TritonServer(
        info.repo,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        install=install,
        world_size=info.world_size,
        mpirun=mpirun,
        recovery=recovery,
        on_event=on_event,
        start_timeout_s=start_timeout_s,
    )


class Companion(Protocol):
    """A process that lives beside the server (the OpenAI API)."""

    def failure(self) -> SwallowTrtError | None:
        """The error to report once it has ended on its own; None while it runs."""
        ...

    def stop(self) -> None: ...


# Starts the companion in front of a ready server; polls the callable (True: a stop was asked for) while
# it waits for the companion to answer.
StartCompanion = Callable[[TritonServer, Callable[[], bool]], Companion]


class CompanionInterrupted(Interrupted):
    """A stop was asked for while the companion was starting (Triton was ready); both were stopped."""

    def __init__(self, signum: int, what: str) -> None:
        super().__init__(signum)
        self.message = (
            f"interrupted by {signal.Signals(signum).name} while {what} was starting; stopped it and Triton"
        )
        self.args = (self.message,)


def run_until_stopped(
    server: TritonServer,
    *,
    on_ready: Callable[[TritonServer], None],
    companion: StartCompanion | None = None,
    companion_name: str = "the OpenAI API",
) -> int:
    """Start ``server`` (within its own ``start_timeout_s``), then ``companion`` (when given), call
    ``on_ready``, and keep them until SIGINT or SIGTERM; then stop the companion and the server. Returns
    the signal that ended it. A signal during start-up stops everything at once and raises Interrupted
    (exit 128 + signal); a watcher that gave up or a companion that exited raises its error; a server
    without a watcher that exits on its own raises StageFailed. The companion outlives Triton restarts by
    the watcher. Installs its signal handlers for its own duration (main thread only)."""
    flag = StopFlag()

    def on_signal(signum: int, frame: object) -> None:
        flag.set(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    started: Companion | None = None
    try:
        server.start(stop=flag)
        if companion is not None:
            try:
                started = companion(server, flag.is_set)
            except SwallowTrtError:
                if flag.signum is not None:
                    raise CompanionInterrupted(flag.signum, companion_name) from None
                raise
        on_ready(server)
        while not flag.wait(0.5):
            if server.failure is not None:
                raise server.failure
            if started is not None and (failure := started.failure()) is not None:
                raise failure
            if server.recovery is None and not server.running:
                raise StageFailed(
                    f"the Triton server exited on its own (code {server.returncode})",
                    f"see its log: {server.log_path}",
                )
    finally:
        # The companion first: its clients are told the service is going before Triton is.
        if started is not None:
            started.stop()
        server.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    assert flag.signum is not None
    return flag.signum


def multi_node_argv(
    single: list[str], hosts: list[str], slots_per_host: int, rsh_agent: str | None = None
) -> list[str]:
    """The multi-rank launch of one server (``TritonServer.command()`` with more than one rank: mpirun,
    then ``-n 1 <rank argv>`` per rank joined by ``:``) spread over ``hosts``, ``slots_per_host`` ranks
    each, filled in order: rank 0, which serves HTTP/gRPC/metrics, lands on ``hosts[0]``; the other
    ranks load only ``tensorrt_llm`` as on one node. ``rsh_agent`` is what mpirun starts remote ranks
    with (Open MPI's ``plm_rsh_agent``; its default is ssh). Every rank's argv is left as it was."""
    argv = list(single)
    if len(argv) < 2 or argv[1] != "--allow-run-as-root" or argv.count(":") + 1 < 2:
        raise ValueError("not a multi-rank mpirun launch")
    ranks = argv.count(":") + 1
    if slots_per_host < 1 or len(hosts) * slots_per_host != ranks:
        raise ValueError(f"{ranks} ranks do not fill {len(hosts)} host(s) of {slots_per_host} slot(s)")
    spread = ["--host", ",".join(f"{h}:{slots_per_host}" for h in hosts), "--map-by", "slot"]
    if rsh_agent is not None:
        spread += ["--mca", "plm_rsh_agent", rsh_agent]
    return [*argv[:2], *spread, *argv[2:]]
