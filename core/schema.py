"""Strict, line-aware loading of YAML/JSON data into frozen dataclasses.

Why not pydantic: ``plan`` must start within 2x of ``import typer`` (benchmarks/cli_startup.py) and
importing pydantic alone costs more than typer does on these machines. This loader covers what the
project's data files need (scalars, Literal, Optional, list, tuple, dict[str, T], nested dataclasses),
rejects unknown keys, and reports ``file:line: key.path: problem`` from the YAML node marks, which is
what a user editing a profile needs.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from swallow_trt.errors import ConfigFileError

if TYPE_CHECKING:
    import yaml

T = TypeVar("T")

_HINTS: dict[type, dict[str, Any]] = {}


@cache
def _yaml() -> Any:
    # Imported on first use: PyYAML's import is the largest single start-up cost of the light commands.
    import yaml

    return yaml


@cache
def _constructor() -> Any:
    return _yaml().constructor.SafeConstructor()


class _Ctx:
    __slots__ = ("source",)

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, node: yaml.Node | None, path: str, problem: str) -> ConfigFileError:
        where = self.source
        if node is not None:
            where += f":{node.start_mark.line + 1}"
        key = f" {path}:" if path else ""
        return ConfigFileError(f"{where}:{key} {problem}", "fix the file or see the schema in the docs")


def compose_file(path: Path) -> yaml.Node | None:
    """Parse ``path`` into a YAML node tree (JSON is YAML); syntax errors name file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(f"{path}: file not found", "check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"{path}: cannot read: {exc}", "pass a readable UTF-8 YAML file") from None
    return compose_text(text, str(path))


def compose_text(text: str, source: str) -> yaml.Node | None:
    y = _yaml()
    try:
        return typing.cast(
            "yaml.Node | None", y.compose(text, Loader=getattr(y, "CSafeLoader", y.SafeLoader))
        )
    except y.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigFileError(f"{source}{line}: malformed YAML: {problem}", "fix the YAML syntax") from None
    except y.YAMLError as exc:
        raise ConfigFileError(f"{source}: malformed YAML: {exc}", "fix the YAML syntax") from None


def load_file(cls: type[T], path: Path) -> T:
    node = compose_file(path)
    return build(cls, node, str(path))


def build(cls: type[T], node: yaml.Node | None, source: str, path: str = "") -> T:
    """Validate ``node`` against ``cls`` (a dataclass or any supported type) and build it."""
    ctx = _Ctx(source)
    if node is None:
        raise ctx.fail(None, path, "the file is empty")
    return typing.cast(T, _convert(cls, node, ctx, path))


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = get_type_hints(cls)
        _HINTS[cls] = hints
    return hints


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type):
        return tp.__name__
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return str(tp).replace("typing.", "")


def _scalar(node: yaml.Node) -> Any:
    return _constructor().construct_object(node, deep=True)


def _convert(tp: Any, node: yaml.Node, ctx: _Ctx, path: str) -> Any:
    yaml = _yaml()
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            if type(None) in options:
                return None
            raise ctx.fail(node, path, f"must not be null (expected {_describe(tp)})")
        errors: list[ConfigFileError] = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, node, ctx, path)
            except ConfigFileError as exc:
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else ctx.fail(node, path, f"expected {_describe(tp)}")
    if origin is Literal:
        if not isinstance(node, yaml.ScalarNode):
            raise ctx.fail(node, path, f"expected {_describe(tp)}")
        value = _scalar(node)
        if value not in get_args(tp) or isinstance(value, bool) != any(
            isinstance(a, bool) for a in get_args(tp)
        ):
            raise ctx.fail(node, path, f"{value!r} is not {_describe(tp)}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _dataclass(tp, node, ctx, path)
    if origin in (list, tuple):
        args = get_args(tp)
        if not isinstance(node, yaml.SequenceNode):
            raise ctx.fail(node, path, f"expected a list, got {_kind(node)}")
        item_tp = args[0] if args else Any
        items = [_convert(item_tp, item, ctx, f"{path}[{i}]") for i, item in enumerate(node.value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        args = get_args(tp) or (str, Any)
        if not isinstance(node, yaml.MappingNode):
            raise ctx.fail(node, path, f"expected a mapping, got {_kind(node)}")
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _convert(args[0], key_node, ctx, path)
            if key in out:
                raise ctx.fail(key_node, _join(path, str(key)), "duplicate key")
            out[key] = _convert(args[1], value_node, ctx, _join(path, str(key)))
        return types.MappingProxyType(out) if origin is Mapping else out
    if tp is Any:
        return _plain(node)
    if not isinstance(node, yaml.ScalarNode):
        raise ctx.fail(node, path, f"expected {_describe(tp)}, got {_kind(node)}")
    value = _scalar(node)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, int | float) and not isinstance(value, bool):
        # Unquoted version-like values (e.g. 0.3) are meant as text in these files.
        return node.value
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise ctx.fail(node, path, f"expected {_describe(tp)}, got {value!r}")
    return value


def _kind(node: yaml.Node) -> str:
    yaml = _yaml()
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return repr(_scalar(node))


def _plain(node: yaml.Node) -> Any:
    return _constructor().construct_document(node)


def _dataclass(cls: type, node: yaml.Node, ctx: _Ctx, path: str) -> Any:
    yaml = _yaml()
    if not isinstance(node, yaml.MappingNode):
        raise ctx.fail(node, path, f"expected a mapping ({cls.__name__}), got {_kind(node)}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    values: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key = _scalar(key_node)
        if not isinstance(key, str):
            raise ctx.fail(key_node, path, f"keys must be text, got {key!r}")
        name = key.replace("-", "_")
        if name not in fields:
            allowed = ", ".join(sorted(fields))
            raise ctx.fail(key_node, _join(path, key), f"unknown key (allowed: {allowed})")
        if name in values:
            raise ctx.fail(key_node, _join(path, key), "duplicate key")
        values[name] = _convert(hints[name], value_node, ctx, _join(path, key))
    missing = [
        n
        for n, f in fields.items()
        if n not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ctx.fail(node, path, "missing required key(s): " + ", ".join(missing))
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        # __post_init__ checks (cross-field rules) raise ValueError with a plain message.
        raise ctx.fail(node, path, str(exc)) from None


def to_plain(obj: Any) -> Any:
    """Dataclass trees to JSON-ready values (the inverse direction, for --json output and manifests)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
