"""How a run measures what it compares (harness.run.design, through harness.run.lifecycle):
groups and baselines, blocks in random order, duets with lanes swapped, threads from the
machine's load, and ``measure.rounds: auto`` stopping when every comparison is decided. A
stand-in round (passed to ``lifecycle.run``) gives scripted step times: no worker starts."""
from __future__ import annotations

import json
import random

import pytest

from harness import records
from harness.run import lifecycle
from harness.run.design import Choice, Design, choose, group_key
from harness.run.plan import points_plan
from harness.suite.loader import parse_suite
from harness.suite.schema import CompareSpec
from harness.suite.sweep import expand


def suite_points(attention=("dense", {"name": "local", "window": 8}, {"name": "block", "block_size": 8}),
                 seq=(32,), **measure):
    data = {"name": "design", "model": {"preset": "tiny", "overrides": {"n_encoder_layers": 0}},
            "workload": {"kind": "forward", "batch_size": 1},
            "measure": {"rounds": 3, **measure},
            "sweep": {"grid": {"workload.seq_len": list(seq), "strategies.attention": list(attention)}}}
    return expand(parse_suite(data, "test"), "cpu")


class Scripted:
    """A stand-in round: the point's scripted median (ms, by its attention label) times a
    seeded log-normal noise; records the calls."""

    def __init__(self, ms: dict[str, float], noise: float = 0.01, seed: int = 0):
        self.ms, self.noise, self.rng, self.calls = ms, noise, random.Random(seed), []

    def __call__(self, point, run_dir, grace_s, round_no, where=None):
        self.calls.append((point.strategies.attention.label, round_no, dict((where.env if where else ()))))
        t = self.ms[point.strategies.attention.label] * (1 + self.rng.gauss(0, self.noise))
        return {"status": "ok", "samples_ms": [t] * 10, "metrics": {}, "warnings": [],
                "contention": {"contended": False, "reasons": []}, "round": round_no,
                "started_at": "t", "duration_s": 0.01}


@pytest.fixture
def run(monkeypatch):
    """``lifecycle.run`` with the design's choice fixed (as a resumed run finds it in run.json)."""
    original = lifecycle.design_of

    def go(points, out, fake, choice: Choice):
        def fixed(plan, session):
            session.opened.run["design"] = choice.as_json()
            return original(plan, session)

        monkeypatch.setattr(lifecycle, "design_of", fixed)
        return lifecycle.run(points_plan(points, out), measure_round=fake, reports=False)

    return go


INTERLEAVED = Choice("interleaved", 1, (), 2, 1.0, "test")
DUET = Choice("duet", 1, ((0,), (1,)), 2, 0.0, "test")


def test_groups_are_points_that_differ_only_in_strategies_and_the_baseline_is_dense():
    pts = suite_points(seq=(16, 32))
    design = Design(pts, CompareSpec(), INTERLEAVED)
    assert [len(g.points) for g in design.groups] == [3, 3]
    assert all(g.baseline.strategies.attention.label == "dense" for g in design.groups)
    assert len({group_key(p) for p in pts}) == 2
    rule = Design(pts, CompareSpec(baseline={"strategies.attention": "block_b8"}), INTERLEAVED)
    assert rule.groups[0].baseline.strategies.attention.label == "block_b8"


def test_each_block_runs_its_group_in_a_fresh_seeded_order(tmp_path, run):
    pts = suite_points(rounds=4)
    fake = Scripted({"dense": 10.0, "local_w8": 12.0, "block_b8": 8.0})
    result = run(pts, tmp_path, fake, INTERLEAVED)
    assert result.counts == {"ok": 3}
    orders = [[label for label, _, _ in fake.calls[i * 3:(i + 1) * 3]] for i in range(4)]
    assert all(sorted(o) == ["block_b8", "dense", "local_w8"] for o in orders)  # a block each
    assert len({tuple(o) for o in orders}) > 1  # the order is drawn anew
    again = Scripted({"dense": 10.0, "local_w8": 12.0, "block_b8": 8.0})
    run(pts, tmp_path / "again", again, INTERLEAVED)
    assert [c[0] for c in again.calls] == [c[0] for c in fake.calls]  # seeded: the same draw
    recs = {r["label"].split("/")[0]: r for r in records.read_records(tmp_path)}
    assert [x["block"] for x in recs["dense"]["rounds"]] == [1, 2, 3, 4]
    assert all(c[2]["TBENCH_THREADS"] == "1" for c in fake.calls)  # the run's choice, every point
    (cmp,) = recs["block_b8"]["comparisons"]
    assert cmp["vs"] == recs["dense"]["point_id"] and cmp["verdict"] == "faster"
    assert cmp["estimate"] == pytest.approx(0.8, rel=0.02)
    assert recs["dense"]["design"]["stopped"] == "fixed" and recs["dense"]["comparisons"] == []


