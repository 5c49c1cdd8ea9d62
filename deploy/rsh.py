"""Open MPI's remote-shell agent in a LeaderWorkerSet group: ``python3 -m swallow_trt.deploy.rsh POD
COMMAND...`` runs COMMAND in POD's server container through ``kubectl exec`` (what the leader's
ServiceAccount is allowed). Replaces itself with kubectl, so mpirun sees kubectl's exit status."""

from __future__ import annotations

import os
import sys

from swallow_trt.deploy.runtime import rsh_argv


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.stderr.write("usage: python3 -m swallow_trt.deploy.rsh POD COMMAND...\n")
        raise SystemExit(2)
    command = rsh_argv(argv[0], argv[1:])
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
