"""Which kernel computes each attention pattern fastest, still correctly, and how it scales.

    python benchmarks/bench_kernels.py                     # forward, fp32, B=1, H=8, D=64, CPU
    python benchmarks/bench_kernels.py --backward          # forward + backward
    python benchmarks/bench_kernels.py --seq-lens 4096 16384 32768 --dtype bf16 --device cuda --causal --heads 16 --head-dim 128

Every pattern (``--patterns``) x kernel (``--kernels``: ``auto:eager`` and ``auto:fused`` are the
grouped kernel with eager ops or SDPA inside, ``auto:fused:flash`` the same with SDPA held to one
backend (flash, efficient, cudnn, math), ``mask:fused`` one S x S mask handed to SDPA,
``flex:fused`` FlexAttention, ``flash_attn:fused`` the flash-attn package) x S. For each S and
pattern one fresh process times dense SDPA (``auto:fused``, the reference) and every kernel of
the pattern round-robin (one call each per round, so drifting load hits all alike; one
FlexAttention pattern per process). Peak memory: a fresh process per case, the second call at
its shape (``bench_attention.peak_memory``). Correct: the kernel's output at ``--check-len``
against a float64 reference from the pattern's mask, max abs error <= ``--tolerance``. A kernel
that cannot run a case is listed with its reason (FlexAttention has no CPU backward; flash_attn
is CUDA only); eager cases that materialise S x S scores beyond ``--max-scores-gib`` are skipped
with that reason, and a case that fails (a backend refusing a mask, out of memory) is listed
with its error while the others of its process still run. The rows are written to ``--json``
after every pattern, so an interrupted run keeps what it measured.

Prints one row per (pattern, kernel, S), the exponent ``a`` of the fitted time ~ S^a per
(pattern, kernel), and per pattern the fastest correct kernel at the largest S with its speed-up
over dense SDPA, the ideal speed-up (dense's attention products over the pattern's: pairs scored
plus pairs attended, equal for every pattern but topk) and measured / ideal.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
import bench_attention  # noqa: E402  (the timing, inputs and peak-memory helpers)

PATTERNS = ["dense", "block:block_size=256", "local:window=128", "atrous:dilation=4",
            "longformer:window=128,n_global=16", "bigbird:block_size=64"]
KERNELS = ["auto:eager", "auto:fused", "mask:fused", "flex:fused"]
REFERENCE = {"strategy": {"name": "dense"}, "ops": "fused"}  # dense SDPA


def cases_for(pattern: str, kernels: list[str], settings: dict, S: int) -> list[dict]:
    """The reference and the pattern's kernels (dense's mask kernel is its auto: left out)."""
    spec = bench_attention.parse_strategy(pattern)
    out = [dict(settings, seq_len=S, **REFERENCE)]
    for item in kernels:
        kernel, ops, backend = (item.split(":") + ["", ""])[:3]
        if spec["name"] == "dense" and kernel == "mask":
            continue
        case = dict(settings, seq_len=S, ops=ops or "fused",
                    strategy={**spec, **({} if kernel == "auto" else {"kernel": kernel})})
        if backend:
            case["sdpa_backend"] = backend
        if case != out[0]:
            out.append(case)
    return out


def refusal(case: dict, max_scores_gib: float) -> str | None:
    """Why a case does not run here: the kernel's own reasons, or too large S x S scores."""
    from implementations import registry
    from implementations.registry import Context

    strategy = registry.create("attention", case["strategy"])
    ctx = Context(device=case["device"], workload="train" if case["backward"] else "forward")
    reasons = strategy.not_supported_reasons(ctx) + registry.create(
        "ops", {"name": "fused", "sdpa_backend": case.get("sdpa_backend") or "auto"}
    ).not_supported_reasons(ctx)
    if reasons:
        return "not supported: " + "; ".join(reasons)
    quadratic = strategy.kernel == "mask" or (strategy.name == "dense" and case["ops"] == "eager")
    gib = case["seq_len"] ** 2 * case["batch"] * case["heads"] * 4 / 2**30
    if quadratic and case["ops"] == "eager" and 3 * gib > max_scores_gib:
        return f"skipped: its S x S scores take {gib:.0f} GiB (x3 with softmax and grads)"
    return None


def check(case: dict, S: int) -> float:
    """Max abs error of the case's output at length S (under its SDPA backend) against the
    float64 reference from the pattern's mask."""
    import torch

    from implementations import registry

    strategy = registry.create("attention", case["strategy"])
    backend = registry.create("ops", {"name": "fused", "sdpa_backend": case.get("sdpa_backend") or "auto"})
    dtype = getattr(torch, bench_attention.DTYPES[case["dtype"]])
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, S, 32, generator=g, dtype=torch.float64) for _ in range(3))
    mask = registry.create("attention", {**case["strategy"], "kernel": "auto"}).dense_mask(
        S, S, case["causal"])
    k_ref, v_ref = k, v
    weights = strategy.make_weights(S)  # linformer: the reference attends its projected K and V
    if weights is not None:
        weights = weights.double()
        with torch.no_grad():
            k_ref, v_ref = weights(k, v)
        mask = torch.ones(S, k_ref.shape[2], dtype=torch.bool)
    scores = (q @ k_ref.transpose(-2, -1) / 32 ** 0.5).masked_fill(~mask, float("-inf"))
    ref = scores.softmax(-1).nan_to_num(0.0) @ v_ref
    dev = case["device"]
    if weights is not None:
        weights = weights.to(dev, dtype)
    with torch.no_grad(), backend.kernel_context():
        out = strategy.attend(q.to(dev, dtype), k.to(dev, dtype), v.to(dev, dtype),
                              causal=case["causal"], ops=case["ops"], weights=weights)
    return float((out.double().cpu() - ref).abs().max())


