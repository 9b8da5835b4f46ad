"""harness.measure.timing stopping rules and harness.measure.peak_memory peaks, on CPU (counts, never durations)."""
import time
from types import SimpleNamespace

import numpy as np
import pytest

from harness.measure import timing
from harness.measure.peak_memory import MemoryTracker


class Counter:
    def __init__(self, sleep_s=0.0):
        self.calls = 0
        self.sleep_s = sleep_s

    def __call__(self):
        self.calls += 1
        if self.sleep_s:
            time.sleep(self.sleep_s)


def spec(**kw):
    base = dict(warmup_iters=3, warmup_s=0.0, min_samples=10, min_time_s=0.0, max_samples=200,
                steps_per_sample=1)
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


def test_steps_per_sample_times_several_steps_as_one_and_reports_per_step():
    step = Counter(sleep_s=0.01)
    t = timing.measure(step, "cpu", spec(warmup_iters=0, steps_per_sample=4))
    assert len(t.samples_ms) == 10 and step.calls == 40  # 10 samples of 4 steps each
    assert all(9.5 < s < 40 for s in t.samples_ms)  # one step's 10 ms, not four steps' 40 ms


def test_warmup_iters_can_be_raised_to_a_full_batch_cycle():
    step = Counter()
    t = timing.measure(step, "cpu", spec(warmup_iters=2), warmup_iters=7)
    assert t.warmup_iters == 7 and step.calls == 7 + 10
    assert timing.measure(Counter(), "cpu", spec(warmup_iters=5), warmup_iters=3).warmup_iters == 5


def test_agree_overrides_each_side_of_the_stop_decision():
    """The decision a multi-rank point follows is the agreed one, in both directions."""
    samples, _, _ = timing.sample(Counter(), "cpu", 10, 0.0, 15, agree=lambda stop: False)
    assert len(samples) == 15  # never agreed to stop: the count cap ends it on every rank alike
    asked = []
    samples, _, _ = timing.sample(Counter(), "cpu", 10, 3600.0, 50,
                                  agree=lambda stop: asked.append(stop) or True)
    assert len(samples) == 1 and asked == [False]  # this rank wanted more; rank 0 said stop
    votes = iter([False, False, True])  # warm-up: rank 0 keeps going twice past our "done"
    n, _ = timing.warmup(Counter(), "cpu", iters=0, min_s=0.0, agree=lambda stop: next(votes))
    assert n == 2


def test_a_window_samples_for_its_time_whatever_the_count():
    """A duet's sampling: until ``window_s`` has passed, each sample's end recorded."""
    step = Counter()
    samples, took, ends = timing.sample(step, "cpu", 10, 0.0, 10, window_s=0.05)
    assert len(samples) == len(ends) == step.calls and ends == sorted(ends)
    assert ends[-1] >= 0.05 and all(e < 0.05 for e in ends[:-1])  # stops at the first past it
    assert took >= ends[-1]


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


RANKS_SCRIPT = '''
import datetime, json, os, sys
from types import SimpleNamespace
import torch, torch.distributed as dist
from harness.measure import timing

dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=float(sys.argv[3])))
rank = dist.get_rank()
calls = [0]

def step():  # a collective, as every ZeRO step has: a rank that stops early hangs its peer
    calls[0] += 1
    dist.all_reduce(torch.ones(1))

# the skew, forced: rank 1's clock would say "enough" long after rank 0's
spec = SimpleNamespace(warmup_iters=1, warmup_s=0.0 if rank == 0 else 0.2, min_samples=10,
                       min_time_s=0.0 if rank == 0 else 0.3, max_samples=10**6, steps_per_sample=1)
agree = timing.agreement("cpu") if sys.argv[1] == "agree" else None
t = timing.measure(step, "cpu", spec, agree=agree)
json.dump({"samples": len(t.samples_ms), "calls": calls[0]}, open(f"{sys.argv[2]}.{rank}", "w"))
dist.destroy_process_group()
'''


@pytest.mark.parametrize("mode", ["agree", "alone"])
def test_two_ranks_crossing_min_time_at_different_steps(tmp_path, mode):
    """With rank 0's decision broadcast, both ranks run the same steps and finish; deciding
    alone, rank 0 stops first and rank 1 waits in a collective nobody joins (the old deadlock)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from implementations.parallel.zero import free_port

    script = tmp_path / "ranks.py"
    script.write_text(RANKS_SCRIPT)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           str(script), mode, str(out), "20" if mode == "agree" else "3"]
    root = str(Path(__file__).resolve().parents[2])
    env = {**__import__("os").environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd=root)
    except subprocess.TimeoutExpired:
        proc = None
    results = {r: json.loads(Path(f"{out}.{r}").read_text()) for r in (0, 1)
               if Path(f"{out}.{r}").exists()}
    if mode == "agree":
        assert proc is not None and proc.returncode == 0, proc and proc.stderr[-2000:]
        assert results[0] == results[1] and results[0]["samples"] >= 10
    else:  # rank 0 stopped by its own clock; rank 1 never finished (its collective had no peer)
        assert 0 in results and 1 not in results, (results, proc and proc.stderr[-2000:])
