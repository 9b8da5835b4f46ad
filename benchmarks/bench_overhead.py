"""Harness overhead: wall time of a whole sweep over the time spent in measured work.

    python benchmarks/bench_overhead.py [SUITE=suites/smoke.yaml] [--device cpu]
    python benchmarks/bench_overhead.py --points 20 [--fresh] [--json benchmarks/results/bench_overhead.json]

Runs ``tbench run SUITE --out <tmp>`` as a user would (a subprocess, so process start-up, suite
validation, every worker's start, model build, warm-up and writing results all count), then
reads the run with ``harness.records.load_run``. Measured work = the sum of every
point's ``samples_ms``. Prints wall time, measured time, their ratio and the per-point breakdown.

``--points N``: a generated suite of N tiny single-process CPU points (one round each), and the
two numbers issue 15 sets targets for:
  * per-point overhead: the median over points of (the point's duration - its measured work):
    worker start (a fork of the run's warm fork server; ``--fresh``: a new Python process),
    model build, warm-up, writing the result; target <= 0.3 s on a 2-core CPU;
  * fixed cost of a run: wall - the sum of point durations, plus the first point's excess over
    the median (the fork server's start-up lands in it): CLI start-up, suite loading, the
    environment, reports; target <= 1 s. Its parts are measured apart as well: ``tbench run
    --dry-run`` (start-up and suite loading) and ``report.write_reports`` in a fresh process.
``--json PATH`` writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAST = {"warmup_iters": 1, "warmup_s": 0.0, "min_samples": 10, "min_time_s": 0.0, "max_samples": 10,
        "rounds": 1}
TARGETS = {"per_point_overhead_s": 0.3, "fixed_cost_s": 1.0}


def tiny_suite(folder: Path, n: int) -> Path:
    import yaml

    path = folder / f"overhead{n}.yaml"
    path.write_text(yaml.safe_dump({
        "name": f"overhead{n}", "device": "cpu", "model": {"preset": "tiny"},
        "workload": {"kind": "forward", "batch_size": 1, "seq_len": 8, "num_batches": 1},
        "measure": FAST, "sweep": {"grid": {"workload.seq_len": list(range(8, 8 + n))}}},
        sort_keys=False))
    return path


def timed(cmd: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    return time.perf_counter() - t0, done


def sweep(suite: str, device: str, extra: list[str], folder: Path):
    out = folder / "run"
    wall_s, done = timed([sys.executable, "-m", "harness.cli", "run", suite, "--out", str(out),
                          "--device", device, *extra], folder)
    if done.returncode not in (0, 3):
        print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
        raise SystemExit(done.returncode)
    from harness.analyse.frame import load_run

    return wall_s, out, load_run(out)


def points_mode(args) -> int:
    folder = Path(tempfile.mkdtemp(prefix="tbench-overhead-"))
    suite = str(tiny_suite(folder, args.points))
    extra = ["--fresh-workers"] if args.fresh else []
    wall_s, out, df = sweep(suite, "cpu", extra, folder)
    durations = list(df["duration_s"])
    measured = [sum(s) / 1e3 for s in df["samples_ms"]]
    per_point = [d - m for d, m in zip(durations, measured)]
    median_d = statistics.median(durations)
    fixed_s = wall_s - sum(durations) + (durations[0] - median_d)
    startup_s, _ = timed([sys.executable, "-m", "harness.cli", "run", suite, "--dry-run"], folder)
    report_s, _ = timed([sys.executable, "-c", "import sys; from harness.analyse import report; "
                         "report.write_reports(sys.argv[1])", str(out)], folder)
    result = {
        "points": args.points, "workers": "fresh processes" if args.fresh else "fork server",
        "statuses": df["status"].value_counts().to_dict(),
        "wall_s": round(wall_s, 3), "measured_s": round(sum(measured), 3),
        "per_point_overhead_s_median": round(statistics.median(per_point), 3),
        "per_point_overhead_s_p90": round(sorted(per_point)[int(0.9 * (len(per_point) - 1))], 3),
        "first_point_s": round(durations[0], 3), "point_s_median": round(median_d, 3),
        "fixed_cost_s": round(fixed_s, 3),
        "startup_and_suite_loading_s": round(startup_s, 3), "report_writing_s": round(report_s, 3),
        "targets": TARGETS, "loadavg_end": os.getloadavg()[0], "run_folder": str(out),
    }
    print(json.dumps(result, indent=2))
    ok = (result["per_point_overhead_s_median"] <= TARGETS["per_point_overhead_s"]
          and result["fixed_cost_s"] <= TARGETS["fixed_cost_s"])
    print(("PASS" if ok else "MISS") + f": per-point overhead {result['per_point_overhead_s_median']:.3f} s "
          f"(target <= 0.3), fixed cost {result['fixed_cost_s']:.3f} s (target <= 1)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("suite", nargs="?", default=str(ROOT / "suites" / "smoke.yaml"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--points", type=int, help="a generated suite of N tiny CPU points instead")
    ap.add_argument("--fresh", action="store_true", help="--fresh-workers (no fork server)")
    ap.add_argument("--json", type=Path, help="write the --points numbers here")
    args = ap.parse_args()
    if args.points:
        return points_mode(args)
    folder = Path(tempfile.mkdtemp(prefix="tbench-overhead-"))
    wall_s, out, df = sweep(args.suite, args.device, ["--fresh-workers"] if args.fresh else [], folder)
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
