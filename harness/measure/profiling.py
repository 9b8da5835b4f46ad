"""The profiled pass of a point: where its step time and memory go, after the timed samples.

Input: the point's ``step`` (already warm: it runs after ``harness.measure.timing`` has taken
every sample, so no timed sample ever runs with a profiler or a range attached), its device and
the worker's folder. ``profile_pass(step, device, folder) -> (metrics, warnings)``:

* runs one step with the named ranges on (``implementations.regions``), then ``PROFILE_STEPS``
  steps under ``torch.profiler`` (CPU activity; CUDA too on a GPU; ``profile_memory``), each
  inside a ``tb/step`` range with the device synchronised before it closes;
* writes the Chrome/Perfetto trace ``trace.json.gz`` (``trace.rank<N>.json.gz`` on rank N > 0)
  into the folder, dropped with a warning above ``TRACE_MAX_BYTES`` compressed; on CUDA also
  ``memory_snapshot.pickle`` (``torch.cuda.memory._record_memory_history``, at most
  ``MEMORY_ENTRIES`` allocation events: the file https://pytorch.org/memory_viz reads);
* returns the breakdown as ``profile_*`` metrics (:func:`breakdown`).

Time basis: CPU time of the step ranges on CPU; on CUDA, kernel time (each kernel is charged to
the operator that launched it, from any thread, the autograd engine's included). Each unit of
time is charged to the innermost ``tb/<kind>`` range around its operator (``REGIONS``: a
collective by name to ``communication``; outside any range: autograd's backward -> ``backward``,
``Optimizer.*`` -> ``optimizer``, the rest -> ``other``) and to an operator category by name
(``CATEGORIES``; ``elementwise`` includes reductions, ``other`` includes Python time between
operators). Region shares and category shares each sum to 1 over the profiled steps.

Which worker profiles: one with ``measure.profile`` on that is its point's last round (the
runner names a round's folder ``round<N>``; a point of one round has none), so a record holds
one breakdown, never a median of several (``harness.run.runner.merge_metrics``).
"""
from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

import torch
from torch.autograd import DeviceType

from harness.measure import timing
from implementations import regions

PROFILE_STEPS = 3
TRACE_MAX_BYTES = 64 * 2**20  # compressed
MEMORY_ENTRIES = 20_000  # allocation events kept by the CUDA memory history (~KB each)
TOP_OPS, REGION_OPS, TOP_KERNELS = 10, 5, 10
REGIONS = ("embedding", "attention", "ffn", "norm", "lm_head", "loss", "forward_other",
           "backward", "optimizer", "communication", "other")
CATEGORIES = ("gemm", "attention", "softmax", "norm", "elementwise", "optimizer",
              "communication", "memcpy", "other")
STEP_RANGE = regions.PREFIX + "step"
RUN_MARKERS = ("suite.resolved.json", "run.json")  # a run folder holds them
COMM = re.compile(r"nccl|gloo|c10d::|record_param_comms|all_?reduce|all_?gather|reduce_scatter"
                  r"|broadcast|all_to_all", re.IGNORECASE)
RULES = (  # (category, pattern on the operator name), first match wins
    ("attention", re.compile(r"scaled_dot_product|flash_attention|efficient_attention|"
                             r"cudnn_attention|fmha")),
    ("softmax", re.compile(r"softmax")),
    ("norm", re.compile(r"layer_norm|rms_norm|batch_norm|group_norm")),
    ("gemm", re.compile(r"^aten::(mm|bmm|addmm|baddbmm|addbmm|matmul|linear|mv|addmv|dot|"
                        r"_addmm_activation)$|gemm")),
    ("optimizer", re.compile(r"adam|^aten::_foreach_|^Optimizer\.")),
    ("memcpy", re.compile(r"^aten::(copy_|_to_copy|to|contiguous|clone|cat|stack|index_select|"
                          r"embedding|gather|index)$|memcpy|memset", re.IGNORECASE)),
)
ELEMENTWISE = frozenset((  # aten operator names, less underscores and a "_backward" suffix
    "add add_ sub rsub mul mul_ div div_ neg relu gelu silu tanh sigmoid exp log sqrt rsqrt "
    "pow reciprocal square erf clamp abs sin cos fill fill_ zero zero_ masked_fill masked_fill_ "
    "where threshold dropout native_dropout maximum minimum max min amax eq ne lt gt le ge "
    "bitwise_not bitwise_and bitwise_or logical_not logical_and logical_or mean sum var "
    "var_mean std any all tril triu ones zeros full arange cumsum lerp addcmul addcdiv").split())


def wanted(point, folder: str | os.PathLike | None = None) -> bool:
    """Whether this worker profiles: ``measure.profile`` is on and ``folder`` (the worker's,
    default the current one) is the point's last round."""
    if not getattr(point.measure, "profile", False):
        return False
    found = re.fullmatch(r"round(\d+)", Path(folder or os.getcwd()).name)
    return found is None or int(found.group(1)) == point.measure.rounds


