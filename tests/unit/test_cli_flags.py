"""The model flags reach every command as one ModelFlags, and reach the planner through one mapping."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from swallow_trt.builders.plan import PlanRequest
from swallow_trt.cli.main import COMMANDS
from swallow_trt.cli.options import (
    MODEL_FLAG_OPTIONS,
    PLAN_FLAGS,
    SERVE_FLAGS,
    JsonOpt,
    ModelFlags,
    ServeModelOpt,
    model_flags,
)
from swallow_trt.errors import UsageError

# One value per flag, each unlike its default, with the PlanRequest field it must land in.
GIVEN = {
    "model": ("8b", "model", "8b"),
    "target": ("hopper", "target", "hopper"),
    "profile": (Path("p.yaml"), "profile_path", Path("p.yaml")),
    "tp": (2, "tp", 2),
    "pp": (3, "pp", 3),
    "qformat": ("fp8", "qformat", "fp8"),
    "kv_cache_dtype": ("FP8", "kv_cache_dtype", "fp8"),
    "dtype": ("float16", "dtype", "float16"),
    "gpu": ("H100-SXM5-80GB", "gpu", "H100-SXM5-80GB"),
    "gpus": (4, "gpus", 4),
    "max_batch_size": (5, "max_batch_size", 5),
    "max_input_len": (6, "max_input_len", 6),
    "max_seq_len": (7, "max_seq_len", 7),
    "max_num_tokens": (8, "max_num_tokens", 8),
    "moe_tp_size": (9, "moe_tp_size", 9),
    "moe_ep_size": (10, "moe_ep_size", 10),
    "out": (Path("o"), "out", Path("o")),
    "runtime": ("pytorch", "runtime", "pytorch"),
}
# fp8/int4_awq have no field of their own: they fold into qformat (checked below).
FOLDED = {"fp8", "int4_awq"}


def test_every_flag_has_one_option() -> None:
    assert [f.name for f in dataclasses.fields(ModelFlags)] == list(MODEL_FLAG_OPTIONS)


def test_plan_request_carries_every_flag() -> None:
    assert set(GIVEN) | FOLDED == set(MODEL_FLAG_OPTIONS)
    req = ModelFlags(**{name: given for name, (given, _, _) in GIVEN.items()}).plan_request()
    for name, (_, field, expected) in GIVEN.items():
        assert getattr(req, field) == expected, name
    # And nothing of the request is left to its default by accident.
    assert {f for _, f, _ in GIVEN.values()} == {f.name for f in dataclasses.fields(PlanRequest)}


@pytest.mark.parametrize(
    ("fp8", "int4_awq", "qformat", "expected"),
    [(True, False, None, "fp8"), (False, True, None, "int4_awq"), (False, False, "int8-sq", "int8_sq")],
)
def test_format_shorthands_fold_into_qformat(
    fp8: bool, int4_awq: bool, qformat: str | None, expected: str
) -> None:
    flags = ModelFlags(model="8b", fp8=fp8, int4_awq=int4_awq, qformat=qformat)
    assert flags.plan_request().qformat == expected


def test_conflicting_shorthands_refused() -> None:
    with pytest.raises(UsageError, match="conflicting format options"):
        ModelFlags(model="8b", fp8=True, int4_awq=True).plan_request()


def test_optional_model_missing_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--model"):
        ModelFlags().plan_request()


def _app(command: object) -> typer.Typer:
    app = typer.Typer()
    app.command()(command)  # type: ignore[arg-type]
    return app


def test_options_parse_into_the_object() -> None:
    seen: list[tuple[ModelFlags, bool]] = []

    @model_flags(PLAN_FLAGS)
    def cmd(flags: ModelFlags, as_json: JsonOpt = False) -> None:
        seen.append((flags, as_json))

    args = ["--model", "70b", "-t", "h100x4", "--tp", "4", "--fp8", "--kv-cache-dtype", "fp8", "--out", "x"]
    result = CliRunner().invoke(_app(cmd), [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert seen == [(ModelFlags(model="70b", target="h100x4", tp=4, fp8=True, kv_cache_dtype="fp8",
                                out=Path("x")), True)]  # fmt: skip


def test_model_is_required_unless_overridden() -> None:
    @model_flags(PLAN_FLAGS)
    def strict(flags: ModelFlags) -> None:
        raise AssertionError("must not run")

    result = CliRunner().invoke(_app(strict), ["--tp", "2"])
    assert result.exit_code == 2
    assert "--model" in result.output

    seen: list[ModelFlags] = []

    @model_flags(SERVE_FLAGS, model=(ServeModelOpt, None))
    def relaxed(flags: ModelFlags) -> None:
        seen.append(flags)

    assert CliRunner().invoke(_app(relaxed), ["--tp", "2"]).exit_code == 0
    assert seen == [ModelFlags(tp=2)]
    # A flag outside the command's set is not an option of it.
    assert CliRunner().invoke(_app(relaxed), ["--gpus", "2"]).exit_code == 2


def test_decorator_refuses_mistakes() -> None:
    with pytest.raises(ValueError, match="not model flags"):
        model_flags({"model", "nope"})
    with pytest.raises(ValueError, match="not model flags"):
        model_flags({"model"}, tp=(int, 1))

    def clash(flags: ModelFlags, target: str = "") -> None: ...

    with pytest.raises(ValueError, match="named like model flags"):
        model_flags({"model"})(clash)

    def no_flags(model: str) -> None: ...

    with pytest.raises(ValueError, match="no parameter `flags: ModelFlags`"):
        model_flags({"model"})(no_flags)


def test_flags_take_the_place_of_the_parameter() -> None:
    """--help lists the flags where the command put ``flags`` (profile: after its own options)."""
    import inspect

    @model_flags({"model", "tp"}, model=(ServeModelOpt, None))
    def cmd(url: str = "", *, flags: ModelFlags, as_json: JsonOpt = False) -> None: ...

    assert list(inspect.signature(cmd).parameters) == ["url", "model", "tp", "as_json"]


@pytest.mark.parametrize("command", ["plan", "build", "quantize", "serve", "profile"])
def test_commands_take_the_object(command: str) -> None:
    """The commands with model flags declare them through model_flags, not one by one."""
    import importlib
    import inspect

    module_name, function, _ = COMMANDS[command]
    module = importlib.import_module(f"swallow_trt.cli.{module_name}")
    fn = getattr(module, function)
    assert "flags" not in inspect.signature(fn).parameters  # the wrapper's options replace it
    source = inspect.getsource(module)
    assert "@model_flags(" in source
    assert "PlanRequest(" not in source
