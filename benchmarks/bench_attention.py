"""Forward latency and peak memory of each attention strategy x ops, against dense.

    python benchmarks/bench_attention.py                      # fp32, B=1, H=8, D=64, S=4096, CPU
    python benchmarks/bench_attention.py --seq-lens 4096 16384 32768 --dtype bf16 --device cuda
    python benchmarks/bench_attention.py --json out.json --strategies dense local:window=64

Latency: all cases of one S are timed round-robin in this process (one call of each case per
round, so load drifting on a shared machine hits every case alike) after ``--warmup`` calls;
the median of at least ``--min-reps`` rounds and ``--min-time-s`` seconds is reported; CUDA is
synchronised after each call. ``strategy.attend`` runs under ``torch.no_grad()`` (``--backward``:
forward + backward). Peak memory: each case in a fresh Python process (no allocator cache from
another case), one call with the inputs already allocated: ``torch.cuda.max_memory_allocated``
growth on CUDA, growth of the peak resident set (``VmHWM``, reset first) on CPU; the call measured
is the second at its shape (the first compiles and builds what a shape needs once). Prints a
Markdown table with the speed-up and memory ratio of each case against dense with the same ops.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
DEFAULT_STRATEGIES = ["dense", "block:block_size=256", "local:window=128", "atrous:dilation=4"]


def parse_strategy(text: str) -> dict:
    """``"local:window=128"`` -> ``{"name": "local", "window": 128}``."""
    name, _, rest = text.partition(":")
    spec = {"name": name}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        spec[key] = None if value == "None" else int(value) if value.lstrip("-").isdigit() else value
    return spec


def build(case: dict):
    """``(strategy, step)`` for one case; ``step(q, k, v)`` runs it once (synchronised)."""
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    import torch

    from implementations import registry

    strategy = registry.create("attention", case["strategy"])
    sync = torch.cuda.synchronize if case["device"] == "cuda" else (lambda: None)
    backend = registry.create("ops", {"name": "fused", "sdpa_backend": case.get("sdpa_backend") or "auto"})
    torch.manual_seed(0)
    weights = strategy.make_weights(max(case["seq_len"], 64))  # linformer's; 64: peak_memory's warm-up
    if weights is not None:
        weights = weights.to(case["device"], getattr(torch, DTYPES[case["dtype"]]))

    def step(q, k, v):
        with torch.set_grad_enabled(case["backward"]), backend.kernel_context():
            out = strategy.attend(q, k, v, causal=case["causal"], ops=case["ops"], weights=weights)
            if case["backward"]:
                out.sum().backward()
        sync()

    return strategy, step


def make_inputs(case: dict, S: int):
    import torch

    dtype = getattr(torch, DTYPES[case["dtype"]])
    return [torch.randn(case["batch"], case["heads"], S, case["head_dim"], device=case["device"],
                        dtype=dtype, requires_grad=case["backward"]) for _ in range(3)]


def peak_memory(case: dict) -> int:
    """Peak bytes of one steady call, measured in this (fresh) process, inputs already allocated:
    a first call at the same shape (compiles, block masks, plans: set-up of the shape, not of
    every call) runs before the measured one. On CPU glibc's mmap threshold is pinned first
    (``harness.measure.budget``), so freed blocks leave the resident set and the second call's
    peak is its own."""
    import torch

    sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    from harness.measure.budget import pin_malloc_thresholds

    if case["device"] == "cpu":
        pin_malloc_thresholds()
    _, step = build(case)
    step(*make_inputs(case, 64))  # load kernels and thread pools outside the measurement
    q, k, v = make_inputs(case, case["seq_len"])
    step(q, k, v)  # the shape's set-up
    for t in (q, k, v):
        t.grad = None
    if case["device"] == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step(q, k, v)
        return torch.cuda.max_memory_allocated() - before
    before = peak_rss_bytes(reset=True)
    step(q, k, v)
    return peak_rss_bytes() - before


def peak_rss_bytes(reset: bool = False) -> int:
    """This process's peak resident set (Linux ``VmHWM``); ``reset`` first lowers the peak to the
    current size (``/proc/self/clear_refs``), since a child inherits its parent's peak on fork."""
    status = Path("/proc/self/status")
    if not status.exists():  # not Linux: ru_maxrss (cannot be reset; KiB on Linux, B on macOS)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if reset:
        Path("/proc/self/clear_refs").write_text("5")
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure_memory(case: dict) -> int | str:
    """:func:`peak_memory` in a fresh interpreter (no allocator cache from other cases)."""
    proc = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)], cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return proc.stderr.strip().splitlines()[-1] if proc.stderr else "crashed"
    return int(proc.stdout.strip().splitlines()[-1])


