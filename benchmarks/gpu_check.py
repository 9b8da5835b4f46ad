"""The prepared GPU check: one script, at most ~8 minutes on one GPU, everything under --out.

    python benchmarks/gpu_check.py --out "$OUT"            # on a GPU machine
    python benchmarks/gpu_check.py --dry-run --out /tmp/g  # anywhere: validates the plan end to end

Steps, in order (each one's result, or its error, goes to ``gpu_check.json``; a failing step
never stops the next one; each step has a time budget):
  1. parity: fused (SDPA) vs eager attention, outputs and gradients, for every pattern, causal
     and not, with and without key padding, in fp32 and bf16; plus the SDPA backend each ran;
  1b. flash_varlen: the flash_attn kernel on padded and packed rows (``flash_attn_varlen_func``)
     against SDPA at the real positions, dense and local(128), causal and not, right, left and
     packed rows, bf16, GQA; skipped without the flash-attn package;
  2. timing: one fixed op (a bf16 matmul) timed by tbench, ``triton.testing.do_bench`` and
     ``torch.utils.benchmark``: medians within 5% of each other;
  3. memory: dense eager attention's peak allocated memory against its S x S score tensors;
  4. energy: NVML's energy counter against mean power x time over a timed loop (within 10%);
  5. kernels (issue 11): ``bench_kernels.py`` at S 4K/16K/32K, bf16, causal, B=1, H=16, D=128:
     dense with each SDPA backend and FlexAttention, local(256) with the grouped kernel, flex and
     flash_attn (if installed), block(256) with grouped and flex; TFLOP/s from allowed pairs;
  6. suites: the ``quick`` variants of smoke, attention, precision, ZeRO and kernels through
     ``tbench run`` (each point records its SDPA backends); the run folders are packed into
     ``runs.tar.gz``.

``--dry-run`` runs steps 1 and 2 on the CPU at a small size (step 2 without triton when it is
absent), checks that steps 3 and 4 have what they need, runs step 5 on the CPU at a small size
without FlexAttention (whose CPU compiles take minutes; ``tests/implementations/test_flex.py`` covers it), and
expands step 6's suites for cuda
with ``--dry-run``: every command the GPU run will use is exercised. ``--device cpu`` without
``--dry-run`` is refused: the numbers of this script are GPU numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness.measure import timing  # noqa: E402
from harness.measure.sdpa_backends import RecordKernels  # noqa: E402
from harness.measure.telemetry import TelemetrySampler  # noqa: E402
from implementations import registry  # noqa: E402

PATTERNS = ["dense", {"name": "block", "block_size": 128}, {"name": "local", "window": 128},
            {"name": "atrous", "dilation": 4}, {"name": "atrous", "dilation": 2, "window": 256}]
SUITES = ("smoke", "attention", "precision", "zero", "kernels")
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2}  # max |fused - eager| / max |eager|
TIMING_AGREEMENT = 0.05
ENERGY_AGREEMENT = 0.10


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def parity(device: str, S: int, dtype: torch.dtype) -> list[dict]:
    """Fused vs eager for every pattern x causal x padding: outputs and q/k/v gradients."""
    rows = []
    gen = torch.Generator().manual_seed(0)
    B, H, D = 2, 4, 64
    base = [torch.randn(B, H, S, D, generator=gen) for _ in range(3)]
    for spec in PATTERNS:
        s = registry.create("attention", spec)
        for causal in (False, True):
            for padded in (False, True):
                pad = None
                if padded:
                    pad = torch.ones(B, S, dtype=torch.bool, device=device)
                    pad[1, S - S // 4:] = False  # the second row's last quarter is padding
                outs, grads, backends = {}, {}, {}
                for ops in ("eager", "fused"):
                    q, k, v = (x.to(device, dtype).requires_grad_() for x in base)
                    with RecordKernels() as rec:
                        out = s.attend(q, k, v, causal=causal, key_padding_mask=pad, ops=ops)
                    out.float().square().sum().backward()
                    outs[ops], grads[ops], backends[ops] = out.detach(), (q.grad, k.grad, v.grad), rec.backends()
                errs = [rel_err(outs["fused"], outs["eager"])]
                errs += [rel_err(f, e) for f, e in zip(grads["fused"], grads["eager"])]
                rows.append({"pattern": s.label, "causal": causal, "padded": padded,
                             "dtype": str(dtype).split(".")[-1], "S": S, "err_out": errs[0],
                             "err_grad_max": max(errs[1:]), "ok": max(errs) <= TOLERANCE[dtype],
                             "fused_backends": backends["fused"]})
    return rows


def flash_varlen(device: str, S: int, dtype: torch.dtype) -> list[dict] | dict:
    """The flash_attn kernel with key padding and packed rows (``flash_attn_varlen_func``) against
    the auto kernel (SDPA) at the real positions, outputs and gradients; padded ones must be 0."""
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return {"skipped": "the flash-attn package is not installed"}
    gen = torch.Generator().manual_seed(0)
    B, H, H_kv, D = 2, 8, 2, 64
    base = [torch.randn(B, n, S, D, generator=gen) for n in (H, H_kv, H_kv)]
    right = torch.ones(B, S, dtype=torch.bool)
    right[1, S - S // 4:] = False  # the second row's last quarter is padding
    seg = torch.ones(B, S, dtype=torch.long)
    seg[:, S // 3:] = 2
    seg[0, S - S // 8:] = 0  # packed: two sequences and a padded tail (id 0)
    layouts = {"right": (right, None), "left": (right.flip(1), None), "packed": (seg > 0, seg)}
    rows = []
    cases = [(spec, causal, layout) for spec in ({"name": "dense"}, {"name": "local", "window": 128})
             for causal in (True, False) for layout in layouts]
    for spec, causal, layout in cases:
        kpm, ids = layouts[layout]
        kpm, ids = kpm.to(device), None if ids is None else ids.to(device)
        real = kpm[:, None, :, None]
        outs, grads = {}, {}
        for kernel in ("auto", "flash_attn"):
            s = registry.create("attention", {**spec, "kernel": kernel})
            q, k, v = (x.to(device, dtype).requires_grad_() for x in base)
            out = s.attend(q, k, v, causal=causal, key_padding_mask=kpm, segment_ids=ids,
                           ops="fused")
            (out.float() * real).square().sum().backward()
            outs[kernel], grads[kernel] = out.detach(), (q.grad, k.grad, v.grad)
        errs = [rel_err(outs["flash_attn"] * real, outs["auto"] * real)]
        errs += [rel_err(f, a) for f, a in zip(grads["flash_attn"], grads["auto"])]
        padded_zero = bool((outs["flash_attn"] * ~real == 0).all())
        rows.append({"pattern": s.pattern_label, "causal": causal, "layout": layout, "S": S,
                     "dtype": str(dtype).split(".")[-1], "err_out": errs[0],
                     "err_grad_max": max(errs[1:]), "padded_rows_zero": padded_zero,
                     "ok": max(errs) <= TOLERANCE[dtype] and padded_zero})
    return rows


def timing_agreement(device: str, n: int) -> dict:
    """tbench vs triton.testing.do_bench vs torch.utils.benchmark on one matmul."""
    import torch.utils.benchmark as tub

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    fn = lambda: torch.mm(a, b)  # noqa: E731
    spec = SimpleNamespace(warmup_iters=10, warmup_s=0.3, min_samples=50, min_time_s=1.0,
                           max_samples=10_000, steps_per_sample=1)
    out = {"op": f"mm {n}x{n} {str(dtype).split('.')[-1]} on {device}"}
    out["tbench_ms"] = statistics.median(timing.measure(fn, device, spec).samples_ms)
    timer = tub.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    out["torch_benchmark_ms"] = timer.blocked_autorange(min_run_time=1.0).median * 1e3
    try:
        import triton.testing

        out["triton_do_bench_ms"] = float(triton.testing.do_bench(fn, return_mode="median"))
    except ImportError:
        out["triton_do_bench_ms"] = None
    theirs = [v for k, v in out.items() if k.endswith("_ms") and k != "tbench_ms" and v]
    out["ratios"] = [out["tbench_ms"] / v for v in theirs]
    out["ok"] = all(abs(r - 1) <= TIMING_AGREEMENT for r in out["ratios"])
    return out


def attention_memory(S: int) -> dict:
    """Peak allocated memory of one dense eager attention forward vs its S x S score tensors."""
    B, H, D, dtype = 1, 16, 64, torch.bfloat16
    q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=dtype) for _ in range(3))
    dense = registry.create("attention", "dense")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    with torch.no_grad():
        out = dense.attend(q, k, v, causal=False, ops="eager")
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before - out.numel() * out.element_size()
    scores = B * H * S * S * torch.finfo(dtype).bits // 8
    ratio = peak / scores
    # scores and their softmax (plus at most an fp32 copy of one): between one and four S x S
    return {"S": S, "scores_bytes": scores, "peak_above_inputs_bytes": peak, "ratio": ratio,
            "ok": 1.0 <= ratio <= 4.0}


def energy(seconds: float) -> dict:
    """NVML energy counter vs mean power x time over a busy loop of matmuls."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    sampler = TelemetrySampler(torch.cuda.current_device()).start()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(20):
            a @ a
        torch.cuda.synchronize()
    tele = sampler.stop()
    out = {k: tele.get(k) for k in ("energy_j", "energy_j_power_x_time", "power_w_mean", "window_s",
                                    "n_samples", "nvml")}
    e, p = out["energy_j"], out["energy_j_power_x_time"]
    out["ratio"] = None if not e or not p else e / p
    out["ok"] = out["ratio"] is not None and abs(out["ratio"] - 1) <= ENERGY_AGREEMENT
    return out


