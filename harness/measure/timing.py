"""Timing of one repeated step: warm-up, then samples until enough count AND enough time.

Input: ``step`` (a no-argument callable doing one unit of measured work), the device
("cpu" or "cuda") and the measurement settings of a point (``MeasureSpec``: warmup_iters,
warmup_s, min_samples, min_time_s, max_samples).
Output: ``Timing`` with ``samples_ms`` (every per-sample time, milliseconds, in run order),
``warmup_iters`` (count actually run), ``warmup_s`` and ``measure_s`` (seconds of wall time
spent in each phase, host clock).

Rules:
  * warm-up runs at least ``warmup_iters`` calls AND at least ``warmup_s`` seconds, so
    compilation, autotuning, allocator growth and clock ramp-up stay out of the samples;
  * sampling continues until at least ``min_samples`` samples AND ``min_time_s`` seconds,
    and stops at ``max_samples`` whatever the time;
  * CPU samples use ``time.perf_counter_ns``; CUDA samples use CUDA events (see ``_cuda_sample``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Timing:
    samples_ms: list[float] = field(default_factory=list)
    warmup_iters: int = 0
    warmup_s: float = 0.0
    measure_s: float = 0.0


def _cpu_sample(step: Callable[[], object]) -> float:
    t0 = time.perf_counter_ns()
    step()
    return (time.perf_counter_ns() - t0) / 1e6


def _cuda_sampler():
    import torch

    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)

    def _cuda_sample(step: Callable[[], object]) -> float:
        # Kernels run asynchronously: a host clock around ``step()`` would time the launches,
        # not the work. The events are recorded on the stream around the region, so their
        # difference is the device time of everything the step queued. The synchronise on the
        # end event is needed before ``elapsed_time`` can be read, and it also stops the host
        # from queueing the next sample on top of this one, so samples never overlap.
        start.record()
        step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)

    return _cuda_sample


def _sampler(device: str) -> Callable[[Callable[[], object]], float]:
    return _cuda_sampler() if device.startswith("cuda") else _cpu_sample


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def warmup(step: Callable[[], object], device: str, iters: int, min_s: float) -> tuple[int, float]:
    """Run ``step`` at least ``iters`` times and at least ``min_s`` seconds; (count, seconds)."""
    t0 = time.perf_counter()
    n = 0
    while n < iters or time.perf_counter() - t0 < min_s:
        step()
        n += 1
    _sync(device)  # the warm-up's queued work must not leak into the first sample
    return n, time.perf_counter() - t0


def sample(
    step: Callable[[], object],
    device: str,
    min_samples: int,
    min_time_s: float,
    max_samples: int,
) -> tuple[list[float], float]:
    """Per-sample times (ms) until min_samples AND min_time_s, capped at max_samples."""
    if min_samples < 1 or max_samples < min_samples:
        raise ValueError(f"need 1 <= min_samples ({min_samples}) <= max_samples ({max_samples})")
    one = _sampler(device)
    samples: list[float] = []
    t0 = time.perf_counter()
    while len(samples) < max_samples:
        samples.append(one(step))
        if len(samples) >= min_samples and time.perf_counter() - t0 >= min_time_s:
            break
    return samples, time.perf_counter() - t0


def measure(step: Callable[[], object], device: str, spec) -> Timing:
    """Warm up then sample ``step`` with the settings of ``spec`` (a MeasureSpec-like object)."""
    n_warm, warm_s = warmup(step, device, spec.warmup_iters, spec.warmup_s)
    samples, measure_s = sample(step, device, spec.min_samples, spec.min_time_s, spec.max_samples)
    return Timing(samples_ms=samples, warmup_iters=n_warm, warmup_s=warm_s, measure_s=measure_s)
