"""tbench compare / gate decisions on hand-built runs, with hand-computed expectations."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from results_factory import record, write_run
from typer.testing import CliRunner

from harness.analyse.compare import (
    compare_records,
    compare_runs,
    deterministic_verdict,
    timing_verdict,
    to_markdown,
)
from harness.cli import app as tbench_app
from harness.records import BadInput, read_run_folder
from harness.run.gate import parse_spec, pool

BASE = [10.0 + 0.1 * i for i in range(10)]  # median 10.45


def normal_tail(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


def app():
    return tbench_app


def invoke(*args):
    return CliRunner().invoke(app(), [str(x) for x in args])


def test_regression_when_both_ratio_and_test_agree():
    r = timing_verdict(BASE, [x * 1.2 for x in BASE], threshold=0.05)
    assert r.verdict == "regression"
    assert r.ratio == pytest.approx(1.2)
    # every current sample exceeds every base sample: U = 100, n = m = 10, scipy's normal
    # approximation with continuity correction: z = (100 - 50 - 0.5) / sqrt(100 * 21 / 12)
    assert r.p_value == pytest.approx(normal_tail(49.5 / math.sqrt(175)), rel=1e-9)


def test_improvement_is_symmetric():
    r = timing_verdict(BASE, [x / 1.2 for x in BASE], threshold=0.05)
    assert r.verdict == "improvement"
    assert r.ratio == pytest.approx(1 / 1.2)
    assert r.p_value == pytest.approx(normal_tail(49.5 / math.sqrt(175)), rel=1e-9)


def test_noise_is_ok():
    current = [x + 0.05 for x in BASE]  # interleaved with the base samples
    r = timing_verdict(BASE, current, threshold=0.05)
    assert r.verdict == "ok"
    assert r.ratio == pytest.approx(10.5 / 10.45)


def test_significant_but_small_shift_is_inconclusive():
    base = [10.0 + 0.01 * i for i in range(10)]
    r = timing_verdict(base, [x + 0.3 for x in base], threshold=0.05)  # +3%, all slower
    assert r.verdict == "inconclusive"
    assert r.p_value < 0.01 and r.ratio < 1.05


def test_large_but_not_significant_shift_is_inconclusive():
    # 5 vs 5, U = 15 of 25: exact one-sided p = P(U >= 15) = 87/252
    r = timing_verdict([1, 2, 3, 4, 5], [1.5, 2.5, 3.5, 4.5, 5.5], threshold=0.05)
    assert r.ratio == pytest.approx(3.5 / 3)
    assert r.p_value == pytest.approx(87 / 252)
    assert r.verdict == "inconclusive"


def test_too_few_samples_is_inconclusive():
    r = timing_verdict([10, 10, 10, 10], [20, 20, 20, 20], threshold=0.05)
    assert r.verdict == "inconclusive" and "too few samples" in r.note
    assert r.ratio == 2.0


def test_deterministic_metrics_exact_within_tiny_tolerance():
    assert deterministic_verdict("flops_per_step", 1e12, 1e12 * (1 + 1e-12)).verdict == "ok"
    assert deterministic_verdict("flops_per_step", 1e12, 1e12 * (1 + 1e-6)).verdict == "regression"
    assert deterministic_verdict("mem_peak_allocated_bytes", 1000, 999).verdict == "improvement"
    assert deterministic_verdict("padding_efficiency", 0.9, 0.8).verdict == "regression"
    assert deterministic_verdict("padding_efficiency", 0.8, 0.9).verdict == "improvement"
    assert deterministic_verdict("model_state_bytes_max", None, None).verdict == "ok"


def _run(i: int, factor: float = 1.0, **kw):
    return record(f"p{i:02d}", index=i, samples_ms=[x * factor for x in BASE],
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
    assert "REGRESSION" in result.output and "p13" in result.output
    verdict = json.loads((tmp_path / "v.json").read_text())
    assert verdict["verdict"] == "regression" and verdict["exit_code"] == 1
    assert verdict["counts"] == {"ok": 19, "regression": 1}


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
    assert all(line.count(" | ") == 6 for line in md.splitlines() if line.startswith("| a"))


def test_ab_pooling_and_override_parsing():
    a = record("x", samples_ms=[1, 2, 3], metrics={"flops_per_step": 5.0})
    b = record("x", samples_ms=[4, 5], metrics={"flops_per_step": 5.0})
    p = pool([a, b], "pair0")
    # two runs = two rounds: medians 2 and 4.5, the headline their mean
    assert p["samples_ms"] == [1, 2, 3, 4, 5] and p["metrics"]["latency_ms_p50"] == 3.25
    assert p["metrics"]["latency_ms_round_p50s"] == [2, 4.5] and p["metrics"]["n_rounds"] == 2
    assert p["metrics"]["flops_per_step"] == 5.0 and p["pair_key"] == "pair0"
    assert pool([a, record("x", status="oom")], "k")["status"] == "oom"
    assert parse_spec("ops.name=eager; workload.seq_len=128") == ["ops.name=eager",
                                                                  "workload.seq_len=128"]
    with pytest.raises(BadInput, match="not PATH=VALUE"):
        parse_spec("nonsense")


def test_gate_cli_needs_exactly_one_mode(tmp_path):
    r = invoke("gate", tmp_path / "suite.yaml")
    assert r.exit_code == 2 and "exactly one" in r.output



def test_ab_gate_alternates_order_and_pools_rounds(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from harness.run import gate

    pts = {side: [SimpleNamespace(id=f"{side}{i}", label=f"{side}{i}") for i in range(2)]
           for side in "AB"}
    def side(sets):
        return pts["A" if "ops.name=eager" in sets else "B"]

    monkeypatch.setattr(gate, "side_points", lambda path, sets: side(sets))
    calls = []

    def fake_run(suite_path, sets, index, out_dir):
        p = side(sets)[index]
        calls.append(p.id)
        slow = 1.2 if p.id == "B1" else 1.0  # the candidate is 20% slower on pair 1 only
        return [record(p.id, samples_ms=[x * slow for x in BASE])]

    monkeypatch.setattr(gate, "run_point", fake_run)
    cmp = gate.ab_gate("s.yaml", ["ops.name=eager"], ["ops.name=fused"], tmp_path, [], rounds=2)
    assert calls == ["A0", "B0", "B1", "A1", "B0", "A0", "A1", "B1"]  # AB BA / BA AB
    assert [(p.point_id, p.verdict) for p in cmp.points] == [("A0", "ok"), ("A1", "regression")]
    assert cmp.exit_code == 1
    assert cmp.points[1].metrics[0].ratio == pytest.approx(1.2)


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

    root = Path(__file__).resolve().parents[1]
    suite = tmp_path / "rev.yaml"  # outside the repository: the same file for both sides
    suite.write_text(REV_SUITE)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "harness.cli", "gate", str(suite), "--rev", "HEAD",
                        "--rounds", "2", "--out", str(out), "--json", str(tmp_path / "v.json")],
                       cwd=root, capture_output=True, text=True)
    assert r.returncode in (0, 1), r.stderr  # a verdict, whatever it is (no fake timings here)
    verdict = json.loads((tmp_path / "v.json").read_text())
    (point,) = verdict["points"]
    assert point["presence"] == "matched" and point["metrics"][0]["note"] == "2 vs 2 rounds"
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
