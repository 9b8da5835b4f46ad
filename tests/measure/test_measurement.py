"""harness.measure.measurement: what one point reports, and over which window.

The telemetry window is checked against a fake NVML whose energy counter runs on the wall clock
at a constant 300 W: energy read over the sampled steps only is 300 W x the sampling time,
however long the warm-up before it took.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from harness.measure import measurement, point_metrics, telemetry
from harness.suite.loader import parse_suite
from harness.suite.sweep import expand
from tests.fake_nvml import FakeGPU, FakeNVML

WATTS = 300.0


class ClockEnergy:
    """An NVML energy counter (mJ) that advances at WATTS with the wall clock."""

    def __init__(self):
        self.t0 = time.perf_counter()

    def next(self) -> int:
        return int((time.perf_counter() - self.t0) * WATTS * 1000) + 1


@pytest.fixture
def fake_gpu(monkeypatch):
    gpu = FakeGPU(power_mw=(int(WATTS * 1000),))
    gpu.energy_mj = ClockEnergy()
    monkeypatch.setattr(telemetry, "pynvml", FakeNVML([gpu]))
    monkeypatch.setattr(telemetry, "_init_state", {"pid": None, "error": None})
    monkeypatch.setattr(telemetry, "ENERGY_CROSSCHECK_MIN_S", 0.1)


def test_energy_covers_the_sampled_steps_not_the_warm_up(fake_gpu):
    spec = SimpleNamespace(warmup_iters=1, warmup_s=0.6, min_samples=10, min_time_s=0.4,
                           max_samples=10_000, steps_per_sample=1, contention_cores=0.5)
    t, window, host = measurement.sample_window(lambda: time.sleep(0.005), "cpu", spec, gpu=0)
    assert window["nvml"] == "ok" and t.warmup_s >= 0.6
    assert host["window_s"] == pytest.approx(t.measure_s, rel=0.1)  # the same window as NVML's
    assert window["energy_j"] == pytest.approx(WATTS * t.measure_s, rel=0.1)  # not (0.6 s + ...)
    assert window["energy_j"] < WATTS * (t.warmup_s + t.measure_s) * 0.75
    per = point_metrics.energy_metrics(window, {"energy_j": 999.0}, n_steps=len(t.samples_ms),
                                     tokens_per_step=64)
    assert per["energy_j_per_step"] == pytest.approx(window["energy_j"] / len(t.samples_ms))
    assert per["energy_j_per_token"] == pytest.approx(per["energy_j_per_step"] / 64)
    assert per["energy_j_point"] == 999.0


def test_no_energy_no_per_step_figure():
    assert point_metrics.energy_metrics({"energy_j": None}, {}, 10, 64) == {
        "energy_j_per_step": None, "energy_j_per_token": None, "energy_j_point": None}


def _point(**over):
    data = {"name": "m", "device": "cpu", "model": {"preset": "tiny", "overrides": {"n_encoder_layers": 0}},
            "workload": {"kind": "train", "batch_size": 2, "seq_len": 16, "num_batches": 5,
                         "parity_steps": 2},
            "strategies": {"precision": "amp_bf16"},
            "measure": {"warmup_iters": 1, "warmup_s": 0.0, "min_samples": 10, "min_time_s": 0.0,
                        "max_samples": 10}}
    for key, value in over.items():
        data[key] = {**data[key], **value}
    return expand(parse_suite(data, "m.yaml"), "cpu")[0]


@pytest.mark.parametrize("ops, backends", [("fused", ["flash_cpu"]), ("eager", [])])
def test_a_point_reports_its_kernels_warm_up_and_both_losses(one_thread, ops, backends):
    record = measurement.measure_point(_point(strategies={"precision": "amp_bf16", "ops": ops}))
    m = record["metrics"]
    assert record["status"] == "ok"
    assert m["sdpa_backends"] == backends  # eager attention calls no SDPA at all
    assert m["warmup_steps"] >= 5  # a full cycle of the 5 batches, above warmup_iters = 1
    assert m["loss_final"] is not None and m["loss_parity_final"] is not None
    assert m["loss_final"] != m["loss_parity_final"]  # 1 + 5 + 10 steps measured vs 2 for parity
    assert m["energy_j"] is None and m["energy_j_per_step"] is None  # CPU: no NVML, never 0
