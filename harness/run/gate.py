"""CI gating: run a suite, then compare it with a baseline -- or run an interleaved A/B.

``gate(suite, baseline, out, overrides)``: runs the suite (``--set PATH=VALUE`` strings) into
``out`` the way ``tbench run`` does (``harness.suite.sweep.load_points`` for the device profile and the
overrides, ``harness.run.runner.run_suite`` for the run folder), writes its reports, and compares
with the baseline run folder / results.jsonl (``harness.analyse.compare.compare_runs``).

``ab_gate(suite, base_overrides, cand_overrides, out, overrides, rounds)``: the same suite
under two override sets (e.g. ``strategies.ops.name=eager`` vs ``=fused``). Points are paired by
their position in the sweep. For each round and each pair both sides run back to back, the
order alternating (AB, BA, AB, ... so neither side always runs first on a warm or cooling
machine); each side's samples are pooled over the rounds and compared with the same
two-condition rule. Drift of the machine during the job hits both sides alike and cancels.
Comparing two git revisions (worktrees) is not implemented: check out each revision and use
``tbench gate --baseline`` with a run of the other, or ``--ab`` for config-vs-config.

The harness parts that import torch (sweep, runner) are imported lazily, when a suite runs.
"""
from __future__ import annotations

import sys
from pathlib import Path

from harness.analyse import stats
from harness.analyse.compare import (
    ALPHA,
    DEFAULT_METRICS,
    Comparison,
    compare_records,
    compare_runs,
    overall_verdict,
)
from harness.analyse.results import BadInput, read_run_folder
from harness.run import rundir


def parse_spec(spec: str) -> list[str]:
    """An A/B side: ``"strategies.ops.name=eager;strategies.precision.name=bf16"`` -> ``--set`` strings."""
    items = [s.strip() for s in spec.split(";") if s.strip()]
    for item in items:
        if "=" not in item:
            raise BadInput(f"--ab {spec!r}: {item!r} is not PATH=VALUE (e.g. strategies.ops.name=eager)")
    return items


def load_points(suite_path, sets: list[str]):
    """The suite's points with ``--set PATH=VALUE`` strings applied (harness.suite.sweep)."""
    from harness.suite.sweep import load_points as sweep_load_points

    return sweep_load_points(suite_path, None, list(sets))


def _run(suite_path, sets, resolved, points, out_dir: Path) -> Path:
    """Run ``points`` into ``out_dir`` as ``tbench run`` does."""
    from harness.run.runner import run_suite

    run_suite(out_dir, suite_path, sets, resolved, points)
    return out_dir


def gate(suite_path, baseline, out, overrides: list[str], *, threshold=0.05,
         metrics=DEFAULT_METRICS, force=False, timing_informational=False) -> Comparison:
    base = read_run_folder(baseline)  # fail fast, before running anything
    resolved, points = load_points(suite_path, overrides)
    out_dir = _run(suite_path, overrides, resolved, points,
                   Path(out) if out else rundir.default_run_dir("gate"))
    warning = rundir.write_reports(out_dir)
    if warning:
        print(warning, file=sys.stderr)
    return compare_runs(base, read_run_folder(out_dir), threshold=threshold, metrics=metrics,
                        force=force, timing_informational=timing_informational)


def pool(records: list[dict], key: str) -> dict:
    """One record from several runs of the same point: samples concatenated, p50 recomputed."""
    failed = [r for r in records if r.get("status") != "ok"]
    first = failed[0] if failed else records[0]
    pooled = dict(first, pair_key=key)
    if not failed:
        samples = [x for r in records for x in (r.get("samples_ms") or [])]
        pooled["samples_ms"] = samples
        pooled["metrics"] = dict(first.get("metrics") or {}, **stats.summarize(samples))
    return pooled


def ab_gate(suite_path, base: dict, cand: dict, out, overrides: list[str], *, rounds=3,
            threshold=0.05, metrics=DEFAULT_METRICS, timing_informational=False) -> Comparison:
    sets_a, sets_b = list(overrides) + list(base), list(overrides) + list(cand)
    suite_a, points_a = load_points(suite_path, sets_a)
    suite_b, points_b = load_points(suite_path, sets_b)
    if len(points_a) != len(points_b):
        raise BadInput(f"A/B sides expand to {len(points_a)} and {len(points_b)} points; "
                       "the overrides must not change the sweep's shape")
    out_dir = Path(out) if out else rundir.default_run_dir("ab")
    runs: dict[tuple[str, int], list[dict]] = {}
    for r in range(rounds):
        for i, (a, b) in enumerate(zip(points_a, points_b)):
            order = ((("A", a, sets_a, suite_a), ("B", b, sets_b, suite_b)) if (r + i) % 2 == 0
                     else (("B", b, sets_b, suite_b), ("A", a, sets_a, suite_a)))
            for side, point, sets, resolved in order:
                folder = _run(suite_path, sets, resolved, [point],
                              out_dir / side / f"round{r}" / f"point{i}")
                runs.setdefault((side, i), []).extend(read_run_folder(folder).records)
    side_a = [pool(runs[("A", i)], f"pair{i}") for i in range(len(points_a))]
    side_b = [pool(runs[("B", i)], f"pair{i}") for i in range(len(points_b))]
    points = compare_records(side_a, side_b, threshold=threshold, metrics=metrics,
                             timing_informational=timing_informational, key="pair_key")
    return Comparison(overall_verdict(points), threshold, ALPHA, points, "A", "A",
                      timing_informational=timing_informational)
