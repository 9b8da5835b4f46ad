"""Harness overhead: wall time of a whole sweep over the time spent in measured work.

    python benchmarks/bench_overhead.py [SUITE=suites/smoke.yaml] [--device cpu]

Runs ``tbench run SUITE --out <tmp>`` as a user would (a subprocess, so process start-up, suite
validation, every worker's torch import, model build, warm-up and writing results all count),
then reads the run with ``harness.analyse.results.load_run``. Measured work = the sum of every point's
``samples_ms``. Prints wall time, measured time, their ratio and the per-point breakdown.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.analyse.results import load_run

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("suite", nargs="?", default=str(ROOT / "suites" / "smoke.yaml"))
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="tbench-overhead-")) / "run"
    cmd = [sys.executable, "-m", "harness.cli", "run", args.suite, "--out", str(out),
           "--device", args.device]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall_s = time.perf_counter() - t0
    if done.returncode not in (0, 3):
        print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
        return done.returncode
    df = load_run(out)
    measured_s = sum(sum(s) for s in df["samples_ms"]) / 1e3
    worker_s = df["duration_s"].sum()
    print(f"suite {args.suite}: {len(df)} points, statuses {df['status'].value_counts().to_dict()}")
    for _, row in df.iterrows():
        print(f"  {row['label']:<40} {row['status']:<13} point {row['duration_s']:6.2f} s, "
              f"measured {sum(row['samples_ms']) / 1e3:6.3f} s ({len(row['samples_ms'])} samples)")
    print(f"wall time of the sweep      {wall_s:8.2f} s")
    print(f"sum of point durations      {worker_s:8.2f} s  (worker start-up, build, warm-up, samples)")
    print(f"time in measured work       {measured_s:8.2f} s")
    print(f"overhead ratio wall/measured {wall_s / measured_s:7.2f}x")
    print(f"run folder: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
