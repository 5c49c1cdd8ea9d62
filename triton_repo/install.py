"""Finding a runnable Triton Inference Server: the one nvidia-pytriton ships (default) or a system
``tritonserver`` on PATH.

The pytriton wheel carries a real ``tritonserver`` binary, its libraries and a Python-backend stub per
Python version. Nothing in site-packages is modified: the Python backend is assembled, as symlinks,
under ``$SWALLOW_TRT_HOME/triton-backends/<key>/python/`` with the stub of the running Python.

Standard library only; nothing heavy at import time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from swallow_trt.errors import EnvironmentProblem
from swallow_trt.settings import load_settings
from swallow_trt.triton_repo.stubs import STUB_NAME

SERVE_HINT = (
    "pip install 'swallow-trt[serve]' (nvidia-pytriton ships tritonserver), or put tritonserver on PATH"
)


@dataclass(frozen=True)
class TritonInstall:
    """Where a runnable tritonserver lives and what its environment needs."""

    binary: Path
    backend_dir: Path  # passed as --backend-directory
    lib_dir: Path | None  # prepended to LD_LIBRARY_PATH
    python_bin_dir: Path | None  # prepended to PATH: the stub takes sys.prefix from the python3 it finds
    source: Literal["pytriton", "system"]
    # Prepended to LD_LIBRARY_PATH after lib_dir: without it the stub embeds whichever libpython the
    # loader finds first (the system's 3.11.2) over the venv's own standard library (3.11.7).
    python_lib_dir: Path | None = None

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        libs = [str(p) for p in (self.lib_dir, self.python_lib_dir) if p is not None]
        if libs:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (*libs, env.get("LD_LIBRARY_PATH")) if p)
        if self.python_bin_dir is not None:
            env["PATH"] = os.pathsep.join(p for p in (str(self.python_bin_dir), env.get("PATH")) if p)
        return env


def find_tritonserver(*, prefer_system: bool = False, home: Path | None = None) -> TritonInstall:
    """The pytriton server (default) or a system ``tritonserver`` on PATH (``prefer_system``); either
    falls back to the other. Raises EnvironmentProblem when neither exists or the pytriton one cannot
    serve Python models with this interpreter."""
    order = ("system", "pytriton") if prefer_system else ("pytriton", "system")
    for source in order:
        install = _system_install() if source == "system" else _pytriton_install(home)
        if install is not None:
            return install
    raise EnvironmentProblem(
        "no Triton Inference Server found (neither nvidia-pytriton nor tritonserver on PATH)", SERVE_HINT
    )


def _system_install() -> TritonInstall | None:
    found = shutil.which("tritonserver")
    if found is None:
        return None
    binary = Path(found).resolve()
    prefix = binary.parent.parent  # /opt/tritonserver/bin/tritonserver -> /opt/tritonserver
    lib_dir = prefix / "lib"
    return TritonInstall(
        binary=binary,
        backend_dir=prefix / "backends",
        lib_dir=lib_dir if lib_dir.is_dir() else None,
        python_bin_dir=None,
        source="system",
    )


def _pytriton_install(home: Path | None) -> TritonInstall | None:
    spec = importlib.util.find_spec("pytriton")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    dist = package / "tritonserver"
    binary = dist / "bin" / "tritonserver"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return None
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / STUB_NAME
    if not stub.is_file():
        have = sorted(p.name for p in (dist / "python_backend_stubs").glob("*") if (p / STUB_NAME).is_file())
        raise EnvironmentProblem(
            f"nvidia-pytriton has no Python-backend stub for Python {version} (it has: {', '.join(have) or 'none'})",
            f"run swallow-trt with one of Python {', '.join(have)}, or use a system tritonserver (prefer_system)",
        )
    _check_numpy()
    backend_dir = _assemble_backends(
        dist / "backends", stub, (home or load_settings().home) / "triton-backends"
    )
    return TritonInstall(
        binary=binary,
        backend_dir=backend_dir,
        lib_dir=package.parent / "nvidia_pytriton.libs",
        python_bin_dir=_python_bin_dir(),
        source="pytriton",
        python_lib_dir=python_lib_dir(),
    )


def _check_numpy() -> None:
    from importlib import metadata

    try:
        version = metadata.version("numpy")
    except metadata.PackageNotFoundError:
        raise EnvironmentProblem(
            "numpy is not installed; Triton's Python backend needs it in the model environment", SERVE_HINT
        ) from None
    if int(version.split(".")[0]) >= 2:
        raise EnvironmentProblem(
            f"numpy {version} is installed; the Python-backend stub of nvidia-pytriton 0.7 needs numpy < 2",
            "pip install 'numpy<2' (the serve extra pins it)",
        )


def python_lib_dir() -> Path | None:
    """The directory holding the running interpreter's shared libpython (what the stub of this Python
    version links against), or None for an interpreter built without one."""
    import sysconfig

    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if not (sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and soname):
        return None
    return Path(libdir) if (Path(libdir) / soname).is_file() else None


def _python_bin_dir() -> Path:
    prefix_bin = Path(sys.prefix) / "bin"
    if (prefix_bin / "python3").exists():
        return prefix_bin
    return Path(sys.executable).parent


def _assemble_backends(source: Path, stub: Path, root: Path) -> Path:
    """A backend directory of our own: every backend of ``source`` as symlinks, plus the stub next to
    ``python/libtriton_python.so``. Keyed by the source files, so a new pytriton gets a new directory;
    built in a temporary sibling and renamed into place (concurrent callers race harmlessly)."""
    files = sorted(p for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    digest = hashlib.sha256()
    for path in [stub, *files]:
        st = path.stat()
        digest.update(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    target = root / digest.hexdigest()[:16]
    if (target / "python" / STUB_NAME).is_file() and (target / "python" / "libtriton_python.so").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        for path in files:
            link = temp / path.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path.resolve())
        (temp / "python").mkdir(exist_ok=True)
        (temp / "python" / STUB_NAME).symlink_to(stub.resolve())
        try:
            temp.rename(target)
        except OSError:
            if not target.is_dir():  # not a lost race: a real failure
                raise
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    return target


__all__ = ["SERVE_HINT", "TritonInstall", "find_tritonserver", "python_lib_dir"]
