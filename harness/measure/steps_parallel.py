"""The train step of a DeepSpeed ("zero") point, one rank of it.

Input: a resolved ``Point`` whose parallel strategy has ``wrap`` (implementations.parallel),
the built model, the point's batches and this rank's device. torchrun set RANK / WORLD_SIZE /
LOCAL_RANK / MASTER_*; the process group is joined here with the strategy's backend
(``auto``: NCCL on GPU, gloo on CPU) and its collective timeout (below the point timeout, so a
hung collective becomes an error instead of a hang). The groups are destroyed when the rank exits,
after its result file is written (``zero.destroy_distributed``, registered by ``init_distributed``:
no gloo thread may outlive the interpreter). DeepSpeed's C++ extensions are loaded from the folder the
runner names (TORCH_EXTENSIONS_DIR), built before the first point (``harness.run.extensions``).
Output: a ``Workload`` whose ``step()`` is one engine step (forward, loss, ``engine.backward``,
``engine.step``); precision is DeepSpeed's own (no autocast / GradScaler on top). Counts are
per rank (each rank processes ``batch_size`` sequences per step). ``finish()`` fills
``extra["rank_metrics"]``: {rank, mem_peak_bytes, param_bytes, grad_bytes, optim_bytes,
model_state_bytes}, the model-state bytes read around the first step (gradients at their peak).
"""
from __future__ import annotations

import functools
import os

from harness.measure.workload import LR, rank_workload
from implementations.parallel.fsdp import FsdpParallel
from implementations.parallel.state_bytes import measure_step
from implementations.parallel.zero import ZeroParallel, init_distributed, train_step


def train_parallel(point, cfg, model, batches, device: str):
    """One rank's training ``Workload``, by the type of the point's parallel strategy."""
    return rank_train(point.strategies.parallel, point, cfg, model, batches, device)


@functools.singledispatch
def rank_train(strategy, point, cfg, model, batches, device: str):
    raise NotImplementedError(f"no multi-rank train step for parallel strategy {strategy.label}")


@rank_train.register
def _fsdp(strategy: FsdpParallel, point, cfg, model, batches, device: str):
    from harness.measure.steps_fsdp import train_fsdp  # PyTorch FSDP2, not a DeepSpeed engine

    return train_fsdp(point, cfg, model, batches, device)


@rank_train.register
def _zero(strategy: ZeroParallel, point, cfg, model, batches, device: str):
    s = point.strategies
    rank = int(os.environ.get("RANK", "0"))
    init_distributed(s.parallel.resolved_backend(point.device), s.parallel.timeout_s)
    model.train()
    optimizer = s.ops.make_optimizer(model.parameters(), LR)
    engine = s.parallel.wrap(model, optimizer, s.precision.label, point.workload.batch_size)
    ed = cfg.is_encoder_decoder
    # DeepSpeed's fp16 loss scaler skips a step on overflow (and a skipped step is faster)
    return rank_workload(cfg, batches, rank, device,
                         first=lambda b: measure_step(engine, lambda: train_step(engine, b, ed)),
                         later=lambda b: train_step(engine, b, ed),
                         skipped=lambda: int(engine.skipped_steps))