KERNEL_CHECK = {  # the plan: dense on each SDPA backend and flex; the sparse patterns
    "dense": ["--patterns", "dense", "--kernels", "auto:fused", "auto:fused:flash",
              "auto:fused:efficient", "auto:fused:cudnn", "flex:fused"],
    "sparse": ["--patterns", "local:window=256", "block:block_size=256",
               "--kernels", "auto:fused", "flex:fused", "flash_attn:fused"],
}


def kernels(out: Path, dry_run: bool, budget_s: float) -> dict:
    """``bench_kernels.py`` on the issue's GPU shapes (a small CPU shape in a dry run), dense
    and the sparse patterns in two runs of half the budget each; the rows come back in
    ``kernels_<part>.json`` (written after every pattern, so a run cut short keeps its rows)
    with TFLOP/s counted from the allowed pairs. A run past its budget is killed with every
    process it started."""
    shape = (["--device", "cpu", "--dtype", "fp32", "--seq-lens", "128", "256", "--heads", "2",
              "--head-dim", "16", "--check-len", "64", "--min-reps", "1", "--min-time-s", "0"]
             if dry_run else
             ["--device", "cuda", "--dtype", "bf16", "--seq-lens", "4096", "16384", "32768",
              "--heads", "16", "--head-dim", "128", "--check-len", "1024", "--tolerance", "3e-2",
              "--min-reps", "3", "--min-time-s", "0.5"])
    result, rows = {}, []
    for part, plan in KERNEL_CHECK.items():
        plan = [a for a in plan if not (dry_run and a == "flex:fused")]  # CPU compiles: minutes
        target = out / f"kernels_{part}.json"
        cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_kernels.py"), "--causal",
               "--no-memory", *plan, *shape, "--json", str(target)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=ROOT, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=budget_s / len(KERNEL_CHECK))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # its per-pattern children too
            stdout, stderr = proc.communicate()
        result[part] = {"rc": proc.returncode, "table": stdout[-6000:],
                        "stderr_tail": stderr[-1500:]}
        if target.exists():
            rows += json.loads(target.read_text())["rows"]
    heads, dim = (2, 16) if dry_run else (16, 128)
    for r in rows:  # 4 D FLOPs per allowed pair and head (q k^T and p v), B = 1
        if "latency_ms_p50" in r:
            pairs = registry.create("attention", _spec(r)).allowed_pairs(r["seq_len"], True)
            r["tflops_per_s"] = 4 * pairs * dim * heads / (r["latency_ms_p50"] / 1e3) / 1e12
    return {**result, "rows": rows}


