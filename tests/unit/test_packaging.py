"""What the wheel ships is declared, file by file: every file under a package directory is a module of a
declared package or matches that package's package-data globs. include-package-data stays off, so the
install neither guesses data from the tree nor prints setuptools' "absent from the packages configuration"
screens for the Python-backend model directories (issue 18, item 7)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _setuptools() -> dict[str, Any]:
    config: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return config["tool"]["setuptools"]  # type: ignore[no-any-return]


def _declared(rel: PurePosixPath, patterns: list[str]) -> bool:
    parts = rel.parts
    return any(
        len(PurePosixPath(p).parts) == len(parts)
        and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, PurePosixPath(p).parts, strict=True))
        for p in patterns
    )


def _undeclared() -> list[str]:
    st = _setuptools()
    dirs: dict[str, Path] = {pkg: ROOT / d for pkg, d in st["package-dir"].items()}
    assert set(st["packages"]) == set(dirs), "every package needs its package-dir entry"
    package_data: dict[str, list[str]] = st.get("package-data", {})
    owned = {d.resolve(): pkg for pkg, d in dirs.items()}
    wrong = []
    for pkg, base in dirs.items():
        for path in sorted(base.rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            # The file belongs to the deepest declared package above it.
            parent = path.parent
            while parent.resolve() not in owned and parent != base:
                parent = parent.parent
            if owned.get(parent.resolve()) != pkg:
                continue
            rel = PurePosixPath(path.relative_to(parent).as_posix())
            if len(rel.parts) == 1 and path.suffix == ".py":
                continue  # a module of the package
            if not _declared(rel, package_data.get(pkg, [])):
                wrong.append(f"{path.relative_to(ROOT)} (package {pkg})")
    return wrong


def test_package_data_is_explicit() -> None:
    assert _setuptools().get("include-package-data") is False


def test_every_file_under_a_package_ships() -> None:
    wrong = _undeclared()
    assert wrong == [], (
        "files the wheel would leave out (add a package or a package-data glob):\n" + "\n".join(wrong)
    )


def test_globs_match_per_path_segment() -> None:
    assert _declared(PurePosixPath("models/chat/model.py"), ["models/*/model.py"])
    assert not _declared(PurePosixPath("models/chat/extra/model.py"), ["models/*/model.py"])
    assert not _declared(PurePosixPath("models/chat/config.pbtxt"), ["models/*/model.py"])
