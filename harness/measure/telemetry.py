"""NVML telemetry for one measured window, GPU facts, and a pre-run contention check.

Contract
    TelemetrySampler(device_index=0, interval_s=0.05)      start() ... stop() -> dict
        start() reads the baselines (device memory used, total-energy counter) and starts a daemon
        thread sampling NVML every interval_s (clamped to [0.01, 0.1] s: always >= 10 Hz).
        stop() joins the thread, takes one last sample and returns (units in the names):
            nvml                     "ok" | "not available: <reason>"
            n_samples, window_s      samples taken (the last one in stop() included); seconds start->stop
            mem_nvml_baseline_bytes  device memory used at start()
            mem_nvml_peak_bytes      max(device memory used in any sample) - baseline, >= 0
            mem_process_gpu_bytes    peak of this process's GPU memory (its pid in
                                     nvmlDeviceGetComputeRunningProcesses); None where NVML cannot
                                     attribute memory to our pid (in a container NVML reports host pids)
            power_w_mean, power_w_max
            energy_j                 delta of nvmlDeviceGetTotalEnergyConsumption (mJ -> J); None where the
                                     counter is absent, the window < MIN_ENERGY_WINDOW_S, or the counter did
                                     not advance or went back -- never 0
            energy_source            "nvml_total_energy_counter" when energy_j is set, else None
            energy_j_power_x_time    power_w_mean * window_s: the cross-check, never copied into energy_j
            gpu_util_pct_mean, sm_clock_mhz_min/_median/_max, temperature_c_max
            clock_event_reasons      names of every clock-event (throttle) reason bit seen in any sample
            throttle_reasons         the subset that slows clocks: thermal, power brake, power cap, HW slowdown
            throttled                True if any sample had one of those; idle / app-clock reasons are not
            power_capped             True if any sample had the software power cap: the normal state of a
                                     heavy kernel on a modern GPU (clocks settle under the power limit),
                                     kept apart from ``throttled`` (thermal and hardware slowdowns)
            warnings                 list[str] (energy cross-check disagreement, counter problems)
        Every metric is None (never 0) where NVML or the metric is unavailable. Context manager:
        `with TelemetrySampler() as t: ...` leaves the stop() dict in `t.result`.
    nvml_available() -> bool                    NVML initialised and at least one device
    device_info(device_index=0) -> dict         name, uuid, memory_total_bytes, power_limit_w,
        sm_clock_max_mhz, mem_clock_max_mhz, driver_version, cuda_driver_version; {} without a driver
    gpu_contention_warning(device_index=0, idle_used_bytes=None) -> str | None
        idle_used_bytes None: max(1 GiB, 2% of the card), as large cards idle with more in use
    decode_clock_event_reasons(mask) -> list[str]

device_index is the CUDA index as torch sees it; NVML ignores CUDA_VISIBLE_DEVICES, so it is mapped
through that variable (integer or GPU-UUID entries). NVML is initialised once per process (again
after a fork). No public function raises. The sampler thread holds the GIL only for its Python
bookkeeping (ctypes releases it during each NVML call): tens of microseconds per sample at 20 Hz.
"""
from __future__ import annotations

import os
import statistics
import threading
import time

from harness.measure.nvml_fields import (  # noqa: F401 (re-exported: the contract above)
    CLOCK_EVENT_REASONS, GIB, POWER_CAP_MASK, READERS, RESULT_KEYS, SERIES, THROTTLE_MASK,
    bytes_or_none, decode_clock_event_reasons, text,
)

try:
    import pynvml  # nvidia-ml-py; tests replace this module object with a fake
except Exception:  # not installed: every call below reports "not available"
    pynvml = None

MIN_ENERGY_WINDOW_S = 0.1  # the energy counter updates about every 10-100 ms; shorter windows lie
ENERGY_CROSSCHECK_MIN_S = 1.0  # NVML power readings are ~1 s averages; only compare longer windows

_init_state = {"pid": None, "error": None}
_init_lock = threading.Lock()


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _ensure_nvml() -> str | None:
    """None when NVML is usable in this process, else why not. nvmlInit runs once per process."""
    with _init_lock:
        if _init_state["pid"] != os.getpid():
            error = None
            if pynvml is None:
                error = "nvidia-ml-py is not installed"
            else:
                try:
                    pynvml.nvmlInit()
                except Exception as exc:
                    error = _describe(exc)
            _init_state.update(pid=os.getpid(), error=error)
        return _init_state["error"]


