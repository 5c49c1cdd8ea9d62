"""The import direction between the top-level packages (design.md, section 3): ``cli`` above everything,
then the API server, the profiler and the workflows, then the stages (``triton_repo`` above ``builders``
above ``profiles`` above ``quantize``), then the text logic, with ``core`` at the bottom. Every import of
every module is read (``ast``, including imports inside functions): an edge upwards, or between two
packages of the same rank, fails with the file and line."""

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


@pytest.mark.parametrize(
    ("module", "expected"),
    [("swallow_trt.errors", "core"), ("swallow_trt.cli.main", "cli"), ("swallow_trt.text.chat", "text"),
     ("numpy", None)],
)  # fmt: skip
def test_package_of(module: str, expected: str | None) -> None:
    assert _package_of(module) == expected
