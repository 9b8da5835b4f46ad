"""Rounds: a point measured in several fresh worker processes, interleaved across the sweep,
its headline and CI from the round medians on the log scale, and a compare that judges on them.

Hand-computed cases pin the statistics; the sweep order and resume are checked with a stand-in
for one round (no worker start), the real worker path by tests/measure/test_contention.py.
"""
import json
import math

import pytest
from results_factory import sd, t_quantile

from harness import records
from harness.analyse.compare import compare_pair, timing_independent
from harness.records import stats
from harness.run import lifecycle, rounds, rundir
from harness.run.record import merge_metrics
from harness.run.plan import points_plan
from harness.suite.loader import parse_suite
from harness.suite.sweep import expand


def test_three_rounds_hand_computed():
    rounds = [[9.0, 10.0, 11.0], [10.0, 11.0, 12.0], [11.0, 12.0, 13.0]]
    m = stats.summarize_rounds(rounds)
    # round medians 10, 11, 12: the geometric mean exp(mean(log)) = 1320 ** (1/3) = 10.9696;
    # its CI exp(mean(log) -+ t(0.975, 2) s / sqrt(3)), s the sd of log 10, log 11, log 12
    assert m["latency_ms_round_p50s"] == [10.0, 11.0, 12.0] and m["n_rounds"] == 3
    logs = [math.log(10.0), math.log(11.0), math.log(12.0)]
    mean_log, s = math.fsum(logs) / 3, sd(logs)  # 2.39513, 0.091192
    assert m["latency_ms_p50"] == pytest.approx(1320 ** (1 / 3)) == pytest.approx(10.969613)
    half = t_quantile(0.975, 2) * s / math.sqrt(3)  # 0.226534
    assert m["latency_ms_p50_ci_low"] == pytest.approx(math.exp(mean_log - half))  # 8.7460
    assert m["latency_ms_p50_ci_high"] == pytest.approx(math.exp(mean_log + half))  # 13.7586
    assert m["latency_ms_between_round_cv"] == pytest.approx(s)  # ~ the CV 1/11 = 0.0909
    assert m["latency_ms_rounds_excluded"] == 0
    assert m["n_samples"] == 9 and m["latency_ms_mean"] == pytest.approx(11.0)  # pooled


def test_a_wide_spread_never_gives_an_interval_at_or_below_zero():
    """Round medians 1 and 100: an arithmetic t interval would be 50.5 -+ 12.706 x 70.0 /
    sqrt(2), below zero; on the logs it is 10 x exp(-+ 12.706 x log(100) / 2), positive."""
    m = stats.summarize_rounds([[1.0], [100.0]])
    half = t_quantile(0.975, 1) * sd([0.0, math.log(100.0)]) / math.sqrt(2)
    assert m["latency_ms_p50"] == pytest.approx(10.0)
    assert m["latency_ms_p50_ci_low"] == pytest.approx(10.0 * math.exp(-half)) and \
        m["latency_ms_p50_ci_low"] > 0
    assert m["latency_ms_p50_ci_high"] == pytest.approx(10.0 * math.exp(half))


def test_two_identical_rounds_have_a_zero_width_interval():
    m = stats.summarize_rounds([[5.0, 5.0, 6.0], [4.0, 5.0, 5.0]])
    assert m["latency_ms_p50"] == pytest.approx(5.0)
    assert (m["latency_ms_p50_ci_low"], m["latency_ms_p50_ci_high"]) == pytest.approx((5.0, 5.0))
    assert m["latency_ms_between_round_cv"] == 0.0


def test_disturbed_rounds_are_kept_out_of_the_headline_while_two_clean_remain():
    rounds = [[10.0, 10.0, 10.0], [30.0, 30.0, 30.0], [12.0, 12.0, 12.0]]
    m = stats.summarize_rounds(rounds, excluded=[False, True, False])
    # the headline from rounds 1 and 3: sqrt(10 x 12); t(0.975, 1) on log 10, log 12
    half = t_quantile(0.975, 1) * sd([math.log(10.0), math.log(12.0)]) / math.sqrt(2)
    assert m["latency_ms_p50"] == pytest.approx(math.sqrt(120.0))
    assert (m["latency_ms_p50_ci_low"], m["latency_ms_p50_ci_high"]) == pytest.approx(
        (math.sqrt(120.0) * math.exp(-half), math.sqrt(120.0) * math.exp(half)))
    assert m["latency_ms_rounds_excluded"] == 1
    assert m["latency_ms_round_p50s"] == [10.0, 30.0, 12.0]  # every round stays in the record
    assert m["n_samples"] == 9 and m["latency_ms_mean"] == pytest.approx(52 / 3)  # pooled
    # one clean round would be too few: every round counts, none is left out
    m = stats.summarize_rounds(rounds, excluded=[True, True, False])
    assert m["latency_ms_rounds_excluded"] == 0
    assert m["latency_ms_p50"] == pytest.approx((10.0 * 30.0 * 12.0) ** (1 / 3))


