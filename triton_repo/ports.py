"""The ports a server listens on: whether one is taken, and free ones to choose. Standard library only."""

from __future__ import annotations

import socket

from swallow_trt.errors import EnvironmentProblem

PORT_NAMES = ("http", "grpc", "metrics")
_PORT_LABELS = {"http": "HTTP", "grpc": "gRPC", "metrics": "metrics"}


def _family_and_bind_host(host: str) -> tuple[socket.AddressFamily, str]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return family, "" if host in ("0.0.0.0", "::") else host


def port_in_use(host: str, port: int) -> bool:
    """True when a server could not bind ``port`` on ``host``: someone listens there. SO_REUSEADDR, as
    Triton's listeners use, so connections of an earlier server lingering in TIME_WAIT do not count."""
    family, bind_host = _family_and_bind_host(host)
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((bind_host, port))
        except OSError:
            return True
    return False


def free_ports(host: str, count: int) -> list[int]:
    """``count`` distinct free TCP ports (all bound at once, then released)."""
    family, bind_host = _family_and_bind_host(host)
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(s)
            s.bind((bind_host, 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


class PortInUse(EnvironmentProblem):
    """A port the caller named is taken: found before anything is launched."""

    def __init__(self, which: str, host: str, port: int) -> None:
        super().__init__(
            f"the {_PORT_LABELS[which]} port {port} on {host} is already in use",
            f"stop what listens there, or choose another with --{which}-port (leave it out for a free one)",
        )
        self.which = which
        self.port = port


__all__ = ["PORT_NAMES", "PortInUse", "free_ports", "port_in_use"]
