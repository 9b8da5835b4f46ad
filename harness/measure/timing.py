"""Timing of one repeated step: warm-up, then samples until enough count AND enough time.

Input: ``step`` (a no-argument callable doing one unit of measured work), the device
("cpu" or "cuda") and the measurement settings of a point (``MeasureSpec``: warmup_iters,
warmup_s, min_samples, min_time_s, max_samples, steps_per_sample); on a multi-rank point also
``agree`` (``agreement(device)``), through which every rank takes the same stop decision.
Output: ``Timing`` with ``samples_ms`` (every per-sample time, milliseconds, in run order),
``warmup_iters`` (count actually run), ``warmup_s`` and ``measure_s`` (seconds of wall time
spent in each phase, host clock).

Rules:
  * warm-up runs at least ``warmup_iters`` calls AND at least ``warmup_s`` seconds, so
    compilation, autotuning, allocator growth and clock ramp-up stay out of the samples;
  * sampling continues until at least ``min_samples`` samples AND ``min_time_s`` seconds,
    and stops at ``max_samples`` whatever the time;
  * a sample is ``steps_per_sample`` consecutive steps timed as one region and divided by
    their number: the per-step time, with one synchronise per sample instead of per step (for
    small shapes, where a synchronise and Python launch overhead would otherwise dominate);
  * on several ranks each rank's clock would cross ``min_time_s`` (or ``warmup_s``) at its own
    step, and a rank that stopped would leave its peers waiting in the next collective: rank 0
    decides, outside the timed region, and broadcasts (``agreement``);
  * CPU samples use ``time.perf_counter_ns``; CUDA samples use CUDA events (see ``_cuda_sample``);
  * a fixed window (``window_s``, a duet: two workers sampling at the same time) samples until
    that much wall time has passed, whatever the count, so both sides sample the same minutes;
    ``ends_s`` says when each sample ended, and the runner keeps the samples of the window
    both covered.
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
    ends_s: list[float] = field(default_factory=list)  # when each sample ended, s after the start


Agree = Callable[[bool], bool]  # this rank's "stop now?" -> the decision every rank follows


def _cpu_sample(step: Callable[[], object], steps: int = 1) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(steps):
        step()
    return (time.perf_counter_ns() - t0) / 1e6 / steps


def _cuda_sampler():
    import torch

    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)

    def _cuda_sample(step: Callable[[], object], steps: int = 1) -> float:
        # Kernels run asynchronously: a host clock around ``step()`` would time the launches,
        # not the work. The events are recorded on the stream around the region, so their
        # difference is the device time of everything the step queued. The synchronise on the
        # end event is needed before ``elapsed_time`` can be read, and it also stops the host
        # from queueing the next sample on top of this one, so samples never overlap.
        start.record()
        for _ in range(steps):
            step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / steps

    return _cuda_sample


def _sampler(device: str) -> Callable[..., float]:
    return _cuda_sampler() if device.startswith("cuda") else _cpu_sample


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def agreement(device: str) -> Agree | None:
    """Rank 0's decision broadcast to every rank, when this process is one of several ranks of
    an initialised ``torch.distributed`` group; None (each decides alone) otherwise."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None

    def agree(stop: bool) -> bool:
        import torch

        # NCCL broadcasts device tensors only; gloo takes CPU ones
        where = device if dist.get_backend() == "nccl" else "cpu"
        flag = torch.tensor([int(stop)], device=where)
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    return agree


def warmup(step: Callable[[], object], device: str, iters: int, min_s: float,
           agree: Agree | None = None) -> tuple[int, float]:
    """Run ``step`` at least ``iters`` times and at least ``min_s`` seconds; (count, seconds)."""
    t0 = time.perf_counter()
    n = 0
    while True:
        done = n >= iters and time.perf_counter() - t0 >= min_s
        if agree(done) if agree else done:
            break
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
    steps_per_sample: int = 1,
    agree: Agree | None = None,
    window_s: float | None = None,
) -> tuple[list[float], float, list[float]]:
    """Per-step times (ms), one per sample of ``steps_per_sample`` steps, until min_samples AND
    min_time_s, capped at max_samples -- or, given ``window_s``, until that many seconds have
    passed; (samples, seconds, when each sample ended)."""
    if min_samples < 1 or max_samples < min_samples or steps_per_sample < 1:
        raise ValueError(f"need 1 <= min_samples ({min_samples}) <= max_samples ({max_samples}) "
                         f"and steps_per_sample ({steps_per_sample}) >= 1")
    one = _sampler(device)
    samples: list[float] = []
    ends: list[float] = []
    t0 = time.perf_counter()
    while window_s is not None or len(samples) < max_samples:
        samples.append(one(step, steps_per_sample))
        ends.append(time.perf_counter() - t0)
        if window_s is not None:
            if ends[-1] >= window_s:
                break
            continue
        enough = len(samples) >= min_samples and ends[-1] >= min_time_s
        if agree(enough) if agree else enough:  # the cap is a count: every rank reaches it alike
            break
    return samples, time.perf_counter() - t0, ends


def measure(step: Callable[[], object], device: str, spec, *, warmup_iters: int | None = None,
            agree: Agree | None = None,
            before_sampling: Callable[[float], float | None] | None = None) -> Timing:
    """Warm up then sample ``step`` with the settings of ``spec`` (a MeasureSpec-like object);
    ``warmup_iters`` raises the spec's warm-up count (a full cycle of the point's batches);
    ``before_sampling(step_ms)`` runs between the two phases, told the warm-up's mean step time
    (it opens the telemetry window; in a duet it waits for the partner) and may return the
    window to sample for, in seconds."""
    iters = max(spec.warmup_iters, warmup_iters or 0)
    n_warm, warm_s = warmup(step, device, iters, spec.warmup_s, agree)
    window = None
    if before_sampling is not None:
        window = before_sampling(1e3 * warm_s / max(n_warm, 1))
    samples, measure_s, ends = sample(step, device, spec.min_samples, spec.min_time_s,
                                      spec.max_samples, getattr(spec, "steps_per_sample", 1), agree,
                                      window_s=window)
    return Timing(samples, n_warm, warm_s, measure_s, ends)
