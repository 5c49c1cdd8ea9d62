"""The model repository that a Triton server on this machine serves, read from its command line.

A repository's paths (the chat model's ``tokenizer_dir``) are relative to its root, so that it can be
moved; Triton's API does not say where that root is. A server on this host does, in its argv
(``--model-repository``, resolved against its working directory), which ``/proc`` shows to the same user:
that is how ``profile --url HOST:PORT`` without ``--repo`` finds the tokenizer of a local server.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from swallow_trt.triton_repo.stubs import scan_proc

TRITON_BINARY = "tritonserver"
TRITON_DEFAULT_GRPC_PORT = 8001
LOCAL_NAMES = {"localhost", "0.0.0.0", "::", "::1", ""}


def is_local(host: str) -> bool:
    """Whether ``host`` names this machine (loopback, the wildcard, or this host's own name)."""
    host = host.strip("[]").lower()
    return host in LOCAL_NAMES or host.startswith("127.") or host == socket.gethostname().lower()


def flag_value(argv: tuple[str, ...], flag: str) -> str | None:
    """The value of ``--flag=V`` or ``--flag V`` in ``argv`` (the last one given wins, as in Triton)."""
    value = None
    for i, arg in enumerate(argv):
        if arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
        elif arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def repository_of(argv: tuple[str, ...], cwd: Path, port: int, model: str) -> Path | None:
    """The repository holding ``model`` of the tritonserver with this ``argv`` if it serves gRPC on
    ``port``; None for any other process."""
    if not argv or Path(argv[0]).name != TRITON_BINARY:
        return None
    grpc_port = flag_value(argv, "--grpc-port")
    if int(grpc_port or TRITON_DEFAULT_GRPC_PORT) != port:
        return None
    for i, arg in enumerate(argv):
        for flag in ("--model-repository", "--model-store"):
            given = arg.split("=", 1)[1] if arg.startswith(flag + "=") else None
            if arg == flag and i + 1 < len(argv):
                given = argv[i + 1]
            if given is not None:
                repo = cwd / given  # an absolute path stays as it is
                if (repo / model / "config.pbtxt").is_file():
                    return repo
    return None


def local_repository(url: str, model: str) -> Path | None:
    """The repository that holds ``model`` for the Triton serving gRPC ``url`` on this machine, or None
    (another host, no such process visible, or two servers that disagree)."""
    host, _, port = url.rpartition(":")
    if not port.isdigit() or not is_local(host):
        return None
    found: set[Path] = set()
    for proc in scan_proc():
        try:
            cwd = Path(os.readlink(f"/proc/{proc.pid}/cwd"))
        except OSError:
            continue
        repo = repository_of(proc.cmdline, cwd, int(port), model)
        if repo is not None:
            found.add(repo)
    return found.pop() if len(found) == 1 else None
