"""Memory trade-offs on CPU: the sequence-length frontier per attention pattern, what activation
checkpointing saves and costs, and FSDP beside ZeRO-3 on 2 ranks.

    python benchmarks/bench_memory.py [--quick] [--budget 144MiB] [--parts frontier,checkpoint,parallel]
                                      [--out benchmarks/results/bench_memory.json]

1. Frontier: the largest ``workload.seq_len`` a training step of a decoder-only model (tiny,
   2 layers; batch 1) runs within ``--budget`` (RLIMIT_DATA on each probe's worker), for dense
   eager, dense fused (SDPA), local(128) and block(256), each a ``tbench frontier`` search
   (``harness.run.frontier``) up to 8192 tokens, to a resolution of 128 tokens.
2. Checkpointing on the base preset (train, batch 4 x 256): peak RSS above the baseline, the
   memory model's prediction, step time and hardware/model FLOPs for none, full, every_n(2),
   selective attention and selective FFN.
3. FSDP (fully_shard, reshard on) vs DeepSpeed ZeRO-3 on 2 CPU ranks (gloo), the model of
   ``suites/zero.yaml``: per-rank model-state bytes and step time (slowest rank).
Every point runs in a fresh worker through the harness (``harness.run.lifecycle.run`` of a ``points_plan``); results are
written as JSON to ``--out`` and printed as Markdown tables. ``--quick`` shrinks every part (a
check that it runs, about a minute); the full run takes about 11 minutes on a 2-core CPU.
``--parts``: run only these parts, the others kept from the JSON already at ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import records
from harness.analyse.units import fmt_bytes  # noqa: E402
from harness.run import extensions, lifecycle  # noqa: E402
from harness.run import frontier as fr  # noqa: E402
from harness.run.plan import points_plan  # noqa: E402
from harness.suite.loader import parse_suite  # noqa: E402
from harness.suite.sweep import expand  # noqa: E402

FAST = {"warmup_iters": 1, "warmup_s": 0.0, "min_samples": 10, "min_time_s": 0.0,
        "max_samples": 10, "rounds": 1}
PATTERNS = [("dense", "eager"), ("dense", "fused"), ({"name": "local", "window": 128}, "fused"),
            ({"name": "block", "block_size": 256}, "fused")]
POLICIES = ["none", "full", {"name": "every_n", "n": 2}, {"name": "selective", "part": "attention"},
            {"name": "selective", "part": "ffn"}]


def points(data: dict) -> list:
    return expand(parse_suite({"name": "bench-memory", "measure": FAST, **data}, "bench"), "cpu")


def frontier_part(budget: int, quick: bool, tmp: Path) -> list[dict]:
    model = {"preset": "tiny", "overrides": {"n_encoder_layers": 0, "n_decoder_layers": 2,
                                             "max_seq_len": 512}}
    pts = points({"model": model, "workload": {"kind": "train", "batch_size": 1, "seq_len": 256,
                                               "num_batches": 1},
                  "sweep": {"zip": [{"strategies.attention": [a for a, _ in PATTERNS],
                                     "strategies.ops": [o for _, o in PATTERNS]}]}})
    found = fr.run_frontier(pts, "workload.seq_len", budget, tmp / "frontier",
                            cap=2048 if quick else 8192, resolution=256 if quick else 128)
    return [fr.frontier_json(f) for f in found]


def checkpoint_part(quick: bool, tmp: Path) -> list[dict]:
    preset, B, S = ("tiny", 8, 256) if quick else ("base", 4, 256)
    policies = POLICIES[:2] if quick else POLICIES
    pts = points({"model": {"preset": preset}, "strategies": {"ops": "fused"},
                  "workload": {"kind": "train", "batch_size": B, "seq_len": S, "num_batches": 1},
                  "sweep": {"grid": {"strategies.memory": policies}}})
    lifecycle.run(points_plan(pts, tmp / "checkpoint"), reports=False)
    rows = []
    for rec in records.read_records(tmp / "checkpoint"):
        m = rec["metrics"]
        rows.append({"memory": rec["params"]["memory"], "status": rec["status"], "preset": preset,
                     "batch": B, "seq_len": S,
                     "peak_rss_above_baseline_bytes": m.get("mem_peak_rss_above_baseline_bytes"),
                     "predicted_bytes": m.get("mem_predicted_bytes"),
                     "latency_ms_p50": m.get("latency_ms_p50"),
                     "hardware_over_model_flops": (m["hardware_flops_per_step"] / m["flops_per_step"]
                                                   if m.get("flops_per_step") else None)})
    return rows


def parallel_part(quick: bool, tmp: Path) -> list[dict]:
    model = {"preset": "tiny", "overrides": {"n_encoder_layers": 0, "d_model": 128, "d_ff": 512}}
    parallel = [{"name": "zero", "stage": 3, "nproc": 2}, {"name": "fsdp", "nproc": 2},
                {"name": "fsdp", "nproc": 2, "reshard_after_forward": False}]
    pts = points({"model": model, "workload": {"kind": "train", "batch_size": 4, "seq_len": 64},
                  "measure": dict(FAST, timeout_s=300),
                  "sweep": {"grid": {"strategies.parallel": parallel[:2] if quick else parallel}}})
    extensions.prepare(pts, lambda line: print(line, file=sys.stderr))
    lifecycle.run(points_plan(pts, tmp / "parallel"), reports=False)
    rows = []
    for rec in records.read_records(tmp / "parallel"):
        m = rec["metrics"]
        rows.append({"parallel": rec["params"]["parallel"], "status": rec["status"],
                     "model_state_bytes_per_rank": [r.get("model_state_bytes") for r in rec["ranks"]],
                     "latency_ms_p50_rank_max": m.get("latency_ms_p50_rank_max"),
                     "mem_peak_bytes_max": m.get("mem_peak_bytes_max")})
    return rows


def markdown(out: dict) -> list[str]:
    # a part never run has no rows
    out = {"frontier": [], "checkpoint": [], "parallel": [], "budget_bytes": None, **out}
    lines = [f"### Sequence-length frontier within {fmt_bytes(out['budget_bytes'])} (CPU, train, batch 1)",
             "", "| pattern | largest S | limited by | predicted | tokens/s at frontier | probes |",
             "|---|---:|---|---:|---:|---:|"]
    for f in out["frontier"]:
        tps = f["tokens_per_s_at_frontier"]
        lines.append(f"| {f['strategies']['attention']} {f['strategies']['ops']} | {f['value']} | "
                     f"{f['limited_by']} | {f['predicted_value']} | {f'{tps:,.0f}' if tps else '—'} | "
                     f"{len(f['probes'])} |")
    base = next((r for r in out["checkpoint"] if r["memory"] == "none"), None)
    lines += ["", "### Activation checkpointing (CPU, train)", "",
              "| policy | peak RSS above baseline | predicted | saved vs none | step ms | time × none "
              "| hardware / model FLOPs |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in out["checkpoint"]:
        saved = (1 - r["peak_rss_above_baseline_bytes"] / base["peak_rss_above_baseline_bytes"]
                 if base and r["peak_rss_above_baseline_bytes"] else None)
        slower = r["latency_ms_p50"] / base["latency_ms_p50"] if base and r["latency_ms_p50"] else None
        lines.append(f"| {r['memory']} | {fmt_bytes(r['peak_rss_above_baseline_bytes'])} | "
                     f"{fmt_bytes(r['predicted_bytes'])} | {f'{saved:.0%}' if saved is not None else '—'} | "
                     f"{r['latency_ms_p50'] or 0:.1f} | {f'{slower:.2f}' if slower else '—'} | "
                     f"{r['hardware_over_model_flops'] or 0:.2f} |")
    lines += ["", "### FSDP vs ZeRO-3 on 2 CPU ranks (gloo)", "",
              "| strategy | model-state bytes per rank | slowest rank step ms | peak RSS (max rank) |",
              "|---|---|---:|---:|"]
    for r in out["parallel"]:
        held = ", ".join(f"{b:,}" for b in r["model_state_bytes_per_rank"] if b)
        lines.append(f"| {r['parallel']} | {held} | "
                     f"{r['latency_ms_p50_rank_max'] or 0:.1f} | {fmt_bytes(r['mem_peak_bytes_max'])} |")
    return lines


PARTS = {"frontier": frontier_part,
         "checkpoint": lambda budget, quick, tmp: checkpoint_part(quick, tmp),
         "parallel": lambda budget, quick, tmp: parallel_part(quick, tmp)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a check that it runs")
    ap.add_argument("--budget", default="144MiB", help="memory budget of the frontier probes")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_memory.json")
    ap.add_argument("--parts", default=",".join(PARTS),
                    help=f"comma-separated parts to run (of {', '.join(PARTS)}); the others are "
                         "kept from the JSON already at --out")
    args = ap.parse_args()
    parts = args.parts.split(",")
    if not set(parts) <= set(PARTS):
        ap.error(f"--parts: got {args.parts!r}, allowed: a comma-separated subset of {', '.join(PARTS)}")
    budget = fr.parse_budget(args.budget)
    out = json.loads(args.out.read_text()) if set(parts) != set(PARTS) and args.out.exists() else {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for part in parts:
            t_part = time.perf_counter()
            out[part] = PARTS[part](budget, args.quick, Path(tmp))
            out.setdefault("wall_s_by_part", {})[part] = time.perf_counter() - t_part
            out.setdefault("quick_by_part", {})[part] = args.quick
            if part == "frontier":
                out["budget_bytes"] = budget  # the frontier's own budget, kept with it
    out["wall_s"] = time.perf_counter() - t0  # this invocation's parts
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print("\n".join(markdown(out)))
    print(f"\nwall time {out['wall_s']:.0f} s; results: {args.out}")


if __name__ == "__main__":
    main()
