"""CI gating: run a suite and compare it with a baseline run -- or measure an A/B, or a git
revision against the working tree, in pairs.

``gate(suite, baseline, out, overrides)``: runs the suite (``--set PATH=VALUE`` strings) into
``out`` the way ``tbench run`` does (``harness.run.plan.plan_run``, ``harness.run.lifecycle.run``)
and compares with the baseline run folder / results.jsonl (``harness.analyse.compare.compare_runs``:
two runs measured apart, judged on their round medians).

``ab_gate(suite, base_overrides, cand_overrides, out, overrides, rounds)``: the suite under two
override sets (e.g. ``strategies.ops.name=eager`` vs ``=fused``), both sides' points in ONE run:
point i of side A and point i of side B are a pair group (``Design`` with ``pairs_of``), measured
block by block in random order -- or as a duet, where the machine has the cores -- so whatever
the machine does hits both alike. ``rounds``: N blocks, or ``auto`` (the default): blocks are
added until every pair is decided against the threshold or the budget is spent.

``rev_gate(suite, rev, out, overrides, rounds)``: the suite on a git revision (checked out in a
temporary worktree) against the working tree, round by round (each round a whole ``tbench run``
of each tree, the order alternating), both with the same threads; pairs by position in the
sweep, the log ratio of each round's medians; ``auto`` adds rounds until decided.

The harness parts that import torch (plan, lifecycle) are imported lazily, when a suite runs.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from harness.analyse.compare import (
    DEFAULT_METRICS,
    Comparison,
    compare_pair,
    compare_runs,
    overall_verdict,
)
from harness.records import BadInput, RunFolder, pairs, read_run_folder
from harness.run import rundir

AUTO_MIN, AUTO_MAX, AUTO_BUDGET_S = 3, 30, 1800.0  # rev_gate's rounds: auto


def parse_spec(spec: str) -> list[str]:
    """An A/B side: ``"strategies.ops.name=eager;strategies.precision.name=bf16"`` -> ``--set`` strings."""
    items = [s.strip() for s in spec.split(";") if s.strip()]
    for item in items:
        if "=" not in item:
            raise BadInput(f"--ab {spec!r}: {item!r} is not PATH=VALUE (e.g. strategies.ops.name=eager)")
    return items


def plan_of(suite_path, sets: list[str], out_dir: Path | None, name: str):
    """The run plan of the suite with ``--set PATH=VALUE`` strings applied, into ``out_dir``
    (default ``runs/<name>-<time>``)."""
    from harness.run.plan import RunOptions, plan_run

    out = Path(out_dir) if out_dir else rundir.default_run_dir(name)
    return plan_run(RunOptions(Path(suite_path), out=out, sets=tuple(sets)))


def run_folder(plan) -> RunFolder:
    """Run ``plan`` as ``tbench run`` does (reports written, a report warning said); the folder."""
    from harness.run.lifecycle import run

    result = run(plan, say=lambda line: print(line, file=sys.stderr, flush=True))
    for line in result.warnings:
        print(line, file=sys.stderr)
    return result.folder()


def gate(suite_path, baseline, out, overrides: list[str], *, threshold=0.05,
         metrics=DEFAULT_METRICS, force=False, timing_informational=False) -> Comparison:
    base = read_run_folder(baseline)  # fail fast, before running anything
    plan = plan_of(suite_path, overrides, out, "gate")
    return compare_runs(base, run_folder(plan), threshold=threshold, metrics=metrics,
                        force=force, timing_informational=timing_informational)


def rounds_sets(rounds, threshold: float) -> list[str]:
    """``--set`` strings for the rounds of a paired gate: N, or auto with the threshold as the
    resolution."""
    return ([f"measure.rounds={rounds}"] if rounds != "auto"
            else ["measure.rounds=auto", f"compare.resolution={threshold}"])


def ab_gate(suite_path, base: list[str], cand: list[str], out, overrides: list[str], *,
            rounds="auto", threshold=0.05, metrics=DEFAULT_METRICS,
            timing_informational=False) -> Comparison:
    from dataclasses import replace

    extra = list(overrides) + rounds_sets(rounds, threshold)
    out_dir = Path(out) if out else rundir.default_run_dir("ab")
    side_a = plan_of(suite_path, extra + list(base), out_dir, "ab")
    side_b = plan_of(suite_path, extra + list(cand), out_dir, "ab")
    if len(side_a.points) != len(side_b.points):
        raise BadInput(f"A/B sides expand to {len(side_a.points)} and {len(side_b.points)} points; "
                       "the overrides must not change the sweep's shape")
    same = [a.label for a, b in zip(side_a.points, side_b.points) if a.id == b.id]
    if same:
        raise BadInput(f"A/B: the two sides resolve to the same point ({same[0]}); give "
                       "overrides that change it")
    points = list(side_a.points) + [p.model_copy(update={"index": p.index + len(side_a.points)})
                                    for p in side_b.points]
    pairs_of = tuple((a.id, b.id) for a, b in zip(side_a.points, side_b.points))
    folder = run_folder(replace(side_a, points=tuple(points), pairs=pairs_of))
    by_id = {r["point_id"]: r for r in folder.records}
    results = []
    for i, (a, b) in enumerate(pairs_of):
        ra, rb = by_id[a], by_id[b]
        ratio = next((pairs.Ratio(**{k: v for k, v in c.items() if k in pairs.Ratio.__dataclass_fields__})
                      for c in rb.get("comparisons") or [] if c.get("vs") == a), None)
        p = compare_pair(dict(ra, point_id=f"pair{i}"), rb, metrics, threshold,
                         timing_informational, timing=ratio)
        p.label = f"{ra.get('label')} → {rb.get('label')}"
        results.append(p)
    return Comparison(overall_verdict(results), threshold, pairs.CONFIDENCE, results, "A", "A",
                      timing_informational=timing_informational, method="paired")


def _git(args: list[str], cwd) -> str:
    import subprocess

    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["git failed"])[-1]
        raise BadInput(f"git {' '.join(args)}: {last}")
    return proc.stdout.strip()


def _tbench_run(tree: Path, suite: str, out_dir: Path, sets: list[str], threads: int) -> list[dict]:
    """``tbench run`` of ``tree``'s own code (a fresh process, that tree first on the path), one
    round per point, interleaved, ``threads`` threads; its records. A revision that predates a
    setting runs without it (it knew no other way)."""
    import os
    import subprocess

    env = dict(os.environ, PYTHONPATH=str(tree) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    wanted = [f"measure.threads={threads}", "compare.design=interleaved", "measure.rounds=1"]
    for n in range(len(wanted), -1, -1):  # drop what an older revision refuses, newest first
        cmd = [sys.executable, "-m", "harness.cli", "run", suite, "--out", str(out_dir)]
        cmd += [a for item in list(sets) + wanted[len(wanted) - n:] for a in ("--set", item)]
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
        if proc.returncode in (0, 3):  # 3: some points failed -- recorded, compared as data
            return read_run_folder(out_dir).records
        if proc.returncode in (130, 143):
            raise KeyboardInterrupt
        if proc.returncode != 2 or not n:
            break
    last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    raise BadInput(f"tbench run in {tree}: {last}")


def _by_position(runs: list[list[dict]], side: str) -> list[list[dict]]:
    """Per point (by its place in the sweep), its record of every round."""
    n = min(len(recs) for recs in runs)
    if any(len(recs) != n for recs in runs):
        raise BadInput(f"{side}: the rounds ran different numbers of points")
    ordered = [sorted(recs, key=lambda rec: rec.get("index", 0)) for recs in runs]
    return [[recs[i] for recs in ordered] for i in range(n)]


def _rev_verdicts(sides, metrics, threshold, look, timing_informational) -> list:
    base, cur = _by_position(sides["base"], "base"), _by_position(sides["current"], "current")
    if len(base) != len(cur):
        raise BadInput(f"the suite expands to {len(base)} points at the revision and {len(cur)} "
                       "in the working tree; they cannot be paired")
    out = []
    for i, (b, c) in enumerate(zip(base, cur)):
        logs = [math.log(y["metrics"]["latency_ms_p50"] / x["metrics"]["latency_ms_p50"])
                for x, y in zip(b, c) if x.get("status") == y.get("status") == "ok"]
        ratio = pairs.paired(logs, threshold, pairs.CONFIDENCE, look)
        p = compare_pair(dict(b[-1], point_id=f"pair{i}"), c[-1], metrics, threshold,
                         timing_informational, timing=ratio)
        p.label = c[-1].get("label", "")
        out.append(p)
    return out


def rev_gate(suite_path, rev: str, out, overrides: list[str], *, rounds="auto", threshold=0.05,
             metrics=DEFAULT_METRICS, timing_informational=False) -> Comparison:
    """The suite on git revision ``rev`` (a temporary worktree, removed afterwards) against the
    working tree, round by round on this machine (base, current, current, base, ...), each
    round a whole ``tbench run`` of each side, one worker per point, the same threads. A
    suite inside the repository is read as each side has it; one outside, the same file."""
    import tempfile

    from harness.run.design import choose
    from harness.suite.schema import CompareSpec

    root = Path(_git(["rev-parse", "--show-toplevel"], Path.cwd()))
    commit = _git(["rev-parse", "--verify", f"{rev}^{{commit}}"], root)
    suite = Path(suite_path).resolve()
    if not suite.is_file():
        raise BadInput(f"{suite_path}: no such suite file")
    points = plan_of(suite, list(overrides), None, "rev").points
    threads = choose(points, CompareSpec(design="interleaved")).threads or 1
    where = str(suite.relative_to(root)) if suite.is_relative_to(root) else str(suite)
    out_dir = Path(out).resolve() if out else rundir.default_run_dir("rev").resolve()
    sides: dict[str, list[list[dict]]] = {"base": [], "current": []}
    top, t0, results = (rounds if rounds != "auto" else AUTO_MAX), time.monotonic(), []
    with tempfile.TemporaryDirectory(prefix="tbench-rev-") as tmp:
        tree = Path(tmp) / "base"
        _git(["worktree", "add", "--detach", str(tree), commit], root)
        try:
            trees = {"base": tree, "current": root}
            for r in range(top):
                for side in (("base", "current") if r % 2 == 0 else ("current", "base")):
                    sides[side].append(_tbench_run(trees[side], where, out_dir / side / f"round{r}",
                                                   overrides, threads))
                if rounds == "auto" and r + 1 >= AUTO_MIN:
                    results = _rev_verdicts(sides, metrics, threshold, r + 2 - AUTO_MIN,
                                            timing_informational)
                    if all(m.verdict != "inconclusive" for p in results for m in p.metrics) \
                            or time.monotonic() - t0 > AUTO_BUDGET_S:
                        break
        finally:
            _git(["worktree", "remove", "--force", str(tree)], root)
    if rounds != "auto":
        results = _rev_verdicts(sides, metrics, threshold, None, timing_informational)
    return Comparison(overall_verdict(results), threshold, pairs.CONFIDENCE, results,
                      timing_informational=timing_informational, method="paired")
