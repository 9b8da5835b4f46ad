"""NVML's fields as tbench reads them: clock-event reason bits, the per-sample readers, the result keys.

Pure tables and functions of an NVML module object and a device handle; the process's NVML state
(initialisation, opening a device) stays in harness.measure.telemetry.
"""
from __future__ import annotations

import os

GIB = 1 << 30
NOT_AVAILABLE = (1 << 64) - 1  # NVML_VALUENOT_AVAILABLE for unsigned long long fields

# Clock-event reason bits from nvml.h (nvmlClocksEventReason*, formerly *ClocksThrottleReason*).
CLOCK_EVENT_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",  # clocks cut by 2x or more; set by HW thermal slowdown or the power brake
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
THROTTLE_MASK = 0x8 | 0x20 | 0x40 | 0x80  # thermal and hardware slowdowns
POWER_CAP_MASK = 0x4

RESULT_KEYS = (
    "nvml", "n_samples", "window_s", "mem_nvml_baseline_bytes", "mem_nvml_peak_bytes",
    "mem_process_gpu_bytes", "power_w_mean", "power_w_max", "energy_j", "energy_source",
    "energy_j_power_x_time", "gpu_util_pct_mean", "sm_clock_mhz_min", "sm_clock_mhz_median",
    "sm_clock_mhz_max", "temperature_c_max", "clock_event_reasons", "throttle_reasons", "throttled",
    "power_capped", "warnings",
)


def text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def bytes_or_none(value) -> int | None:
    return None if value is None or value >= NOT_AVAILABLE else int(value)


def decode_clock_event_reasons(mask: int) -> list[str]:
    """Names of the set bits, lowest bit first; bits unknown to this table as 'unknown_0x...'."""
    names, bit = [], 1
    while bit <= mask:
        if mask & bit:
            names.append(CLOCK_EVENT_REASONS.get(bit, f"unknown_{bit:#x}"))
        bit <<= 1
    return names


def _read_reasons(nv, handle) -> int:
    read = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
    if read is None:  # nvidia-ml-py < 12.535 only has the older name
        read = nv.nvmlDeviceGetCurrentClocksThrottleReasons
    return int(read(handle))


def _process_bytes(nv, handle) -> int | None:
    pid = os.getpid()
    for proc in nv.nvmlDeviceGetComputeRunningProcesses(handle):
        if proc.pid == pid:
            return bytes_or_none(proc.usedGpuMemory)
    return None


READERS = {
    "mem_used": lambda nv, h: int(nv.nvmlDeviceGetMemoryInfo(h).used),
    "proc_mem": _process_bytes,
    "power_w": lambda nv, h: nv.nvmlDeviceGetPowerUsage(h) / 1000.0,  # mW -> W
    "util": lambda nv, h: float(nv.nvmlDeviceGetUtilizationRates(h).gpu),
    "sm_clock": lambda nv, h: float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
    "temp": lambda nv, h: float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
    "reasons": _read_reasons,
    "energy_mj": lambda nv, h: int(nv.nvmlDeviceGetTotalEnergyConsumption(h)),
}
SERIES = ("mem_used", "proc_mem", "power_w", "util", "sm_clock", "temp", "reasons")
