"""Start-up cost of the light commands, as a ratio to ``python -c "import typer"`` in the same run.

Target (issue 3): ``swallow-trt plan`` at most 2x ``import typer``. Runs are interleaved so that
machine noise hits every command alike; medians of N rounds are reported.

    python benchmarks/cli_startup.py [--rounds 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    exe = shutil.which("swallow-trt", path=os.path.dirname(sys.executable)) or shutil.which("swallow-trt")
    if exe is None:
        print("swallow-trt is not installed in this environment: pip install -e .", file=sys.stderr)
        return 2
    plan = ["plan", "--model", "70b", "--tp", "4", "--fp8", "--target", "h100x4"]
    cases = {
        'python -c "import typer"': [sys.executable, "-c", "import typer"],
        "swallow-trt --help": [exe, "--help"],
        "swallow-trt plan --model 70b --tp 4 --fp8 --target h100x4": [exe, *plan],
        "swallow-trt plan ... --json": [exe, *plan, "--json"],
        "swallow-trt build --model 70b --tp 4 --fp8 --target h100x4 --dry-run": [
            exe,
            "build",
            *plan[1:],
            "--dry-run",
        ],
    }
    env = dict(os.environ, COLUMNS="120")
    # Installed packages run from .pyc files; some shells here set PYTHONDONTWRITEBYTECODE, which would
    # make every run recompile the project's sources (typer's own .pyc were written at install time).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    times: dict[str, list[float]] = {k: [] for k in cases}
    for argv in cases.values():  # warm the page cache and .pyc files
        subprocess.run(argv, capture_output=True, env=env, check=True)
    for _ in range(args.rounds):
        for name, argv in cases.items():
            t0 = time.perf_counter()
            subprocess.run(argv, capture_output=True, env=env, check=True)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times['python -c "import typer"'])
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "rounds": args.rounds,
        "median_s": {k: round(statistics.median(v), 4) for k, v in times.items()},
        "ratio_to_import_typer": {k: round(statistics.median(v) / base, 2) for k, v in times.items()},
        "target": "plan <= 2.0x import typer",
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['machine']}, {args.rounds} interleaved rounds, medians")
        for k in cases:
            print(
                f"  {k:<60} {result['median_s'][k] * 1e3:7.1f} ms  {result['ratio_to_import_typer'][k]:.2f}x"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
