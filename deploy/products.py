"""The ``nvidia.com/gpu.product`` node label of each GPU the shipped profiles name.

NVIDIA's GPU feature discovery (NVIDIA/k8s-device-plugin, internal/lm/resource.go ``sanitise`` at
1b826acc6af3079d8923bac395c3124b8861a9a6) labels a node with the NVML device name, characters outside
``[A-Za-z0-9-_. ]`` removed and runs of spaces joined by ``-``. The NVML names are those ``nvidia-smi
--query-gpu=name`` prints for each product (the H100 SXM one is also in this repository's tests).
"""

from __future__ import annotations

import re

from swallow_trt.errors import UsageError

# profile GPU name -> NVML device name
NVML_NAMES: dict[str, str] = {
    "H100-SXM5-80GB": "NVIDIA H100 80GB HBM3",
    "H100-PCIE-80GB": "NVIDIA H100 PCIe",
    "H200-SXM-141GB": "NVIDIA H200",
    "A100-SXM4-80GB": "NVIDIA A100-SXM4-80GB",
    "A100-SXM4-40GB": "NVIDIA A100-SXM4-40GB",
    "A100-PCIE-80GB": "NVIDIA A100 80GB PCIe",
    "A10": "NVIDIA A10",
    "L40S": "NVIDIA L40S",
    "L4": "NVIDIA L4",
    "RTX-4090": "NVIDIA GeForce RTX 4090",
}


def sanitise(nvml_name: str) -> str:
    """GPU feature discovery's label value for an NVML device name."""
    return "-".join(re.sub(r"[^A-Za-z0-9\-_. ]", "", nvml_name).split())


def product_label(gpu_name: str) -> str:
    """The node label value for a profile's GPU; UsageError for a GPU with no known label."""
    nvml = NVML_NAMES.get(gpu_name)
    if nvml is None:
        raise UsageError(
            f"no nvidia.com/gpu.product label is known for GPU {gpu_name!r}",
            "use a shipped target (see `swallow-trt targets`) or one of its GPUs with --gpu: "
            + ", ".join(NVML_NAMES),
        )
    return sanitise(nvml)