def test_one_round_is_the_plain_summary():
    samples = [float(x) for x in range(1, 12)]
    m = stats.summarize_rounds([samples])
    assert m["n_rounds"] == 1 and m["latency_ms_between_round_cv"] is None
    assert m["latency_ms_round_p50s"] == [6.0] and m["latency_ms_rounds_excluded"] == 0
    plain = stats.summarize(samples)
    assert {k: m[k] for k in plain} == plain  # median 6, distribution-free CI [2, 10]
    assert (m["latency_ms_p50"], m["latency_ms_p50_ci_low"], m["latency_ms_p50_ci_high"]) == (6, 2, 10)


def test_merge_metrics_rules():
    merged = merge_metrics([
        {"mem_peak_rss_bytes": 10, "tokens_per_s": 100.0, "sm_clock_mhz_min": 900, "throttled": False,
         "flops_per_step": 7, "sdpa_backends": ["math"], "mfu": None},
        {"mem_peak_rss_bytes": 30, "tokens_per_s": 300.0, "sm_clock_mhz_min": 800, "throttled": True,
         "flops_per_step": 7, "sdpa_backends": ["flash"], "mfu": None},
        {"mem_peak_rss_bytes": 20, "tokens_per_s": 200.0, "sm_clock_mhz_min": 850, "throttled": False,
         "flops_per_step": 7, "sdpa_backends": ["math"], "mfu": None}])
    assert merged == {"mem_peak_rss_bytes": 30, "tokens_per_s": 200.0, "sm_clock_mhz_min": 800,
                      "throttled": True, "flops_per_step": 7, "sdpa_backends": ["math"], "mfu": None}


def _points(n_points=2, rounds=3, **measure):
    data = {"name": "rounds-test", "model": {"preset": "tiny"},
            "workload": {"kind": "forward", "batch_size": 1},
            "measure": {"rounds": rounds, **measure},
            "sweep": {"grid": {"workload.seq_len": [8 * (i + 1) for i in range(n_points)]}}}
    return expand(parse_suite(data, "test"), "cpu")


def _round(samples, contended=False, status="ok"):
    return {"status": status, "error": None if status == "ok" else "boom",
            "samples_ms": samples if status == "ok" else [],
            "metrics": {"tokens_per_s": 1000.0 / samples[0]} if status == "ok" else {},
            "warnings": [], "started_at": "t", "duration_s": 0.5,
            "contention": {"contended": contended,
                           "reasons": ["other processes used 1.00 CPU cores"] if contended else []}}


class FakeRounds:
    """Stands in for one measured round: records the order, returns scripted rounds."""

    def __init__(self, script=None):
        self.order, self.script = [], script or {}

    def __call__(self, point, run_dir, grace_s, round_no, where=None):
        self.order.append((point.index, round_no))
        rec = self.script.get((point.index, round_no)) or _round([10.0 + round_no] * 10)
        return dict(rec, round=round_no)


def test_rounds_are_interleaved_and_merged(tmp_path, monkeypatch):
    pts = _points()
    fake = FakeRounds({(1, 2): _round([20.0] * 10, contended=True)})
    events = []
    summary = lifecycle.run(points_plan(pts, tmp_path), measure_round=fake, progress=events.append, reports=False)
    assert fake.order == [(0, 1), (1, 1), (0, 2), (1, 2), (0, 3), (1, 3)]  # round by round
    assert [e.total for e in events if e.kind == "finish"] == [6] * 6
    recs = {r["index"]: r for r in records.read_records(tmp_path)}
    first, second = recs[0], recs[1]
    assert first["metrics"]["latency_ms_round_p50s"] == [11.0, 12.0, 13.0]
    assert first["metrics"]["latency_ms_p50"] == pytest.approx((11.0 * 12.0 * 13.0) ** (1 / 3))  # geometric
    assert len(first["samples_ms"]) == 30 and len(first["rounds"]) == 3
    assert first["flags"] == ["drift"]  # CV 1/12 > 5%
    assert "contended" in second["flags"] and second["rounds"][1]["contention"]["contended"]
    assert summary.counts == {"ok": 2} and summary.flags == {"drift": 2, "contended": 1}
    assert len((tmp_path / records.ROUNDS_FILE).read_text().splitlines()) == 6


def test_a_failed_round_ends_its_point_and_the_others_go_on(tmp_path, monkeypatch):
    pts = _points()
    fake = FakeRounds({(0, 2): _round([], status="oom")})
    lifecycle.run(points_plan(pts, tmp_path), measure_round=fake, reports=False)
    assert fake.order == [(0, 1), (1, 1), (0, 2), (1, 2), (1, 3)]
    recs = {r["index"]: r for r in records.read_records(tmp_path)}
    assert recs[0]["status"] == "oom" and [r["status"] for r in recs[0]["rounds"]] == ["ok", "oom"]
    assert recs[1]["status"] == "ok" and recs[1]["metrics"]["n_rounds"] == 3