def category(name: str, region: str) -> str:
    """The operator category of ``name`` run in ``region`` (every operator of the optimizer
    step counts as ``optimizer``, however elementwise it is)."""
    if COMM.search(name):
        return "communication"
    if region == "optimizer":
        return "optimizer"
    if name.startswith(regions.PREFIX):
        return "other"  # Python between the operators of a range
    for cat, pattern in RULES:
        if pattern.search(name):
            return cat
    base = name.removeprefix("aten::").strip("_").removesuffix("_backward")
    return "elementwise" if name.startswith("aten::") and base in ELEMENTWISE else "other"


def _kind(evt) -> tuple[str | None, bool, object]:
    """(innermost tb/ range kind, under a tb/step range, the autograd node above it or None)."""
    kind, stepped, node, fallback = None, False, None, None
    e = evt
    while e is not None:
        name = e.name
        if name == STEP_RANGE:
            stepped = True
        elif kind is None and name.startswith(regions.PREFIX):
            kind = name[len(regions.PREFIX):].split("/")[0]
        if node is None and e.scope == 1:  # RecordScope.BACKWARD_FUNCTION: autograd's backward
            node = e
        if fallback is None and name.startswith("Optimizer."):
            fallback = "optimizer"
        e = e.cpu_parent
    if kind is None:
        kind = "backward" if node is not None else fallback
    return kind, stepped, node


def breakdown(events, averages, device: str, n_steps: int) -> dict:
    """The ``profile_*`` metrics of ``events`` (``prof.events()``) and ``averages``
    (``prof.key_averages()``) over ``n_steps`` profiled steps (see the module docstring)."""
    on_gpu = device.startswith("cuda")
    cpu = [e for e in events if e.device_type == DeviceType.CPU and not e.is_async]
    steps = [e for e in cpu if e.name == STEP_RANGE]
    step_us = sum(e.cpu_time_total for e in steps) / max(1, len(steps))
    region_t, cat_t, mem = defaultdict(float), defaultdict(float), defaultdict(float)
    ops, fwd, bwd = defaultdict(float), {}, []
    for evt in cpu:
        kind, stepped, node = _kind(evt)
        region = "communication" if COMM.search(evt.name) else (
            kind if kind in REGIONS and kind != "communication" else "other")
        if node is None and region != "backward" and evt.sequence_nr >= 0:
            fwd.setdefault((evt.sequence_nr, evt.thread), region)  # a forward op's autograd node
        if on_gpu:
            t = sum(k.duration for k in evt.kernels)
            bytes_ = evt.self_device_memory_usage
        elif stepped:
            t, bytes_ = evt.self_cpu_time_total, evt.self_cpu_memory_usage
        else:
            continue  # another thread, overlapping the step's own CPU time
        region_t[region] += t
        cat_t[category(evt.name, region)] += t
        mem[region] += bytes_
        label = "(python)" if evt.name.startswith(regions.PREFIX) else evt.name
        ops[(region, label)] += t
        if region == "backward":  # charged to the forward region its autograd node comes from
            bwd.append(((node.sequence_nr, node.fwd_thread) if node is not None else None, t))
    total = sum(region_t.values()) or 1.0
    out = {"profile_steps": n_steps, "profile_time_basis": "device" if on_gpu else "cpu",
           "profile_step_ms": step_us / 1e3,
           "profile_device_ms": sum(region_t.values()) / 1e3 / n_steps if on_gpu else None}
    out.update({f"profile_share_{r}": region_t[r] / total for r in REGIONS})
    out.update({f"profile_category_share_{c}": cat_t[c] / total for c in CATEGORIES})
    out["profile_region_ops"] = _region_ops(ops, total)
    out["profile_backward_shares"] = _backward_shares(bwd, fwd, total)
    out["profile_region_net_bytes"] = {r: round(mem[r] / n_steps) for r in REGIONS if mem[r]}
    out["profile_ranges"] = _ranges(cpu, on_gpu, total)
    out["profile_top_ops"] = _top_ops(averages, on_gpu, total, n_steps)
    out["profile_kernels"] = _kernels(cpu, total, n_steps) if on_gpu else None
    return out


def _region_ops(ops: dict, total: float) -> dict[str, list[dict]]:
    """Per region, its ``REGION_OPS`` operators with the most time: [{name, share}]."""
    out: dict[str, list[dict]] = {}
    for (region, name), t in sorted(ops.items(), key=lambda kv: -kv[1]):
        listed = out.setdefault(region, [])
        if len(listed) < REGION_OPS and t > 0:
            listed.append({"name": name, "share": t / total})
    return {r: out[r] for r in REGIONS if out.get(r)}


