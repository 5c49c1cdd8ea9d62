"""Wall time and peak RSS of the quantize stage on CPU for a random ~0.5 B-parameter Llama-shaped model.

Peak RSS is the largest resident set among the stage's processes (the CLI and its modelopt worker),
read from the kernel's accounting of waited-for descendants; it is reported as a multiple of the
model's bytes on disk, the figure that says whether a 70B conversion fits a given host.

    python benchmarks/quantize_memory.py [--formats full_prec,fp8] [--calib-size 32] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

# ~0.5 B parameters with the Llama-2 Swallow vocabulary (43,176) and GQA.
SHAPE = {
    "hidden_size": 1536,
    "intermediate_size": 4096,
    "num_hidden_layers": 14,
    "num_attention_heads": 12,
    "num_key_value_heads": 4,
    "vocab_size": 43176,
}


def build_model(directory: Path) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.fixtures.tiny import make_checkpoint

    make_checkpoint(directory, "llama2", **SHAPE)
    return sum(p.stat().st_size for p in directory.glob("*.safetensors"))


def run_stage(ckpt: Path, out: Path, qformat: str, calib_size: int, home: Path) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes of the stage's process tree) in a fresh child process."""
    code = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter()\n"
        "rc = subprocess.run(sys.argv[1:]).returncode\n"
        "wall = time.perf_counter() - t\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024\n"
        "print(json.dumps({'rc': rc, 'wall': wall, 'peak': peak}))\n"
    )
    argv = [sys.executable, "-m", "swallow_trt.cli.main", "quantize", "--model", str(ckpt), "--qformat", qformat,
            "--kv-cache-dtype", "auto", "--calib-size", str(calib_size), "--calib-max-seq-len", "256",
            "--eval-samples", "4", "--eval-seq-len", "256", "--out", str(out), "--json"]  # fmt: skip
    env = dict(os.environ, SWALLOW_TRT_HOME=str(home))
    res = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, check=True
    )
    data = json.loads(res.stdout.strip().splitlines()[-1])
    if data["rc"] != 0:
        raise SystemExit(f"quantize {qformat} failed with exit code {data['rc']}")
    return float(data["wall"]), int(data["peak"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--formats", default="full_prec,fp8")
    ap.add_argument("--calib-size", type=int, default=32)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="swallow-trt-bench-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        model_bytes = build_model(root / "model")
        build_s = time.perf_counter() - t
        from swallow_trt.arch import arch_from_hf_config, read_hf_config

        params = arch_from_hf_config(read_hf_config(root / "model"), "config.json").total_params
        rows = []
        for fmt in args.formats.split(","):
            wall, peak = run_stage(root / "model", root / f"out-{fmt}", fmt, args.calib_size, root / "home")
            rows.append({"qformat": fmt, "wall_s": round(wall, 1), "peak_rss_bytes": peak,
                         "peak_rss_over_model_bytes": round(peak / model_bytes, 2)})  # fmt: skip
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "model": {"params": params, "bytes": model_bytes, "shape": SHAPE, "build_s": round(build_s, 1)},
        "calibration": f"{args.calib_size} x 256 tokens, quality report 4 x 256 tokens",
        "self_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "runs": rows,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['machine']}; random model {params / 1e9:.3f} B params, {model_bytes / 2**30:.2f} GiB (bf16)"
        )
        print(f"calibration {result['calibration']}")
        for r in rows:
            print(f"  {r['qformat']:<10} wall {r['wall_s']:7.1f} s   peak RSS {r['peak_rss_bytes'] / 2**30:6.2f} GiB"
                  f"   = {r['peak_rss_over_model_bytes']:.2f} x model bytes")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
