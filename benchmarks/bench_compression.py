"""Forward latency, weight bytes and quality cost of compressed models against fp32.

    python benchmarks/bench_compression.py                     # base preset, B=1, S=128: ~1-2 min on 2 CPUs
    python benchmarks/bench_compression.py --quick             # tiny preset: seconds
    python benchmarks/bench_compression.py --strategies none int8_weight_only \
        magnitude:sparsity=0.9,format=csr

Each strategy gets its own copy of the same seeded model (``--preset``, eval mode, fp32),
compressed through its ``implementations.compression`` strategy; a strategy that is not
supported here is listed with its reason. The forward passes (``forward_batch`` on one fixed
batch of ``--batch`` x ``--seq-len`` tokens) are timed round-robin, one forward of each model per
round after ``--warmup`` rounds, so a drifting machine hits every case alike; the median over
``--min-rounds`` rounds and ``--min-time-s`` seconds is reported. Weight bytes and the relative
difference of logits and loss against the uncompressed model come from
``implementations.compression.quality``, on the same batch. Results go to ``--json`` (default
``benchmarks/results/bench_compression.json``; ``--quick`` writes only when ``--json`` is given).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from implementations import registry  # noqa: E402
from implementations.compression import quality  # noqa: E402
from implementations.model import ModelConfig, build_model, forward_batch  # noqa: E402
from implementations.padding import Batch  # noqa: E402
from implementations.registry import Context  # noqa: E402

# int8_dynamic is left out by default: torchao's CPU path quantizes every activation in Python-level
# ops and took ~8x the fp32 forward here; name it with --strategies to measure it
DEFAULT = ["none", "int8_weight_only", "magnitude:sparsity=0.5", "magnitude:sparsity=0.9,format=csr"]


def parse_strategy(text: str) -> dict:
    """``"magnitude:sparsity=0.9,format=csr"`` -> ``{"name": "magnitude", "sparsity": 0.9, ...}``."""
    name, _, rest = text.partition(":")
    spec: dict = {"name": name}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            spec[key] = float(value) if "." in value else int(value)
        except ValueError:
            spec[key] = value
    return spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="base")
    ap.add_argument("--strategies", nargs="+", default=DEFAULT)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--min-rounds", type=int, default=8)
    ap.add_argument("--min-time-s", type=float, default=20.0)
    ap.add_argument("--quick", action="store_true", help="tiny preset, 3 rounds")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.preset, args.min_rounds, args.min_time_s, args.warmup = "tiny", 3, 0.0, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    json_path = args.json or (None if args.quick else ROOT / "benchmarks/results/bench_compression.json")

    torch.manual_seed(0)
    cfg = ModelConfig.from_preset(args.preset, dropout=0.0)
    reference = build_model(cfg).eval()
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(3, cfg.vocab_size, (args.batch, args.seq_len), generator=gen)
    batch = Batch(tokens, tokens.roll(-1, dims=1), None, None, None, tokens.numel(), tokens.numel())
    fp32 = registry.create("precision", "fp32")
    ctx = Context(device="cpu", precision="fp32", workload="forward")
    ref_out = quality.outputs(reference, [batch], cfg.is_encoder_decoder, lambda: fp32.autocast("cpu"))

    cases, skipped = [], []
    for text in args.strategies:
        strategy = registry.create("compression", parse_strategy(text))
        reasons = strategy.not_supported_reasons(ctx)
        if reasons:
            skipped.append({"strategy": strategy.label, "not_supported": "; ".join(reasons)})
            continue
        model = copy.deepcopy(reference)
        t0 = time.perf_counter()
        strategy.compress(model, "cpu", fp32)
        compress_s = time.perf_counter() - t0
        out = quality.outputs(model, [batch], cfg.is_encoder_decoder, lambda: fp32.autocast("cpu"))
        cases.append({"strategy": strategy.label, "model": model, "compress_s": compress_s,
                      "weight_bytes": quality.weight_bytes(model), "samples_ms": [],
                      **quality.quality_cost(ref_out, out)})

    def forward(case) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            forward_batch(case["model"], batch, cfg.is_encoder_decoder)
        return (time.perf_counter() - t0) * 1e3

    for _ in range(args.warmup):
        for case in cases:
            forward(case)
    t0, rounds = time.perf_counter(), 0
    while rounds < args.min_rounds or time.perf_counter() - t0 < args.min_time_s:
        for case in cases:
            case["samples_ms"].append(forward(case))
        rounds += 1

    base = next((c for c in cases if c["strategy"] == "none"), cases[0])
    base_ms = statistics.median(base["samples_ms"])
    print(f"forward, preset {args.preset} ({sum(p.numel() for p in reference.parameters()):,} "
          f"parameters), B={args.batch} S={args.seq_len} fp32 on cpu, {torch.get_num_threads()} threads, "
          f"{rounds} rounds")
    print("| strategy | latency p50 | vs none | weight bytes | vs none | logits rel. diff | loss rel. diff |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for case in cases:
        p50 = statistics.median(case["samples_ms"])
        row = {k: v for k, v in case.items() if k != "model"} | {"latency_ms_p50": p50}
        rows.append(row)
        size = case["weight_bytes"] / base["weight_bytes"]
        print(f"| {case['strategy']} | {p50:.1f} ms | ×{base_ms / p50:.2f} | "
              f"{case['weight_bytes'] / 2**20:.1f} MiB | ×{size:.2f} | "
              f"{case['compression_logits_rel_diff']:.1e} | {case['compression_loss_rel_diff']:.1e} |")
    for s in skipped:
        print(f"| {s['strategy']} | not supported: {s['not_supported']} | | | | | |")
    if json_path:
        out = {"args": {k: v for k, v in vars(args).items() if k != "json"}, "rounds": rounds,
               "threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows,
               "not_supported": skipped}
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(out, indent=2, default=str) + "\n")
        print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
