"""Named profiler ranges for the parts of a step a user reasons about, free when not profiling.

    with region("attention", "decoder.0.self_attn"):   # -> range "tb/attention/decoder.0.self_attn"
        ...

A range is a ``RecordFunction`` named ``tb/<kind>/<where>`` (what ``record_function`` opens,
through the C++ entry point ``torch.compile``'s code uses): it shows in a torch.profiler trace
(Perfetto, chrome://tracing) and, under ``torch.autograd.profiler.emit_nvtx``, as an NVTX range
in Nsight Systems. ``kind`` is one of :data:`KINDS`; the profiler's breakdown
(``harness.measure.profiling``) charges each operator to the kind of the innermost ``tb/``
range around it. ``where`` says which one (a module path, or a part inside attention:
``proj``, ``scores``, ``mask``, ``softmax``, ``value``, ``sdpa``, ``out_proj``).

Cost when off (the default, and always while timed samples are taken): two calls, one flag
check and a shared ``nullcontext``, a few hundred ns per range; on, about as much again.
``benchmarks/bench_regions.py`` measures both against the code without any range. Under
``torch.compile`` no range is entered (``is_compiling()`` is read first, so Dynamo neither
guards on the flag nor recompiles when profiling turns it on); a compiled forward shows as one
``forward_other`` block inside the step.
"""
from __future__ import annotations

import contextlib

import torch

PREFIX = "tb/"
KINDS = ("embedding", "attention", "ffn", "norm", "lm_head", "loss", "forward_other",
         "backward", "optimizer", "step")
_NULL = contextlib.nullcontext()
_on = False
_compiling = torch.compiler.is_compiling  # bound once: half the cost of an off range
# the C++ range inductor's generated code opens (~0.5 us); record_function goes through the
# dispatcher (~15 us a range on a 2-core CPU), which would dominate a small profiled step
_RANGE = getattr(torch._C._profiler, "_RecordFunctionFast", None) or torch.profiler.record_function


def region(kind: str, where: str = ""):
    """A profiler range ``tb/<kind>[/<where>]`` while :func:`enabled`; else a shared no-op."""
    if _compiling() or not _on:
        return _NULL
    return _RANGE(f"{PREFIX}{kind}/{where}" if where else PREFIX + kind)


def enabled() -> bool:
    return _on


@contextlib.contextmanager
def ranges_on():
    """Turn the ranges on inside the block (the profiled pass), off again after it."""
    global _on
    before, _on = _on, True
    try:
        yield
    finally:
        _on = before


def name_modules(model: torch.nn.Module) -> None:
    """Give each module that opens a range its path in ``model`` (``decoder.0.self_attn``), the
    ``where`` of its range; a module never named keeps its class default ("")."""
    for path, module in model.named_modules():
        if hasattr(module, "region_name"):
            module.region_name = path
