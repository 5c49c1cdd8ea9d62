"""Entry point: wires the sub-commands and turns SwallowTrtError into one line and an exit code.

The error is caught once, in the group's ``invoke`` (every command runs inside it, whether from
``run()`` or from typer's CliRunner in the tests), so no command can forget it.

Each command's module is imported only when that command runs (or when help lists them all): the
serving and profiling commands pull in modules that ``plan`` has no use for, and start-up is budgeted
(benchmarks/cli_startup.py, at most 2x ``import typer``).
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
from typer._click.exceptions import UsageError  # typer 0.28 vendors click; no public alias
from typer.core import TyperGroup

from swallow_trt import __version__

# name -> (module under swallow_trt.cli, function, attribute holding its --help text), in --help order.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "models": ("models", "models", "MODELS_HELP"),
    "targets": ("targets", "targets", "TARGETS_HELP"),
    "plan": ("plan", "plan", "HELP"),
    "quantize": ("quantize", "quantize", "HELP"),
    "build": ("build", "build", "HELP"),
    "package": ("package", "package", "HELP"),
    "serve": ("serve", "serve", "HELP"),
    "chat": ("chat", "chat", "HELP"),
    "profile": ("profile", "profile", "HELP"),
    "quickstart": ("quickstart", "quickstart", "HELP"),
    "openai": ("openai", "openai", "HELP"),
    "deploy": ("deploy", "deploy", "HELP"),
}


class LazyGroup(TyperGroup):
    """A typer group whose commands are built from their modules on first use."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module_name, function, help_attr = COMMANDS[cmd_name]
            module = importlib.import_module(f"swallow_trt.cli.{module_name}")
            info = typer.models.CommandInfo(
                name=cmd_name, callback=getattr(module, function), help=getattr(module, help_attr)
            )
            self.commands[cmd_name] = typer.main.get_command_from_info(
                info, pretty_exceptions_short=True, rich_markup_mode=self.rich_markup_mode
            )
        return self.commands.get(cmd_name)

    def invoke(self, ctx: Any) -> Any:
        """Run the command; a SwallowTrtError becomes ``error: ...`` on stderr and its class's exit code,
        with the traceback only under SWALLOW_TRT_DEBUG=1; Ctrl-C exits 130 with one line."""
        from swallow_trt.errors import SwallowTrtError

        try:
            return super().invoke(ctx)
        except SwallowTrtError as exc:
            from swallow_trt.cli.output import report_error
            from swallow_trt.settings import load_settings

            if load_settings().debug:
                raise
            report_error(exc)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            from swallow_trt.cli.output import error_line

            error_line("interrupted")
            raise typer.Exit(130) from None

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except UsageError:
            # typer suggests close names from the commands already built: build them all (error path only).
            for name in COMMANDS:
                self.get_command(ctx, name)
            return super().resolve_command(ctx, args)


app = typer.Typer(
    name="swallow-trt",
    cls=LazyGroup,
    help=(
        "Swallow (Japanese LLM) -> TensorRT-LLM engines -> Triton: plan, quantize, build, package, serve, profile.\n\n"
        "Examples:\n\n"
        "  swallow-trt models\n\n"
        "  swallow-trt targets\n\n"
        "  swallow-trt plan --model 70b --tp 4 --fp8 --target h100x4\n\n"
        "  swallow-trt build --model 70b --tp 4 --fp8\n\n"
        "  swallow-trt quickstart   (every stage on a tiny model, CPU only)"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"swallow-trt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Swallow -> TensorRT-LLM -> Triton tool chain."""


def run() -> None:
    app()


if __name__ == "__main__":
    run()
