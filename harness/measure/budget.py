"""A point's memory budget (``measure.memory_budget_bytes``), enforced on the worker process.

Input: a resolved ``Point``; called by the worker before anything of the point is built.
Effect, when the budget is set (nothing otherwise):
  * CPU: ``RLIMIT_DATA`` of this process = its data size now (``VmData``: the interpreter and
    ``import torch``, ~220 MB of private writable mappings) + the budget. The kernel then refuses
    any further ``brk``/``mmap`` of private writable memory beyond it -- glibc's mmap'd large
    blocks included (Linux >= 4.7 counts them) -- so an allocation past the budget fails in
    the allocator (torch: ``RuntimeError ... can't allocate memory``, numpy: ``MemoryError``),
    which the worker records as ``oom``. glibc's mmap threshold is pinned first
    (``pin_malloc_thresholds``), so that what the limit counts is what the point holds, not the
    allocator's history: measured on the frontier test's probe, the need of 4 sequences is the
    same to 1 MiB in every run (12 probes at 279-287 MiB) where unpinned it moved by 13 MiB
    between runs. The price: every large tensor is a fresh mmap, so a budgeted CPU step pays its
    page faults (x1.7 step time on that probe); compare budgeted timings with each other, not
    with unbudgeted runs. ``RLIMIT_DATA`` rather than ``RLIMIT_AS``: address
    space also counts file-backed code and reserved-but-inaccessible ranges (``import torch``
    alone maps ~600 MB), which are not memory a point uses. The budget is thus what the point may
    add above the runtime, like a GPU budget, which excludes the CUDA context. Per process: each
    rank of a multi-rank point gets the whole budget.
  * CUDA: ``torch.cuda.set_per_process_memory_fraction(budget / device memory)`` on this rank's
    device (``LOCAL_RANK``): the caching allocator raises ``OutOfMemoryError`` past it.
Output: a dict saying what was set (``budget_applied``), or None.
"""
from __future__ import annotations

import os
import resource


def vm_data_bytes() -> int:
    """This process's data size (``VmData`` of /proc/self/status), bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    raise OSError("VmData not found in /proc/self/status")


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, <malloc.h>
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value


def pin_malloc_thresholds() -> bool:
    """Fix glibc's mmap and trim thresholds so a freed large block goes back to the kernel.

    Without this, glibc raises its mmap threshold each time a large mmap'd block is freed (up to
    32 MiB), after which tensors come from the brk heap, which fragments and is not returned: the
    data size then grows with the allocation history, not with what the point holds, and the
    same probe runs or fails by chance near the budget. Pinned, each large block is an mmap of
    its own, unmapped on free. False where the C library is not glibc (nothing pinned)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, MMAP_THRESHOLD))


def apply_budget(point) -> dict | None:
    budget = point.measure.memory_budget_bytes
    if budget is None:
        return None
    if point.device == "cuda":
        import torch

        index = int(os.environ.get("LOCAL_RANK", "0"))
        total = torch.cuda.get_device_properties(index).total_memory
        fraction = min(1.0, budget / total)
        torch.cuda.set_per_process_memory_fraction(fraction, index)
        return {"kind": "cuda_memory_fraction", "fraction": fraction, "budget_bytes": budget}
    pinned = pin_malloc_thresholds()
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = vm_data_bytes() + budget
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    return {"kind": "rlimit_data", "limit_bytes": limit, "budget_bytes": budget,
            "malloc_thresholds_pinned": pinned}
