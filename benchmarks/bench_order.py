"""Does a run on a loaded machine rank strategies the way quiet runs do?

    python benchmarks/bench_order.py QUIET_RUN [QUIET_RUN ...] LOADED_RUN [--min-difference 0.15]

Reads run folders of the same suite (e.g. ``tbench run suites/attention.yaml`` quiet, and
again with a CPU-burning process beside it; the last folder is the loaded run) and, per group
of the answers, takes every pair of strategies whose ratios to the baseline differ by at least
``--min-difference`` on the first quiet run. With several quiet runs, the reference is their
consensus: a pair counts only where every quiet run orders it the same way by at least that
difference (and the pairs the quiet runs themselves disagree on are counted and printed: the
floor of any quiet-vs-loaded check). Prints each pair the loaded run puts in the other order
(with both runs' ratios), how many of the reversed pairs the first quiet run's intervals could
not separate, and how many intervals of the loaded run reach 0. No torch.
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


def ordered(refs: list[dict], group: str, a: str, b: str, min_difference: float) -> bool | None:
    """True/False: every quiet run puts a before b (or b before a) by >= min_difference;
    None: some quiet run lacks the pair, or they disagree, or one is closer than that."""
    sides = set()
    for ref in refs:
        q = ref.get(group, {})
        if a not in q or b not in q:
            return None
        qa, qb = estimate(q[a]), estimate(q[b])
        if max(qa, qb) / min(qa, qb) < 1 + min_difference:
            return None
        sides.add(qa < qb)
    return sides.pop() if len(sides) == 1 else None


def pair_text(q: dict, a: str, b: str) -> str:
    return f"{estimate(q[a]):.3g} vs {estimate(q[b]):.3g}" if a in q and b in q else "absent"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, nargs="+", help="quiet run folder(s), then the loaded one")
    p.add_argument("--min-difference", type=float, default=0.15)
    args = p.parse_args()
    if len(args.runs) < 2:
        p.error("give at least one quiet run folder and the loaded one")
    refs, loaded = [ratios(r) for r in args.runs[:-1]], ratios(args.runs[-1])
    quiet = refs[0]
    checked = reversed_ = apart = disputed = 0
    zero = sum(1 for g in loaded.values() for r in g.values()
               if r is not None and r.low is not None and r.low <= 0)
    for group, q in quiet.items():
        lo = loaded.get(group, {})
        for a, b in itertools.combinations(sorted(set(q) & set(lo)), 2):
            qa, qb = estimate(q[a]), estimate(q[b])
            if max(qa, qb) / min(qa, qb) < 1 + args.min_difference:
                continue
            first = ordered(refs, group, a, b, args.min_difference)
            if first is None:
                disputed += 1
                print(f"quiet runs disagree: {group}: {a} vs {b}: "
                      + ", ".join(pair_text(r.get(group, {}), a, b) for r in refs))
                continue
            checked += 1
            la, lb = estimate(lo[a]), estimate(lo[b])
            if first != (la < lb):
                reversed_ += 1
                apart += separated(q[a], q[b])
                print(f"reversed: {group}: {a} vs {b}: quiet {qa:.3g} vs {qb:.3g}, "
                      f"loaded {la:.3g} vs {lb:.3g}")
    print(f"groups {len(quiet)}; quiet runs {len(refs)}; pairs differing by >= "
          f"{args.min_difference:.0%} on the first quiet run: {checked + disputed}, of them "
          f"ordered alike by every quiet run: {checked} ({disputed} not); reversed under load: "
          f"{reversed_} ({apart} of them separated by the first quiet run's intervals); loaded "
          f"intervals reaching 0: {zero}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
