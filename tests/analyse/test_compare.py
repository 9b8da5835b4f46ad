"""tbench compare / gate decisions on hand-built runs, with hand-computed expectations."""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from results_factory import record, sd, t_quantile, write_run
from typer.testing import CliRunner

from harness.analyse.compare import (
    compare_records,
    compare_runs,
    deterministic_verdict,
    timing_independent,
    timing_paired,
)
from harness.analyse.compare_markdown import to_markdown
from harness.cli import app as tbench_app
from harness.records import BadInput, read_run_folder
from harness.run.gate import parse_spec

BASE = [10.0 + 0.1 * i for i in range(10)]  # median 10.45
DRIFT = (1.0, 1.02, 0.99)  # three rounds: the process-to-process drift of a point

# the log round medians of a BASE point: its three rounds' medians 10.45 x DRIFT
S_LOG = sd([math.log(10.45 * d) for d in DRIFT])  # 0.01519
# two runs, three rounds each, the same spread: Welch's df = 2 (3 - 1) = 4, se = S_LOG sqrt(2/3)
HALF = t_quantile(0.975, 4) * S_LOG * math.sqrt(2 / 3)  # 2.776 x 0.01519 x 0.8165 = 0.0344


def app():
    return tbench_app


def invoke(*args):
    return CliRunner().invoke(app(), [str(x) for x in args])


def rounds_of(medians, point_id="p") -> dict:
    """A record whose rounds had these medians."""
    return record(point_id, rounds_ms=[[m] for m in medians])


def test_regression_when_the_whole_interval_lies_above_the_band():
    r = timing_independent(_run(0), _run(0, factor=1.2), threshold=0.05)
    assert r.verdict == "regression" and r.n == 3 and r.note == "3 rounds a side"
    assert r.ratio == pytest.approx(1.2)
    # [1.2 e^-h, 1.2 e^h] = [1.159, 1.242], wholly above 1.05
    assert (r.ci_low, r.ci_high) == pytest.approx((1.2 * math.exp(-HALF), 1.2 * math.exp(HALF)))
    # the headline metrics beside it: the geometric means of the round medians
    geo = 10.45 * math.prod(DRIFT) ** (1 / 3)
    assert (r.base, r.current) == pytest.approx((geo, 1.2 * geo))


def test_improvement_is_symmetric():
    r = timing_independent(_run(0), _run(0, factor=1 / 1.2), threshold=0.05)
    assert r.verdict == "improvement" and r.ratio == pytest.approx(1 / 1.2)
    assert (r.ci_low, r.ci_high) == pytest.approx((math.exp(-HALF) / 1.2, math.exp(HALF) / 1.2))


def test_a_small_change_decided_inside_the_band_is_ok():
    """1% slower with an interval [0.976, 1.045] inside [1/1.05, 1.05]: equal within 5%."""
    r = timing_independent(_run(0), _run(0, factor=1.01), threshold=0.05)
    assert r.verdict == "ok" and r.ratio == pytest.approx(1.01)
    assert (r.ci_low, r.ci_high) == pytest.approx((1.01 * math.exp(-HALF), 1.01 * math.exp(HALF)))
    # the same 1% against a 2% threshold: the interval crosses 1.02, undecided
    r = timing_independent(_run(0), _run(0, factor=1.01), threshold=0.02)
    assert r.verdict == "inconclusive"
    assert r.note.startswith(f"3 rounds a side; could resolve differences ≥ "
                             f"{1.02 * math.exp(HALF) - 1:.0%}; more rounds would decide")


def test_rounds_that_spread_as_much_as_the_change_are_inconclusive():
    base, cur = rounds_of([10.0, 12.0, 8.0]), rounds_of([12.0, 9.0, 15.0])
    r = timing_independent(base, cur, threshold=0.05)
    lb = [math.log(x) for x in (10.0, 12.0, 8.0)]
    lc = [math.log(x) for x in (12.0, 9.0, 15.0)]
    assert r.ratio == pytest.approx(math.exp(math.fsum(lc) / 3 - math.fsum(lb) / 3))  # 1.191
    assert r.verdict == "inconclusive" and r.ci_low < 1 / 1.05 and r.ci_high > 1.05
    assert "or measure both in one run (gate --ab / --rev pair them)" in r.note


