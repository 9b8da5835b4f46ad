"""A duet with real workers: both sides pinned to disjoint cores, sampling the same seconds,
their rounds paired over the window both covered (harness.run.duet, harness.measure.rendezvous)."""
from __future__ import annotations

import os

import pytest

from harness import records
from harness.run import lifecycle
from harness.run.design import Choice
from harness.run.plan import points_plan
from harness.suite.loader import parse_suite
from harness.suite.sweep import expand

pytestmark = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="a duet needs two cores")


def test_both_halves_run_on_disjoint_cores_at_the_same_time(tmp_path, monkeypatch):
    data = {"name": "duet", "model": {"preset": "tiny", "overrides": {"n_encoder_layers": 0}},
            "workload": {"kind": "forward", "batch_size": 1, "seq_len": 64, "num_batches": 1},
            "measure": {"rounds": 2, "warmup_iters": 1, "warmup_s": 0.0, "min_samples": 10,
                        "min_time_s": 0.3, "max_samples": 10, "timeout_s": 120},
            "sweep": {"grid": {"strategies.attention": ["dense", {"name": "local", "window": 8}]}}}
    points = expand(parse_suite(data, "test"), "cpu")
    cores = sorted(os.sched_getaffinity(0))[:2]
    choice = Choice("duet", 1, ((cores[0],), (cores[1],)), 2, 0.0, "test")
    original = lifecycle.design_of

    def fixed(plan, session):
        session.opened.run["design"] = choice.as_json()
        return original(plan, session)

    monkeypatch.setattr(lifecycle, "design_of", fixed)
    lifecycle.run(points_plan(points, tmp_path), reports=False)
    dense, local = sorted(records.read_records(tmp_path), key=lambda r: r["index"])
    assert dense["status"] == local["status"] == "ok", (dense["error"], local["error"])
    rounds = {pid: {r["round"]: r for r in rs} for pid, rs in records.read_rounds(tmp_path).items()}
    for block in (1, 2):
        a, b = rounds[dense["point_id"]][block], rounds[local["point_id"]][block]
        assert a["metrics"]["cpus"] != b["metrics"]["cpus"]  # one core each, disjoint
        assert {a["metrics"]["cpus"][0], b["metrics"]["cpus"][0]} == set(cores)
        assert a["metrics"]["threads"] == b["metrics"]["threads"] == 1
        ta, tb = a["contention"]["started_epoch_s"], b["contention"]["started_epoch_s"]
        window = a["duet"]["window_s"]
        assert window == b["duet"]["window_s"] >= 0.3
        assert abs(ta - tb) < window / 2  # sampling started together (the rendezvous' "go")
        assert a["duet"]["partner"] == local["point_id"] and b["duet"]["partner"] == dense["point_id"]
        common = a["duet"]["common_s"]
        assert 0 < common <= min(a["sample_ends_s"][-1], b["sample_ends_s"][-1]) + 1e-9
    lanes = [rounds[local["point_id"]][k]["duet"]["lane"] for k in (1, 2)]
    assert lanes[0] != lanes[1]  # the cores swap between the pairs
    (cmp,) = local["comparisons"]
    assert cmp["n"] == 2 and cmp["estimate"] > 0
