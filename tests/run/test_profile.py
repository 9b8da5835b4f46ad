"""The profiled pass (issue 12): named regions in a trace, a breakdown that sums to the step,
its place after the timed samples, the last round only, and compare naming what got slower."""
from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
import torch
from results_factory import profile, record
from typer.testing import CliRunner

from harness.analyse.compare import compare_records, explain
from harness.analyse.compare_markdown import to_markdown
from harness.cli import app as tbench_app
from harness.measure import measurement, profiling, steps, timing
from harness.suite.loader import parse_suite
from harness.suite.sweep import expand, load_points
from implementations import regions

ROOT = Path(__file__).resolve().parents[2]
PATTERN = [0.99, 1.0, 1.01, 1.0, 0.995, 1.005, 1.0, 0.99, 1.01, 1.0, 1.0]  # median 1.0
DRIFT = (1.0, 1.01, 0.99)  # three rounds, 1% apart: the interval of a ratio is about -+3%


def _rounds(step_ms: float) -> list[list[float]]:
    """Three rounds of a step of ``step_ms``, as compare judges them (round medians)."""
    return [[step_ms * d * x for x in PATTERN] for d in DRIFT]


def _point(*, profiled: bool = True, **over):
    data = {"name": "p", "device": "cpu", "model": {"preset": "tiny", "overrides": {}},
            "workload": {"kind": "forward", "batch_size": 2, "seq_len": 32, "num_batches": 1},
            "strategies": {"ops": "eager"},
            "measure": {"warmup_iters": 1, "warmup_s": 0.0, "min_samples": 10, "min_time_s": 0.0,
                        "max_samples": 10, "rounds": 1, "threads": 1, "profile": profiled}}
    for key, value in over.items():
        data[key] = {**data[key], **value}
    return expand(parse_suite(data, "p.yaml"), "cpu")[0]


def _profile(point, folder: Path, change=None) -> dict:
    wl = steps.build(point, "cpu")
    if change:
        change(wl.model)
    for _ in range(2):
        wl.step()
    metrics, warnings = profiling.profile_pass(wl.step, "cpu", folder)
    assert warnings == []
    return metrics


def _shares(m: dict, prefix: str) -> dict[str, float]:
    return {k[len(prefix):]: v for k, v in m.items() if k.startswith(prefix)}


def test_a_profiled_smoke_point_writes_a_trace_with_the_named_regions(one_thread, tmp_path,
                                                                       monkeypatch):
    _, points = load_points(ROOT / "suites" / "smoke.yaml", "cpu",
                            ["measure.profile=true", "measure.threads=1"])
    point = points[0]  # forward, dense, eager ops, the encoder-decoder
    monkeypatch.chdir(tmp_path)  # a worker writes into its own folder
    rec = measurement.measure_point(point)
    m = rec["metrics"]
    assert rec["status"] == "ok" and m["profile_trace"] == "trace.json.gz"
    with gzip.open(tmp_path / "trace.json.gz", "rt") as f:
        trace = json.load(f)
    names = {e.get("name") for e in trace["traceEvents"]}
    for name in ("tb/step", "tb/embedding", "tb/attention/encoder.0.self_attn",
                 "tb/attention/decoder.1.cross_attn", "tb/attention/scores", "tb/attention/softmax",
                 "tb/attention/value", "tb/attention/proj", "tb/ffn/decoder.0.ffn",
                 "tb/norm/encoder.1.norm3", "tb/lm_head", "tb/forward_other"):
        assert name in names, name
    assert 0 < m["profile_trace_bytes"] < profiling.TRACE_MAX_BYTES
    assert m["profile_step_ms"] > 0 and m["profile_overhead_ratio"] > 0
    assert len(rec["samples_ms"]) == 10  # the timed samples are all there


