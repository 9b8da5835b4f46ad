"""``tbench tune``: the search's arithmetic by hand, the pruning's reasons, the memory-model
pruning held against the real budgeted probe, a stand-in strategy that skips work and is never
named, and the command's bad input refused in one line."""
from __future__ import annotations

import contextlib
import json
import time

import pytest
import torch
from typer.testing import CliRunner

from harness import records
from harness.cli import app
from harness.measure import measurement
from harness.measure.worker import seed_everything
from harness.run import rounds
from harness.run import tune as tuning
from harness.run import tune_space as ts
from harness.run.frontier import probe_status
from harness.suite.errors import SuiteError
from harness.suite.loader import parse_suite
from harness.suite.sweep import expand, load_points
from implementations import registry
from implementations.attention.dense import DenseAttention

FAST = {"warmup_iters": 1, "warmup_s": 0.0, "min_samples": 10, "min_time_s": 0.0, "max_samples": 10,
        "threads": 1, "rounds": "auto", "min_rounds": 2, "max_rounds": 3, "budget_s": 30}


def suite_of(grid: dict, tune: dict | None = None, **over):
    data = {"name": "tune-test", "model": {"preset": "tiny", "overrides": {"n_encoder_layers": 0,
                                                                          "max_seq_len": 64}},
            "workload": {"kind": "train", "batch_size": 2, "seq_len": 64, "num_batches": 1},
            "measure": FAST, "tune": {"budget_s": 120, "first_window_s": 0.0, **(tune or {})},
            "sweep": {"grid": grid}, **over}
    suite = parse_suite(data, "t")
    return suite, expand(suite, "cpu")


def test_schedule_halves_down_to_the_finalists():
    assert ts.schedule(202, 3, 3) == [202, 68, 23, 8]
    assert ts.schedule(9, 3, 3) == [9]  # 9 -> 3: the finalists come straight from rung 0
    assert ts.schedule(10, 3, 3) == [10, 4]
    assert ts.schedule(2, 3, 3) == [2] and ts.schedule(100, 2, 4) == [100, 50, 25, 13, 7]


def rec(time_ms, peak, status="ok", tokens=None):
    return {"status": status, "label": f"{time_ms}/{peak}",
            "metrics": {"latency_ms_p50": time_ms, "mem_peak_rss_above_baseline_bytes": peak,
                        "tokens_per_s": tokens}}


def test_scores_by_hand():
    r = rec(10.0, 400.0, tokens=2000.0)
    assert ts.score(r, "latency") == 10.0 and ts.score(r, "peak_memory") == 400.0
    assert ts.score(r, "tokens_per_s") == 1 / 2000.0
    assert ts.score(r, {"time": 1.0, "memory": 0.5}) == pytest.approx(10.0 * 20.0)  # 400^0.5
    assert ts.score(rec(10.0, 400.0, status="oom"), "latency") is None


def test_pareto_front_by_hand():
    rows = [{"label": n, "time_ms": t, "peak_bytes": p}
            for n, t, p in [("a", 1, 9), ("b", 2, 5), ("c", 3, 6), ("d", 4, 1), ("e", 2, 5)]]
    assert [r["label"] for r in ts.pareto(rows)] == ["a", "b", "d", "e"]  # c: b beats it on both


def test_every_skipped_configuration_carries_its_reason():
    suite, points = suite_of({"strategies.attention": ["dense", {"name": "topk", "k": 8, "chunk": 32}],
                              "strategies.attention.kernel": ["auto", "mask"],
                              "strategies.ops": ["eager", "fused"]})
    big = max(ts.memory_model.predict(p).peak_bytes for p in points)
    kept, close, skipped = ts.prune(points, int(big / 1.5))
    assert len(kept) + len(close) + len(skipped) == len(points) == 8
    kinds = {s.kind for s in skipped}
    assert kinds == {"not_supported", "over_budget"}
    for s in skipped:
        assert s.reason and s.label
        if s.kind == "over_budget":
            assert "> budget" in s.reason and "30%" in s.reason
        else:
            assert "topk picks keys by score" in s.reason


def test_a_space_that_varies_the_workload_is_refused():
    _, points = suite_of({"workload.batch_size": [1, 2]})
    with pytest.raises(SuiteError, match="the sweep varies more than strategies"):
        ts.check_space(points)


class SkipsWork(DenseAttention):
    """A stand-in that claims to be dense attention and skips the work: it returns the values
    untouched (no scores, no softmax), so it is the fastest configuration of any space."""

    def attend(self, q, k, v, **kwargs):
        return v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)


@pytest.fixture
def skips_work():
    registry.register("attention", "skips_work")(SkipsWork)
    yield
    registry._REGISTRY["attention"].pop("skips_work")


