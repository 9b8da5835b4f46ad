"""How often does tbench's compare rule cry wolf, and how often does it catch a real slowdown?

    python benchmarks/bench_gate.py [--trials 200] [--rounds 3] [--thresholds 0.05 0.10]
        [--min-samples 10 --min-time-s 0.2 --max-samples 200 --warmup-s 0.05] [--json FILE]

A trial compares two separate runs made back to back, the way CI compares today's run with
yesterday's baseline: first every round of the "base" run, then every round of the "current"
run (not interleaved, so drift of the machine between the two runs counts against the rule).
A round is what it is in tbench: a FRESH PYTHON PROCESS (this script with ``--one-round``) that
times a small CPU workload (``reps`` 160x160 float64 matmuls per sample, one BLAS thread) with
``harness.measure.timing`` (warm-up, then samples until ``--min-samples`` AND ``--min-time-s``).

Each trial is judged twice, with what ``tbench compare`` does:
  * ``rounds``: the rule of points measured in >= 2 rounds (``compare.rounds_verdict``: ratio of
    the means of round medians beyond the threshold AND a one-sided Welch t-test on the log
    round medians, p < 0.01) -- the rule tbench uses now;
  * ``samples``: the older rule on the pooled per-sample times (``compare.timing_verdict``:
    Mann-Whitney U, as if all samples were independent) -- shown for contrast.

  * A/A: both runs do the same work; any "regression" is a false alarm.
  * injected slowdown: the current run REALLY does 20% more work (6 matmuls per sample instead
    of 5), no scaling of numbers; "regression" is a detection.
The two kinds of trial alternate (A/A, slowdown, A/A, ...) so drift hits both alike. Prints the
rates with exact (Clopper-Pearson) 95% intervals and the measured between-round spread. No torch.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads BLAS
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# a round's process imports numpy and harness.measure.timing only: scipy (compare) loads in the
# parent, so a round costs what a worker's own start costs, not a second of imports

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


def one_round(reps: int, args) -> list[float]:
    """In the fresh process: warm up and sample like a point with these measure settings."""
    from harness.measure.timing import sample, warmup

    step = make_step(reps)
    warmup(step, "cpu", iters=3, min_s=args.warmup_s)
    samples, _ = sample(step, "cpu", min_samples=args.min_samples, min_time_s=args.min_time_s,
                        max_samples=args.max_samples)
    return samples


def spawn_round(reps: int, args) -> list[float]:
    cmd = [sys.executable, __file__, "--one-round", str(reps), "--min-samples", str(args.min_samples),
           "--min-time-s", str(args.min_time_s), "--max-samples", str(args.max_samples),
           "--warmup-s", str(args.warmup_s)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout)


def run(reps: int, args) -> list[list[float]]:
    """One "tbench run" of the point: ``--rounds`` fresh processes, one after the other."""
    return [spawn_round(reps, args) for _ in range(args.rounds)]


def clopper_pearson(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    from scipy.stats import beta

    a = (1 - conf) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def rounds_needed(cv: float, change: float = 1.2, alpha: float = 0.01, power: float = 0.95) -> int:
    """Rounds per side a one-sided two-sample test needs to catch ``change`` with ``power`` at
    ``alpha`` when round medians spread by ``cv`` (normal approximation, +1 for the t's tails):
    ``2 (z_alpha + z_power)^2 cv^2 / log(change)^2``."""
    from scipy.stats import norm

    z = norm.ppf(1 - alpha) + norm.ppf(power)
    return int(np.ceil(2 * z**2 * cv**2 / np.log(change) ** 2)) + 1


def rates(verdicts: dict[str, int], n: int) -> dict:
    k = verdicts.get("regression", 0)
    return {"verdicts": dict(sorted(verdicts.items())), "regression_rate": k / n,
            "regression_ci95": clopper_pearson(k, n)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=200, help="trials of each kind")
    p.add_argument("--rounds", type=int, default=3, help="fresh processes per run (measure.rounds)")
    p.add_argument("--min-samples", type=int, default=10)
    p.add_argument("--min-time-s", type=float, default=0.2)
    p.add_argument("--max-samples", type=int, default=200)
    p.add_argument("--warmup-s", type=float, default=0.05)
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.10],
                   help="judge each trial at these thresholds; the first decides PASS/FAIL")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--one-round", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one_round is not None:
        print(json.dumps(one_round(args.one_round, args)))
        return 0
    if args.rounds < 2:
        p.error("--rounds must be >= 2: the rule judges on round medians")
    from harness.analyse.compare import rounds_verdict, timing_verdict
    from harness.records import stats
    rules = ("rounds", "samples")
    counts = {(rule, t, kind): {} for rule in rules for t in args.thresholds for kind in ("aa", "slow")}
    ratios, cvs = {"aa": [], "slow": []}, []
    t0 = time.perf_counter()
    for _ in range(args.trials):
        for kind, reps in (("aa", BASE_REPS), ("slow", SLOW_REPS)):
            base, cur = run(BASE_REPS, args), run(reps, args)
            mb, mc = [stats.median(r) for r in base], [stats.median(r) for r in cur]
            cvs += [stats.stdev(m) / stats.mean(m) for m in (mb, mc) if kind == "aa"]
            pooled_b, pooled_c = [x for r in base for x in r], [x for r in cur for x in r]
            for t in args.thresholds:
                for rule, verdict in (("rounds", rounds_verdict(mb, mc, t)),
                                      ("samples", timing_verdict(pooled_b, pooled_c, t))):
                    c = counts[(rule, t, kind)]
                    c[verdict.verdict] = c.get(verdict.verdict, 0) + 1
            ratios[kind].append(stats.mean(mc) / stats.mean(mb))
    n = args.trials
    out = {
        "trials": n, "rounds": args.rounds,
        "measure": {"min_samples": args.min_samples, "min_time_s": args.min_time_s,
                    "max_samples": args.max_samples, "warmup_s": args.warmup_s},
        "workload": f"{BASE_REPS} vs {SLOW_REPS} matmuls {SIZE}x{SIZE} float64 per sample",
        "between_round_cv_median": float(np.median(cvs)),
        "between_round_cv_p90": float(np.percentile(cvs, 90)),
        "rounds_needed_at_median_cv": rounds_needed(float(np.median(cvs))),
        "aa_ratio_p1_p99": [float(np.percentile(ratios["aa"], q)) for q in (1, 99)],
        "slowdown_ratio_median": float(np.median(ratios["slow"])),
        "loadavg_end": os.getloadavg()[0],
        "by_rule": {rule: {f"{t:g}": {"aa": rates(counts[(rule, t, "aa")], n),
                                      "slowdown": rates(counts[(rule, t, "slow")], n)}
                           for t in args.thresholds} for rule in rules},
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    first = out["by_rule"]["rounds"][f"{args.thresholds[0]:g}"]
    ok = first["aa"]["regression_rate"] <= 0.01 and first["slowdown"]["regression_rate"] >= 0.95
    print("PASS" if ok else "FAIL", f"at threshold {args.thresholds[0]:g}, {args.rounds} rounds per run"
          " (targets: false alarms <= 1%, detection >= 95%)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