def test_shares_sum_to_the_profiled_step_and_every_part_is_named(one_thread, tmp_path):
    m = _profile(_point(workload={"kind": "train"}), tmp_path)
    regions_ = _shares(m, "profile_share_")
    categories = _shares(m, "profile_category_share_")
    assert set(regions_) == set(profiling.REGIONS) and set(categories) == set(profiling.CATEGORIES)
    assert math.isclose(sum(regions_.values()), 1.0, abs_tol=0.01)
    assert math.isclose(sum(categories.values()), 1.0, abs_tol=0.01)
    for r in ("embedding", "attention", "ffn", "norm", "lm_head", "loss", "backward", "optimizer"):
        assert regions_[r] > 0, r
    assert categories["gemm"] > 0 and categories["softmax"] > 0 and categories["optimizer"] > 0
    back = m["profile_backward_shares"]  # the backward, charged to the forward regions
    assert math.isclose(sum(back.values()), regions_["backward"], rel_tol=1e-9)
    assert back["attention"] > 0 and back["ffn"] > 0
    ranges = m["profile_ranges"]
    assert ranges["attention/decoder.0.self_attn"] > ranges["attention/softmax"] / 4 > 0
    assert {"attention/encoder.1.self_attn", "attention/decoder.1.cross_attn", "attention/proj",
            "attention/out_proj", "ffn/decoder.1.ffn", "backward", "optimizer"} <= set(ranges)
    assert m["profile_top_ops"] and not any(o["name"].startswith("tb/") for o in m["profile_top_ops"])
    assert m["profile_region_ops"]["ffn"][0]["name"] in ("aten::addmm", "aten::mm")
    assert m["profile_kernels"] is None and m["profile_memory_snapshot"] is None  # CPU


def test_attention_share_of_dense_eager_grows_with_seq_len(one_thread, tmp_path):
    """Quadratic scores against linear layers: the attention share grows with S (32 -> 1024;
    32 -> 256 read 0.44 -> 0.51 in one CI run, inside the profile's noise)."""
    shares = {}
    for S in (32, 1024):
        point = _point(model={"preset": "tiny", "overrides": {"n_encoder_layers": 0, "max_seq_len": 1024}},
                       workload={"seq_len": S})
        shares[S] = _profile(point, tmp_path / f"s{S}")["profile_share_attention"]
    assert shares[1024] > shares[32] + 0.1, shares


def test_the_profiled_pass_runs_after_the_last_timed_sample(one_thread, tmp_path, monkeypatch):
    calls, phase = [], {"now": "first"}
    build, measure = steps.build, timing.measure

    def recording_build(point, device):
        wl = build(point, device)
        inner = wl.step

        def step():
            calls.append((phase["now"], regions.enabled(), torch.autograd._profiler_enabled()))
            return inner()

        wl.step = step
        return wl

    def recording_measure(*args, **kwargs):
        phase["now"] = "timing"
        try:
            return measure(*args, **kwargs)
        finally:
            phase["now"] = "after"

    monkeypatch.setattr(steps, "build", recording_build)
    monkeypatch.setattr(timing, "measure", recording_measure)
    monkeypatch.chdir(tmp_path)
    for profiled in (False, True):
        calls.clear()
        phase["now"] = "first"  # the first call, timed alone (its kernels recorded)
        rec = measurement.measure_point(_point(profiled=profiled))
        timed = [c for c in calls if c[0] == "timing"]
        assert timed and not any(ranges or prof for _, ranges, prof in timed)
        after = [c for c in calls if c[0] == "after"]
        if not profiled:
            assert after == [] and not any(k.startswith("profile_") for k in rec["metrics"])
            continue
        # one step with the ranges on, then the profiled steps: all after the last sample
        assert after == [("after", True, False)] + [("after", True, True)] * profiling.PROFILE_STEPS
        assert rec["metrics"]["n_samples"] == len(rec["samples_ms"]) == 10


def test_only_the_last_round_of_a_profiled_point_profiles(tmp_path):
    point = _point()
    three = point.model_copy(update={"measure": point.measure.model_copy(update={"rounds": 3})})
    assert profiling.wanted(point, tmp_path / "workers" / point.id)
    assert profiling.wanted(three, tmp_path / "round3")
    assert not profiling.wanted(three, tmp_path / "round1")
    assert not profiling.wanted(_point(profiled=False), tmp_path)
    assert "profile" not in _point(profiled=False).to_json()["measure"]  # off: ids as before


def _extra_matmuls(model) -> None:
    """Inject a slowdown inside every FFN: 32 more (d_ff x d_ff) matmuls after fc1 (the step
    about 2x slower, far beyond the noise of a busy machine)."""
    class Slow(torch.nn.Module):
        def __init__(self, d_ff: int):
            super().__init__()
            self.eye = torch.eye(d_ff)

        def forward(self, x):
            for _ in range(32):
                x = x @ self.eye
            return x

    for block in model.decoder:
        block.ffn.fc1 = torch.nn.Sequential(block.ffn.fc1, Slow(block.ffn.fc1.out_features))


def _as_record(point_id: str, m: dict) -> dict:
    """A record whose rounds' samples are the profiled step time (so the verdict is sure)."""
    return record(point_id, rounds_ms=_rounds(m["profile_step_ms"]), metrics=m)


