"""Model-state bytes held by one rank of a DeepSpeed engine, counted from the real tensors.

Model states (ZeRO paper, sec. 3.1) are parameters, gradients and optimizer states (fp32 master
weights included). Where each lives in DeepSpeed 0.19, and so what is counted here:

    params  stage 0: the module's ``p.data``; stage 1/2: ``optimizer.bit16_groups_flat`` (the
            whole flat model, alignment padding included; module params are views into it);
            stage 3: ``p.ds_tensor`` (this rank's partition, views into
            ``lp_param_buffer``) plus any ``p.data`` still whole (persistent or gathered params);
            bf16 stage 0 (BF16_Optimizer): ``bf16_groups_flat``.
    grads   stage 0/1: ``p.grad`` of every parameter: DeepSpeed stage 1 keeps the full gradients
            until the accumulation boundary, so they are read when the engine starts its
            reduction; stage 1/2 after the reduction: ``optimizer.averaged_gradients`` (this
            rank's partition) and ``grads_in_partition``; stage 3: ``grad_partitions_flat_buffer``;
            the ``.grad`` of the fp32 master partitions; BF16_Optimizer ``fp32_groups_gradients_flat``.
    optim   fp32 master partitions (``single_partition_of_fp32_groups``, stage 3
            ``fp32_partitioned_groups_flat`` unless it aliases the params, BF16_Optimizer
            ``fp32_groups_flat_partition``, bf16/fp16 stage 0 FP16_Optimizer ``fp32_groups_flat`` or
            FP16_UnfusedOptimizer ``fp32_groups``) and the torch optimizer's ``state`` (m, v, step).

Bytes are counted as the union of the memory ranges the tensors cover, so views, slices and
aliases (e.g. stage 3 fp32 where the master IS the parameter partition) count once. DeepSpeed's
communication buckets (``ipg_buckets``, sized by ``reduce_bucket_size``, not by the model) are
temporary buffers, not model states: gradients lying inside them are not counted.
Offloaded states are counted too (they are held by the rank, in host memory).
"""
from __future__ import annotations

import resource
from typing import Callable, Iterable, Iterator

import torch

PARAM_SOURCES = ("bit16_groups_flat", "bf16_groups_flat")
GRAD_SOURCES = ("averaged_gradients", "grads_in_partition", "grad_partitions_flat_buffer",
                "fp32_groups_gradients_flat")
MASTER_SOURCES = ("single_partition_of_fp32_groups", "fp32_partitioned_groups_flat",
                  "fp32_groups_flat_partition", "fp32_groups_flat", "fp32_groups")


def _tensors(obj) -> Iterator[torch.Tensor]:
    """Every tensor inside ``obj`` (nested lists, tuples, dicts)."""
    if isinstance(obj, torch.Tensor):
        if obj.numel() and obj.device.type != "meta":
            yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value)


class _Ledger:
    """Memory ranges already counted; ``add`` returns the bytes of ``tensors`` not yet covered."""

    def __init__(self):
        self.ranges: list[tuple[int, int]] = []

    def covered(self, lo: int, hi: int) -> int:
        return sum(max(0, min(hi, b) - max(lo, a)) for a, b in self.ranges)

    def add(self, tensors: Iterable[torch.Tensor]) -> int:
        new = 0
        for t in tensors:
            lo = t.data_ptr()
            hi = lo + t.numel() * t.element_size()
            gained = (hi - lo) - self.covered(lo, hi)
            if gained > 0:
                new += gained
                self.ranges.append((lo, hi))
        return new


def _ipg_buffers(opt) -> list[torch.Tensor]:
    buckets = getattr(opt, "ipg_buckets", None) or {}
    return [t for b in buckets.values() for t in _tensors(getattr(b, "buffer", None))]


def _attrs(opt, names) -> list[torch.Tensor]:
    return [t for name in names for t in _tensors(getattr(opt, name, None))]


def _module_params(engine) -> list[torch.nn.Parameter]:
    return list(engine.module.parameters())


def grad_bytes(engine) -> int:
    """Gradient bytes held now (outside DeepSpeed's communication buckets)."""
    opt = engine.optimizer
    ledger = _Ledger()
    ledger.add(_ipg_buffers(opt))
    tensors = [p.grad for p in _module_params(engine) if p.grad is not None]
    tensors += _attrs(opt, GRAD_SOURCES)
    tensors += [m.grad for m in _attrs(opt, MASTER_SOURCES) if m.grad is not None]
    return ledger.add(t for t in tensors if t.numel())


def model_state_bytes(engine, grads: int | None = None) -> dict[str, int]:
    """param/grad/optim bytes held by this rank now; ``grads`` overrides the live gradient count
    (``measure_step`` passes the peak seen during a step, as gradients are freed by ``step``)."""
    opt = engine.optimizer
    params = _module_params(engine)
    ledger = _Ledger()
    param_tensors = _attrs(opt, PARAM_SOURCES)
    param_tensors += [p.ds_tensor for p in params if getattr(p, "ds_tensor", None) is not None]
    param_tensors += [p.data for p in params if p.data.numel()]
    param_b = ledger.add(param_tensors)
    inner = getattr(opt, "optimizer", opt)
    optim_b = ledger.add(_attrs(opt, MASTER_SOURCES) + list(_tensors(dict(inner.state))))
    grad_b = grad_bytes(engine) if grads is None else grads
    return {"param_bytes": param_b, "grad_bytes": grad_b, "optim_bytes": optim_b,
            "model_state_bytes": param_b + grad_b + optim_b}


