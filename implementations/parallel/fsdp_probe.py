"""Train a tiny decoder-only LM under FSDP2 on every rank, and the same model in one process on
rank 0; rank 0 writes the losses and what each rank held.

    python -m torch.distributed.run --nproc_per_node 2 --master_port P \\
        -m implementations.parallel.fsdp_probe --out result.json

For each ``reshard_after_forward`` setting, every rank builds the same seeded model, shards it
(``FsdpParallel.wrap``), builds AdamW over the shards and takes ``--steps`` steps on batches that
differ by rank (``zero_probe.make_batches``). FSDP averages the gradients over ranks, so with
equal batch sizes each step equals one single-process step on the ranks' batches concatenated:
rank 0 runs that reference from the same seed. Bytes (``state_bytes.fsdp_state_bytes``) are read
at the first step. Output JSON: ``{"world_size", "psi", "shapes", "reference": [losses],
"rows": [{reshard, rank, losses, param_bytes, grad_bytes, optim_bytes, model_state_bytes}]}``.
"""
from __future__ import annotations

import argparse
import json
import os
from types import SimpleNamespace

import torch

from implementations.model import ModelConfig, build_model
from implementations.parallel.fsdp import FsdpParallel, destroy_distributed, init_distributed, train_step
from implementations.parallel.state_bytes import fsdp_grad_bytes, fsdp_state_bytes
from implementations.parallel.zero_probe import make_batches


def _model(args):
    torch.manual_seed(args.seed)
    cfg = ModelConfig.from_preset(args.preset, n_encoder_layers=0, dropout=0.0)
    return cfg, build_model(cfg)


def run_fsdp(args, rank: int, world: int, reshard: bool) -> dict:
    cfg, model = _model(args)
    FsdpParallel(nproc=world, reshard_after_forward=reshard).wrap(model, "fp32", "cpu")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, foreach=True)
    batches = make_batches(rank, args.steps, args.batch, args.seq, cfg.vocab_size)
    grads, losses = [], []
    for i, b in enumerate(batches):
        hook = (lambda: grads.append(fsdp_grad_bytes(model))) if i == 0 else None
        losses.append(train_step(model, optimizer, b, on_grads=hook))
        if i == 0:
            held = fsdp_state_bytes(model, optimizer, grads[0])
    return {"reshard": reshard, "rank": rank, "losses": losses, **held}


def reference(args, world: int) -> list[float]:
    """The single-process run on every rank's batch of each step, concatenated."""
    cfg, model = _model(args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, foreach=True)
    per_rank = [make_batches(r, args.steps, args.batch, args.seq, cfg.vocab_size) for r in range(world)]
    losses = []
    for step in range(args.steps):
        parts = [per_rank[r][step] for r in range(world)]
        batch = SimpleNamespace(tokens=torch.cat([p.tokens for p in parts]),
                                targets=torch.cat([p.targets for p in parts]), key_padding_mask=None,
                                segment_ids=None, position_ids=None)
        losses.append(train_step(model, optimizer, batch))
    return losses


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout-s", type=float, default=60.0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    init_distributed("gloo", args.timeout_s)
    rows = [run_fsdp(args, rank, world, reshard) for reshard in (True, False)]
    gathered: list = [None] * world
    torch.distributed.all_gather_object(gathered, rows)
    if rank == 0:
        _cfg, model = _model(args)
        shapes = [tuple(p.shape) for p in model.parameters()]
        with open(args.out, "w") as f:
            json.dump({"world_size": world, "psi": sum(p.numel() for p in model.parameters()),
                       "shapes": shapes, "reference": reference(args, world),
                       "rows": [row for per_rank in gathered for row in per_rank]}, f, indent=1)
    destroy_distributed()


if __name__ == "__main__":
    main()