def _open(device_index: int):
    """(handle, None) or (None, reason) for the CUDA-visible device `device_index`."""
    error = _ensure_nvml()
    if error is not None:
        return None, error
    try:
        target = str(int(device_index))
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            entries = [e.strip() for e in visible.split(",") if e.strip()]
            if int(device_index) >= len(entries):
                return None, f"CUDA device {device_index} is not in CUDA_VISIBLE_DEVICES={visible!r}"
            target = entries[int(device_index)]
        if target.isdigit():
            return pynvml.nvmlDeviceGetHandleByIndex(int(target)), None
        return pynvml.nvmlDeviceGetHandleByUUID(target), None
    except Exception as exc:
        return None, f"device {device_index}: {_describe(exc)}"


def empty_result(reason: str) -> dict:
    """Every key of stop()'s dict with None values, for a window NVML could not observe."""
    result = dict.fromkeys(RESULT_KEYS)
    result.update(nvml=f"not available: {reason}", warnings=[])
    return result


class TelemetrySampler:
    """Background NVML sampling over one measured window; see the module docstring."""

    def __init__(self, device_index: int = 0, interval_s: float = 0.05):
        self.device_index = device_index
        try:
            self.interval_s = min(max(float(interval_s), 0.01), 0.1)
        except (TypeError, ValueError):
            self.interval_s = 0.05
        self.result: dict | None = None
        self._handle = None
        self._error = "sampler was not started"
        self._series: dict[str, list] = {name: [] for name in SERIES}
        self._off: dict[str, str] = {}  # metric -> why NVML refused it (not read again)
        self._n = 0
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._baseline = self._energy0 = None
        self._t0 = 0.0
        self._warnings: list[str] = []

    def __enter__(self) -> "TelemetrySampler":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> "TelemetrySampler":
        if self._thread is not None or self.result is not None:
            return self
        self._handle, self._error = _open(self.device_index)
        if self._handle is None:
            return self
        self._baseline = self._read("mem_used")
        self._energy0 = self._read("energy_mj")
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="tbench-telemetry", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict:
        if self.result is not None:
            return self.result
        if self._thread is None:
            self.result = empty_result(self._error)
            return self.result
        self._stop_event.set()
        self._thread.join(timeout=5.0)
        try:
            self._sample()
            energy1 = self._read("energy_mj")
            window_s = time.perf_counter() - self._t0
            self.result = self._summarise(energy1, window_s)
        except Exception as exc:  # a bug here must not lose the point's measurement
            self.result = empty_result(f"telemetry failed: {_describe(exc)}")
        return self.result

    def _read(self, name: str):
        if name in self._off:
            return None
        try:
            return READERS[name](pynvml, self._handle)
        except Exception as exc:
            self._off[name] = _describe(exc)
            return None

    def _sample(self) -> None:
        for name in SERIES:
            value = self._read(name)
            if value is not None:
                self._series[name].append(value)
        self._n += 1

    def _run(self) -> None:
        next_t = time.perf_counter()
        try:
            while True:
                self._sample()
                next_t += self.interval_s
                if self._stop_event.wait(max(0.0, next_t - time.perf_counter())):
                    return
        except Exception as exc:
            self._warnings.append(f"telemetry sampling stopped early: {_describe(exc)}")

    def _summarise(self, energy1, window_s: float) -> dict:
        s = self._series
        result = empty_result("")
        result.update(nvml="ok", n_samples=self._n, window_s=window_s,
                      mem_nvml_baseline_bytes=self._baseline, warnings=self._warnings)
        if s["mem_used"] and self._baseline is not None:
            result["mem_nvml_peak_bytes"] = max(0, max(s["mem_used"]) - self._baseline)
        if s["proc_mem"]:
            result["mem_process_gpu_bytes"] = max(s["proc_mem"])
        if s["power_w"]:
            result.update(power_w_mean=statistics.fmean(s["power_w"]), power_w_max=max(s["power_w"]))
            result["energy_j_power_x_time"] = result["power_w_mean"] * window_s
        if s["util"]:
            result["gpu_util_pct_mean"] = statistics.fmean(s["util"])
        if s["sm_clock"]:
            result.update(sm_clock_mhz_min=min(s["sm_clock"]), sm_clock_mhz_max=max(s["sm_clock"]),
                          sm_clock_mhz_median=statistics.median(s["sm_clock"]))
        if s["temp"]:
            result["temperature_c_max"] = max(s["temp"])
        if s["reasons"]:
            mask = 0
            for value in s["reasons"]:
                mask |= value
            result["clock_event_reasons"] = decode_clock_event_reasons(mask)
            result["throttle_reasons"] = decode_clock_event_reasons(mask & THROTTLE_MASK)
            result["throttled"] = bool(mask & THROTTLE_MASK)
            result["power_capped"] = bool(mask & POWER_CAP_MASK)
        result["energy_j"] = self._energy(self._energy0, energy1, window_s)
        if result["energy_j"] is not None:
            result["energy_source"] = "nvml_total_energy_counter"
            self._cross_check(result["energy_j"], result["energy_j_power_x_time"], window_s)
        return result

    def _energy(self, e0, e1, window_s: float) -> float | None:
        if e0 is None or e1 is None:
            return None  # counter absent (pre-Volta, some vGPU/MIG setups): unsupported, not 0
        if window_s < MIN_ENERGY_WINDOW_S:
            self._warnings.append(f"energy_j not reported: window {window_s:.3f} s is shorter than "
                                  f"the energy counter's {MIN_ENERGY_WINDOW_S} s resolution")
            return None
        if e1 <= e0:
            self._warnings.append(f"energy_j not reported: NVML energy counter went from {e0} mJ "
                                  f"to {e1} mJ over {window_s:.2f} s")
            return None
        return (e1 - e0) / 1000.0

    def _cross_check(self, energy_j: float, estimate_j: float | None, window_s: float) -> None:
        if estimate_j is None or estimate_j <= 0 or window_s < ENERGY_CROSSCHECK_MIN_S:
            return
        ratio = energy_j / estimate_j
        if not 0.67 <= ratio <= 1.5:
            self._warnings.append(f"energy counter ({energy_j:.1f} J) and mean power x time "
                                  f"({estimate_j:.1f} J) disagree by {ratio:.2f}x")


