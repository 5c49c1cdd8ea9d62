"""One error root for everything the tool reports to a user.

The CLI prints ``error: <message> — <hint>`` on one line and exits with ``exit_code``; a traceback is
shown only with SWALLOW_TRT_DEBUG=1.
"""

from __future__ import annotations

import enum
import shlex
from collections.abc import Sequence
from pathlib import Path

EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_ENVIRONMENT = 3


class SwallowTrtError(Exception):
    """Root of every error meant for the user."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None, details: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details  # printed after the one-line error (e.g. the tail of a stage's log)

    def one_line(self) -> str:
        text = " ".join(self.message.split())
        if self.hint:
            text += " — " + " ".join(self.hint.split())
        return text


class UsageError(SwallowTrtError):
    """Invalid arguments or input: exit 2."""

    exit_code = EXIT_USAGE


class UnknownModelError(UsageError):
    pass


class UnknownTargetError(UsageError):
    pass


class InvalidCombinationError(UsageError):
    """A model x format x parallelism x target combination that cannot be built."""


class DoesNotFitError(UsageError):
    pass


class ConfigFileError(UsageError):
    """A YAML/JSON file (profile, registry, checkpoint config) that is malformed or fails the schema."""


class EnvironmentProblem(SwallowTrtError):
    """The machine lacks something the stage needs (GPU, TensorRT-LLM, disk)."""

    exit_code = EXIT_ENVIRONMENT


class StageFailed(SwallowTrtError):
    """A heavy stage (quantize, engine build, server) ran and failed."""


class ProcessFailure(enum.Enum):
    """Why a supervised child process failed."""

    EXITED = "exited"  # it ended: a job with a non-zero code, a server before it was ready
    TIMED_OUT = "timed out"  # not ready, or not finished, within the deadline it was given
    INTERRUPTED = "interrupted"  # a stop was asked for while waiting for it


class ProcessFailed(StageFailed):
    """A child process failed. The facts are attributes (``reason``, ``returncode``, ``argv``,
    ``timeout_s``, ``log_path``) and ``summary`` is the sentence without the argv; ``message`` is
    ``summary: argv`` for the user. (``exit_code`` stays the CLI's, as for every SwallowTrtError.)"""

    def __init__(
        self,
        name: str,
        reason: ProcessFailure,
        argv: Sequence[str],
        *,
        returncode: int | None = None,
        timeout_s: float | None = None,
        log_path: Path | None = None,
        summary: str | None = None,
        hint: str | None = None,
        details: str | None = None,
    ) -> None:
        self.name = name
        self.reason = reason
        self.argv = tuple(argv)
        self.returncode = returncode  # as Popen.returncode: minus the signal that killed it
        self.timeout_s = timeout_s
        self.log_path = log_path
        self.summary = summary or _summary(name, reason, returncode, timeout_s)
        super().__init__(f"{self.summary}: {shlex.join(self.argv)}", hint, details)


def _summary(name: str, reason: ProcessFailure, returncode: int | None, timeout_s: float | None) -> str:
    if reason is ProcessFailure.TIMED_OUT:
        return f"{name} timed out" + (f" after {timeout_s:g} s" if timeout_s is not None else "")
    if reason is ProcessFailure.INTERRUPTED:
        return f"{name} was stopped while it was starting"
    if returncode is not None and returncode < 0:
        return f"{name} was killed by signal {-returncode}"
    return f"{name} exited with code {returncode}"