def _spec(row: dict) -> dict:
    from bench_attention import parse_strategy

    spec = parse_strategy(row["pattern"])
    kernel = row["kernel"].split(":")[0]
    return spec if kernel == "auto" else {**spec, "kernel": kernel}


def suites(out: Path, dry_run: bool, deadline: float) -> list[dict]:
    """``tbench run suites/<name>.yaml --device cuda --variant quick`` for each suite."""
    rows = []
    for name in SUITES:
        cmd = [sys.executable, "-m", "harness.cli", "run", str(ROOT / "suites" / f"{name}.yaml"),
               "--device", "cuda", "--variant", "quick", "--out", str(out / "runs" / name)]
        left = deadline - time.monotonic()
        if left < 30:
            rows.append({"suite": name, "skipped": f"time budget spent ({left:.0f} s left)"})
            continue
        t0 = time.monotonic()
        if dry_run:  # the same command line, in this process: the CLI's own --dry-run
            from typer.testing import CliRunner

            from harness.cli import app

            res = CliRunner().invoke(app, cmd[3:] + ["--dry-run"])
            rows.append({"suite": name, "rc": res.exit_code, "wall_s": time.monotonic() - t0,
                         "planned": res.stdout.splitlines()[0].strip() if res.stdout else "",
                         "stderr_tail": res.stderr[-1500:]})
            continue
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=left, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        rows.append({"suite": name, "rc": proc.returncode, "wall_s": time.monotonic() - t0,
                     "stderr_tail": proc.stderr[-1500:], "points": backends_of(out / "runs" / name)})
    return rows


