"""A start-up cache for the shipped data files (registry, target profiles).

Parsing YAML costs more than the rest of ``swallow-trt plan`` (PyYAML's import alone compiles large
regexes), so the validated objects are pickled under $SWALLOW_TRT_HOME/cache, keyed by the bytes of
the data file and of the modules that define its schema. Any change to either is a miss; an unreadable
or corrupt cache entry is a miss; failing to write one is ignored. Users' own ``--profile`` files are
never cached: they are validated on every run.
"""

from __future__ import annotations

import os
import pickle

# hashlib's blake2b without hashlib, which loads OpenSSL (about 10 ms of every start-up).
from _blake2 import blake2b
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from swallow_trt._version import __version__
from swallow_trt.settings import load_settings

T = TypeVar("T")


def _key(data_file: Path, schema_modules: list[Path]) -> str:
    h = blake2b(__version__.encode(), digest_size=16)
    for path in (data_file, *schema_modules):
        h.update(path.read_bytes())
    return h.hexdigest()


def cached_load(data_file: Path, schema_modules: list[Path], load: Callable[[], T]) -> T:
    try:
        key = _key(data_file, schema_modules)
    except OSError:
        return load()
    entry = load_settings().home / "cache" / f"{data_file.stem}-{key}.pickle"
    try:
        with entry.open("rb") as f:
            obj: T = pickle.load(f)
        return obj
    except Exception:
        pass
    obj = load()
    import tempfile  # only on a miss: writing the entry

    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-", suffix=".pickle")
        with os.fdopen(fd, "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, entry)
    except OSError:
        pass
    return obj
