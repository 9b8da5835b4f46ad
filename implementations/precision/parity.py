"""Loss parity: the loss a precision reaches after N training steps, against fp32 from the same start.

    loss_parity(build_fn, batches, precision, steps, device, seed) -> dict

``build_fn()`` builds a fresh ``(model, optimizer)`` (or a bare model; it then gets
``AdamW(lr=1e-3)``). It is called once per run after ``torch.manual_seed(seed)``, so the fp32
reference and the precision under test start from the same weights. Each run trains ``steps``
steps on ``batches`` (cycled) and then evaluates the loss on ``batches[0]`` without gradient,
under the run's own autocast: that is the loss the recipe would report. The model must take
``model(tokens, key_padding_mask=, segment_ids=, position_ids=)`` and offer ``model.loss``.

Parity holds when the relative difference ``|loss - loss_ref| / |loss_ref|`` is at most the
precision's ``parity_rtol`` (fp32 1e-4, tf32 1e-2, amp_fp16 2e-2, amp_bf16 5e-2) and both losses
are finite; otherwise ``loss_parity_ok`` is False: the divergence is recorded, never hidden.
"""
from __future__ import annotations

import math

import torch

from implementations.model import forward_batch

from .fp32 import FP32Precision


def _forward_loss(model, batch, device) -> torch.Tensor:
    b = batch.to(device)
    return model.loss(forward_batch(model, b, enc_dec=False), b.targets)


def train_and_eval(build_fn, batches, precision, steps: int, device, seed: int) -> tuple[float, int]:
    """(loss on batches[0] after ``steps`` steps, number of steps skipped on overflow)."""
    torch.manual_seed(seed)
    built = build_fn()
    model, optimizer = built if isinstance(built, tuple) else (built, None)
    model = model.to(device)
    if optimizer is None:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    precision.setup(str(device))
    try:
        scaler = precision.make_scaler(str(device))
        skipped = 0
        model.train()
        for step in range(steps):
            with precision.autocast(str(device)):
                loss = _forward_loss(model, batches[step % len(batches)], device)
            skipped += bool(precision.backward_step(loss, optimizer, scaler))
        model.eval()
        with torch.no_grad(), precision.autocast(str(device)):
            final = float(_forward_loss(model, batches[0], device).float())
    finally:
        precision.teardown()
    return final, skipped


def loss_parity(build_fn, batches, precision, steps: int, device, seed: int) -> dict:
    """Loss after ``steps`` steps under ``precision`` vs fp32; keys match the result record."""
    if not batches:
        raise ValueError("batches: got an empty list; allowed: at least one Batch")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps: got {steps!r}; allowed: an int >= 0")
    ref, _ = train_and_eval(build_fn, batches, FP32Precision(), steps, device, seed)
    if isinstance(precision, FP32Precision):
        loss, skipped = ref, 0  # the same computation: deterministic given the seed
    else:
        loss, skipped = train_and_eval(build_fn, batches, precision, steps, device, seed)
    finite = math.isfinite(loss) and math.isfinite(ref)
    rel = abs(loss - ref) / max(abs(ref), 1e-12) if finite else math.inf
    return {
        "loss_final": loss if math.isfinite(loss) else None,
        "loss_ref_fp32": ref if math.isfinite(ref) else None,
        "loss_parity_rel_diff": rel if finite else None,
        "loss_parity_ok": bool(finite and rel <= precision.parity_rtol),
        "amp_skipped_steps": skipped,
    }
