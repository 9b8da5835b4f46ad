"""How often does tbench's compare rule cry wolf, and how often does it catch a real slowdown?

    python benchmarks/bench_gate.py [--trials 200] [--thresholds 0.05 0.10] [--rounds 1] [--json FILE]
        [--min-samples 10 --min-time-s 0.5 --max-samples 200 --warmup-s 0.2]

Each trial times a small CPU workload (``reps`` 160x160 float64 matmuls per sample, one BLAS
thread) the way the harness does (``harness.measure.timing`` with MeasureSpec's default settings:
warm-up, then per-sample wall times until 10 samples AND 0.5 s, at most 200),
once as the baseline side and once as the current side, and feeds both sample lists to
``harness.analyse.compare.timing_verdict`` -- the exact decision ``tbench compare`` makes.

  * ``--rounds 1``: the two sides run back to back, like two separate runs compared with
    ``tbench compare`` (machine drift between the runs counts against the rule);
  * ``--rounds R > 1``: each side is sampled in R blocks alternating A, B, A, B, ... and the
    blocks are pooled, like ``tbench gate --ab --rounds R`` (drift hits both sides alike).
Every trial's samples are judged at each of ``--thresholds``.

  * A/A: both sides run the same work; any "regression" is a false alarm.
  * injected slowdown: the current side REALLY does 20% more work (6 matmuls per sample
    instead of 5), no scaling of numbers; "regression" is a detection.

The two kinds of trial alternate (A/A, slowdown, A/A, ...) so machine drift hits both alike.
Prints the rates with exact (Clopper-Pearson) 95% intervals. No torch.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads BLAS
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy.stats import beta  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness.analyse.compare import timing_verdict  # noqa: E402
from harness.measure.timing import sample, warmup  # noqa: E402

BASE_REPS, SLOW_REPS = 5, 6  # 6 / 5 = 20% more work
SIZE = 160


def make_step(reps: int):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((SIZE, SIZE)), rng.standard_normal((SIZE, SIZE))

    def step():
        x = a
        for _ in range(reps):
            x = (x @ b) * 0.01
        return x

    return step


def side(reps: int, args, rounds: int = 1) -> list[float]:
    """One side (or one of ``rounds`` blocks of it), sampled with a point's MeasureSpec settings."""
    step = make_step(reps)
    warmup(step, "cpu", iters=3, min_s=args.warmup_s / rounds)
    samples, _ = sample(step, "cpu", min_samples=max(1, -(-args.min_samples // rounds)),
                        min_time_s=args.min_time_s / rounds,
                        max_samples=max(1, args.max_samples // rounds))
    return samples


def trial(base_reps: int, cur_reps: int, args) -> tuple[list[float], list[float]]:
    """Both sides of one comparison: back to back, or in alternating blocks."""
    base, cur = [], []
    for _ in range(args.rounds):
        base += side(base_reps, args, args.rounds)
        cur += side(cur_reps, args, args.rounds)
    return base, cur


def clopper_pearson(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    a = (1 - conf) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=200, help="trials of each kind")
    # harness.suite.schema.MeasureSpec defaults: min_samples 10, min_time_s 0.5, max_samples 200
    p.add_argument("--min-samples", type=int, default=10)
    p.add_argument("--min-time-s", type=float, default=0.5)
    p.add_argument("--max-samples", type=int, default=200)
    p.add_argument("--warmup-s", type=float, default=0.2)
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.10],
                   help="judge each trial at these thresholds; the first decides PASS/FAIL")
    p.add_argument("--rounds", type=int, default=1, help="1 = back to back; R = R alternating blocks")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    counts = {t: {"aa": {}, "slow": {}} for t in args.thresholds}
    ratios = {"aa": [], "slow": []}
    n_samples = []
    t0 = time.perf_counter()
    for _ in range(args.trials):
        for kind, reps in (("aa", BASE_REPS), ("slow", SLOW_REPS)):
            base, cur = trial(BASE_REPS, reps, args)
            n_samples += [len(base), len(cur)]
            for t in args.thresholds:
                r = timing_verdict(base, cur, t)
                counts[t][kind][r.verdict] = counts[t][kind].get(r.verdict, 0) + 1
            ratios[kind].append(r.ratio)
    n = args.trials
    out = {
        "trials": n, "rounds": args.rounds,
        "measure": {"min_samples": args.min_samples, "min_time_s": args.min_time_s,
                    "max_samples": args.max_samples, "warmup_s": args.warmup_s},
        "workload": f"{BASE_REPS} vs {SLOW_REPS} matmuls {SIZE}x{SIZE} float64 per sample",
        "samples_per_side_median": float(np.median(n_samples)),
        "aa_ratio_p5_p95": [float(np.percentile(ratios["aa"], q)) for q in (5, 95)],
        "slowdown_ratio_median": float(np.median(ratios["slow"])),
        "by_threshold": {},
        "wall_s": None,
    }
    for t in args.thresholds:
        fa, det = counts[t]["aa"].get("regression", 0), counts[t]["slow"].get("regression", 0)
        out["by_threshold"][f"{t:g}"] = {
            "aa_verdicts": dict(sorted(counts[t]["aa"].items())),
            "slowdown_verdicts": dict(sorted(counts[t]["slow"].items())),
            "aa_false_alarm_rate": fa / n, "aa_false_alarm_ci95": clopper_pearson(fa, n),
            "slowdown_detection_rate": det / n,
            "slowdown_detection_ci95": clopper_pearson(det, n)}
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    first = out["by_threshold"][f"{args.thresholds[0]:g}"]
    ok = first["aa_false_alarm_rate"] < 0.01 and first["slowdown_detection_rate"] >= 0.95
    print("PASS" if ok else "FAIL", f"at threshold {args.thresholds[0]:g}, rounds {args.rounds}"
          " (targets: false alarms < 1%, detection >= 95%)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