def gpu_count() -> int:
    """GPUs NVML reports; 0 without NVML."""
    if _ensure_nvml() is not None:
        return 0
    try:
        return int(pynvml.nvmlDeviceGetCount())
    except Exception:
        return 0


def nvml_available() -> bool:
    """True when NVML initialised in this process and reports at least one device."""
    return gpu_count() > 0


def device_info(device_index: int = 0) -> dict:
    """Static facts about one GPU from NVML (never from torch: no CUDA context is created)."""
    handle, _ = _open(device_index)
    if handle is None:
        return {}
    nv = pynvml
    getters = {
        "name": lambda: text(nv.nvmlDeviceGetName(handle)),
        "uuid": lambda: text(nv.nvmlDeviceGetUUID(handle)),
        "memory_total_bytes": lambda: int(nv.nvmlDeviceGetMemoryInfo(handle).total),
        "power_limit_w": lambda: nv.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0,
        "sm_clock_max_mhz": lambda: int(nv.nvmlDeviceGetMaxClockInfo(handle, nv.NVML_CLOCK_SM)),
        "mem_clock_max_mhz": lambda: int(nv.nvmlDeviceGetMaxClockInfo(handle, nv.NVML_CLOCK_MEM)),
        "driver_version": lambda: text(nv.nvmlSystemGetDriverVersion()),
        "cuda_driver_version": lambda: "{}.{}".format(*divmod(nv.nvmlSystemGetCudaDriverVersion() // 10, 100)),
        "compute_capability": lambda: list(nv.nvmlDeviceGetCudaComputeCapability(handle)),
    }
    info = {}
    for key, get in getters.items():
        try:
            info[key] = get()
        except Exception:
            info[key] = None
    return info


def gpu_contention_warning(device_index: int = 0, idle_used_bytes: int | None = None) -> str | None:
    """A warning when something other than this process already uses the GPU, else None.

    Call it before this process creates a CUDA context (the runner does, before each worker):
    in a container NVML lists host pids, so our own context would look like another process.
    Two signs: compute/graphics processes with another pid; or device memory used beyond
    `idle_used_bytes` that no process of ours accounts for (a process NVML cannot show us).
    """
    handle, _ = _open(device_index)
    if handle is None:
        return None
    me, own, others = os.getpid(), 0, {}
    for query in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        try:
            procs = getattr(pynvml, query)(handle)
        except Exception:
            continue
        for proc in procs:
            used = bytes_or_none(proc.usedGpuMemory)
            if proc.pid == me:
                own = max(own, used or 0)
            else:
                others[proc.pid] = used
    if others:
        listed = ", ".join(f"pid {pid} ({'?' if used is None else f'{used / GIB:.1f} GiB'})"
                           for pid, used in sorted(others.items()))
        return (f"GPU {device_index} is in use by {len(others)} other process(es) before this run: "
                f"{listed}; timings and memory may be disturbed")
    try:
        info = pynvml.nvmlDeviceGetMemoryInfo(handle)
        used = int(info.used)
    except Exception:
        return None
    if idle_used_bytes is None:
        idle_used_bytes = max(GIB, int(info.total) // 50)
    if used - own > idle_used_bytes:
        return (f"GPU {device_index} has {used / GIB:.1f} GiB in use that no visible process of ours "
                f"accounts for (idle is under {idle_used_bytes / GIB:.1f} GiB): another process or "
                f"container may be using it")
    return None
