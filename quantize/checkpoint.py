"""Checkpoint input: resolve a local directory or a hub id, and check it before anything loads.

Only JSON and safetensors headers are read here (no torch): a missing or truncated shard, an index
that points at absent files, pickle-only weights or an unsupported architecture are reported in one
line before the expensive stage starts.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swallow_trt.arch import ModelArch, arch_from_hf_config, read_hf_config
from swallow_trt.errors import ConfigFileError, EnvironmentProblem, UsageError
from swallow_trt.registry import ResolvedModel

# What is fetched from the hub: weights in safetensors, configs, tokenizer and generation config.
HUB_PATTERNS = [
    "*.safetensors",
    "model.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "*.tiktoken",
]
PICKLE_PATTERNS = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    config: dict[str, Any]
    arch: ModelArch
    weight_files: list[Path]
    weight_format: str  # "safetensors" | "pickle"
    weight_bytes: int
    fingerprint: str
    has_tokenizer: bool


def safetensors_header(path: Path) -> dict[str, Any]:
    """Read and check one safetensors file's header; a file shorter than its header says is refused."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise UsageError(f"{path} is truncated ({size} bytes)", "re-download or re-save the checkpoint")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100 * 2**20:
            raise UsageError(
                f"{path} is truncated or not a safetensors file (header of {n} bytes in a {size}-byte file)",
                "re-download or re-save the checkpoint",
            )
        raw = f.read(n)
    try:
        header: dict[str, Any] = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UsageError(
            f"{path} has a corrupt safetensors header", "re-download or re-save the checkpoint"
        ) from None
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        raise UsageError(
            f"{path} is truncated: {size} bytes on disk, its header describes {8 + n + end}",
            "re-download or re-save the checkpoint",
        )
    return header


def _index_files(directory: Path, index_name: str) -> list[Path]:
    index_path = directory / index_name
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        names = sorted(set(index["weight_map"].values()))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise ConfigFileError(
            f"{index_path}: not a valid weight index", "re-download the checkpoint"
        ) from None
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise UsageError(
            f"{index_path.name} points at {len(missing)} absent file(s): {', '.join(missing[:3])}"
            + (" ..." if len(missing) > 3 else ""),
            "the download is incomplete: fetch the missing shards (re-run with the hub id) or re-save the checkpoint",
        )
    if index_name.endswith(".safetensors.index.json"):
        stray = sorted(p.name for p in directory.glob("*.safetensors") if p.name not in names)
        if stray:
            raise UsageError(
                f"{index_name} does not reference {', '.join(stray[:3])}: the index and the shards disagree",
                "re-download the checkpoint or re-save it with save_pretrained",
            )
        for name in names:
            header = safetensors_header(directory / name)
            listed = {t for t, f in index["weight_map"].items() if f == name}
            absent = sorted(listed - header.keys())
            if absent:
                raise UsageError(
                    f"{index_name} places {absent[0]} in {name}, which does not hold it",
                    "re-download the checkpoint or re-save it with save_pretrained",
                )
    return [directory / n for n in names]


def inspect_checkpoint(directory: Path, allow_pickle: bool = False) -> CheckpointInfo:
    if not directory.is_dir():
        raise UsageError(
            f"checkpoint directory {directory} does not exist", "pass a Hugging Face checkpoint directory"
        )
    config = read_hf_config(directory)
    arch = arch_from_hf_config(config, str(directory / "config.json"))
    if (directory / "model.safetensors.index.json").is_file():
        files = _index_files(directory, "model.safetensors.index.json")
        fmt = "safetensors"
    elif sorted(directory.glob("*.safetensors")):
        files = sorted(directory.glob("*.safetensors"))
        fmt = "safetensors"
    else:
        pickles = sorted(p for pattern in ("pytorch_model*.bin",) for p in directory.glob(pattern))
        if not pickles:
            raise UsageError(f"{directory} holds no weights (*.safetensors)", "check the path or re-download")
        if not allow_pickle:
            raise UsageError(
                f"{directory} has only pickle weights ({pickles[0].name}); loading pickles can run arbitrary code",
                "convert the checkpoint to safetensors, or pass --allow-pickle if you trust its source",
            )
        if (directory / "pytorch_model.bin.index.json").is_file():
            files = _index_files(directory, "pytorch_model.bin.index.json")
        else:
            files = pickles
        fmt = "pickle"
    digest = hashlib.sha256()
    for name in ("config.json", "generation_config.json", *TOKENIZER_FILES):
        p = directory / name
        if p.is_file():
            digest.update(name.encode() + b"\0" + p.read_bytes())
    total = 0
    for f in files:
        st = f.stat()
        total += st.st_size
        # Weights are keyed by name, size, modification time and (safetensors) the header: a 140 GB
        # checkpoint is not re-hashed on every run, yet a rewritten or replaced shard is a new key.
        digest.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        if fmt == "safetensors":
            digest.update(json.dumps(safetensors_header(f), sort_keys=True).encode())
    has_tok = any((directory / n).is_file() for n in ("tokenizer.json", "tokenizer.model"))
    return CheckpointInfo(
        path=directory.resolve(),
        config=config,
        arch=arch,
        weight_files=files,
        weight_format=fmt,
        weight_bytes=total,
        fingerprint=digest.hexdigest(),
        has_tokenizer=has_tok,
    )


def fetch_checkpoint(model: ResolvedModel, revision: str | None, allow_pickle: bool) -> Path:
    """A local directory as is; a registry/hub id through huggingface_hub (HF_HOME, HF_TOKEN and
    HF_HUB_OFFLINE are honoured by the library; downloads resume)."""
    if model.local_path is not None:
        return model.local_path
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:
        raise EnvironmentProblem(
            "huggingface_hub is not installed",
            "pip install 'swallow-trt[quantize]', or pass a local checkpoint",
        ) from None
    patterns = HUB_PATTERNS + (PICKLE_PATTERNS if allow_pickle else [])
    try:
        return Path(snapshot_download(model.hf_ref, revision=revision, allow_patterns=patterns))
    except LocalEntryNotFoundError:
        raise EnvironmentProblem(
            f"{model.hf_ref} is not in the local Hugging Face cache and the hub cannot be reached",
            "connect to the hub (unset HF_HUB_OFFLINE) or pass a local checkpoint directory",
        ) from None
    except HfHubHTTPError as exc:
        raise EnvironmentProblem(
            f"downloading {model.hf_ref} failed: {str(exc).splitlines()[0]}",
            "check the id, your network and HF_TOKEN (gated models need an accepted licence)",
        ) from None
    except OSError as exc:
        raise EnvironmentProblem(
            f"downloading {model.hf_ref} failed: {exc}", "check disk space and HF_HOME"
        ) from None
