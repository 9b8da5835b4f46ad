"""Measure one point inside the current process and return the worker's part of its record.

Input: a resolved ``Point`` (already seeded by the worker) and an optional injected fault.
Output: ``measure_point(point) -> dict`` with ``status`` ("ok" | "not_supported"), ``error``,
``samples_ms`` (ms), ``metrics`` (DESIGN.md names and units), ``warnings`` and, on a rank of a
multi-rank point, ``rank_metrics`` ({rank, mem_peak_bytes, param_bytes, grad_bytes,
optim_bytes, model_state_bytes}). Failures other than "not supported" propagate as exceptions;
the worker classifies them.

Order inside a point: memory tracking and NVML sampling start before the workload is built (so
model weights and optimizer state count in the peaks, which are "above the pre-point
baseline"); the first call is timed alone (``compile_s`` when ``ops.compile`` is on); then
``harness.measure.timing`` warms up and samples. Throughputs divide per-step counts by the MEAN step
time (total work over total time); ``per_token_latency_ms`` uses the median.
"""
from __future__ import annotations

import os
import time
from typing import Any

import torch

from harness.analyse import stats
from harness.measure import peaks, steps, timing, workload
from harness.measure.faults import with_fault
from harness.measure.memory import MemoryTracker
from harness.measure.telemetry import TelemetrySampler, empty_result

TELEMETRY_METRICS = (
    "mem_nvml_peak_bytes", "mem_process_gpu_bytes", "power_w_mean", "energy_j",
    "gpu_util_pct_mean", "sm_clock_mhz_min", "sm_clock_mhz_median", "sm_clock_mhz_max",
    "temperature_c_max", "throttled", "throttle_reasons",
)


def device_of(point) -> str:
    if point.device != "cuda":
        return "cpu"
    index = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(index)
    return f"cuda:{index}"


def device_name(device: str) -> str | None:
    return torch.cuda.get_device_name(device) if device.startswith("cuda") else None


def _telemetry(device: str):
    if device.startswith("cuda"):
        return TelemetrySampler(int(device.split(":")[1])).start()
    return None


def _first_call(step, device: str) -> float:
    t0 = time.perf_counter()
    step()
    timing._sync(device)
    return time.perf_counter() - t0


def measure_point(point, fault: str | None = None) -> dict[str, Any]:
    reasons = workload.unsupported_reasons(point)
    if reasons:
        return {"status": "not_supported", "error": "; ".join(reasons), "samples_ms": [],
                "metrics": {}, "warnings": []}
    device = device_of(point)
    mem = MemoryTracker(device)
    mem.start()
    sampler = _telemetry(device)
    try:
        wl = steps.build(point, device)
    except workload.NotSupported as exc:
        return {"status": "not_supported", "error": str(exc), "samples_ms": [], "metrics": {},
                "warnings": []}
    try:
        step = with_fault(wl.step, fault)
        first_s = _first_call(step, device)
        t = timing.measure(step, device, point.measure)
    finally:
        tele = sampler.stop() if sampler else empty_result("CPU point")
        wl.close()
    metrics = {**stats.summarize(t.samples_ms), **mem.stop()}
    metrics.update(throughput(wl, t.samples_ms, point))
    metrics.update(flops_metrics(wl, t.samples_ms, device, point))
    metrics.update({k: tele.get(k) for k in TELEMETRY_METRICS})
    metrics["compile_s"] = first_s if getattr(point.strategies.ops, "compile", False) else None
    metrics.update(wl.finish())
    warnings = list(tele.get("warnings") or [])
    metrics.update(parity(point, device, warnings))
    noisy = stats.noise_warning(t.samples_ms)
    warnings += [noisy] if noisy else []
    record = {"status": "ok", "error": None, "samples_ms": t.samples_ms, "metrics": metrics,
              "warnings": warnings}
    if "rank_metrics" in wl.extra:
        record["rank_metrics"] = wl.extra["rank_metrics"]
    return record


def throughput(wl, samples_ms: list[float], point) -> dict[str, float | None]:
    mean_s = stats.mean(samples_ms) / 1e3
    new = wl.finish().get("generated_tokens_per_step") if point.workload.kind == "generate" else None
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
    return out


def flops_metrics(wl, samples_ms: list[float], device: str, point) -> dict[str, float | None]:
    peak = peaks.peak_tflops(device_name(device), point.strategies.precision.label)
    if wl.flops is None:
        return {"flops_per_step": None, "tflops_per_s": None, "mfu": None, "peak_tflops": peak}
    achieved = wl.flops / (stats.mean(samples_ms) / 1e3)
    return {"flops_per_step": wl.flops, "tflops_per_s": achieved / 1e12,
            "mfu": peaks.mfu(achieved, peak), "peak_tflops": peak}


def parity(point, device: str, warnings: list[str]) -> dict[str, Any]:
    """Loss after ``parity_steps`` train steps vs fp32 from the same seed (train only)."""
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
    out = loss_parity(lambda: build_model(cfg), batches, point.strategies.precision, steps,
                      device, point.seed)
    if not out["loss_parity_ok"]:
        warnings.append(f"loss parity failed: relative difference {out['loss_parity_rel_diff']} "
                        f"after {steps} steps vs fp32")
    return out