def test_one_round_a_side_is_inconclusive_with_the_reason():
    r = timing_independent(rounds_of([10.0]), rounds_of([20.0]), threshold=0.05)
    assert (r.verdict, r.ratio, r.ci_low, r.n) == ("inconclusive", pytest.approx(2.0), None, 1)
    assert r.note == ("1 rounds a side; one round on a side: no spread between processes to "
                      "judge against")


def test_paired_rounds_cancel_drift_that_two_runs_measured_apart_cannot():
    """Both sides drift 20% over three rounds, each round's current within 1% of 1.2 x base."""
    base, cur = rounds_of([10.0, 11.0, 12.0]), rounds_of([12.0, 11.0 * 1.2 * 1.01, 12.0 * 1.2 * 0.99])
    apart = timing_independent(base, cur, threshold=0.05)
    assert apart.verdict == "inconclusive"  # the drift is the noise measured apart
    paired = timing_paired(base, cur, threshold=0.05)
    logs = [math.log(1.2), math.log(1.2 * 1.01), math.log(1.2 * 0.99)]
    m, h = math.fsum(logs) / 3, t_quantile(0.975, 2) * sd(logs) / math.sqrt(3)
    assert (paired.ratio, paired.ci_low, paired.ci_high) == pytest.approx(
        (math.exp(m), math.exp(m - h), math.exp(m + h)))  # [1.171, 1.230]
    assert paired.verdict == "regression" and paired.note == "3 pairs"
    # at sequential look 2 the interval is at 1 - 0.05 / (2 x 3) = 99.17%
    look = timing_paired(base, cur, threshold=0.05, look=2)
    h2 = t_quantile(1 - 0.05 / 12, 2) * sd(logs) / math.sqrt(3)
    assert (look.ci_low, look.ci_high) == pytest.approx((math.exp(m - h2), math.exp(m + h2)))
    assert look.note == "3 pairs, sequential look 2 (99.17% interval)"
    assert look.verdict == "regression"  # [1.127, 1.278]: still wholly above 1.05


def test_deterministic_metrics_exact_within_tiny_tolerance():
    assert deterministic_verdict("flops_per_step", 1e12, 1e12 * (1 + 1e-12)).verdict == "ok"
    assert deterministic_verdict("flops_per_step", 1e12, 1e12 * (1 + 1e-6)).verdict == "regression"
    assert deterministic_verdict("mem_peak_allocated_bytes", 1000, 999).verdict == "improvement"
    assert deterministic_verdict("padding_efficiency", 0.9, 0.8).verdict == "regression"
    assert deterministic_verdict("padding_efficiency", 0.8, 0.9).verdict == "improvement"
    assert deterministic_verdict("model_state_bytes_max", None, None).verdict == "ok"


def _run(i: int, factor: float = 1.0, **kw):
    """Point i measured in three rounds (BASE x DRIFT), ``factor`` times slower."""
    return record(f"p{i:02d}", index=i, rounds_ms=[[x * factor * d for x in BASE] for d in DRIFT],
                  metrics={"flops_per_step": 1e9 * (i + 1)}, **kw)


def test_points_missing_new_and_status_changes():
    base = [_run(0), _run(1), _run(2), record("p03", status="oom"), _run(4)]
    cur = [_run(0), record("p01", status="oom", error="OOM"), _run(2), _run(3), _run(5)]
    res = {p.point_id: p for p in compare_records(base, cur)}
    assert res["p00"].verdict == "ok"
    assert res["p01"].verdict == "regression" and res["p01"].note == "status ok -> oom"
    assert res["p03"].verdict == "improvement"
    assert res["p04"].presence == "missing" and res["p05"].presence == "new"
    assert [m.metric for m in res["p00"].metrics] == ["latency_ms_p50", "flops_per_step",
                                                      "model_state_bytes_max",
                                                      "padding_efficiency",
                                                      "mem_peak_allocated_bytes"]