def _backward_shares(bwd: list, fwd: dict, total: float) -> dict[str, float]:
    """The backward's time by the forward region whose operator its autograd node comes from
    (``other``: the engine's own time, a node no forward operator of the profile made); sums to
    ``profile_share_backward``."""
    out: dict[str, float] = defaultdict(float)
    for key, t in bwd:
        out[fwd.get(key, "other")] += t / total
    return {r: out[r] for r in REGIONS if out.get(r)}


def _ranges(cpu, on_gpu: bool, total: float) -> dict[str, float]:
    """Inclusive share of each named range (``attention/decoder.0.self_attn``,
    ``attention/softmax``), summed over its occurrences."""
    out: dict[str, float] = defaultdict(float)
    for e in cpu:
        if e.name.startswith(regions.PREFIX) and e.name != STEP_RANGE:
            t = e.device_time_total if on_gpu else e.cpu_time_total
            out[e.name[len(regions.PREFIX):]] += t / total
    return dict(sorted(out.items()))


def _top_ops(averages, on_gpu: bool, total: float, n_steps: int) -> list[dict]:
    """The operators with the most self time (``key_averages``): name, ms per step, share,
    calls per step; the tb/ ranges (Python between operators) are left out."""
    key = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    rows = [a for a in averages if not a.key.startswith(regions.PREFIX) and getattr(a, key) > 0]
    rows.sort(key=lambda a: (-getattr(a, key), a.key))
    return [{"name": a.key, "self_ms": getattr(a, key) / 1e3 / n_steps,
             "share": getattr(a, key) / total, "calls": a.count / n_steps}
            for a in rows[:TOP_OPS]]


def _kernels(cpu, total: float, n_steps: int) -> list[dict]:
    """The GPU kernels with the most time (which SDPA backend really ran shows here)."""
    time, calls = defaultdict(float), defaultdict(int)
    for e in cpu:
        for k in e.kernels:
            time[k.name] += k.duration
            calls[k.name] += 1
    top = sorted(time, key=lambda n: (-time[n], n))[:TOP_KERNELS]
    return [{"name": n, "ms": time[n] / 1e3 / n_steps, "share": time[n] / total,
             "calls": calls[n] / n_steps} for n in top]


def run_folder(folder: Path) -> Path:
    """The run folder above a worker's folder (the first holding ``RUN_MARKERS``), else the
    worker's folder itself: reports link files relative to it."""
    for up in (folder, *folder.parents):
        if any((up / m).exists() for m in RUN_MARKERS):
            return up
    return folder


def _file(folder: Path, stem: str, suffix: str) -> Path:
    rank = int(os.environ.get("RANK", "0"))
    return folder / (f"{stem}{suffix}" if rank == 0 else f"{stem}.rank{rank}{suffix}")


def profile_pass(step, device: str, folder: str | os.PathLike | None = None) -> tuple[dict, list[str]]:
    """Profile ``PROFILE_STEPS`` steps (see the module docstring): (metrics, warnings)."""
    folder = Path(folder or os.getcwd()).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    on_gpu = device.startswith("cuda")
    activities = [torch.profiler.ProfilerActivity.CPU]
    if on_gpu:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
        torch.cuda.memory._record_memory_history(max_entries=MEMORY_ENTRIES)
    try:
        with regions.ranges_on():
            step()  # the ranges' own first call, outside the profile
            timing._sync(device)
            with torch.profiler.profile(activities=activities, profile_memory=True) as prof:
                for _ in range(PROFILE_STEPS):
                    with regions.region("step"):
                        step()
                        timing._sync(device)
        snapshot = None
        if on_gpu:
            snapshot = _file(folder, "memory_snapshot", ".pickle")
            torch.cuda.memory._dump_snapshot(str(snapshot))
    finally:
        if on_gpu:
            torch.cuda.memory._record_memory_history(enabled=None)
    metrics = breakdown(prof.events(), prof.key_averages(), device, PROFILE_STEPS)
    return _with_files(metrics, prof, folder, snapshot)


def _with_files(metrics: dict, prof, folder: Path, snapshot: Path | None) -> tuple[dict, list[str]]:
    """Export the trace; record where it and the memory snapshot are, relative to the run."""
    warnings = []
    trace = _file(folder, "trace", ".json.gz")
    prof.export_chrome_trace(str(trace))
    size = trace.stat().st_size
    if size > TRACE_MAX_BYTES:
        trace.unlink()
        warnings.append(f"profile trace of {size / 2**20:.0f} MiB compressed dropped (limit "
                        f"{TRACE_MAX_BYTES // 2**20} MiB); the breakdown is kept")
        trace = None
    base = run_folder(folder)
    metrics["profile_trace"] = trace.relative_to(base).as_posix() if trace else None
    metrics["profile_trace_bytes"] = size if trace else None
    metrics["profile_memory_snapshot"] = snapshot.relative_to(base).as_posix() if snapshot else None
    return metrics, warnings
