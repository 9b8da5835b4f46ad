"""One cached decode step at long contexts: dense vs local attention, per-token latency and KV bytes.

    python benchmarks/bench_decode.py                          # contexts 1K, 4K, 16K: ~1.5 min, 2 quiet CPUs
    python benchmarks/bench_decode.py --quick                  # contexts 256, 1K, a small model: seconds
    python benchmarks/bench_decode.py --contexts 4096 32768 --device cuda --dtype bf16

For each (pattern, context c) a decoder-only LM (``--d-model``, ``--layers``, ``--heads``, RoPE,
pre-norm) holds the caches of ``c`` random prompt tokens for ``--batch`` rows, filled through the
real model (``implementations.generate.prefill``, with torch's default threads): dense once, at
the largest context, in chunks of 1024 positions, its smaller contexts copied as prefixes of that
fill (exact for a causal model; checked against a real prefill at the smallest context); local
once per context (its ring keeps the last w + 1 positions). Then one decode step at position
``c`` (feeding the prompt's token ``c``) is timed again and again, the caches rewound to ``c``
after each step (``DecodeState.rewind``), so every sample is the same step. The cases are timed
round-robin (one step of each per round, after ``--warmup`` rounds), so a drifting machine hits
every case alike; the median over ``--min-rounds`` rounds and ``--min-time-s`` seconds is
reported (CUDA synchronised after each step). KV bytes: measured as every storage the filled
caches hold (``kv_cache.held_bytes``), beside the count by hand (layers x 2 x B x H x slots x D x
element size, slots c + 1 dense, w + 1 local) and ``CachePolicy.cache_bytes`` (analytic). Checks,
printed and stored: the three agree; local's cache bytes equal at every context; dense's bytes
proportional to ``c + 1``; local's step at the largest context at
least ``--min-speedup`` times faster than dense's. Results go to ``--json`` (default
``benchmarks/results/bench_decode.json``; ``--quick`` writes only when ``--json`` is given).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from implementations import registry  # noqa: E402
from implementations.generate import DecodeState, decode_step, prefill  # noqa: E402
from implementations.kv_cache import KVCache, held_bytes  # noqa: E402
from implementations.model import ModelConfig, build_model  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def model_of(args, pattern: dict, max_len: int):
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset(
        "tiny", n_encoder_layers=0, n_decoder_layers=args.layers, d_model=args.d_model,
        n_heads=args.heads, d_ff=4 * args.d_model, vocab_size=args.vocab, norm="pre", positions="rope",
        max_seq_len=max_len, ops="fused", attention=registry.create("attention", pattern))
    return build_model(cfg).to(args.device, DTYPES[args.dtype]).eval()


def prompt(args, length: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randint(3, args.vocab, (args.batch, length), generator=gen).to(args.device)  # (B, S)


def fill(model, tokens: torch.Tensor, context: int):
    """A real prefill of ``tokens[:, :context]`` into fresh caches for ``context + 1`` positions."""
    t0 = time.perf_counter()
    with torch.no_grad():
        _, state = prefill(model, tokens[:, :context], context + 1, chunk=1024)
    return state, time.perf_counter() - t0


def prefix_state(full: DecodeState, context: int) -> DecodeState:
    """The dense caches of the first ``context`` positions, copied out of caches filled further:
    a causal model's K/V at position p depend on tokens 0..p only, so these are exactly the
    caches a prefill of ``context`` tokens fills (``main`` checks one against a real prefill)."""
    caches = [KVCache(context + 1, c.policy) for c in full.cache]
    for new, old in zip(caches, full.cache):
        new.append(old.k[:, :, :context].clone(), old.v[:, :, :context].clone())  # (B, H, c, D)
    return DecodeState(caches)


def make_case(args, model, pattern: dict, context: int, state: DecodeState, tokens, fill_s: float) -> dict:
    """One timed case: a decode step at position ``context`` feeding the prompt's next token."""
    cfg, caches = model.cfg, state.cache
    elem = caches[0].k.element_size()
    slots = context + 1 if pattern["name"] == "dense" else args.window + 1  # by hand: c + 1, w + 1
    return {"pattern": cfg.attention.label, "context": context, "model": model, "state": state,
            "token": tokens[:, context], "fill_s": fill_s,
            "kv_bytes": held_bytes(state),  # measured: every storage the filled caches hold
            "kv_bytes_by_hand": cfg.n_decoder_layers * 2 * args.batch * cfg.n_heads * slots
            * cfg.head_dim * elem,
            "kv_bytes_analytic": caches[0].policy.cache_bytes(args.batch, cfg.n_heads, cfg.head_dim,
                                                              context + 1, cfg.n_decoder_layers, elem),
            "kv_shape": list(caches[0].k.shape), "samples_ms": []}


def build_cases(args, patterns: list[dict]) -> tuple[list[dict], bool]:
    """Every (pattern, context) case, and whether the dense prefix caches matched a real prefill.
    Dense is filled once, at the largest context; its smaller contexts are prefixes of that fill
    (``prefix_state``). A local ring keeps only the last w + 1 positions, so each of its contexts
    is a fill of its own (O(c w): cheap)."""
    top, low = max(args.contexts), min(args.contexts)
    tokens = prompt(args, top + 1)
    cases = []
    dense = model_of(args, patterns[0], top + 1)
    full, full_s = fill(dense, tokens, top)
    for c in args.contexts:
        state = full if c == top else prefix_state(full, c)
        cases.append(make_case(args, dense, patterns[0], c, state, tokens, full_s if c == top else 0.0))
    for pattern in patterns[1:]:
        model = model_of(args, pattern, top + 1)
        for c in args.contexts:
            state, fill_s = fill(model, tokens, c)
            cases.append(make_case(args, model, pattern, c, state, tokens, fill_s))
    exact = True
    if low != top:  # one prefix against a real prefill of its own: the same next-token logits
        real, _ = fill(dense, tokens, low)
        with torch.no_grad():
            a = decode_step(dense, tokens[:, low], real)
            b = decode_step(dense, tokens[:, low], prefix_state(full, low))
        exact = torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    labels = [case["pattern"] for case in cases[::len(args.contexts)]]  # in the order of patterns
    cases.sort(key=lambda case: (args.contexts.index(case["context"]), labels.index(case["pattern"])))
    return cases, exact