def test_resume_measures_only_the_rounds_not_done(tmp_path, monkeypatch):
    pts = _points()
    fake = FakeRounds()
    lifecycle.run(points_plan(pts, tmp_path), measure_round=fake, reports=False)
    # as if tbench died after point 0's second round and point 1's first
    lines = (tmp_path / records.ROUNDS_FILE).read_text().splitlines()
    (tmp_path / records.ROUNDS_FILE).write_text("\n".join(lines[:3]) + "\n{\"point_id\": \"torn")
    (tmp_path / records.RESULTS_FILE).write_text("")
    fake.order.clear()
    lifecycle.run(points_plan(pts, tmp_path, resume=True), measure_round=fake, reports=False)
    assert fake.order == [(1, 2), (0, 3), (1, 3)]
    recs = records.read_records(tmp_path)
    assert sorted(r["metrics"]["n_rounds"] for r in recs) == [3, 3]


def test_a_new_run_refuses_a_folder_holding_rounds(tmp_path):
    (tmp_path / records.ROUNDS_FILE).write_text(json.dumps({"point_id": "x"}) + "\n")
    with pytest.raises(rundir.RunDirError, match="already holds results"):
        rundir.open_run(tmp_path, _points(1))


def test_on_contention_retry_then_flag_and_fail(tmp_path, monkeypatch):
    pt = _points(1, on_contention="retry", contention_wait_s=0.0)[0]
    calls = []

    def contended_round(point, run_dir, grace_s, round_no, where=None):
        calls.append(round_no)
        return dict(_round([10.0] * 10, contended=True), round=round_no)

    monkeypatch.setattr(rounds, "run_round", contended_round)
    rec = rounds.measured_round(pt, tmp_path, 1.0, 1)
    assert calls == [1, 1, 1] and rec["attempts"] == 3 and rec["status"] == "ok"
    assert rec["contention"]["contended"]  # still flagged after the retries
    calls.clear()
    fail = _points(1, on_contention="fail")[0]
    rec = rounds.measured_round(fail, tmp_path, 1.0, 1)
    assert calls == [1] and rec["status"] == "contended" and "1.00 CPU cores" in rec["error"]


def _medians(medians) -> dict:
    return {"point_id": "p", "status": "ok", "metrics": {"latency_ms_round_p50s": medians}}


def geo(values) -> float:
    return math.exp(math.fsum(math.log(v) for v in values) / len(values))


def test_round_level_gate_hand_cases():
    """Welch on the log round medians, the interval against the band [1/1.05, 1.05]."""
    base = [10.0, 10.1, 9.9]

    def judged(current):
        r = timing_independent(_medians(base), _medians(current), 0.05)
        assert r.ratio == pytest.approx(geo(current) / geo(base))
        return r

    assert judged([12.0, 12.1, 11.9]).verdict == "regression"  # ×1.2: wholly above 1.05
    assert judged([8.0, 8.1, 7.9]).verdict == "improvement"  # ×0.8: wholly below 1/1.05
    assert judged([10.05, 9.95, 10.0]).verdict == "ok"  # ×1.0: wholly inside the band
    # 15% slower (geometric: 1536 ** (1/3) / 10 = 1.154), but the rounds spread so much that
    # drift could explain it
    wide = judged([8.0, 12.0, 16.0])
    assert wide.ratio == pytest.approx(1536 ** (1 / 3) / geo(base))
    assert wide.verdict == "inconclusive"
    assert wide.ci_low < 1 and wide.ci_high > 1.05  # it holds both "equal" and "slower"


def test_compare_uses_rounds_when_both_sides_have_them():
    def rec(medians, samples):
        return {"point_id": "p", "status": "ok", "samples_ms": samples,
                "metrics": {"latency_ms_round_p50s": medians}}
    # the samples of one process each say "20% slower"; the rounds say drift
    base = rec([10.0, 12.0, 8.0], [10.0] * 20)
    cur = rec([12.0, 9.0, 15.0], [12.0] * 20)
    (timing,) = compare_pair(base, cur, ["latency_ms_p50"], 0.05).metrics
    assert timing.verdict == "inconclusive" and timing.note.startswith("3 rounds a side; ")
    # one round a side: no spread between processes to judge against, whatever the samples say
    single = compare_pair(rec([10.0], [10.0] * 20), rec([12.0], [12.0] * 20), ["latency_ms_p50"], 0.05)
    (timing,) = single.metrics
    assert (timing.verdict, timing.ratio, timing.ci_low) == ("inconclusive", pytest.approx(1.2), None)
    assert "one round on a side" in timing.note and single.verdict == "inconclusive"
