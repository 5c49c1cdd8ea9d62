"""Stage outputs: keyed by a hash of their inputs, built in a temporary sibling, renamed when complete.

Rules every stage follows:
- the final directory holds ``manifest.json`` (inputs, key, versions, timings, output checksums);
  a run whose key matches it is a cache hit that does no work;
- work happens in ``.<name>.tmp-<pid>`` beside the final path, which only ever appears by rename,
  complete; an interrupted run (Ctrl-C, kill -9) leaves nothing at the final path, and the next run
  removes its debris;
- two runs on the same output serialise on ``.<name>.lock`` (the second waits, then usually hits).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swallow_trt.errors import StageFailed, UsageError

MANIFEST = "manifest.json"


def stage_key(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def sha256_file(path: Path, chunk: int = 8 * 2**20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def outputs_intact(directory: Path, manifest: dict[str, Any]) -> bool:
    """Cheap integrity check of a cache hit: every recorded output exists with its recorded size."""
    files = manifest.get("outputs") or {}
    for name, info in files.items():
        p = directory / name
        if not p.is_file() or p.stat().st_size != info.get("bytes"):
            return False
    return bool(files)


@dataclass
class StageDir:
    final: Path

    @property
    def lock_path(self) -> Path:
        return self.final.parent / f".{self.final.name}.lock"

    def temp_path(self) -> Path:
        return self.final.parent / f".{self.final.name}.tmp-{os.getpid()}"

    def debris(self) -> list[Path]:
        return sorted(self.final.parent.glob(f".{self.final.name}.tmp-*")) + sorted(
            self.final.parent.glob(f".{self.final.name}.old-*")
        )

    @contextlib.contextmanager
    def locked(self, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                if on_wait is not None:
                    on_wait(f"another run (pid {holder}) is writing {self.final}; waiting for it to finish")
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            # Holding the lock, anything half-written beside the output is debris of a dead run.
            for stale in self.debris():
                shutil.rmtree(stale, ignore_errors=True)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def check_replaceable(self, key: str, force: bool) -> dict[str, Any] | None:
        """The manifest of a valid cache hit, None when the stage must run. Refuses to overwrite a
        directory that is not this stage's output, or one built from other inputs, without --force."""
        if not self.final.exists():
            return None
        manifest = read_manifest(self.final)
        if manifest is not None and manifest.get("key") == key and outputs_intact(self.final, manifest):
            return manifest
        if force:
            return None
        if manifest is None:
            raise UsageError(
                f"{self.final} exists and is not a swallow-trt stage output",
                "choose another --out, or pass --force to replace it",
            )
        raise UsageError(
            f"{self.final} holds an output built from other inputs (key {str(manifest.get('key'))[:12]})",
            "choose another --out, or pass --force to replace it",
        )

    @contextlib.contextmanager
    def building(self, log_name: str) -> Iterator[Path]:
        """A fresh temporary sibling to build in. On failure it is removed, and the stage's log is kept
        beside the output as ``<name>.failed.log`` (named in the error's hint); Ctrl-C keeps nothing."""
        temp = self.temp_path()
        temp.mkdir(parents=True)
        try:
            yield temp
        except BaseException as exc:
            log = temp / log_name
            if log.is_file() and not isinstance(exc, KeyboardInterrupt):
                kept = self.final.parent / f"{self.final.name}.failed.log"
                shutil.copyfile(log, kept)
                if isinstance(exc, StageFailed):
                    exc.hint = f"full log: {kept}; " + (exc.hint or "")
            shutil.rmtree(temp, ignore_errors=True)
            raise

    def commit(self, temp: Path, manifest: dict[str, Any], logs: tuple[str, ...] = ()) -> dict[str, Any]:
        """Checksum the outputs, write the manifest, fsync, and rename ``temp`` into place. ``logs``
        are kept beside the outputs but not checksummed (their timestamps differ run to run)."""
        outputs: dict[str, Any] = {}
        for p in sorted(temp.rglob("*")):
            if p.is_file() and p.name not in logs and p.name != MANIFEST:
                outputs[str(p.relative_to(temp))] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        manifest = {
            **manifest,
            "outputs": outputs,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json_atomic(temp / MANIFEST, manifest)
        for p in [*temp.rglob("*"), temp]:
            _fsync(p)
        old = None
        if self.final.exists():
            old = self.final.parent / f".{self.final.name}.old-{os.getpid()}"
            os.replace(self.final, old)
        os.replace(temp, self.final)
        _fsync(self.final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return manifest


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