def step(case: dict, sync) -> float:
    t0 = time.perf_counter()
    with torch.no_grad():
        decode_step(case["model"], case["token"], case["state"]).argmax(-1)
    sync()
    ms = (time.perf_counter() - t0) * 1e3
    case["state"].rewind(case["context"])
    return ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contexts", type=int, nargs="+", default=[1024, 4096, 16384])
    ap.add_argument("--window", type=int, default=256, help="local attention's w")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads of the timed steps (1: a decode step's small ops pay "
                         "more in thread barriers than they gain on a shared 2-core machine); the "
                         "prefills that fill the caches use torch's default")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--min-rounds", type=int, default=15)
    ap.add_argument("--min-time-s", type=float, default=10.0)
    ap.add_argument("--min-speedup", type=float, default=4.0)
    ap.add_argument("--quick", action="store_true", help="contexts 256 and 1024, d_model 64, 5 rounds")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.contexts, args.d_model, args.heads, args.layers, args.window = [256, 1024], 64, 2, 2, 32
        args.min_rounds, args.min_time_s, args.warmup, args.min_speedup = 5, 0.0, 1, 1.0
    json_path = args.json or (None if args.quick else ROOT / "benchmarks/results/bench_decode.json")
    sync = (lambda: torch.cuda.synchronize()) if args.device.startswith("cuda") else (lambda: None)

    patterns = [{"name": "dense"}, {"name": "local", "window": args.window}]
    cases, prefix_exact = build_cases(args, patterns)
    torch.set_num_threads(args.threads)
    for _ in range(args.warmup):
        for case in cases:
            step(case, sync)
    t0, rounds = time.perf_counter(), 0
    while rounds < args.min_rounds or time.perf_counter() - t0 < args.min_time_s:
        for case in cases:
            case["samples_ms"].append(step(case, sync))
        rounds += 1

    rows = []
    for case in cases:
        p50 = statistics.median(case["samples_ms"])
        rows.append({k: case[k] for k in ("pattern", "context", "fill_s", "kv_bytes", "kv_bytes_by_hand",
                                          "kv_bytes_analytic", "kv_shape", "samples_ms")}
                    | {"latency_ms_p50": p50, "decode_tokens_per_s": args.batch / (p50 / 1e3)})
    by = {(r["pattern"], r["context"]): r for r in rows}
    dense, local = patterns[0]["name"], f"local_w{args.window}"
    top, low = max(args.contexts), min(args.contexts)
    speedup = by[dense, top]["latency_ms_p50"] / by[local, top]["latency_ms_p50"]
    checks = {
        "measured_equals_by_hand_and_analytic": all(
            r["kv_bytes"] == r["kv_bytes_by_hand"] == r["kv_bytes_analytic"] for r in rows),
        "dense_prefix_caches_exact": prefix_exact,
        "local_bytes_constant": len({by[local, c]["kv_bytes"] for c in args.contexts}) == 1,
        "dense_bytes_linear": all(by[dense, c]["kv_bytes"] * (low + 1) == by[dense, low]["kv_bytes"] * (c + 1)
                                  for c in args.contexts),
        f"local_{args.min_speedup:g}x_faster_at_{top}": speedup >= args.min_speedup,
    }

    print(f"decode step, decoder-only d_model={args.d_model} H={args.heads} layers={args.layers} "
          f"B={args.batch} {args.dtype} on {args.device}, {torch.get_num_threads()} threads, "
          f"{rounds} rounds")
    print("| context | pattern | per-token latency p50 | decode tok/s "
          "| KV bytes (measured = by hand = analytic) | K cache shape | vs dense |")
    print("|---:|---|---:|---:|---:|---|---:|")
    for r in rows:
        ratio = by[dense, r["context"]]["latency_ms_p50"] / r["latency_ms_p50"]
        same = ("=" if r["kv_bytes"] == r["kv_bytes_by_hand"] == r["kv_bytes_analytic"]
                else f"by hand {r['kv_bytes_by_hand']:,}, analytic {r['kv_bytes_analytic']:,}")
        print(f"| {r['context']} | {r['pattern']} | {r['latency_ms_p50']:.3f} ms | "
              f"{r['decode_tokens_per_s']:,.0f} | {r['kv_bytes'] / 2**20:.3f} MiB "
              f"({r['kv_bytes']:,} B {same}) | "
              f"{tuple(r['kv_shape'])} | ×{ratio:.2f} |")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}: {name}" + (f" (×{speedup:.2f})" if "faster" in name else ""))
    if json_path:
        out = {"args": {k: v for k, v in vars(args).items() if k != "json"}, "rounds": rounds,
               "threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows,
               "speedup_at_top": speedup, "checks": checks}
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(out, indent=2, default=str) + "\n")
        print(f"wrote {json_path}")
    if not all(checks.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