def child(job: dict) -> dict:
    """One (pattern, S): per case, its latency (round-robin over the cases that run) or the
    error it raised, and, if asked, its correctness error."""
    cases, S = job["cases"], job["seq_len"]
    failed = {}
    q, k, v = bench_attention.make_inputs(cases[0], S)
    for i, case in enumerate(cases):  # one call each: a case that cannot run is set aside
        try:
            bench_attention.build(case)[1](q, k, v)
        except Exception as exc:  # noqa: BLE001 -- recorded per case, the others still run
            failed[i] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    del q, k, v
    ok = [i for i in range(len(cases)) if i not in failed]
    timed = dict(zip(ok, bench_attention.time_cases([cases[i] for i in ok], S, job["warmup"],
                                                    job["min_reps"], job["min_time_s"])))
    out = {"latency_ms_p50": [timed[i][0] if i in timed else None for i in range(len(cases))],
           "n_samples": [timed[i][1] if i in timed else 0 for i in range(len(cases))],
           "error": [failed.get(i) for i in range(len(cases))]}
    if job["check_len"]:
        out["max_abs_error"] = [None if i in failed else check(case, job["check_len"])
                                for i, case in enumerate(cases)]
    return out


def products(strategy, S: int, causal: bool) -> int:
    """Attention products: pairs scored (q k^T) plus pairs attended (p v), plus linformer's
    projections of K and V; scored and attended differ for topk only, which scores every pair.
    Dense's over a pattern's is its ideal speed-up."""
    return (strategy.allowed_pairs(S, causal) + strategy.scored_pairs(S, causal)
            + strategy.projection_products(S))


