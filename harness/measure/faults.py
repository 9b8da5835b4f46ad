"""How a failed point is classified, and fault injection for the tests.

``classify(exc)`` -> "oom" | "not_supported" | "error" for an exception a point raised.
``TBENCH_FAULT="<point id or *>=<fault>[,...]"`` makes the measured step of a matching point
``raise``, allocate far beyond memory (``oom``), ``segfault``, ``hang`` (ignoring SIGTERM) or
``stall`` (sleeping; SIGTERM ends it as it would a real step).
Unset, it costs one dict lookup and changes nothing.
"""
from __future__ import annotations

import os
import signal
import time
from typing import Any, Callable

OOM_MARKERS = (
    "out of memory",
    "can't allocate memory",  # DefaultCPUAllocator
    "cublas_status_alloc_failed",
    "std::bad_alloc",
)
NOT_IMPLEMENTED_MARKER = "not implemented for '"  # a kernel missing for a dtype, e.g. 'Half'
NO_SDPA_KERNEL_MARKERS = ("No viable backend for scaled_dot_product_attention",  # one backend forced
                         "No available kernel")  # (both wordings of torch 2.13)
FLEX_NO_BACKWARD = "FlexAttention does not support backward"  # torch's refusal on CPU
FAULTS = ("raise", "oom", "segfault", "hang", "stall")


def classify(exc: BaseException) -> str:
    """Status of a point that raised ``exc``: oom, not_supported or error."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return "oom"
    text = str(exc).lower()
    if any(marker in text for marker in OOM_MARKERS):
        return "oom"
    if type(exc).__name__ == "KernelNotSupported" or (  # an attention kernel's own refusal
            isinstance(exc, NotImplementedError) and FLEX_NO_BACKWARD in str(exc)):
        return "not_supported"
    if isinstance(exc, RuntimeError) and (NOT_IMPLEMENTED_MARKER in str(exc)
                                          or any(m in str(exc) for m in NO_SDPA_KERNEL_MARKERS)):
        return "not_supported"
    return "error"


def injected_fault(point_id: str) -> str | None:
    """The fault ``TBENCH_FAULT`` assigns to ``point_id`` (or to every point with ``*``)."""
    spec = os.environ.get("TBENCH_FAULT", "")
    for item in filter(None, spec.split(",")):
        key, _, fault = item.partition("=")
        if key.strip() in (point_id, "*"):
            if fault not in FAULTS:
                raise ValueError(f"TBENCH_FAULT: fault {fault!r} unknown; allowed: {FAULTS}")
            return fault
    return None


def _fire(fault: str) -> None:
    if fault == "raise":
        raise RuntimeError("injected fault: the step raised")
    if fault == "oom":
        import torch

        torch.empty(10**15, dtype=torch.uint8)  # 1 PB: the allocator refuses at once
    if fault == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if fault in ("hang", "stall"):
        if fault == "hang":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only the runner's SIGKILL can end it
        while True:
            time.sleep(3600)


def with_fault(step: Callable[[], Any], fault: str | None) -> Callable[[], Any]:
    if fault is None:
        return step

    def faulty_step():
        _fire(fault)
        return step()

    return faulty_step