def backends_of(run: Path) -> list[dict]:
    from harness.records import read_records

    try:
        records = read_records(run)
    except (OSError, ValueError):
        return []
    return [{"label": r.get("label"), "status": r.get("status"),
             "sdpa_backends": (r.get("metrics") or {}).get("sdpa_backends"),
             "latency_ms_p50": (r.get("metrics") or {}).get("latency_ms_p50")} for r in records]


def step(report: dict, name: str, fn, *args) -> None:
    t0 = time.monotonic()
    try:
        report[name] = {"result": fn(*args)}
    except Exception as exc:  # a failing step is a result; the next one still runs
        report[name] = {"error": f"{type(exc).__name__}: {exc}"}
    report[name]["wall_s"] = time.monotonic() - t0
    print(f"gpu_check: {name}: {json.dumps(report[name], default=str)[:400]}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    ap.add_argument("--dry-run", action="store_true", help="validate on the CPU; no GPU numbers")
    ap.add_argument("--budget-s", type=float, default=480.0, help="whole script, seconds")
    args = ap.parse_args()
    deadline = time.monotonic() + args.budget_s
    gpu = torch.cuda.is_available()
    if not gpu and not args.dry_run:
        print("error: no CUDA device visible; allowed without one: --dry-run", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    device = "cpu" if args.dry_run else "cuda"
    report: dict = {"device": torch.cuda.get_device_name() if gpu and not args.dry_run else "cpu (dry run)",
                    "torch": torch.__version__, "dry_run": args.dry_run}
    S, n = (64, 128) if args.dry_run else (4096, 8192)  # the dry run checks the code, not numbers
    step(report, "parity_fp32", parity, device, S, torch.float32)
    step(report, "parity_bf16", parity, device, S, torch.bfloat16)
    step(report, "flash_varlen", flash_varlen, device, S, torch.bfloat16)
    step(report, "timing", timing_agreement, device, n)
    if args.dry_run:
        report["memory"] = {"planned": "dense eager attention, S=8192, bf16, CUDA allocator peak"}
        report["energy"] = {"planned": "5 s of bf16 matmuls under TelemetrySampler"}
    else:
        step(report, "memory", attention_memory, 8192)
        step(report, "energy", energy, 5.0)
    step(report, "kernels", kernels, args.out, args.dry_run, min(240.0, deadline - time.monotonic()))
    step(report, "suites", suites, args.out, args.dry_run, deadline)
    if not args.dry_run and (args.out / "runs").is_dir():
        with tarfile.open(args.out / "runs.tar.gz", "w:gz") as tar:
            tar.add(args.out / "runs", arcname="runs", filter=lambda i: None if "/workers/" in i.name else i)
        shutil.rmtree(args.out / "runs")  # what comes back from a lent machine: few files
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"gpu_check: wrote {args.out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
