"""Every SWALLOW_TRT_* environment variable, read in one place.

Precedence everywhere in the tool: CLI flag > profile file > environment default > built-in default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_VARS: dict[str, str] = {
    "SWALLOW_TRT_DEBUG": "1 shows Python tracebacks instead of the one-line error",
    "SWALLOW_TRT_HOME": "cache and output root (default: $XDG_CACHE_HOME/swallow-trt or ~/.cache/swallow-trt)",
    "SWALLOW_TRT_HOST_RAM_GIB": "host RAM the planner assumes (default: read from /proc/meminfo)",
    "SWALLOW_TRT_API_KEY": "API key the OpenAI-compatible API requires on every /v1 route (--api-key wins)",
    "SWALLOW_TRT_API_CONFIG": "internal: the OpenAI API's settings (JSON), passed to its --workers processes",
    "SWALLOW_TRT_TRITON_GRPC": "internal: the gRPC address of the Triton 2.51 (nvidia-pytriton) a chat model runs "
    "in; chat streams tensorrt_llm over it, since that release's BLS loses error responses",
    "SWALLOW_TRT_STUB_DEATHS": "internal: the file where the stub watcher of the Triton that serve started records "
    "dead stubs; the OpenAI API it starts ends the requests it had in flight on them",
}


@dataclass(frozen=True)
class Settings:
    debug: bool
    home: Path
    host_ram_gib: float | None
    api_key: str | None = None
    api_config: str | None = None
    triton_grpc: str | None = None
    stub_deaths: Path | None = None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    cache_root = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    home = Path(env["SWALLOW_TRT_HOME"]) if env.get("SWALLOW_TRT_HOME") else cache_root / "swallow-trt"
    ram_text = env.get("SWALLOW_TRT_HOST_RAM_GIB")
    host_ram: float | None = None
    if ram_text:
        try:
            host_ram = float(ram_text)
        except ValueError:
            from swallow_trt.errors import UsageError

            raise UsageError(
                f"SWALLOW_TRT_HOST_RAM_GIB={ram_text!r} is not a number",
                "set it to the host memory in GiB, e.g. 64, or unset it",
            ) from None
    return Settings(
        debug=_truthy(env.get("SWALLOW_TRT_DEBUG")),
        home=home,
        host_ram_gib=host_ram,
        api_key=env.get("SWALLOW_TRT_API_KEY") or None,
        api_config=env.get("SWALLOW_TRT_API_CONFIG") or None,
        triton_grpc=env.get("SWALLOW_TRT_TRITON_GRPC") or None,
        stub_deaths=Path(env["SWALLOW_TRT_STUB_DEATHS"]) if env.get("SWALLOW_TRT_STUB_DEATHS") else None,
    )