def test_exactly_one_regression_among_many_fails(tmp_path):
    base = [_run(i) for i in range(20)]
    cur = [_run(i, factor=1.2 if i == 13 else 1.0) for i in range(20)]
    write_run(tmp_path / "base", base)
    write_run(tmp_path / "cur", cur)
    cmp = compare_runs(read_run_folder(tmp_path / "base"), read_run_folder(tmp_path / "cur"))
    assert cmp.verdict == "regression" and cmp.exit_code == 1
    assert cmp.counts() == {"ok": 19, "regression": 1}
    assert [p.point_id for p in cmp.points if p.verdict == "regression"] == ["p13"]
    result = invoke("compare", tmp_path / "base", tmp_path / "cur", "--json", tmp_path / "v.json")
    assert result.exit_code == 1
    assert "## tbench compare: **REGRESSION**" in result.output
    # regressions first: p13's timing row, with its interval [1.2 e^-h, 1.2 e^h]
    rows = [line for line in result.output.splitlines() if line.startswith("| p") and "`)" in line]
    assert rows[0] == (f"| p13 (`p13`) | latency_ms_p50 | 10.48 | 12.58 | 1.200 "
                       f"[{1.2 * math.exp(-HALF):.3f}, {1.2 * math.exp(HALF):.3f}] | "
                       "regression: 3 rounds a side |")
    assert rows[2].endswith("| 1.000 [0.966, 1.035] | ok: 3 rounds a side |")  # e^-+h
    verdict = json.loads((tmp_path / "v.json").read_text())
    assert verdict["verdict"] == "regression" and verdict["exit_code"] == 1
    assert verdict["counts"] == {"ok": 19, "regression": 1}
    (timing,) = [m for p in verdict["points"] if p["point_id"] == "p13" for m in p["metrics"]
                 if m["metric"] == "latency_ms_p50"]
    assert (timing["ci_low"], timing["ci_high"], timing["n"]) == (
        pytest.approx(1.2 * math.exp(-HALF)), pytest.approx(1.2 * math.exp(HALF)), 3)
    assert "p_value" not in timing


def test_all_same_passes_and_deterministic_only_makes_timing_informational(tmp_path):
    write_run(tmp_path / "base", [_run(i) for i in range(3)])
    write_run(tmp_path / "same", [_run(i) for i in range(3)])
    write_run(tmp_path / "slow", [_run(i, factor=1.5) for i in range(3)])
    assert invoke("compare", tmp_path / "base", tmp_path / "same").exit_code == 0
    assert invoke("compare", tmp_path / "base", tmp_path / "slow").exit_code == 1
    r = invoke("compare", tmp_path / "base", tmp_path / "slow", "--deterministic-only")
    assert r.exit_code == 0 and "regression (info)" in r.output
    r = invoke("compare", tmp_path / "base", tmp_path / "slow", "--metric", "flops_per_step")
    assert r.exit_code == 0 and "latency_ms_p50" not in r.output


def test_improvement_only_passes(tmp_path):
    write_run(tmp_path / "base", [_run(i) for i in range(3)])
    write_run(tmp_path / "fast", [_run(i, factor=0.7) for i in range(3)])
    r = invoke("compare", tmp_path / "base", tmp_path / "fast")
    assert r.exit_code == 0 and "IMPROVEMENT" in r.output


def test_no_matched_points_is_an_error(tmp_path):
    write_run(tmp_path / "a", [_run(0)])
    write_run(tmp_path / "b", [_run(1)])
    with pytest.raises(BadInput, match="no matched points"):
        compare_records([_run(0)], [_run(1)])
    r = invoke("compare", tmp_path / "a", tmp_path / "b")
    assert r.exit_code == 2 and "no matched points" in r.output
    assert "Traceback" not in r.output


def test_different_environments_are_incomparable_unless_forced(tmp_path):
    write_run(tmp_path / "a", [_run(0)], fingerprint="cpu-A")
    write_run(tmp_path / "b", [_run(0)], fingerprint="gpu-B")
    cmp = compare_runs(read_run_folder(tmp_path / "a"), read_run_folder(tmp_path / "b"))
    assert cmp.verdict == "incomparable" and cmp.exit_code == 2
    assert "incomparable" in to_markdown(cmp)
    assert invoke("compare", tmp_path / "a", tmp_path / "b").exit_code == 2
    assert invoke("compare", tmp_path / "a", tmp_path / "b", "--force").exit_code == 0


