"""Triton's Python-backend stubs, and the other processes of one server, as /proc shows them.

Each ``triton_python_backend_stub`` carries its server's shared-memory prefix (``--backend-config=python,
shm-region-prefix-name=...``) in its argv, so a unique prefix per server finds that server's stubs
wherever they were reparented. Standard library only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STUB_NAME = "triton_python_backend_stub"


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    state: str  # "R", "S", "Z" ...
    pgrp: int
    cmdline: tuple[str, ...]


def scan_proc() -> list[ProcInfo]:
    """Every process /proc shows now (those that vanish while it is read are left out)."""
    found: list[ProcInfo] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = tuple(a.decode(errors="replace") for a in f.read().split(b"\0") if a)
        except OSError:
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or len(fields) < 3:
            continue
        found.append(ProcInfo(int(entry.name), fields[0], int(fields[2]), cmdline))
    return found


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` from field 3 (state) on, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp ...


def pid_alive(pid: int) -> bool:
    """True for a live process (a zombie waiting for its reaper counts as gone)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[:1] != ["Z"]


def exit_status(pid: int) -> int | None:
    """How a process that is no longer alive ended, while it is a zombie (field 52 of its stat holds the
    wait status): the exit code, or minus the signal that killed it (as ``Popen.returncode``); None
    once it has been reaped, or while it lives."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] != "Z" or len(fields) < 50:
        return None
    status = int(fields[49])
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def describe_exit(code: int | None) -> str | None:
    """``exit_status`` in words: "signal 9", "exit code 1"."""
    if code is None:
        return None
    return f"signal {-code}" if code < 0 else f"exit code {code}"


def exit_description(pid: int) -> str | None:
    return describe_exit(exit_status(pid))


@dataclass(frozen=True)
class StubProcess:
    """A ``triton_python_backend_stub`` of one model instance."""

    pid: int
    model: str
    instance: str


def stub_of(info: ProcInfo, shm_prefix: str) -> StubProcess | None:
    """The stub ``info`` is, when it is one of the server with ``shm_prefix``."""
    # python_backend's argv: stub, model path (<repo>/<model>/<version>/model.py), shm region name
    # (<prefix><uuid>), shm sizes, parent pid, library dir, IPC handle, instance name, runtime dir.
    argv = info.cmdline
    if len(argv) < 3 or Path(argv[0]).name != STUB_NAME or not argv[2].startswith(shm_prefix):
        return None
    instance = argv[8] if len(argv) > 8 else "?"
    parts = Path(argv[1]).parts
    model = parts[-3] if len(parts) >= 3 else instance.rsplit("_", 2)[0]
    return StubProcess(info.pid, model, instance)


# ---- which process serves a request: a token a model puts in its response, checked by a client

TOKEN_VERSION = "p1"


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return "?"


def process_token(pid: int | None = None) -> str:
    """A token naming process ``pid`` (this one by default) beyond pid reuse: the host's boot id, the pid
    namespace, the pid and its start time. A model (``chat``) sends it to a client, which asks
    :func:`process_gone` whether the process that serves its request still lives."""
    pid = os.getpid() if pid is None else pid
    fields = _stat_fields(pid)
    started = fields[19] if fields is not None and len(fields) > 19 else "?"  # field 22: start time
    return ":".join((TOKEN_VERSION, _boot_id(), _pid_namespace(), str(pid), started))


def token_pid(token: str) -> int | None:
    parts = token.split(":")
    return int(parts[-2]) if len(parts) >= 5 and parts[-2].isdigit() else None


def process_gone(token: str) -> bool | None:
    """True when the process ``token`` names has ended (or its pid now belongs to another process), False
    while it lives, None when this process cannot tell: another host or pid namespace, or a token it does
    not know. The boot id and namespace come first, so a client elsewhere never takes a live server's
    process for a dead one."""
    # The namespace reads "pid:[4026531836]": split from the right around it.
    head, sep, rest = token.partition(":")
    boot, _, rest = rest.partition(":")
    namespace, _, rest = rest.rpartition("]:")
    pid, _, started = rest.partition(":")
    if head != TOKEN_VERSION or not sep or not pid.isdigit() or started in ("", "?"):
        return None
    if boot != _boot_id() or boot == "?" or namespace + "]" != _pid_namespace():
        return None
    fields = _stat_fields(int(pid))
    return fields is None or fields[0] == "Z" or len(fields) <= 19 or fields[19] != started


# ---- a stub's death, as the watcher tells the server's clients (the OpenAI API) and models


@dataclass(frozen=True)
class StubDeath:
    """Stubs of one model that died together, seen by the watcher at CLOCK_MONOTONIC ``at_ns``.
    ``every_instance``: they were all the model's instances, so every request of that model in flight
    before ``at_ns`` was on a dead stub, and Triton 2.51 holds it for ever (recovery.py)."""

    model: str
    instances: tuple[str, ...]
    pids: tuple[int, ...]
    every_instance: bool
    at_ns: int

    def message(self) -> str:
        pids = ", ".join(map(str, self.pids))
        return (
            f"the {self.model} instance serving this request died (stub pid {pids}) before it finished; "
            "the server reloads it: send the request again"
        )


def record_death(path: Path, death: StubDeath) -> None:
    """Append ``death`` to ``path`` (one JSON line, written whole by one ``write``)."""
    import json

    line = json.dumps({**death.__dict__, "instances": list(death.instances), "pids": list(death.pids)})
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


class DeathFeed:
    """The deaths appended to a file after this reader was made (earlier ones concern no request of its
    own); :meth:`new` returns those since its last call. A missing file is none yet."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = self._size()

    def _size(self) -> int:
        try:
            return os.stat(self.path).st_size
        except OSError:
            return 0

    def new(self) -> list[StubDeath]:
        import json

        size = self._size()
        if size < self.offset:  # a new file (a server started again on the same path)
            self.offset = 0
        if size == self.offset:
            return []
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(size - self.offset)
        except OSError:
            return []
        whole = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
        self.offset += len(whole)
        deaths = []
        for line in whole.splitlines():
            try:
                d = json.loads(line)
                deaths.append(
                    StubDeath(
                        str(d["model"]),
                        tuple(d["instances"]),
                        tuple(int(p) for p in d["pids"]),
                        bool(d["every_instance"]),
                        int(d["at_ns"]),
                    )
                )
            except (ValueError, KeyError, TypeError):
                continue
        return deaths

    def fatal(self, model: str) -> list[StubDeath]:
        """The new deaths that ended every request of ``model`` in flight before them (its every instance
        died); with a live instance left, nothing tells which one served a request."""
        return [d for d in self.new() if d.model == model and d.every_instance]


