"""Peak memory of one point, measured inside the worker process that runs it.

Input: the device of the point ("cpu" or "cuda[:i]"). ``MemoryTracker.start()`` is called
before the workload is built, ``stop()`` after the last sample.
Output of ``stop()`` (bytes; None where the quantity does not exist on this device):
  * ``mem_peak_allocated_bytes`` / ``mem_peak_reserved_bytes``: ``torch.cuda`` allocator
    high-water marks, reset at ``start()`` so they belong to this point only (CUDA only);
  * ``mem_peak_rss_bytes``: peak resident set size of this process between ``start()`` and
    ``stop()``. psutil has no peak, so on Linux the process resets its own high-water mark (``/proc/self/clear_refs``
    with "5", kernel >= 4.0) and read it back as ``VmHWM``; where that is refused the
    process-lifetime peak ``ru_maxrss`` is used, which is still per point because each point
    runs in a fresh worker;
  * ``mem_rss_baseline_bytes``: resident set size at ``start()`` (interpreter + torch import,
    ~250 MB, measured before the model is built);
  * ``mem_peak_rss_above_baseline_bytes``: ``mem_peak_rss_bytes - mem_rss_baseline_bytes``,
    what the point itself added on the CPU (model, optimizer state, activations, batches).
"""
from __future__ import annotations

import resource
import sys

import psutil


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss_bytes() -> int:
    return psutil.Process().memory_info().rss


def _reset_rss_peak() -> bool:
    """Reset this process's VmHWM to its current RSS; False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _ru_maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


class MemoryTracker:
    """Peak allocator and resident memory between ``start()`` and ``stop()``."""

    def __init__(self, device: str):
        self.device = device
        self.is_cuda = device.startswith("cuda")
        self._hwm_reset = False
        self._baseline: int | None = None

    def start(self) -> None:
        if self.is_cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        self._baseline = current_rss_bytes()
        self._hwm_reset = _reset_rss_peak()

    def peak_rss_bytes(self) -> int | None:
        hwm = _status_kib("VmHWM") if self._hwm_reset else None
        return hwm * 1024 if hwm is not None else _ru_maxrss_bytes()

    def stop(self) -> dict[str, int | None]:
        out: dict[str, int | None] = {
            "mem_peak_allocated_bytes": None,
            "mem_peak_reserved_bytes": None,
        }
        if self.is_cuda:
            import torch

            torch.cuda.synchronize()
            out["mem_peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
            out["mem_peak_reserved_bytes"] = int(torch.cuda.max_memory_reserved())
        peak = out["mem_peak_rss_bytes"] = self.peak_rss_bytes()
        out["mem_rss_baseline_bytes"] = self._baseline
        out["mem_peak_rss_above_baseline_bytes"] = (
            None if peak is None or self._baseline is None else max(0, peak - self._baseline))
        return out