@pytest.mark.parametrize("args, message", [
    (["missing-dir", "missing-dir"], "not a run folder"),
    (["{a}", "{a}", "--threshold", "five"], "--threshold"),
    (["{a}", "{a}", "--metric", "latency_typo"], "unknown metric"),
])
def test_bad_input_exits_2_with_a_message(tmp_path, args, message):
    write_run(tmp_path / "a", [_run(0)])
    r = invoke("compare", *[a.format(a=tmp_path / "a") for a in args])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output


def test_corrupt_results_file_exits_2(tmp_path):
    write_run(tmp_path / "a", [_run(0)])
    with open(tmp_path / "a" / "results.jsonl", "a") as f:
        f.write("{not json\n" + json.dumps(_run(1)) + "\n")
    r = invoke("compare", tmp_path / "a", tmp_path / "a")
    assert r.exit_code == 2 and "corrupt" in r.output


def test_markdown_escapes_pipes_from_data(tmp_path):
    write_run(tmp_path / "a", [_run(0, label="a|b\nc")])
    cmp = compare_runs(read_run_folder(tmp_path / "a"), read_run_folder(tmp_path / "a"))
    md = to_markdown(cmp)
    assert "a\\|b c (`p00`)" in md
    # six columns: point, metric, base, current, ratio [interval], verdict
    rows = [line for line in md.splitlines() if line.startswith("| a")]
    assert rows and all(line.count(" | ") == 5 for line in rows)


def test_override_parsing():
    assert parse_spec("ops.name=eager; workload.seq_len=128") == ["ops.name=eager",
                                                                  "workload.seq_len=128"]
    with pytest.raises(BadInput, match="not PATH=VALUE"):
        parse_spec("nonsense")


def test_gate_cli_needs_exactly_one_mode(tmp_path):
    r = invoke("gate", tmp_path / "suite.yaml")
    assert r.exit_code == 2 and "exactly one" in r.output


@dataclass(frozen=True)
class FakePoint:
    id: str
    label: str
    index: int

    def model_copy(self, update: dict) -> FakePoint:
        return replace(self, **update)


@dataclass(frozen=True)
class FakePlan:
    points: tuple
    pairs: tuple | None = None


PAIR_LOGS = [0.01, -0.01, 0.0]  # pair i's three blocks: log(B_i / A_i) about 0 (pair 3: 20% more)


def test_ab_gate_measures_both_sides_in_one_run_and_one_regression_among_many_fails(monkeypatch):
    """Six points a side; the run measures all twelve, side A's point i and side B's point i as
    a pair group, and records B_i's ratio to A_i; only pair 3 is 20% slower."""
    from harness.records import pairs
    from harness.run import gate

    sets_seen, plans_run = [], []

    def plan_of(suite_path, sets, out_dir, name):
        sets_seen.append(list(sets))
        side = "A" if "ops.name=eager" in sets else "B"
        return FakePlan(tuple(FakePoint(f"{side}{i}", f"{side}{i}", i) for i in range(6)))

    def run_folder(plan):
        plans_run.append(plan)
        recs = []
        for p in plan.points:
            i = int(p.id[1:])
            slow = math.log(1.2) if p.id == "B3" else 0.0
            rec = record(p.id, label=p.label, index=p.index, samples_ms=[10.0 * math.exp(slow)] * 10,
                         metrics={"flops_per_step": 5e9})
            if p.id.startswith("B"):
                ratio = pairs.paired([x + slow for x in PAIR_LOGS], 0.05, 0.95)
                rec["comparisons"] = [dict(ratio.__dict__, vs=f"A{i}", excluded_pairs=0)]
            recs.append(rec)
        return SimpleNamespace(records=recs)

    monkeypatch.setattr(gate, "plan_of", plan_of)
    monkeypatch.setattr(gate, "run_folder", run_folder)
    cmp = gate.ab_gate("s.yaml", ["ops.name=eager"], ["ops.name=fused"], None, ["measure.threads=1"])
    # both sides planned with the same run-wide settings, rounds decided against the threshold
    assert sets_seen == [["measure.threads=1", "measure.rounds=auto", "compare.resolution=0.05",
                          side] for side in ("ops.name=eager", "ops.name=fused")]
    (plan,) = plans_run  # ONE run: A's points, then B's renumbered after them
    assert [(p.id, p.index) for p in plan.points] == [(f"A{i}", i) for i in range(6)] + [
        (f"B{i}", 6 + i) for i in range(6)]
    assert plan.pairs == tuple((f"A{i}", f"B{i}") for i in range(6))
    assert cmp.method == "paired" and cmp.verdict == "regression" and cmp.exit_code == 1
    assert cmp.counts() == {"ok": 5, "regression": 1}
    assert [(p.point_id, p.label, p.verdict) for p in cmp.points][3] == ("pair3", "A3 → B3",
                                                                        "regression")
    # the run's own ratio: t (2 df) on log 1.2 + PAIR_LOGS; sd(PAIR_LOGS) = 0.01
    timing = cmp.points[3].metrics[0]
    h = t_quantile(0.975, 2) * 0.01 / math.sqrt(3)
    assert (timing.ratio, timing.ci_low, timing.ci_high) == pytest.approx(
        (1.2, 1.2 * math.exp(-h), 1.2 * math.exp(h)))  # [1.170, 1.231]
    assert (timing.n, timing.note) == (3, "3 pairs")
    assert all(m.verdict == "ok" for p in cmp.points if p.point_id != "pair3" for m in p.metrics)
    assert "timing: the ratio of each round's medians, both sides measured round by round" in \
        to_markdown(cmp)


