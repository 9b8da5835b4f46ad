"""CI gating: run a suite, then compare it with a baseline -- or run an interleaved A/B.

``gate(suite, baseline, out, overrides)``: runs the suite (``--set PATH=VALUE`` strings) into
``out`` the way ``tbench run`` does (``harness.run.plan.plan_run``, ``harness.run.lifecycle.run``:
the same folder, rounds and reports), and compares with the baseline run folder / results.jsonl
(``harness.analyse.compare.compare_runs``).

``ab_gate(suite, base_overrides, cand_overrides, out, overrides, rounds)``: the same suite
under two override sets (e.g. ``strategies.ops.name=eager`` vs ``=fused``). Points are paired by
their position in the sweep. For each round and each pair both sides run back to back, the
order alternating (AB, BA, AB, ... so neither side always runs first on a warm or cooling
machine); each side's samples are pooled over the rounds and compared with the same
two-condition rule. Drift of the machine during the job hits both sides alike and cancels.
Each (round, side) is one worker per point (``measure.rounds=1``); a side's runs are kept as
rounds, so the comparison judges on round medians (``compare.rounds_verdict``).

``rev_gate(suite, rev, out, overrides, rounds)``: the suite on a git revision (checked out in a
temporary worktree) against the working tree, interleaved round by round -- the case CI has.

The harness parts that import torch (plan, lifecycle) are imported lazily, when a suite runs.
"""
from __future__ import annotations

import sys
from pathlib import Path

from harness.analyse.compare import (
    ALPHA,
    DEFAULT_METRICS,
    Comparison,
    compare_records,
    compare_runs,
    overall_verdict,
)
from harness.records import BadInput, RunFolder, read_run_folder, stats
from harness.run import rundir


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

    result = run(plan)
    for line in result.warnings:
        print(line, file=sys.stderr)
    return result.folder()


def gate(suite_path, baseline, out, overrides: list[str], *, threshold=0.05,
         metrics=DEFAULT_METRICS, force=False, timing_informational=False) -> Comparison:
    base = read_run_folder(baseline)  # fail fast, before running anything
    plan = plan_of(suite_path, overrides, out, "gate")
    return compare_runs(base, run_folder(plan), threshold=threshold, metrics=metrics,
                        force=force, timing_informational=timing_informational)


def pool(records: list[dict], key: str) -> dict:
    """One record from several runs of the same point, each run one round: the rounds' samples
    kept apart, so latency and its CI come from the round medians (``stats.summarize_rounds``)
    and the comparison judges on them (``compare.rounds_verdict``)."""
    failed = [r for r in records if r.get("status") != "ok"]
    first = failed[0] if failed else records[0]
    pooled = dict(first, pair_key=key)
    if not failed:
        rounds = [[x for x in (r.get("samples_ms") or [])] for r in records]
        pooled["samples_ms"] = [x for r in rounds for x in r]
        pooled["metrics"] = dict(first.get("metrics") or {}, **stats.summarize_rounds(rounds))
    return pooled


def side_points(suite_path, sets: list[str]):
    """The points one side of an A/B expands to."""
    return plan_of(suite_path, sets, None, "ab").points


def run_point(suite_path, sets: list[str], index: int, out_dir: Path) -> list[dict]:
    """One round of the side's point ``index``, a run of its own in ``out_dir``; its records."""
    from harness.run.plan import with_points

    plan = plan_of(suite_path, sets, out_dir, "ab")
    return run_folder(with_points(plan, [plan.points[index]])).records


def ab_gate(suite_path, base: dict, cand: dict, out, overrides: list[str], *, rounds=3,
            threshold=0.05, metrics=DEFAULT_METRICS, timing_informational=False) -> Comparison:
    one = ["measure.rounds=1"]  # each (round, side) is one worker: the loop makes the rounds
    sets = {"A": list(overrides) + list(base) + one, "B": list(overrides) + list(cand) + one}
    n = {side: len(side_points(suite_path, s)) for side, s in sets.items()}
    if n["A"] != n["B"]:
        raise BadInput(f"A/B sides expand to {n['A']} and {n['B']} points; "
                       "the overrides must not change the sweep's shape")
    out_dir = Path(out) if out else rundir.default_run_dir("ab")
    runs: dict[tuple[str, int], list[dict]] = {}
    for r in range(rounds):
        for i in range(n["A"]):
            for side in ("AB" if (r + i) % 2 == 0 else "BA"):
                folder = out_dir / side / f"round{r}" / f"point{i}"
                runs.setdefault((side, i), []).extend(run_point(suite_path, sets[side], i, folder))
    side_a = [pool(runs[("A", i)], f"pair{i}") for i in range(n["A"])]
    side_b = [pool(runs[("B", i)], f"pair{i}") for i in range(n["B"])]
    points = compare_records(side_a, side_b, threshold=threshold, metrics=metrics,
                             timing_informational=timing_informational, key="pair_key")
    return Comparison(overall_verdict(points), threshold, ALPHA, points, "A", "A",
                      timing_informational=timing_informational)


