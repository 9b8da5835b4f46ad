"""Does a run on a loaded machine rank strategies the way a quiet run does?

    python benchmarks/bench_order.py QUIET_RUN LOADED_RUN [--min-difference 0.15]

Reads two run folders of the same suite (e.g. ``tbench run suites/attention.yaml`` quiet, and
again with a CPU-burning process beside it) and, per group of the answers, takes every pair of
strategies whose ratios to the baseline differ by at least ``--min-difference`` on the quiet
run. Prints each pair the loaded run puts in the other order (with both runs' ratios and the
quiet run's intervals), how many of the reversed pairs the quiet run's own intervals could not
separate, and how many intervals of the loaded run reach 0. No torch.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import records  # noqa: E402
from harness.analyse.answers import answers  # noqa: E402


def ratios(run: Path) -> dict[str, dict]:
    """group -> {label: Ratio or None (the baseline)} of the run's ok points."""
    out = {}
    for g in answers(records.read_records(run)):
        out[g.group] = {r.label: r.ratio for r in g.rows if r.status == "ok"}
    return out


def estimate(ratio) -> float:
    return 1.0 if ratio is None else ratio.estimate


def separated(a, b) -> bool:
    """The quiet run's intervals of a and b do not overlap (a baseline's ratio is exactly 1)."""
    lo_a, hi_a = (1.0, 1.0) if a is None else (a.low, a.high)
    lo_b, hi_b = (1.0, 1.0) if b is None else (b.low, b.high)
    return None not in (lo_a, lo_b) and (hi_a < lo_b or hi_b < lo_a)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("quiet", type=Path)
    p.add_argument("loaded", type=Path)
    p.add_argument("--min-difference", type=float, default=0.15)
    args = p.parse_args()
    quiet, loaded = ratios(args.quiet), ratios(args.loaded)
    checked = reversed_ = apart = 0
    zero = sum(1 for g in loaded.values() for r in g.values()
               if r is not None and r.low is not None and r.low <= 0)
    for group, q in quiet.items():
        lo = loaded.get(group, {})
        for a, b in itertools.combinations(sorted(set(q) & set(lo)), 2):
            qa, qb = estimate(q[a]), estimate(q[b])
            if max(qa, qb) / min(qa, qb) < 1 + args.min_difference:
                continue
            checked += 1
            la, lb = estimate(lo[a]), estimate(lo[b])
            if (qa < qb) != (la < lb):
                reversed_ += 1
                apart += separated(q[a], q[b])
                print(f"reversed: {group}: {a} vs {b}: quiet {qa:.3g} vs {qb:.3g}, "
                      f"loaded {la:.3g} vs {lb:.3g}")
    print(f"groups {len(quiet)}; pairs differing by >= {args.min_difference:.0%} on the quiet "
          f"run: {checked}; reversed under load: {reversed_} ({apart} of them separated by the "
          f"quiet run's intervals); loaded intervals reaching 0: {zero}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
