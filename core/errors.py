"""One error root for everything the tool reports to a user.

The CLI prints ``error: <message> — <hint>`` on one line and exits with ``exit_code``; a traceback is
shown only with SWALLOW_TRT_DEBUG=1.
"""

from __future__ import annotations

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