def _git(args: list[str], cwd) -> str:
    import subprocess

    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["git failed"])[-1]
        raise BadInput(f"git {' '.join(args)}: {last}")
    return proc.stdout.strip()


def _tbench_run(tree: Path, suite: str, out_dir: Path, sets: list[str]) -> list[dict]:
    """``tbench run`` of ``tree``'s own code (a fresh process, that tree first on the path), one
    round per point; its records. A revision that predates ``measure.rounds`` runs without it
    (one worker per point was all it knew)."""
    import os
    import subprocess

    env = dict(os.environ, PYTHONPATH=str(tree) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for extra in (["measure.rounds=1"], []):  # the second only for a revision without rounds
        cmd = [sys.executable, "-m", "harness.cli", "run", suite, "--out", str(out_dir)]
        cmd += [a for item in list(sets) + extra for a in ("--set", item)]
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
        if proc.returncode in (0, 3):  # 3: some points failed -- recorded, compared as data
            return read_run_folder(out_dir).records
        if proc.returncode == 2 and extra and "rounds" in proc.stderr:
            continue  # an older revision: its workers are one round each anyway
        if proc.returncode in (130, 143):
            raise KeyboardInterrupt
        last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise BadInput(f"tbench run in {tree}: {last}")
    raise BadInput(f"tbench run in {tree}: refused measure.rounds and ran nothing")


def rev_gate(suite_path, rev: str, out, overrides: list[str], *, rounds=3, threshold=0.05,
             metrics=DEFAULT_METRICS, timing_informational=False) -> Comparison:
    """The suite on git revision ``rev`` (a temporary worktree, removed afterwards) against the
    working tree, interleaved round by round on this machine (base, current, current, base,
    ...): each round is a whole ``tbench run`` of each side, one worker per point, so drift
    of the machine over the job hits both sides alike. Points pair by position in the sweep
    (ids may differ between revisions); the comparison judges on the round medians. A suite
    inside the repository is read as each side has it; one outside, the same file for both."""
    import tempfile

    root = Path(_git(["rev-parse", "--show-toplevel"], Path.cwd()))
    commit = _git(["rev-parse", "--verify", f"{rev}^{{commit}}"], root)
    suite = Path(suite_path).resolve()
    if not suite.is_file():
        raise BadInput(f"{suite_path}: no such suite file")
    inside = suite.is_relative_to(root)
    out_dir = Path(out).resolve() if out else rundir.default_run_dir("rev").resolve()
    sides: dict[str, list[list[dict]]] = {"base": [], "current": []}
    with tempfile.TemporaryDirectory(prefix="tbench-rev-") as tmp:
        tree = Path(tmp) / "base"
        _git(["worktree", "add", "--detach", str(tree), commit], root)
        try:
            trees = {"base": tree, "current": root}
            for r in range(rounds):
                order = ("base", "current") if r % 2 == 0 else ("current", "base")
                for side in order:
                    where = str(suite.relative_to(root)) if inside else str(suite)
                    sides[side].append(_tbench_run(trees[side], where,
                                                   out_dir / side / f"round{r}", overrides))
        finally:
            _git(["worktree", "remove", "--force", str(tree)], root)
    paired = {}
    for side, runs in sides.items():
        n = min(len(recs) for recs in runs)
        if any(len(recs) != n for recs in runs):
            raise BadInput(f"{side}: the rounds ran different numbers of points")
        by_pos = [sorted(recs, key=lambda rec: rec.get("index", 0)) for recs in runs]
        paired[side] = [pool([recs[i] for recs in by_pos], f"pair{i}") for i in range(n)]
    if len(paired["base"]) != len(paired["current"]):
        raise BadInput(f"the suite expands to {len(paired['base'])} points at {rev} and "
                       f"{len(paired['current'])} in the working tree; they cannot be paired")
    points = compare_records(paired["base"], paired["current"], threshold=threshold,
                             metrics=metrics, timing_informational=timing_informational,
                             key="pair_key")
    return Comparison(overall_verdict(points), threshold, ALPHA, points,
                      timing_informational=timing_informational)
