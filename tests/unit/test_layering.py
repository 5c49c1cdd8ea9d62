"""The import direction between the top-level packages (design.md, section 3): ``cli`` above everything,
then the API server, the profiler and the workflows, then the stages (``triton_repo`` above ``builders``
above ``profiles`` above ``quantize``), then the text logic, with ``core`` at the bottom. Every import of
every module is read (``ast``, including imports inside functions): an edge upwards, or between two
packages of the same rank, fails with the file and line. Inside the packages, no two files import each other,
directly or round a longer loop (every import counts, ``if TYPE_CHECKING:`` ones too); and no command
module of ``cli`` imports another command's module (what two commands share lives in a module of its own)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# directory -> (import name under swallow_trt, rank); a package may import only lower ranks (and itself).
PACKAGES = {
    "core": ("", 0),
    "text": ("text", 1),
    "quantize": ("quantize", 2),
    "profiles": ("profiles", 3),
    # The performance model: below builders and the profiler (which use it), above profiles.
    "perf": ("perf", 3.5),
    "builders": ("builders", 4),
    "triton_repo": ("triton_repo", 5),
    "profiler": ("profiler", 6),
    "openai_api": ("openai_api", 6),
    "workflows": ("workflows", 6),
    "deploy": ("deploy", 6),
    "cli": ("cli", 7),
}
BY_NAME = {name: directory for directory, (name, _) in PACKAGES.items() if name}


def _package_of(module: str) -> str | None:
    """The top-level directory a ``swallow_trt...`` module lives in (core for swallow_trt.<core module>)."""
    parts = module.split(".")
    if parts[0] != "swallow_trt":
        return None
    if len(parts) > 1 and parts[1] in BY_NAME:
        return BY_NAME[parts[1]]
    return "core"


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # ``from swallow_trt import text`` names the subpackage in the alias.
            if node.module == "swallow_trt":
                found += [(node.lineno, f"swallow_trt.{alias.name}") for alias in node.names]
    return found


def _edges() -> list[tuple[str, str, str]]:
    edges = []
    for directory in PACKAGES:
        base = ROOT / directory
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            for line, module in _imports(path):
                target = _package_of(module)
                if target is not None and target != directory:
                    edges.append((directory, target, f"{path.relative_to(ROOT)}:{line} imports {module}"))
    return edges


def test_every_package_directory_is_known() -> None:
    mapped = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "benchmarks", "scripts"}
    assert mapped <= set(PACKAGES), f"add {sorted(mapped - set(PACKAGES))} to the layering table"


def test_imports_only_go_down() -> None:
    wrong = [where for source, target, where in _edges() if PACKAGES[target][1] >= PACKAGES[source][1]]
    assert wrong == [], "imports against the layering (design.md section 3):\n" + "\n".join(wrong)


def _modules() -> dict[str, Path]:
    """Every module of the package by its import name (the Python-backend model files, which Triton loads
    from a repository and no package holds, are not modules of it)."""
    found: dict[str, Path] = {}
    for directory, (name, _) in PACKAGES.items():
        base = ROOT / directory
        for path in sorted(base.rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            if not all((base.joinpath(*parts[:i]) / "__init__.py").is_file() for i in range(len(parts))):
                continue
            found[".".join(p for p in ("swallow_trt", name, *parts) if p and p != "__init__")] = path
    return found


def _module_edges(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {module it imports: line}. ``from swallow_trt.pkg import mod`` imports the submodule."""
    edges: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        out = edges.setdefault(module, {})
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for imported in names:
                if imported in modules and imported != module:
                    out.setdefault(imported, node.lineno)
    return edges


def _cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_between_files() -> None:
    modules = _modules()
    assert "swallow_trt.cli.main" in modules
    assert "swallow_trt.errors" in modules
    edges = _module_edges(modules)
    lines = []
    for cycle in _cycles(edges):
        members = set(cycle)
        lines.append(" <-> ".join(cycle))
        for a in cycle:
            for b, line in edges[a].items():
                if b in members:
                    lines.append(f"  {modules[a].relative_to(ROOT)}:{line} imports {b}")
    assert lines == [], "import cycles between files:\n" + "\n".join(lines)


def test_cycle_finder_finds_loops() -> None:
    edges = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}, "e": {"e": 1}}
    assert _cycles(edges) == [["a", "b", "c"]]
    assert _cycles({"a": {"b": 1}, "b": {}}) == []


def test_cli_commands_do_not_import_each_other() -> None:
    from swallow_trt.cli.main import COMMANDS

    commands = {f"swallow_trt.cli.{module}" for module, _, _ in COMMANDS.values()}
    modules = _modules()
    # Every command module exists, so a renamed one cannot slip past this check.
    assert commands <= set(modules)
    edges = _module_edges(modules)
    wrong = [
        f"{modules[source].relative_to(ROOT)}:{line} imports {target}"
        for source in sorted(commands)
        for target, line in edges[source].items()
        if target in commands
    ]
    assert wrong == [], "a command module imports another command's module:\n" + "\n".join(wrong)


@pytest.mark.parametrize(
    ("module", "expected"),
    [("swallow_trt.errors", "core"), ("swallow_trt.cli.main", "cli"), ("swallow_trt.text.chat", "text"),
     ("numpy", None)],
)  # fmt: skip
def test_package_of(module: str, expected: str | None) -> None:
    assert _package_of(module) == expected