def test_ab_sides_that_do_not_differ_are_refused(monkeypatch):
    from harness.run import gate

    monkeypatch.setattr(gate, "plan_of", lambda suite, sets, out, name: FakePlan(
        (FakePoint("x", "dense/eager", 0),)))
    with pytest.raises(BadInput, match="resolve to the same point"):
        gate.ab_gate("s.yaml", ["ops.name=eager"], ["ops.name=eager"], None, [])


REV_SUITE = """
name: rev
model: {preset: tiny}
workload: {kind: forward, batch_size: 1, seq_len: 16, num_batches: 1}
measure: {warmup_iters: 1, warmup_s: 0.0, min_samples: 10, min_time_s: 0.0, max_samples: 10}
"""


@pytest.mark.slow
def test_rev_gate_runs_a_revision_and_the_working_tree_round_by_round(tmp_path):
    """A real worktree of HEAD and the working tree, each run by its own code, interleaved."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    suite = tmp_path / "rev.yaml"  # outside the repository: the same file for both sides
    suite.write_text(REV_SUITE)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "harness.cli", "gate", str(suite), "--rev", "HEAD",
                        "--rounds", "2", "--out", str(out), "--json", str(tmp_path / "v.json")],
                       cwd=root, capture_output=True, text=True)
    assert r.returncode in (0, 1), r.stderr  # a verdict, whatever it is (no fake timings here)
    verdict = json.loads((tmp_path / "v.json").read_text())
    (point,) = verdict["points"]
    assert point["presence"] == "matched" and verdict["method"] == "paired"
    timing = point["metrics"][0]  # the two rounds' medians, paired round by round
    assert timing["metric"] == "latency_ms_p50" and timing["n"] == 2
    assert timing["note"].startswith("2 pairs")
    started = {f"{side}/round{i}": json.loads((out / side / f"round{i}" / "run.json").read_text())
               ["started_at"] for side in ("base", "current") for i in (0, 1)}
    order = sorted(started, key=started.get)  # seconds resolution: ties keep the loop's order
    assert order[0] == "base/round0" and set(order[2:]) == {"current/round1", "base/round1"}
    env = json.loads((out / "base" / "round0" / "env.json").read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    assert env["git"]["commit"] == head.stdout.strip()  # the base side ran the revision's code
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=root, capture_output=True, text=True)
    assert "tbench-rev-" not in worktrees.stdout  # removed afterwards


def test_rev_gate_unknown_revision_is_one_line(tmp_path):
    suite = tmp_path / "rev.yaml"
    suite.write_text(REV_SUITE)
    r = invoke("gate", suite, "--rev", "no-such-rev-xyz")
    assert r.exit_code == 2 and "no-such-rev-xyz" in r.output and "Traceback" not in r.output
