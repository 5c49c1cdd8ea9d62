"""GPU facts (shipped copy of shared/contracts/gpus.json) and detection of the GPUs present.

Detection runs ``nvidia-smi`` (argv list, short deadline) and never imports CUDA libraries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

NVIDIA_SMI_QUERY = [
    "nvidia-smi",
    "--query-gpu=name,compute_cap,memory.total",
    "--format=csv,noheader,nounits",
]


@dataclass(frozen=True)
class DetectedGpu:
    name: str
    sm: int
    memory_mib: int


@cache
def gpu_facts() -> dict[str, Any]:
    text = (Path(__file__).parent / "data" / "gpus.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def parse_nvidia_smi(text: str) -> list[DetectedGpu]:
    gpus: list[DetectedGpu] = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3 or not parts[0]:
            continue
        try:
            major, _, minor = parts[1].partition(".")
            gpus.append(DetectedGpu(parts[0], int(major) * 10 + int(minor or 0), int(float(parts[2]))))
        except ValueError:
            continue
    return gpus


def detect_gpus(timeout_s: float = 10.0) -> list[DetectedGpu]:
    """The GPUs nvidia-smi reports; empty when there is no driver or no GPU."""
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        proc = subprocess.run(
            [exe, *NVIDIA_SMI_QUERY[1:]], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if proc.returncode != 0:
        return []
    return parse_nvidia_smi(proc.stdout)


def host_ram_bytes() -> int | None:
    """MemTotal from /proc/meminfo (Linux); None elsewhere."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
