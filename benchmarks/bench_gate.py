"""How often does tbench's gate cry wolf, and how often does it catch a real slowdown?

    python benchmarks/bench_gate.py [--trials 100] [--threshold 0.05] [--load] [--design paired]
        [--min-pairs 3] [--max-pairs 30] [--min-time-s 0.2] [--json FILE]

A trial is one gate decision on a small CPU workload (``reps`` 160x160 float64 matmuls per
sample, one BLAS thread), each round a FRESH PYTHON PROCESS (this script with ``--one-round``)
timed by ``harness.measure.timing`` (warm-up, then samples until ``--min-samples`` AND
``--min-time-s``), exactly the decision rule of ``tbench gate --ab`` / ``--rev``:
  * ``--design paired`` (tbench's gate): blocks of one base round and one current round in
    consecutive processes, their order drawn at random per block; after ``--min-pairs`` the
    sequential rule of ``harness.records.pairs`` looks after every pair (look j spends
    0.05 / (j (j + 1))) and the trial stops at the first decision against ``--threshold``
    (regression: the whole interval above 1 + threshold), or at ``--max-pairs``;
  * ``--design independent`` (for contrast: a CI run against yesterday's baseline): every
    round of the base, then every round of the current, ``--min-pairs`` each, judged by Welch on
    the log round medians (``pairs.independent``).
Kinds of trial, alternating so drift hits both alike:
  * A/A: both sides do the same work; a "regression" is a false alarm;
  * slowdown: the current side REALLY does 10% more work (11 matmuls per sample instead of 10);
    "regression" is a detection.
``--load``: a competing process burns a CPU core for the whole benchmark. Prints the rates
with exact (Clopper-Pearson) 95% intervals, pairs and wall time per trial; PASS when false
alarms <= 1% and detections >= 95%. No torch.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads BLAS
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# a round's process imports numpy and harness.measure.timing only: scipy (the decision) loads in
# the parent, so a round costs what a worker's own start costs

BASE_REPS, SLOW_REPS = 10, 11  # 11 / 10 = 10% more work
SIZE = 160
BURN = "while True: pass"


def make_step(reps: int):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((SIZE, SIZE)), rng.standard_normal((SIZE, SIZE))

    def step():
        x = a
        for _ in range(reps):
            x = (x @ b) * 0.01
        return x

    return step


def one_round(reps: int, args) -> float:
    """In the fresh process: warm up and sample like a point; the round's median (ms)."""
    from harness.measure.timing import sample, warmup

    step = make_step(reps)
    warmup(step, "cpu", iters=3, min_s=args.warmup_s)
    samples, _, _ = sample(step, "cpu", min_samples=args.min_samples, min_time_s=args.min_time_s,
                           max_samples=args.max_samples)
    return float(np.median(samples))


def spawn_round(reps: int, args) -> float:
    cmd = [sys.executable, __file__, "--one-round", str(reps), "--min-samples", str(args.min_samples),
           "--min-time-s", str(args.min_time_s), "--max-samples", str(args.max_samples),
           "--warmup-s", str(args.warmup_s)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout)


def paired_trial(reps: int, args, rng: random.Random):
    """Blocks of (base, current) in random order until the sequential rule decides."""
    from harness.records import pairs

    logs: list[float] = []
    for n in range(1, args.max_pairs + 1):
        sides = [("base", BASE_REPS), ("current", reps)]
        rng.shuffle(sides)
        got = {side: spawn_round(r, args) for side, r in sides}
        logs.append(math.log(got["current"] / got["base"]))
        if n >= args.min_pairs:
            ratio = pairs.paired(logs, args.threshold, 0.95, look=n - args.min_pairs + 1)
            if ratio.decided:
                return ratio
    return ratio


def independent_trial(reps: int, args, rng: random.Random):
    from harness.records import pairs

    base = [spawn_round(BASE_REPS, args) for _ in range(args.min_pairs)]
    cur = [spawn_round(reps, args) for _ in range(args.min_pairs)]
    return pairs.independent(base, cur, args.threshold, 0.95)


def clopper_pearson(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    from scipy.stats import beta

    a = (1 - conf) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


VERDICT = {"slower": "regression", "faster": "improvement", "equal": "ok", "undecided": "inconclusive"}


def summary(kind_results: list, n: int) -> dict:
    verdicts: dict[str, int] = {}
    for r in kind_results:
        verdicts[VERDICT[r["verdict"]]] = verdicts.get(VERDICT[r["verdict"]], 0) + 1
    k = verdicts.get("regression", 0)
    return {"verdicts": dict(sorted(verdicts.items())), "regression_rate": k / n,
            "regression_ci95": clopper_pearson(k, n),
            "pairs_median": float(np.median([r["n"] for r in kind_results])),
            "wall_s_per_trial_median": float(np.median([r["wall_s"] for r in kind_results])),
            "wall_s_per_trial_max": float(max(r["wall_s"] for r in kind_results)),
            "ratio_median": float(np.median([r["estimate"] for r in kind_results]))}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=100, help="trials of each kind")
    p.add_argument("--threshold", type=float, default=0.05)
    p.add_argument("--design", choices=("paired", "independent"), default="paired")
    p.add_argument("--load", action="store_true", help="burn one core for the whole run")
    p.add_argument("--min-pairs", type=int, default=3, help="pairs before the first look "
                   "(independent: rounds per side)")
    p.add_argument("--max-pairs", type=int, default=30)
    p.add_argument("--min-samples", type=int, default=10)
    p.add_argument("--min-time-s", type=float, default=0.2)
    p.add_argument("--max-samples", type=int, default=200)
    p.add_argument("--warmup-s", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--one-round", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args()


def main() -> int:
    args = parse()
    if args.one_round is not None:
        print(json.dumps(one_round(args.one_round, args)))
        return 0
    trial = paired_trial if args.design == "paired" else independent_trial
    burner = subprocess.Popen([sys.executable, "-c", BURN], start_new_session=True) if args.load else None
    rng, results = random.Random(args.seed), {"aa": [], "slow": []}
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    try:
        for _ in range(args.trials):
            for kind, reps in (("aa", BASE_REPS), ("slow", SLOW_REPS)):
                t = time.perf_counter()
                r = trial(reps, args, rng)
                results[kind].append({"verdict": r.verdict, "n": r.n, "estimate": r.estimate,
                                      "wall_s": time.perf_counter() - t})
    finally:
        if burner is not None:
            burner.kill()
    out = {"trials": args.trials, "design": args.design, "threshold": args.threshold,
           "load": "one core burned by another process" if args.load else "none added",
           "loadavg_start": load0, "loadavg_end": os.getloadavg()[0],
           "workload": f"{BASE_REPS} vs {SLOW_REPS} matmuls {SIZE}x{SIZE} float64 per sample",
           "measure": {"min_samples": args.min_samples, "min_time_s": args.min_time_s,
                       "max_samples": args.max_samples, "warmup_s": args.warmup_s,
                       "min_pairs": args.min_pairs, "max_pairs": args.max_pairs},
           "aa": summary(results["aa"], args.trials), "slowdown": summary(results["slow"], args.trials),
           "wall_s": round(time.perf_counter() - t0, 1)}
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    ok = out["aa"]["regression_rate"] <= 0.01 and out["slowdown"]["regression_rate"] >= 0.95
    print("PASS" if ok else "FAIL", f"({args.design}, threshold {args.threshold:g}; targets: false "
          "alarms <= 1%, detection of a 10% slowdown >= 95%)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
