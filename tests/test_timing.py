"""harness.measure.timing stopping rules and harness.measure.memory peaks, on CPU (counts, never durations)."""
import time
from types import SimpleNamespace

import numpy as np
import pytest

from harness.measure import timing
from harness.measure.memory import MemoryTracker


class Counter:
    def __init__(self, sleep_s=0.0):
        self.calls = 0
        self.sleep_s = sleep_s

    def __call__(self):
        self.calls += 1
        if self.sleep_s:
            time.sleep(self.sleep_s)


def spec(**kw):
    base = dict(warmup_iters=3, warmup_s=0.0, min_samples=10, min_time_s=0.0, max_samples=200)
    return SimpleNamespace(**{**base, **kw})


def test_min_samples_is_enough_when_time_is_met():
    step = Counter()
    t = timing.measure(step, "cpu", spec())
    assert t.warmup_iters == 3
    assert len(t.samples_ms) == 10
    assert step.calls == 13  # warm-up calls are not samples


def test_min_time_keeps_sampling_past_min_samples():
    step = Counter(sleep_s=0.005)
    t = timing.measure(step, "cpu", spec(warmup_iters=0, min_time_s=0.15))
    assert len(t.samples_ms) > 10  # 10 x 5 ms < 150 ms
    assert t.measure_s >= 0.15


def test_max_samples_caps_whatever_the_time():
    step = Counter()
    t = timing.measure(step, "cpu", spec(min_time_s=3600, max_samples=12))
    assert len(t.samples_ms) == 12


def test_warmup_runs_iterations_and_minimum_time():
    step = Counter(sleep_s=0.005)
    n, secs = timing.warmup(step, "cpu", iters=2, min_s=0.06)
    assert n == step.calls and n > 2 and secs >= 0.06


def test_samples_are_per_call_milliseconds():
    # a 20 ms sleep can only last longer, never shorter
    t = timing.measure(Counter(sleep_s=0.02), "cpu", spec(warmup_iters=0))
    assert all(s >= 20.0 for s in t.samples_ms)


def test_bad_sample_bounds_refused():
    with pytest.raises(ValueError, match="min_samples"):
        timing.sample(Counter(), "cpu", 20, 0.0, 10)


def test_memory_tracker_sees_a_peak_freed_before_stop():
    mem = MemoryTracker("cpu")
    mem.start()
    block = np.ones(40_000_000)  # 320 MB, touched
    del block
    out = mem.stop()
    assert out["mem_peak_allocated_bytes"] is None and out["mem_peak_reserved_bytes"] is None
    assert out["mem_peak_rss_bytes"] - out["mem_rss_baseline_bytes"] >= 300_000_000
    assert out["mem_peak_rss_above_baseline_bytes"] == (out["mem_peak_rss_bytes"]
                                                        - out["mem_rss_baseline_bytes"])


@pytest.mark.gpu
def test_cuda_samples_with_events():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    x = torch.randn(2048, 2048, device="cuda")
    mem = MemoryTracker("cuda")
    mem.start()
    t = timing.measure(lambda: x @ x, "cuda", spec())
    out = mem.stop()
    assert len(t.samples_ms) >= 10 and all(s > 0 for s in t.samples_ms)
    assert out["mem_peak_allocated_bytes"] >= 2048 * 2048 * 4
