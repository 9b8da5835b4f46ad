"""How much narrower is a paired comparison than one of separately measured means?

    python benchmarks/bench_precision.py [--trials 5] [--rounds 3] [--load] [--json FILE]

The same strategy pairs -- dense vs local_w16 and vs block_b32, a tiny decoder-only LM, forward
at 256 tokens, one sequence -- measured by both designs, in one benchmark, the designs
alternating trial by trial (so whatever the machine does over the minutes hits both):
  * separate means (how tbench compared before pairing): ``compare.design: independent``
    (rounds in run order across the sweep) with the threads a point took before (the usable
    cores), each point's headline the arithmetic mean of its round medians with Student's t
    interval (clipped at 0), and the ratio's interval the conservative
    ``[base_low / cand_high, base_high / cand_low]``;
  * paired (tbench now): ``compare.design: auto`` -- a duet where the cores are free,
    interleaved blocks with the threads the machine leaves otherwise -- the ratio's interval
    ``harness.records.pairs.paired`` over the blocks.
Both measure ``--rounds`` rounds per point (the same number of worker processes per point: the
paired design's baseline is measured once per partner in a duet, in parallel). The figure of
merit is the width of the 95% interval of the log ratio, ``log(high / low)`` (infinite when the
old interval reaches 0); printed: the median width per design, their ratio, and each design's
wall time per trial. ``--load``: a competing process burns a core for the whole benchmark.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.records import stats  # noqa: E402

SUITE = {"name": "precision", "model": {"preset": "tiny", "overrides": {"n_encoder_layers": 0,
                                                                       "max_seq_len": 512}},
         "workload": {"kind": "forward", "batch_size": 1, "seq_len": 256, "num_batches": 1},
         "strategies": {"ops": "fused"},
         "measure": {"warmup_iters": 2, "warmup_s": 0.1, "min_samples": 10, "min_time_s": 0.3,
                     "max_samples": 200, "timeout_s": 120},
         "sweep": {"grid": {"strategies.attention": ["dense", {"name": "local", "window": 16},
                                                     {"name": "block", "block_size": 32}]}}}


def old_interval(rounds: list[float]) -> tuple[float, float, float]:
    """(mean, low, high) of the round medians as tbench had them: arithmetic, t, clipped at 0."""
    m, s = stats.mean(rounds), stats.stdev(rounds)
    half = stats.t_quantile(0.975, len(rounds) - 1) * s / math.sqrt(len(rounds))
    return m, max(m - half, 0.0), m + half


def old_width(base: list[float], cand: list[float]) -> float:
    _, bl, bh = old_interval(base)
    _, cl, ch = old_interval(cand)
    return math.inf if cl <= 0 or bl <= 0 else math.log((bh / cl) / (bl / ch))


def medians(rec: dict) -> list[float]:
    return [r["latency_ms_p50"] for r in rec["rounds"] if r.get("latency_ms_p50")]


def one_trial(design: str, rounds: int, cores: int) -> tuple[list[float], float]:
    """One run of the suite under ``design``; the log widths of its two comparisons, wall s."""
    from harness.analyse.answers import ratio_of
    from harness.run import lifecycle
    from harness.run.plan import points_plan
    from harness.suite.loader import parse_suite
    from harness.suite.sweep import expand

    data = json.loads(json.dumps(SUITE))
    data["measure"]["rounds"] = rounds
    if design == "separate":
        data["measure"]["threads"] = cores
        data["compare"] = {"design": "independent"}
    suite = parse_suite(data, "bench")
    points = expand(suite, "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        plan = points_plan(points, Path(tmp) / "run")
        plan = dataclasses.replace(plan, suite=suite)  # the suite's compare: section
        t0 = time.perf_counter()
        result = lifecycle.run(plan, reports=False)
        took = time.perf_counter() - t0
    base, *cands = sorted(result.records, key=lambda r: r["index"])
    if design == "separate":
        return [old_width(medians(base), medians(c)) for c in cands], took
    widths = []
    for c in cands:
        r = ratio_of(c, base, result.records)
        widths.append(math.log(r.high / r.low) if r.low else math.inf)
    return widths, took


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=5, help="runs of each design")
    p.add_argument("--rounds", type=int, default=3, help="rounds per point in every run")
    p.add_argument("--load", action="store_true", help="burn one core for the whole benchmark")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    cores = len(os.sched_getaffinity(0))
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                              start_new_session=True) if args.load else None
    found = {"separate": {"widths": [], "wall_s": []}, "paired": {"widths": [], "wall_s": []}}
    load0 = os.getloadavg()[0]
    try:
        for i in range(args.trials):
            for design in (("separate", "paired") if i % 2 == 0 else ("paired", "separate")):
                widths, took = one_trial(design, args.rounds, cores)
                found[design]["widths"] += widths
                found[design]["wall_s"].append(took)
    finally:
        if burner is not None:
            burner.kill()
    out = {"trials": args.trials, "rounds": args.rounds, "cores": cores,
           "load": "one core burned by another process" if args.load else "none added",
           "loadavg_start": load0, "loadavg_end": os.getloadavg()[0]}
    for design, f in found.items():
        finite = [w for w in f["widths"] if math.isfinite(w)]
        out[design] = {"log_width_median": statistics.median(f["widths"]),
                       "log_widths": [round(w, 4) if math.isfinite(w) else "inf" for w in f["widths"]],
                       "reaching_zero": len(f["widths"]) - len(finite),
                       "wall_s_per_trial_median": statistics.median(f["wall_s"])}
    out["narrower_by"] = out["separate"]["log_width_median"] / out["paired"]["log_width_median"]
    text = json.dumps(out, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