def measure_step(engine, step: Callable[[], object]) -> tuple[object, dict[str, int]]:
    """Run ``step()`` (one full training step) and return its result and the model-state bytes
    after it, gradients at their peak: read when the engine starts reducing them, after the
    backward, and after the step (DeepSpeed frees or moves them within ``engine.backward``)."""
    seen = []
    original = engine.allreduce_gradients

    def reduce_and_watch(*args, **kwargs):
        seen.append(grad_bytes(engine))
        out = original(*args, **kwargs)
        seen.append(grad_bytes(engine))
        return out

    engine.allreduce_gradients = reduce_and_watch
    try:
        result = step()
    finally:
        del engine.allreduce_gradients  # back to the class method
    seen.append(grad_bytes(engine))
    return result, model_state_bytes(engine, grads=max(seen))


def peak_memory_bytes(device: str) -> int:
    """This process's peak: CUDA allocator peak on GPU, peak resident set size on CPU."""
    if device == "cuda":
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def aggregate_ranks(rows: list[dict]) -> dict[str, float | None]:
    """Max over ranks and imbalance (max / mean - 1) of the per-rank model-state bytes."""
    values = [r["model_state_bytes"] for r in rows if r.get("model_state_bytes") is not None]
    peaks = [r["mem_peak_bytes"] for r in rows if r.get("mem_peak_bytes") is not None]
    if not values:
        return {"model_state_bytes_max": None, "model_state_imbalance": None,
                "mem_peak_bytes_max": max(peaks) if peaks else None}
    mean = sum(values) / len(values)
    return {"model_state_bytes_max": max(values),
            "model_state_imbalance": max(values) / mean - 1 if mean else 0.0,
            "mem_peak_bytes_max": max(peaks) if peaks else None}


def paper_bytes(stage: int, psi: int, n: int, mixed: bool, fp32_master: bool = False) -> float:
    """Model-state bytes per rank from the ZeRO paper (Adam; psi params, n ranks).

    Mixed precision: 2 B params + 2 B grads + 12 B fp32 master, m, v (K = 12);
    fp32: 4 + 4 + 8 (m, v; no separate master). ``fp32_master=True`` gives DeepSpeed's fp32
    layout for stages 1-3, whose ZeRO optimizers keep an fp32 master partition even when the
    parameters are already fp32 (a ``clone`` in stage_1_and_2.py), so K = 12 there too."""
    p, g, k = (2, 2, 12) if mixed else (4, 4, 8)
    if not mixed and fp32_master and stage >= 1:
        k = 12
    partitioned = {0: 0, 1: k, 2: k + g, 3: k + g + p}[stage]
    return psi * ((p + g + k - partitioned) + partitioned / n)


def _local(t: torch.Tensor) -> torch.Tensor:
    """The shard this rank holds of a DTensor (FSDP2), else the tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t


def fsdp_grad_bytes(model) -> int:
    """Bytes of this rank's gradient shards (FSDP2: ``p.grad`` is a DTensor over the shard)."""
    return _Ledger().add(_local(p.grad) for p in model.parameters() if p.grad is not None)


def fsdp_state_bytes(model, optimizer, grads: int) -> dict[str, int]:
    """param/grad/optim bytes this rank holds of an FSDP2-sharded model: the local shards of the
    parameters and of the optimizer's states (m, v and step), counted once each; ``grads`` as
    read after the backward (``fsdp_grad_bytes``; the step frees them)."""
    ledger = _Ledger()
    param_b = ledger.add(_local(p) for p in model.parameters())
    optim_b = ledger.add(_local(t) for t in _tensors(dict(optimizer.state)))
    return {"param_bytes": param_b, "grad_bytes": grads, "optim_bytes": optim_b,
            "model_state_bytes": param_b + grads + optim_b}


def fsdp_paper_bytes(shapes: list[tuple[int, ...]], n: int, rank: int) -> int:
    """Model-state bytes rank ``rank`` of ``n`` holds under FSDP2 in fp32 with Adam(W): for each
    parameter of ``shapes``, its ``torch.chunk`` of dim 0 for this rank, times 4 B for the
    parameter, its gradient, m and v (16 B per element), plus Adam's 4-byte step per tensor."""
    total = 0
    for shape in shapes:
        rows = shape[0]
        size = -(-rows // n)  # torch.chunk: chunks of ceil(rows / n), the last ones shorter
        mine = max(0, min(size, rows - rank * size))
        rest = 1
        for d in shape[1:]:
            rest *= d
        total += 16 * mine * rest + 4
    return total