def test_auto_adds_blocks_until_every_comparison_is_decided(tmp_path, run):
    """block 0.8x and local 1.2x the baseline with 1% noise: decided at the first look (3
    pairs); equal within the resolution needs more pairs; 20% noise never decides by max_rounds."""
    pts = suite_points(rounds="auto", min_rounds=3, max_rounds=12)
    run(pts, tmp_path / "clear", Scripted({"dense": 10.0, "local_w8": 12.0, "block_b8": 8.0}), INTERLEAVED)
    recs = records.read_records(tmp_path / "clear")
    assert {r["design"]["stopped"] for r in recs} == {"decided"}
    assert {r["design"]["blocks"] for r in recs} == {3} and recs[0]["design"]["looks"] == 1
    run(pts, tmp_path / "equal", Scripted({"dense": 10.0, "local_w8": 10.0, "block_b8": 8.0}), INTERLEAVED)
    rec = {r["label"].split("/")[0]: r for r in records.read_records(tmp_path / "equal")}
    (cmp,) = rec["local_w8"]["comparisons"]
    assert cmp["verdict"] == "equal" and cmp["look"] == rec["local_w8"]["design"]["looks"]
    noisy = Scripted({"dense": 10.0, "local_w8": 10.3, "block_b8": 9.7}, noise=0.2)
    run(pts, tmp_path / "noisy", noisy, INTERLEAVED)
    rec = records.read_records(tmp_path / "noisy")[0]
    assert rec["design"]["stopped"] == "max_rounds" and rec["design"]["blocks"] == 12
    assert any(c["verdict"] == "undecided" for r in records.read_records(tmp_path / "noisy")
               for c in r["comparisons"])


def test_auto_stops_when_the_budget_is_spent(tmp_path, run):
    pts = suite_points(rounds="auto", min_rounds=3, max_rounds=50, budget_s=0.1)
    noisy = Scripted({"dense": 10.0, "local_w8": 10.3, "block_b8": 9.7}, noise=0.2)
    run(pts, tmp_path, noisy, INTERLEAVED)  # each round "took" 0.01 s: 9 rounds > 0.1 s
    rec = records.read_records(tmp_path)[0]
    assert rec["design"]["stopped"] == "budget" and rec["design"]["blocks"] == 4


def test_a_duet_pairs_each_point_with_the_baseline_on_swapped_lanes(tmp_path, run):
    pts = suite_points()
    fake = Scripted({"dense": 10.0, "local_w8": 12.0, "block_b8": 8.0})
    run(pts, tmp_path, fake, DUET)
    recs = {r["label"].split("/")[0]: r for r in records.read_records(tmp_path)}
    assert len(recs["dense"]["rounds"]) == 6 and len(recs["local_w8"]["rounds"]) == 3
    lanes = [(x["block"], x["duet"]["lane"]) for x in recs["local_w8"]["rounds"]]
    assert [lane for _, lane in lanes] in ([[0], [1], [0]], [[1], [0], [1]])  # alternating
    for name in ("local_w8", "block_b8"):
        partner = {x["duet"]["partner"] for x in recs[name]["rounds"]}
        assert partner == {recs["dense"]["point_id"]}
    envs = [c[2] for c in fake.calls]
    assert all(e["TBENCH_DUET"] and e["TBENCH_CPUS"] in ("0", "1") for e in envs)
    assert recs["block_b8"]["comparisons"][0]["verdict"] == "faster"


def test_the_choice_follows_the_machine():
    pts = suite_points()
    quiet = choose(pts, CompareSpec(), others_cores=0.0)
    busy = choose(pts, CompareSpec(), others_cores=1.0)
    import os

    cores = len(os.sched_getaffinity(0))
    if cores >= 2:
        assert quiet.kind == "duet" and quiet.threads == cores // 2 and len(quiet.lanes) == 2
        assert not set(quiet.lanes[0]) & set(quiet.lanes[1])
    assert busy.kind == "interleaved" and busy.threads == max(1, cores - 1)
    assert "1.00 cores busy" in busy.why
    assert choose(pts, CompareSpec(design="interleaved"), others_cores=0.0).kind == "interleaved"
    assert choose(pts, CompareSpec(pairs="all"), others_cores=0.0).kind == "interleaved"
    assert choose(pts, CompareSpec(design="independent"), others_cores=0.0).kind == "independent"
    assert Choice.from_json(json.loads(json.dumps(quiet.as_json()))) == quiet
