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
on) and records which SDPA kernels the step runs (``sdpa_backends``, ``harness.measure.kernels``);
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
Throughputs divide per-step counts by the MEAN step time (total work over total time);
``per_token_latency_ms`` uses the median. A training point's activation-checkpointing policy
(``strategies.memory``) is applied to the built model before its first call; ``flops_per_step``
and ``mfu`` stay model FLOPs, ``hardware_flops_per_step`` and ``hfu`` add what it recomputes.
The memory model's prediction (``harness.measure.memory_model``: ``mem_predicted_bytes`` and its
parts) is recorded beside the measured peaks.
"""
from __future__ import annotations

import os
import time
from typing import Any

import torch

from harness.measure import memory_model, peaks, profiling, steps, steps_inference, timing, workload
from harness.measure.contention import HostWindow
from harness.measure.faults import with_fault
from harness.measure.kernels import record_backends
from harness.measure.memory import MemoryTracker
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


def device_name(device: str) -> str | None:
    return torch.cuda.get_device_name(device) if device.startswith("cuda") else None


def gpu_index(device: str) -> int | None:
    return int(device.split(":")[1]) if device.startswith("cuda") else None


def sample_window(step, device: str, spec, gpu: int | None, *, warmup_iters: int = 0,
                  agree=None) -> tuple[timing.Timing, dict, dict]:
    """Warm up and sample ``step``; the NVML telemetry of the sampling only (``gpu`` = the NVML
    device index, None for no telemetry) and the host's CPU evidence over the same window
    (``harness.measure.contention``)."""
    window = TelemetrySampler(gpu) if gpu is not None else None
    host = HostWindow()

    def before_sampling():
        host.start()
        if window:
            window.start()

    t = timing.measure(step, device, spec, warmup_iters=warmup_iters, agree=agree,
                       before_sampling=before_sampling)
    gpu_window = window.stop() if window else empty_result("CPU point")
    return t, gpu_window, host.stop(spec.contention_cores)


def intra_op_threads(point) -> int:
    """``measure.threads``, else the CPUs this process may use shared among the point's ranks;
    set on torch before anything runs, so every point states (and records) its threads."""
    n = point.measure.threads or max(1, len(os.sched_getaffinity(0)) // workload.nproc_of(point))
    torch.set_num_threads(n)
    return n


def energy_metrics(window: dict, whole: dict, n_steps: int, tokens_per_step: float) -> dict:
    energy = window.get("energy_j")
    per_step = None if energy is None or not n_steps else energy / n_steps
    return {"energy_j_per_step": per_step,
            "energy_j_per_token": None if per_step is None or not tokens_per_step
            else per_step / tokens_per_step,
            "energy_j_point": whole.get("energy_j")}


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


def measure_point(point, fault: str | None = None) -> dict[str, Any]:
    device = device_of(point)
    threads = intra_op_threads(point)
    reasons = workload.unsupported_reasons(point)
    if reasons:
        return {"status": "not_supported", "error": "; ".join(reasons), "samples_ms": [],
                "metrics": {}, "warnings": []}
    mem = MemoryTracker(device)
    mem.start()
    gpu = gpu_index(device)
    sampler = TelemetrySampler(gpu).start() if gpu is not None else None
    try:
        wl = steps.build(point, device)
    except workload.NotSupported as exc:
        return {"status": "not_supported", "error": str(exc), "samples_ms": [], "metrics": {},
                "warnings": []}
    if point.workload.kind == "train":  # activation checkpointing (implementations.memory)
        point.strategies.memory.apply(wl.model)
    flex = point.strategies.attention.compiles_on_first_call
    compiled = getattr(point.strategies.ops, "compile", False) or flex
    step = with_fault(wl.step, fault)
    try:
        try:
            first_s, backends = _first_call(step, device, record=not compiled)
            t, window, host = sample_window(step, device, point.measure, gpu,
                                            warmup_iters=wl.batches_per_cycle,
                                            agree=timing.agreement(device))
        finally:
            whole = sampler.stop() if sampler else empty_result("CPU point")
        wl.timed_steps = len(t.samples_ms) * point.measure.steps_per_sample
        memory, finished = mem.stop(), wl.finish()  # what was timed, before any profiled step
        profile, profile_warnings = profiled(point, step, device, t.samples_ms)
    finally:
        wl.close()
    metrics = {**stats.summarize(t.samples_ms), **memory}
    metrics.update(memory_model.predicted_metrics(point))  # beside the measured peak
    metrics.update(throughput(wl, t.samples_ms, point, finished))
    metrics.update(flops_metrics(wl, t.samples_ms, device, point))
    metrics.update(steps_inference.rate_metrics(wl, t.samples_ms, device_name(device), point))
    metrics.update({k: whole.get(k) for k in POINT_METRICS})
    metrics.update({k: window.get(k) for k in WINDOW_METRICS})
    n_steps = len(t.samples_ms) * point.measure.steps_per_sample
    tokens_per_step = metrics["tokens_per_s"] * stats.mean(t.samples_ms) / 1e3  # processed/generated
    metrics.update(energy_metrics(window, whole, n_steps, tokens_per_step))
    metrics["compile_s"] = first_s if compiled else None
    metrics["attention_products"] = attention_products(point)
    if flex:
        metrics.update(flex_metrics())
    metrics["sdpa_backends"] = backends
    metrics["warmup_steps"] = t.warmup_iters
    metrics["threads"] = threads
    metrics.update(finished)
    metrics.update(profile)
    warnings = (list(window.get("warnings") or []) + list(whole.get("warnings") or [])
                + profile_warnings)
    metrics.update(parity(point, device, warnings))
    noisy = stats.noise_warning(t.samples_ms)
    warnings += [noisy] if noisy else []
    record = {"status": "ok", "error": None, "samples_ms": t.samples_ms, "metrics": metrics,
              "warnings": warnings, "contention": host}
    if "rank_metrics" in wl.extra:
        record["rank_metrics"] = wl.extra["rank_metrics"]
    return record


def flex_metrics() -> dict[str, Any]:
    """FlexAttention block masks of this point: how many were built (one per shape without
    padding or segments, one per step with them: then inside the step time) and what building
    one costs once warm (built again after the timing, so the timed steps did not pay it)."""
    from implementations.attention.flex import STATS, retime_last_block_mask

    seconds = retime_last_block_mask()
    return {"flex_block_masks": STATS["block_masks"],
            "flex_block_mask_ms": None if seconds is None else 1e3 * seconds}


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


def throughput(wl, samples_ms: list[float], point, finished: dict) -> dict[str, float | None]:
    """Per-second rates from the mean step time; ``finished`` is ``wl.finish()`` taken right
    after the timed samples (generate: the tokens those steps really produced)."""
    mean_s = stats.mean(samples_ms) / 1e3
    new = finished.get("generated_tokens_per_step") if point.workload.kind == "generate" else None
    processed = new if new is not None else wl.processed_tokens
    real = new if new is not None else wl.real_tokens
    out = {
        "samples_per_s": wl.sequences / mean_s,
        "tokens_per_s": processed / mean_s,
        "real_tokens_per_s": real / mean_s,
        "padding_efficiency": real / processed if processed else None,
        "per_token_latency_ms": None,
    }
    if point.workload.kind == "generate":
        out["per_token_latency_ms"] = stats.median(samples_ms) / point.workload.new_tokens
    elif point.workload.kind == "decode":  # one step is one token per row
        out["per_token_latency_ms"] = stats.median(samples_ms)
    return out


def flops_metrics(wl, samples_ms: list[float], device: str, point) -> dict[str, float | None]:
    peak = peaks.peak_tflops(device_name(device), point.strategies.precision.math_format)
    if wl.flops is None:
        return {"flops_per_step": None, "tflops_per_s": None, "mfu": None, "peak_tflops": peak,
                "hardware_flops_per_step": None, "hfu": None}
    achieved = wl.flops / (stats.mean(samples_ms) / 1e3)
    hardware = wl.flops * hardware_ratio(point)  # + what checkpointing recomputes
    return {"flops_per_step": wl.flops, "tflops_per_s": achieved / 1e12,
            "mfu": peaks.mfu(achieved, peak), "peak_tflops": peak,
            "hardware_flops_per_step": hardware,
            "hfu": peaks.mfu(hardware / (stats.mean(samples_ms) / 1e3), peak)}


def attention_products(point) -> int:
    """The self-attention products of one sequence at the point's nominal length: the (query,
    key) pairs scored (q k^T) plus the pairs attended (p v), encoder layers bidirectional,
    decoder layers causal; the two are equal except for topk, which scores every pair; linformer
    adds its K and V projections (per query head's share of its K/V head). Dense's
    over a pattern's is the pattern's ideal speed-up (the report's kernel answers)."""
    cfg, S = workload.model_config(point), point.workload.seq_len

    def products(causal: bool) -> int:
        a = cfg.attention.in_self_attention(causal)
        return (a.allowed_pairs(S, causal) + a.scored_pairs(S, causal)
                + round(a.projection_products(S) * cfg.kv_heads / cfg.n_heads))

    return cfg.n_encoder_layers * products(False) + cfg.n_decoder_layers * products(True)


def hardware_ratio(point) -> float:
    """Hardware over model FLOPs of a step at the point's nominal shape (``batch_size`` x
    ``seq_len``; padding strategies vary the shape a little, the ratio barely): 1 unless a
    training step recomputes checkpointed activations."""
    if point.workload.kind != "train" or not point.strategies.memory.recomputes:
        return 1.0
    from implementations.flops import hardware_train_flops, train_step_flops

    cfg, w = workload.model_config(point), point.workload
    model = train_step_flops(cfg, w.batch_size, w.seq_len)
    return hardware_train_flops(cfg, w.batch_size, w.seq_len, point.strategies.memory) / model


PARITY_NAMES = {"loss_final": "loss_parity_final", "amp_skipped_steps": "loss_parity_amp_skipped_steps"}


def parity(point, device: str, warnings: list[str]) -> dict[str, Any]:
    """Loss after ``parity_steps`` train steps vs fp32 from the same seed (train only).

    The parity run's own loss and skipped steps are renamed (``PARITY_NAMES``): the measured
    run's ``loss_final`` and ``amp_skipped_steps`` keep their names and values."""
    steps = point.workload.parity_steps
    if point.workload.kind != "train" or steps == 0:
        return {}
    from implementations.model import build_model
    from implementations.precision.parity import loss_parity

    cfg = workload.model_config(point)
    if cfg.is_encoder_decoder:
        warnings.append("loss parity skipped: it needs a decoder-only model")
        return {}
    batches, _ = workload.make_batches(point, cfg, device)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    every = [SDPBackend.MATH, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
             SDPBackend.CUDNN_ATTENTION]
    with sdpa_kernel(every):  # precision parity, not the point's SDPA backend (fp32 has no flash)
        out = loss_parity(lambda: build_model(cfg), batches, point.strategies.precision, steps,
                          device, point.seed)
    if not out["loss_parity_ok"]:
        warnings.append(f"loss parity failed: relative difference {out['loss_parity_rel_diff']} "
                        f"after {steps} steps vs fp32")
    return {PARITY_NAMES.get(k, k): v for k, v in out.items()}
