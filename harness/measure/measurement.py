"""Measure one point inside the current process and return the worker's part of its record.

Input: a resolved ``Point`` (already seeded by the worker) and an optional injected fault.
Output: ``measure_point(point) -> dict`` with ``status`` ("ok" | "not_supported"), ``error``,
``samples_ms`` (ms), ``metrics`` (DESIGN.md names and units), ``warnings`` and, on a rank of a
multi-rank point, ``rank_metrics`` ({rank, mem_peak_bytes, param_bytes, grad_bytes,
optim_bytes, model_state_bytes}). Failures other than "not supported" propagate as exceptions;
the worker classifies them.

Order inside a point: the device is selected first (before any CUDA call, so every rank opens
its context on its own GPU); memory tracking and a whole-point NVML sampler start before the
workload is built (so model weights and optimizer state count in the peaks, which are "above
the pre-point baseline"); the first call is timed alone (``compile_s`` when ``ops.compile`` is
on) and records which SDPA kernels the step runs (``sdpa_backends``, ``harness.measure.sdpa_backends``);
then ``harness.measure.timing`` warms up, over at least one full cycle of the point's batches,
and samples. torch's intra-op threads are set first (``measure.threads``, recorded as
``threads``); the host's CPU use over the sampling window is the record's ``contention``
evidence (``harness.measure.contention``). Power, energy, utilisation, clocks, temperature and
throttling come from a second
NVML window opened when sampling starts and closed after the last sample, so they describe the
measured steps, not model build, compilation or warm-up (``energy_j``, with ``energy_j_per_step``
and ``energy_j_per_token``; ``energy_j_point`` covers the whole point). Memory peaks come from the
whole-point sampler. On several ranks, rank 0 decides when warm-up and sampling stop.
With ``measure.profile`` on, the point's last round then runs the profiled pass
(``harness.measure.profiling``: a few more steps under torch.profiler, after the last timed
sample, so no sample is ever taken with a profiler or a named range attached); its ``profile_*``
metrics give the breakdown, ``profile_overhead_ratio`` the profiled step time over this round's
timed median. A profiled pass that fails leaves a warning, never the point failed.
The derived metrics (rates, FLOPs and MFU, energy per step, loss parity) are
``harness.measure.point_metrics``'. The memory model's prediction
(``harness.measure.memory_model``: ``mem_predicted_bytes`` and its parts) is recorded beside the
measured peaks. A training point's activation-checkpointing policy (``strategies.memory``) is
applied to the built model before its first call. A duet's side pins its lane's cores before
torch starts a thread and starts sampling with its partner (``harness.measure.rendezvous``).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import torch

from harness.measure import (
    memory_model,
    profiling,
    rendezvous,
    steps,
    steps_inference,
    timing,
    workload,
)
from harness.measure.contention import HostWindow
from harness.measure.faults import with_fault
from harness.measure.sdpa_backends import record_backends
from harness.measure.point_metrics import (
    attention_products,
    correctness,
    device_name,
    energy_metrics,
    flex_metrics,
    flops_metrics,
    parity,
    throughput,
)
from harness.measure.peak_memory import MemoryTracker
from harness.measure.telemetry import TelemetrySampler, empty_result
from harness.records import stats

POINT_METRICS = ("mem_nvml_peak_bytes", "mem_process_gpu_bytes")  # whole point: build included
WINDOW_METRICS = (  # the sampled steps only
    "power_w_mean", "energy_j", "gpu_util_pct_mean", "sm_clock_mhz_min", "sm_clock_mhz_median",
    "sm_clock_mhz_max", "temperature_c_max", "throttled", "throttle_reasons", "power_capped",
)


def device_of(point) -> str:
    if point.device != "cuda":
        return "cpu"
    index = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(index)
    return f"cuda:{index}"


def gpu_index(device: str) -> int | None:
    return int(device.split(":")[1]) if device.startswith("cuda") else None


def sample_window(step, device: str, spec, gpu: int | None, *, warmup_iters: int = 0,
                  agree=None, threads_planned: float = 1.0) -> tuple[timing.Timing, dict, dict]:
    """Warm up and sample ``step``; the NVML telemetry of the sampling only (``gpu`` = the NVML
    device index, None for no telemetry) and the host's CPU evidence over the same window
    (``harness.measure.contention``). In a duet, sampling starts when both sides are warm, for
    the window the runner gives (``harness.measure.rendezvous``)."""
    window = TelemetrySampler(gpu) if gpu is not None else None
    host = HostWindow()

    def before_sampling(step_ms: float) -> float | None:
        common = rendezvous.join(step_ms) if rendezvous.in_duet() else None
        host.start()
        if window:
            window.start()
        return common

    t = timing.measure(step, device, spec, warmup_iters=warmup_iters, agree=agree,
                       before_sampling=before_sampling)
    gpu_window = window.stop() if window else empty_result("CPU point")
    return t, gpu_window, host.stop(spec.contention_cores, threads_planned)


THREADS_ENV = "TBENCH_THREADS"  # the run's choice for measure.threads: null (harness.run.design)


def intra_op_threads(point) -> int:
    """``measure.threads``, else the run's choice (``TBENCH_THREADS``), else the CPUs this
    process may use shared among the point's ranks; set on torch before anything runs, after a
    duet's lane is pinned, so every point states (and records) its threads."""
    rendezvous.pin_cpus()
    chosen = os.environ.get(THREADS_ENV)
    n = point.measure.threads or (int(chosen) if chosen else None) or max(
        1, len(os.sched_getaffinity(0)) // workload.nproc_of(point))
    torch.set_num_threads(n)
    return n


def _first_call(step, device: str, record: bool) -> tuple[float, list[str] | None]:
    """The first call, timed alone; with ``record``, the SDPA kernels it ran (not under
    torch.compile, whose compiled code Python modes cannot see)."""
    t0 = time.perf_counter()
    backends = None
    if record:
        backends, _ = record_backends(step)
    else:
        step()
    timing._sync(device)
    return time.perf_counter() - t0, backends


@dataclass
class Timed:
    """What ``timed`` measured of one point, for ``record_of``."""

    t: timing.Timing
    window: dict  # NVML over the sampled steps
    whole: dict  # NVML over the whole point
    host: dict  # the host's CPU evidence over the sampling window
    memory: dict
    finished: dict  # the workload's own metrics (losses, generated tokens, ...)
    first_s: float
    backends: list[str] | None
    compiled: bool
    profile: dict
    profile_warnings: list[str]


def not_supported(reason: str) -> dict[str, Any]:
    return {"status": "not_supported", "error": reason, "samples_ms": [], "metrics": {},
            "warnings": []}


def measure_point(point, fault: str | None = None) -> dict[str, Any]:
    device = device_of(point)
    threads = intra_op_threads(point)
    reasons = workload.unsupported_reasons(point)
    if reasons:
        return not_supported("; ".join(reasons))
    mem = MemoryTracker(device)
    mem.start()
    gpu = gpu_index(device)
    sampler = TelemetrySampler(gpu).start() if gpu is not None else None
    try:
        wl = steps.build(point, device)
    except workload.NotSupported as exc:
        return not_supported(str(exc))
    if point.workload.kind == "train":  # activation checkpointing (implementations.memory)
        point.strategies.memory.apply(wl.model)
    try:
        measured = timed(point, wl, device, gpu, threads, mem, sampler, fault)
    finally:
        wl.close()
    return record_of(point, wl, device, threads, measured)


def timed(point, wl, device: str, gpu, threads: int, mem, sampler, fault) -> Timed:
    """The first call (alone), warm-up and sampling, then the profiled pass if wanted."""
    compiled = bool(getattr(point.strategies.ops, "compile", False)
                    or point.strategies.attention.compiles_on_first_call)
    step = with_fault(wl.step, fault)
    try:
        first_s, backends = _first_call(step, device, record=not compiled)
        t, window, host = sample_window(step, device, point.measure, gpu,
                                        warmup_iters=wl.batches_per_cycle,
                                        agree=timing.agreement(device),
                                        threads_planned=threads * workload.nproc_of(point))
    finally:
        whole = sampler.stop() if sampler else empty_result("CPU point")
    wl.timed_steps = len(t.samples_ms) * point.measure.steps_per_sample
    memory, finished = mem.stop(), wl.finish()  # what was timed, before any profiled step
    profile, profile_warnings = profiled(point, step, device, t.samples_ms)
    return Timed(t, window, whole, host, memory, finished, first_s, backends, compiled, profile,
                 profile_warnings)


def record_of(point, wl, device: str, threads: int, m: Timed) -> dict[str, Any]:
    """The worker's record of a measured point: every metric, the warnings, the evidence."""
    samples = m.t.samples_ms
    metrics = {**stats.summarize(samples), **m.memory}
    metrics.update(memory_model.predicted_metrics(point))  # beside the measured peak
    metrics.update(throughput(wl, samples, point, m.finished))
    metrics.update(flops_metrics(wl, samples, device, point))
    metrics.update(steps_inference.rate_metrics(wl, samples, device_name(device), point))
    metrics.update({k: m.whole.get(k) for k in POINT_METRICS})
    metrics.update({k: m.window.get(k) for k in WINDOW_METRICS})
    n_steps = len(samples) * point.measure.steps_per_sample
    tokens_per_step = metrics["tokens_per_s"] * stats.mean(samples) / 1e3  # processed/generated
    metrics.update(energy_metrics(m.window, m.whole, n_steps, tokens_per_step))
    metrics["compile_s"] = m.first_s if m.compiled else None
    metrics["attention_products"] = attention_products(point, wl.cfg)
    if point.strategies.attention.compiles_on_first_call:
        metrics.update(flex_metrics())
    metrics.update(sdpa_backends=m.backends, warmup_steps=m.t.warmup_iters, threads=threads,
                   cpus=sorted(os.sched_getaffinity(0)),
                   process_cpu_ms_per_step=1e3 * m.host["own_cpu_s"] / n_steps if n_steps else None)
    metrics.update(m.finished)
    metrics.update(m.profile)
    warnings = (list(m.window.get("warnings") or []) + list(m.whole.get("warnings") or [])
                + m.profile_warnings)
    metrics.update(parity(point, wl.cfg, device, warnings))
    metrics.update(correctness(point, wl.cfg, device, warnings))
    noisy = stats.noise_warning(samples)
    warnings += [noisy] if noisy else []
    record = {"status": "ok", "error": None, "samples_ms": samples, "metrics": metrics,
              "warnings": warnings, "contention": m.host, "sample_ends_s": m.t.ends_s}
    if "rank_metrics" in wl.extra:
        record["rank_metrics"] = wl.extra["rank_metrics"]
    return record


def profiled(point, step, device: str, samples_ms: list[float]) -> tuple[dict, list[str]]:
    """The profiled pass when this worker is the one to profile (``profiling.wanted``): its
    metrics, with the profiled step time over the timed median, and warnings."""
    if not profiling.wanted(point):
        return {}, []
    try:
        metrics, warnings = profiling.profile_pass(step, device)
    except Exception as exc:  # noqa: BLE001 -- the timed samples stand without a breakdown
        return {}, [f"profiled pass failed: {type(exc).__name__}: {exc}"]
    median = stats.median(samples_ms) if samples_ms else None
    metrics["profile_overhead_ratio"] = metrics["profile_step_ms"] / median if median else None
    return metrics, warnings