def test_compare_names_the_region_an_injected_slowdown_slowed(one_thread, tmp_path):
    point = _point(model={"preset": "tiny", "overrides": {"n_encoder_layers": 0}},
                   workload={"seq_len": 128})
    base = _profile(point, tmp_path / "base")
    slow = _profile(point, tmp_path / "slow", change=_extra_matmuls)
    (result,) = compare_records([_as_record("p", base)], [_as_record("p", slow)], threshold=0.05)
    assert result.verdict == "regression"
    first = result.explanation.split("; ")[0]
    assert first.startswith("ffn +"), result.explanation
    assert "aten::mm" in first or "aten::matmul" in first, result.explanation


def test_an_operator_swap_is_written_old_to_new():
    flash, bmm = "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::bmm"
    base = record("p", rounds_ms=_rounds(10.0), metrics=profile(
        {"attention": 0.5, "ffn": 0.3, "other": 0.2}, {"attention": [(flash, 0.45)]}))
    current = record("p", rounds_ms=_rounds(13.0), metrics=profile(
        {"attention": 8 / 13, "ffn": 3 / 13, "other": 2 / 13}, {"attention": [(bmm, 7.5 / 13)]}))
    # the medians: 10 and 13 ms (x 0.99997, the geometric mean of DRIFT); attention 5 ms ->
    # 8 ms, ffn and other keep 3 ms and 2 ms
    assert explain(base, current) == f"attention +3.00 ms (+60%): {flash} → {bmm}"
    (result,) = compare_records([base], [current])
    assert result.verdict == "regression" and result.explanation == explain(base, current)
    assert f"- p (`p`), regression: attention +3.00 ms (+60%): {flash} → {bmm}" in to_markdown(
        _comparison([result]))
    plain = record("p", rounds_ms=_rounds(13.0))
    assert compare_records([base], [plain])[0].explanation == ""  # one side not profiled


def _comparison(points):
    from harness.analyse.compare import Comparison

    return Comparison("regression", 0.05, 0.95, points)


SUITE = """
name: prof
device: cpu
model: {preset: tiny, overrides: {n_encoder_layers: 0}}
workload: {kind: forward, batch_size: 2, seq_len: 32, num_batches: 1}
strategies: {ops: eager}
measure: {warmup_iters: 1, warmup_s: 0.0, min_samples: 10, min_time_s: 0.0, max_samples: 10,
          rounds: 2, threads: 1}
"""


@pytest.mark.slow
def test_run_profile_then_profile_a_point_again(tmp_path, monkeypatch):
    """Three workers: the run's two rounds, then ``tbench profile``."""
    monkeypatch.chdir(tmp_path)
    Path("s.yaml").write_text(SUITE)
    runner = CliRunner()
    r = runner.invoke(tbench_app, ["run", "s.yaml", "--out", "run", "--profile"])
    assert r.exit_code == 0, r.output
    (rec,) = [json.loads(line) for line in Path("run/results.jsonl").read_text().splitlines()]
    pid = rec["point_id"]
    assert rec["metrics"]["profile_trace"] == f"workers/{pid}/round2/trace.json.gz"
    assert Path("run", rec["metrics"]["profile_trace"]).is_file()
    assert not Path(f"run/workers/{pid}/round1/trace.json.gz").exists()  # the last round only
    assert "## Where the time goes" in Path("run/report.md").read_text()
    r = runner.invoke(tbench_app, ["profile", "run", "--point", pid])
    assert r.exit_code == 0, r.output
    saved = json.loads(Path(f"run/profiles/{pid}/breakdown.json").read_text())
    assert saved["profile_trace"] == f"profiles/{pid}/trace.json.gz"
    assert Path("run", saved["profile_trace"]).is_file()
    assert "top operators by self time" in r.stdout and "ms of the timed median" in r.stdout
    r = runner.invoke(tbench_app, ["profile", "run", "--point", "nope"])
    assert r.exit_code == 2 and f"allowed: {pid}" in r.output


def test_a_profiled_and_an_unprofiled_run_are_told_apart():
    from harness.records import BadInput

    plain = record("a", samples_ms=[10.0 * x for x in PATTERN])
    profiled = record("b", samples_ms=[10.0 * x for x in PATTERN], metrics=profile({"ffn": 1.0}))
    with pytest.raises(BadInput, match="profile both runs or neither"):
        compare_records([plain], [profiled])