def in_process(point, run_dir, grace_s, round_no, where=None):
    """The real measurement of one round, in this process (where the stand-in is registered)."""
    seed_everything(point.seed)
    t0 = time.perf_counter()
    work = rounds.work_dir(run_dir, point, round_no)  # a profiled pass writes its trace here
    work.mkdir(parents=True, exist_ok=True)
    with contextlib.chdir(work), point.strategies.ops.kernel_context():
        rec = measurement.measure_point(point)
    rec.update(round=round_no, started_at="now", duration_s=time.perf_counter() - t0, attempts=1)
    rec["contention"] = dict(rec.get("contention") or {}, contended=False, reasons=[])
    return rec


@pytest.mark.slow
def test_a_configuration_that_skips_work_is_never_named(skips_work, tmp_path):
    """The stand-in is the fastest in every rung; the correctness check (its model against its
    reference twin: the same weights, dense attention by its rule's mask) fails it, the
    search says why and names the fastest configuration that passes."""
    suite, points = suite_of({"strategies.attention": ["dense", "skips_work", {"name": "local", "window": 16}],
                              "strategies.ops": ["fused", "eager"]}, {"finalists": 2},
                             compare={"design": "interleaved"})  # in process: one at a time
    answer = tuning.run_tune(suite, points, tmp_path / "tune", measure_round=in_process)
    state = json.loads((tmp_path / "tune" / "tune.json").read_text())
    first = json.loads((tmp_path / "tune" / "tune.json").read_text())["rungs"][0]
    assert first["configurations"] == 6
    rung0 = {r["label"]: r["metrics"]["latency_ms_p50"] for r in records.read_records(tmp_path / "tune" / "rung0")}
    fastest = min(rung0, key=rung0.get)
    assert fastest.startswith("skips_work")  # it did skip the work
    checked = [s for s in state["skipped"] if s["kind"] == "check"]
    assert fastest in [s["label"] for s in checked]
    assert all(s["label"].startswith("skips_work") for s in checked)
    assert all("correctness: gradients differ" in s["reason"] for s in checked)
    assert answer.winner is not None and not answer.winner["label"].startswith("skips_work")
    assert all(not f["label"].startswith("skips_work") for f in answer.finalists)
    assert state["answer"]["winner"]["label"] == answer.winner["label"]
    assert answer.runner_up is not None and answer.decision["verdict"] in ("slower", "equal", "undecided")
    assert not any(m["label"].startswith("skips_work") for m in answer.measured if m["label"] in answer.pareto)
    _, (again,) = load_points(tmp_path / "tune" / "winner.yaml", "cpu", [], [])
    assert again.id == answer.winner["point_id"]  # tbench run winner.yaml measures the same point


FRONTIER_MODEL = {"preset": "tiny", "overrides": {"n_encoder_layers": 0, "n_decoder_layers": 6,
                                                 "max_seq_len": 512}}  # test_frontier's model


@pytest.mark.slow
def test_pruning_never_drops_a_configuration_the_real_probe_shows_to_fit(tmp_path):
    """Every configuration the memory model prunes (predicted above the budget by more than its
    stated error) runs out of memory under the real budget (RLIMIT_DATA, the probe of tbench
    frontier), each in a fresh worker."""
    suite, points = suite_of({"strategies.memory": ["none", "full"], "strategies.ops": ["eager", "fused"],
                              "strategies.attention": ["dense", {"name": "local", "window": 32}]},
                             model=FRONTIER_MODEL,
                             workload={"kind": "train", "batch_size": 4, "seq_len": 512, "num_batches": 1})
    budget = 160 * 2**20
    kept, close, skipped = ts.prune(points, budget)
    pruned = [p for p in points if p.id in {s.point_id for s in skipped}]
    assert len(pruned) >= 2 and all(s.kind == "over_budget" for s in skipped)
    for p in pruned:
        probe = p.derive(measure={"rounds": 1, "memory_budget_bytes": budget})
        status = probe_status(rounds.measured_round(probe, tmp_path / p.id, 5.0, 1))
        assert status == "oom", (p.label, status)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["whole", "rungs"])
def test_a_spent_budget_is_said_and_resume_finishes(tmp_path, which):
    """The budget runs out during rung 0, after its third point (what the timer does, done by the
    stand-in): the running point is interrupted. The whole budget: the answer says so and names
    no unchecked winner. The rungs' share: the finalists come from the two configurations
    measured, checked and paired, and the answer says the rung was cut. ``resume`` with the
    budget left measures only what is missing."""
    grid = {"strategies.attention": ["dense", {"name": "local", "window": 16}],
            "strategies.ops": ["fused", "eager"], "strategies.memory": ["none", "full"]}
    suite, points = suite_of(grid, compare={"design": "interleaved"})
    out, seen = tmp_path / "tune", []

    def runs_out_after_three(point, *args):
        seen.append(point.id)
        if len(seen) == 3:  # [0]: the whole budget's timer, [-1]: the rungs' share
            tuning.Deadline.active[0 if which == "whole" else -1].expire()
        return in_process(point, *args)

    first = tuning.run_tune(suite, points, out, measure_round=runs_out_after_three)
    state = json.loads((out / "tune.json").read_text())
    assert first.budget_spent and state["spent_before_s"] > 0
    if which == "whole":
        assert first.winner is None and any("no winner named" in n for n in first.notes)
    else:
        assert first.winner is not None and any("rung 0 was cut" in n for n in first.notes)
        assert len(first.measured) == 2
    rounds0 = records.read_rounds(out / "rung0")
    measured = {pid for pid, rs in rounds0.items() if any(r["status"] == "ok" for r in rs)}
    assert len(measured) == 2

    again = tuning.run_tune(suite, points, out, resume=True, measure_round=in_process)
    assert again.winner is not None and not again.budget_spent
    rounds0 = records.read_rounds(out / "rung0")
    assert len(rounds0) == 8 and all(len(rounds0[pid]) == 1 for pid in measured)  # not measured again


