"""Train a tiny decoder-only LM under ZeRO stages on every rank; rank 0 writes what each held.

    python -m torch.distributed.run --nproc_per_node 2 --master_port P \\
        -m implementations.parallel.zero_probe --stages 0 1 2 3 --out result.json

Each stage builds the same seeded model and Adam optimizer, wraps them in a fresh DeepSpeed engine
and takes ``--steps`` optimizer steps on rank-dependent batches (real data parallelism: the engine
averages gradients over ranks). The last step is measured (``state_bytes.measure_step``).
Output JSON: ``{"world_size", "psi", "precision", "rows": [{stage, rank, psi, tensors, losses,
param_bytes, grad_bytes, optim_bytes, model_state_bytes, mem_peak_bytes}, ...]}``.
Peak RSS is per process, so it only separates stages when each stage has its own launch.
"""
from __future__ import annotations

import argparse
import json
import os
from types import SimpleNamespace

import torch

from implementations.model import ModelConfig, build_model
from implementations.parallel.state_bytes import measure_step, peak_memory_bytes
from implementations.parallel.zero import (
    ZeroParallel,
    destroy_distributed,
    init_distributed,
    train_step,
)


def make_batches(rank: int, n: int, batch: int, seq: int, vocab: int) -> list[SimpleNamespace]:
    """Next-token batches, different on every rank (seeded by rank)."""
    gen = torch.Generator().manual_seed(1000 + rank)
    out = []
    for _ in range(n):
        seqs = torch.randint(3, vocab, (batch, seq + 1), generator=gen)
        out.append(SimpleNamespace(tokens=seqs[:, :-1], targets=seqs[:, 1:], key_padding_mask=None,
                                   segment_ids=None, position_ids=None))
    return out


def run_stage(strategy: ZeroParallel, args, rank: int) -> dict:
    torch.manual_seed(args.seed)
    cfg = ModelConfig.from_preset(args.preset, n_encoder_layers=0, dropout=0.0)
    model = build_model(cfg)
    psi = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    engine = strategy.wrap(model, optimizer, args.precision, args.batch)
    batches = make_batches(rank, args.steps, args.batch, args.seq, cfg.vocab_size)
    losses = [train_step(engine, b) for b in batches[:-1]]
    loss, held = measure_step(engine, lambda: train_step(engine, batches[-1]))
    engine.destroy()
    return {"stage": strategy.stage, "rank": rank, "psi": psi, "tensors": len(list(model.parameters())),
            "losses": losses + [loss], **held,
            "mem_peak_bytes": peak_memory_bytes("cpu")}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--offload-optimizer", action="store_true")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "amp_bf16"])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout-s", type=float, default=60.0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    init_distributed("gloo", args.timeout_s)
    rows = []
    for stage in args.stages:
        strategy = ZeroParallel(stage=stage, offload_optimizer=args.offload_optimizer, nproc=world,
                                timeout_s=args.timeout_s)
        rows.append(run_stage(strategy, args, rank))
    gathered: list = [None] * world
    torch.distributed.all_gather_object(gathered, rows)
    if rank == 0:
        flat = [row for per_rank in gathered for row in per_rank]
        with open(args.out, "w") as f:
            json.dump({"world_size": world, "psi": flat[0]["psi"], "precision": args.precision,
                       "offload_optimizer": args.offload_optimizer, "rows": flat}, f, indent=1)
    destroy_distributed()  # no gloo thread may outlive the interpreter (see its docstring)


if __name__ == "__main__":
    main()