def time_cases(cases: list[dict], S: int, warmup: int, min_reps: int, min_time_s: float):
    """Median latency (ms) of each case, timed round-robin (one call of each case per round) so
    that load drifting on a shared machine hits every case alike."""
    steps = [build(case)[1] for case in cases]
    q, k, v = make_inputs(cases[0], S)
    for step in steps:
        for _ in range(warmup):
            step(q, k, v)
    samples = [[] for _ in cases]
    start = time.perf_counter()
    while len(samples[0]) < min_reps or time.perf_counter() - start < min_time_s:
        for step, times in zip(steps, samples):
            t0 = time.perf_counter()
            step(q, k, v)
            times.append((time.perf_counter() - t0) * 1e3)
    return [(statistics.median(t), len(t)) for t in samples]


def add_ratios(rows: list[dict]) -> None:
    """Speed-up and memory ratio against dense with the same ops and S (> 1 = better)."""
    dense = {(r["ops"], r["seq_len"]): r for r in rows
             if r["label"] == "dense" and "error" not in r}
    for r in rows:
        base = dense.get((r["ops"], r["seq_len"]))
        if base is None or "error" in r:
            continue
        r["speedup_vs_dense"] = base["latency_ms_p50"] / r["latency_ms_p50"]
        r["mem_ratio_vs_dense"] = base["mem_peak_bytes"] / max(r["mem_peak_bytes"], 1)
        r["ideal_speedup"] = base["allowed_pairs"] / r["allowed_pairs"]


def markdown(rows: list[dict]) -> str:
    lines = ["| S | strategy | ops | latency_ms_p50 | speed-up vs dense | ideal | peak MiB "
             "| memory ratio vs dense |", "|---|---|---|---:|---:|---:|---:|---:|"]
    fmt = lambda r, key, spec: format(r[key], spec) if key in r else "-"
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['seq_len']} | {r['label']} | {r['ops']} | error: {r['error']} "
                         "| | | | |")
            continue
        lines.append(f"| {r['seq_len']} | {r['label']} | {r['ops']} | {r['latency_ms_p50']:.1f} "
                     f"| {fmt(r, 'speedup_vs_dense', '.2f')}x | {fmt(r, 'ideal_speedup', '.1f')}x "
                     f"| {r['mem_peak_bytes'] / 2**20:.1f} "
                     f"| {fmt(r, 'mem_ratio_vs_dense', '.1f')}x |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq-lens", type=int, nargs="+", default=[4096])
    p.add_argument("--strategies", nargs="+", default=DEFAULT_STRATEGIES,
                   help="name[:param=value,...], e.g. local:window=128")
    p.add_argument("--ops", nargs="+", default=["eager", "fused"], choices=["eager", "fused"])
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--causal", action="store_true", help="causal attention (default: not)")
    p.add_argument("--backward", action="store_true", help="time forward + backward")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--min-reps", type=int, default=7, help="rounds (one call of each case)")
    p.add_argument("--min-time-s", type=float, default=5.0, help="least total time of the rounds")
    p.add_argument("--json", type=Path, help="also write the rows and settings to this file")
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = p.parse_args(argv)
    if args.case:
        print(peak_memory(json.loads(args.case)))
        return
    settings = {k: getattr(args, k) for k in ("dtype", "device", "batch", "heads", "head_dim",
                                               "causal", "backward")}
    rows = []
    for S in args.seq_lens:
        cases = [dict(settings, strategy=parse_strategy(text), ops=ops, seq_len=S)
                 for ops in args.ops for text in args.strategies]
        timed = time_cases(cases, S, args.warmup, args.min_reps, args.min_time_s)
        for case, (latency, n) in zip(cases, timed):
            strategy = build(case)[0]
            row = {"label": strategy.label, "ops": case["ops"], "seq_len": S,
                   "latency_ms_p50": latency, "n_samples": n,
                   "allowed_pairs": strategy.allowed_pairs(S, case["causal"])}
            peak = measure_memory(case)
            row.update({"mem_peak_bytes": peak} if isinstance(peak, int) else {"error": peak})
            rows.append(row)
            print(f"measured {row['label']} {case['ops']} S={S}", file=sys.stderr)
    add_ratios(rows)
    print(markdown(rows))
    if args.json:
        timing = {k: getattr(args, k) for k in ("warmup", "min_reps", "min_time_s")}
        args.json.write_text(json.dumps({"settings": {**settings, **timing}, "rows": rows},
                                        indent=2))


if __name__ == "__main__":
    main()