def find_stubs(shm_prefix: str) -> list[StubProcess]:
    """The live stubs of the server whose shared-memory prefix is ``shm_prefix`` (every rank), by pid."""
    found = (stub_of(info, shm_prefix) for info in scan_proc() if info.state != "Z")
    return sorted((s for s in found if s is not None), key=lambda s: s.pid)


def server_processes(pid: int, shm_prefix: str, *, own_group: bool) -> list[int]:
    """Live processes (zombies excluded) of the server ``pid``: the server itself and its process group
    (``own_group``: only while the server is unreaped, so the group id cannot have been reused), and any
    process whose argv carries ``shm_prefix`` (its stubs, wherever they were reparented)."""
    left: set[int] = {pid} if own_group else set()
    for info in scan_proc():
        if info.state == "Z" or info.pid == os.getpid():
            continue
        if (own_group and info.pgrp == pid) or any(shm_prefix in arg for arg in info.cmdline):
            left.add(info.pid)
    return sorted(p for p in left if pid_alive(p))


__all__ = [
    "STUB_NAME",
    "DeathFeed",
    "ProcInfo",
    "StubDeath",
    "StubProcess",
    "describe_exit",
    "exit_description",
    "exit_status",
    "find_stubs",
    "pid_alive",
    "process_gone",
    "process_token",
    "record_death",
    "scan_proc",
    "server_processes",
    "stub_of",
    "token_pid",
]