def run_child(job: dict) -> dict | str:
    proc = subprocess.run([sys.executable, __file__, "--job", json.dumps(job)], cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or ["crashed"])[-1]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fit_exponent(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of log(time) against log(S)."""
    if len(points) < 2:
        return None
    xs, ys = [math.log(s) for s, _ in points], [math.log(t) for _, t in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def kernel_name(case: dict) -> str:
    backend = f":{case['sdpa_backend']}" if case.get("sdpa_backend") else ""
    return f"{case['strategy'].get('kernel', 'auto')}:{case['ops']}{backend}"


def tables(rows: list[dict], largest: int) -> str:
    """The per-case table, the fitted exponents and the fastest correct kernel per pattern."""
    lines = ["| pattern | kernel | S | latency ms p50 | vs dense SDPA | ideal | peak MiB | correct |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['pattern']} | {r['kernel']} | {r['seq_len']} | {r['error']} | | | | |")
            continue
        peak = f"{r['mem_peak_bytes'] / 2**20:.1f}" if "mem_peak_bytes" in r else r.get("mem_error", "-")
        ok = "-" if r.get("correct") is None else ("yes" if r["correct"] else "NO")
        lines.append(f"| {r['pattern']} | {r['kernel']} | {r['seq_len']} | {r['latency_ms_p50']:.1f} "
                     f"| {r['speedup']:.2f}x | {r['ideal']:.1f}x | {peak} | {ok} |")
    fits = {}
    for r in rows:
        if "error" not in r:
            fits.setdefault((r["pattern"], r["kernel"]), []).append((r["seq_len"], r["latency_ms_p50"]))
    lines += ["", "| pattern | kernel | time ~ S^a: a |", "|---|---|---:|"]
    for (pattern, kernel), pts in fits.items():
        a = fit_exponent(pts)
        lines.append(f"| {pattern} | {kernel} | {'-' if a is None else f'{a:.2f}'} |")
    lines += ["", f"| pattern | fastest correct kernel at S={largest} | latency ms | vs dense SDPA "
              "| ideal | measured / ideal |", "|---|---|---:|---:|---:|---:|"]
    for pattern in dict.fromkeys(r["pattern"] for r in rows):
        ran = [r for r in rows if r["pattern"] == pattern and r["seq_len"] == largest
               and "error" not in r and r.get("correct") is not False]
        if not ran:
            lines.append(f"| {pattern} | none ran | | | | |")
            continue
        best = min(ran, key=lambda r: r["latency_ms_p50"])
        lines.append(f"| {pattern} | {best['kernel']} | {best['latency_ms_p50']:.1f} | "
                     f"{best['speedup']:.2f}x | {best['ideal']:.1f}x "
                     f"| {best['speedup'] / best['ideal']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq-lens", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    p.add_argument("--patterns", nargs="+", default=PATTERNS, help="name[:param=value,...]")
    p.add_argument("--kernels", nargs="+", default=KERNELS,
                   help="kernel:ops[:sdpa_backend], e.g. flex:fused, auto:fused:math")
    p.add_argument("--dtype", default="fp32", choices=sorted(bench_attention.DTYPES))
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--causal", action="store_true")
    p.add_argument("--backward", action="store_true", help="time forward + backward")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--min-reps", type=int, default=5)
    p.add_argument("--min-time-s", type=float, default=2.0)
    p.add_argument("--check-len", type=int, default=1024, help="S of the correctness check")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max abs error counted correct")
    p.add_argument("--max-scores-gib", type=float, default=8.0)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    p.add_argument("--json", type=Path, help="also write the rows and settings to this file")
    p.add_argument("--job", help=argparse.SUPPRESS)  # internal: one (pattern, S) in a child
    args = p.parse_args(argv)
    if args.job:
        print(json.dumps(child(json.loads(args.job))))
        return
    settings = {k: getattr(args, k) for k in ("dtype", "device", "batch", "heads", "head_dim",
                                               "causal", "backward")}
    from implementations import registry

    rows = []
    for pattern in args.patterns:
        errors = {}  # kernel -> correctness error, checked in the first child that ran it
        for S in args.seq_lens:
            cases = cases_for(pattern, args.kernels, settings, S)
            ran, skipped = [cases[0]], []
            for case in cases[1:]:
                why = refusal(case, args.max_scores_gib)
                (skipped if why else ran).append((case, why) if why else case)
            job = {"cases": ran, "seq_len": S, "warmup": args.warmup, "min_reps": args.min_reps,
                   "min_time_s": args.min_time_s, "tolerance": args.tolerance,
                   "check_len": args.check_len if any(kernel_name(c) not in errors
                                                      for c in ran[1:]) else 0}
            got = run_child(job)
            if isinstance(got, str) or got["latency_ms_p50"][0] is None:
                why = got if isinstance(got, str) else f"dense SDPA: {got['error'][0]}"
                rows += [{"pattern": pattern, "kernel": kernel_name(c), "seq_len": S, "error": why}
                         for c in ran[1:]]
                continue
            for case, err in zip(ran, got.get("max_abs_error") or []):
                if err is not None:
                    errors.setdefault(kernel_name(case), err)
            dense_ms = got["latency_ms_p50"][0]
            if bench_attention.parse_strategy(pattern) == {"name": "dense"}:  # its own SDPA row
                rows.append({"pattern": pattern, "kernel": kernel_name(ran[0]), "seq_len": S,
                             "label": "dense", "latency_ms_p50": dense_ms, "speedup": 1.0,
                             "ideal": 1.0, "n_samples": got["n_samples"][0],
                             "dense_sdpa_ms": dense_ms})
                if kernel_name(ran[0]) in errors:
                    rows[-1]["max_abs_error"] = errors[kernel_name(ran[0])]
                    rows[-1]["correct"] = rows[-1]["max_abs_error"] <= args.tolerance
            dense_products = products(registry.create("attention", "dense"), S, args.causal)
            for i, case in enumerate(ran[1:], start=1):
                strategy = registry.create("attention", case["strategy"])
                if got["latency_ms_p50"][i] is None:
                    rows.append({"pattern": pattern, "kernel": kernel_name(case), "seq_len": S,
                                 "error": got["error"][i]})
                    continue
                row = {"pattern": pattern, "kernel": kernel_name(case), "seq_len": S,
                       "label": strategy.label, "latency_ms_p50": got["latency_ms_p50"][i],
                       "n_samples": got["n_samples"][i],
                       "speedup": dense_ms / got["latency_ms_p50"][i],
                       "ideal": dense_products / products(strategy, S, args.causal),
                       "dense_sdpa_ms": dense_ms}
                if kernel_name(case) in errors:
                    row["max_abs_error"] = errors[kernel_name(case)]
                    row["correct"] = row["max_abs_error"] <= args.tolerance
                if not args.no_memory:
                    peak = bench_attention.measure_memory(case)
                    row.update({"mem_peak_bytes": peak} if isinstance(peak, int) else {"mem_error": peak})
                rows.append(row)
                print(f"measured {pattern} {row['kernel']} S={S}", file=sys.stderr)
            rows += [{"pattern": pattern, "kernel": kernel_name(c), "seq_len": S, "error": why}
                     for c, why in skipped]
        if args.json:  # after every pattern: an interrupted run keeps what it measured
            timing = {k: getattr(args, k) for k in ("warmup", "min_reps", "min_time_s",
                                                    "check_len", "tolerance")}
            args.json.write_text(json.dumps({"settings": {**settings, **timing}, "rows": rows},
                                            indent=2))
    print(tables(rows, max(args.seq_lens)))


if __name__ == "__main__":
    main()
