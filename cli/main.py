"""Entry point: wires the sub-commands and turns SwallowTrtError into one line and an exit code."""

from __future__ import annotations

import typer

from swallow_trt import __version__
from swallow_trt.cli import build, chat, models, package, plan, profile, quantize, quickstart, serve, targets

app = typer.Typer(
    name="swallow-trt",
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


app.command("models", help=models.MODELS_HELP)(models.models)
app.command("targets", help=targets.TARGETS_HELP)(targets.targets)
app.command("plan", help=plan.HELP)(plan.plan)
app.command("quantize", help=quantize.HELP)(quantize.quantize)
app.command("build", help=build.HELP)(build.build)
app.command("package", help=package.HELP)(package.package)
app.command("serve", help=serve.HELP)(serve.serve)
app.command("chat", help=chat.HELP)(chat.chat)
app.command("profile", help=profile.HELP)(profile.profile)
app.command("quickstart", help=quickstart.HELP)(quickstart.quickstart)


def run() -> None:
    app()


if __name__ == "__main__":
    run()
