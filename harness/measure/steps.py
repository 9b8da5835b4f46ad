"""Build the measured work of one point: model, data, precision, optimizer and ``step()``.

Input: a resolved ``Point`` and the torch device string it runs on ("cpu", "cuda:<i>").
Output: ``build(point, device) -> Workload`` (``harness.measure.workload``) whose ``step()`` is one
unit of measured work: ``train`` = forward + loss + backward + optimizer step (a DeepSpeed
engine step for parallel points, ``harness.measure.steps_parallel``); ``forward`` = inference
forward under ``no_grad``; ``prefill``, ``decode`` and ``generate`` (greedy decode of
``workload.new_tokens`` tokens with the KV cache) are built by ``harness.measure.steps_inference``.
Batches cycle through ``workload.num_batches``. Before an inference step is built, the
compression strategy rewrites the model (its quality cost and weight bytes go to ``wl.extra``,
and from there into the record). The model comes from the point's model source
(``workload.model_config``: tbench's Transformer, a transformers model, an nn.Module factory),
which also runs a batch through it and says how its FLOPs were counted (``flops_method`` in
``wl.extra``: ``analytic`` or ``flop_counter``).
"""
from __future__ import annotations

import torch

from harness.measure.steps_inference import compress, decode_workload, generate_workload, prefill_workload
from harness.measure.steps_parallel import train_parallel
from harness.measure.workload import (
    LR,
    Workload,
    cycle,
    make_batches,
    mean_flops,
    model_config,
)
from implementations.flops import (
    forward_flops,
    palm_forward_flops,
    palm_train_step_flops,
    train_step_flops,
)

PALM_FLOPS = {"train": palm_train_step_flops, "forward": palm_forward_flops,
              "prefill": palm_forward_flops}  # decoding has no published convention to meet


def build(point, device: str) -> Workload:
    """Everything the point measures, built from the seeded state the worker set up."""
    cfg = model_config(point)
    batches, n_seq = make_batches(point, cfg, device)
    point.strategies.precision.setup(device)
    model = cfg.build().to(device)
    kind = point.workload.kind
    compressed = {} if kind == "train" else compress(point, cfg, model, batches, device)
    builders = {"train": _train, "forward": _forward, "generate": generate_workload,
                "prefill": prefill_workload, "decode": decode_workload}
    if kind != "train":
        model.eval()
    wl = builders[kind](point, cfg, model, batches, device)
    wl.extra.update(compressed)
    wl.extra["flops_method"] = cfg.flops_method
    if wl.flops is not None and kind in PALM_FLOPS:
        wl.flops_palm = mean_flops(PALM_FLOPS[kind], cfg, batches)
    wl.model, wl.cfg = model, cfg
    wl.close = point.strategies.precision.teardown
    wl.batches_per_cycle = 1 if kind == "decode" else len(batches)
    if kind not in ("generate", "decode"):
        wl.sequences = n_seq / len(batches)
        wl.real_tokens = sum(b.real_tokens for b in batches) / len(batches)
        wl.processed_tokens = sum(b.processed_tokens for b in batches) / len(batches)
    return wl


def _train(point, cfg, model, batches, device) -> Workload:
    s = point.strategies
    if s.parallel.distributed:
        return train_parallel(point, cfg, model, batches, device)
    model.train()
    optimizer = s.ops.make_optimizer(model.parameters(), LR)
    scaler = s.precision.make_scaler(device)
    run = s.ops.prepare(model)
    next_batch = cycle(batches)
    state = {"loss": None, "skipped": 0}

    def step():
        batch = next_batch()
        with s.precision.autocast(device):
            loss = cfg.batch_loss(model, cfg.run_batch(run, batch), batch)
        state["skipped"] += bool(s.precision.backward_step(loss, optimizer, scaler))
        state["loss"] = loss.detach()

    def finish() -> dict:
        loss = state["loss"]
        return {"loss_final": None if loss is None else float(loss.float()),
                "amp_skipped_steps": state["skipped"]}

    return Workload(step, 0, 0, 0, mean_flops(train_step_flops, cfg, batches), finish=finish)


def _forward(point, cfg, model, batches, device) -> Workload:
    s = point.strategies
    model.eval()
    run = s.ops.prepare(model)
    next_batch = cycle(batches)

    def step():
        with torch.no_grad(), s.precision.autocast(device):
            cfg.run_batch(run, next_batch())

    return Workload(step, 0, 0, 0, mean_flops(forward_flops, cfg, batches))
