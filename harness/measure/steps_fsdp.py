"""The train step of an FSDP2 ("fsdp") point, one rank of it.

Input: a resolved ``Point`` whose parallel strategy is ``implementations.parallel.fsdp``, the
built model, the point's batches and this rank's device; torchrun set RANK / WORLD_SIZE /
MASTER_*. The process group is joined with the strategy's backend and collective timeout, the
model sharded (``FsdpParallel.wrap``: every block, then the root), and the ops axis's AdamW
built over the shards. Output: a ``Workload`` whose ``step()`` is forward, loss, backward
(gradient reduce-scatter), optimizer step (precision: FSDP's mixed-precision policy, no
autocast on top). Counts are per rank, as for ZeRO points. ``finish()`` fills
``extra["rank_metrics"]``: {rank, mem_peak_bytes, param_bytes, grad_bytes, optim_bytes,
model_state_bytes}, read around the first step (gradients after its backward).
"""
from __future__ import annotations

import os

from harness.measure.workload import LR, Workload, rank_workload
from implementations.parallel.fsdp import init_distributed, train_step
from implementations.parallel.state_bytes import fsdp_grad_bytes, fsdp_state_bytes


def train_fsdp(point, cfg, model, batches, device: str) -> Workload:
    s = point.strategies
    rank = int(os.environ.get("RANK", "0"))
    init_distributed(s.parallel.resolved_backend(point.device), s.parallel.timeout_s)
    model.train()
    s.parallel.wrap(model, s.precision.label, device)
    optimizer = s.ops.make_optimizer(model.parameters(), LR)
    ed = cfg.is_encoder_decoder

    def first(batch):  # the state bytes, gradients read after the first backward
        grads = []
        loss = train_step(model, optimizer, batch, ed, on_grads=lambda: grads.append(fsdp_grad_bytes(model)))
        return loss, fsdp_state_bytes(model, optimizer, grads[0])

    return rank_workload(cfg, batches, rank, device, first=first,
                         later=lambda b: train_step(model, optimizer, b, ed), skipped=lambda: 0)