def write_suite(tmp_path, text: str):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return str(path)


SMALL = """name: small
model: {preset: tiny, overrides: {n_encoder_layers: 0, max_seq_len: 64}}
workload: {kind: train, batch_size: 2, seq_len: 64}
tune: {memory_budget: 150MiB}
sweep:
  grid:
    strategies.attention: [dense, {name: topk, k: 8, chunk: 32}]
    strategies.attention.kernel: [auto, mask]
    strategies.ops: [fused, eager]
"""


@pytest.mark.parametrize("args, line", [
    (["--budget-s", "0"], "--budget-s: got 0, allowed: a number of seconds > 0"),
    (["--resume"], "--resume needs --out RUN_DIR"),
    (["--set", "workload.batch_size=[1,2]"], "tune: the sweep varies more than strategies"),
    (["SUITE", "tune: {memory_budget: lots}"], "tune.memory_budget: got 'lots', allowed: a positive size"),
    (["SUITE", "tune: {objective: speed}"], "tune.objective"),
])
def test_bad_tune_input_is_one_line(tmp_path, args, line):
    text = SMALL if args[0] != "SUITE" else SMALL.replace("tune: {memory_budget: 150MiB}", args[1])
    args = [] if args[0] == "SUITE" else args
    result = CliRunner().invoke(app, ["tune", write_suite(tmp_path, text), "--device", "cpu", *args])
    assert result.exit_code == 2, result.output
    assert line in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_dry_run_shows_the_space_the_skips_and_the_rungs(tmp_path):
    result = CliRunner().invoke(app, ["tune", write_suite(tmp_path, SMALL), "--device", "cpu", "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("space: 8 configurations;") and "skipped before measuring" in lines[0]
    skipped = [l for l in lines if l.startswith("  skipped ")]
    assert len(skipped) == int(lines[0].split(", ")[-1].split()[0])
    assert all(": " in l for l in skipped)  # each with its reason
    assert lines[-1].startswith("rungs: ") and "finalists" in lines[-1]
    assert not (tmp_path / "runs").exists()


def test_the_report_leads_with_the_decision_and_draws_the_front(tmp_path):
    """tune.md's first lines are the decision and the explanation; tune.html embeds the Pareto
    front as a PNG."""
    import base64
    import re

    from harness.analyse.tune_report import write_tune_report

    ratio = {"estimate": 1.31, "low": 1.25, "high": 1.37, "verdict": "slower", "n": 4}
    answer = {"winner": {"label": "local/fused", "point_id": "a" * 12, "time_ms": 10.0, "peak_bytes": 2**27},
              "decision": {"verdict": "slower", "text": "decided: local/fused is faster than the runner-up block/fused"},
              "finalists": [{"label": "local/fused", "time_ms": 10.0, "peak_bytes": 2**27, "estimate": 1.0,
                             "low": None, "high": None, "verdict": "baseline", "check": True}],
              "contributions": [dict(ratio, axis="attention", back_to="dense", memory_ratio=1.4),
                                dict(ratio, estimate=1.05, axis="ops", back_to="eager", memory_ratio=1.1)],
              "total": dict(ratio, estimate=2.0, label="dense/eager"), "profile": {"local/fused": {"attention": 0.2}},
              "measured": [{"label": n, "time_ms": t, "peak_bytes": p * 2**20, "rung": 1, "failed_check": f}
                           for n, t, p, f in [("local/fused", 10, 128, False), ("block/fused", 12, 100, False),
                                              ("dense/eager", 20, 300, False), ("skips", 5, 90, True)]],
              "pareto": ["local/fused", "block/fused"], "notes": [], "budget_spent": False}
    (tmp_path / "tune.json").write_text(json.dumps({"suite": "t", "spent_before_s": 100, "budget_s": 600,
                                                    "answer": answer, "rungs": [], "skipped": []}))
    md, page, png = write_tune_report(tmp_path)
    lines = md.read_text().splitlines()
    assert lines[2].startswith("- winner: local/fused") and lines[3].startswith("- decided:")
    assert any("the axis that contributes most: attention" in l for l in lines[:12])
    data = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page.read_text()).group(1)
    assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" == png.read_bytes()[:8]
