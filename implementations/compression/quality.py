"""What compression costs in quality and saves in bytes, on the point's own batches.

    outputs(model, batches, enc_dec, autocast) -> [(logits (B, S', V) fp32 on the CPU, loss)]
    quality_cost(reference, compressed) -> {compression_logits_rel_diff, compression_loss_rel_diff}
    weight_bytes(model) -> int

``compression_logits_rel_diff`` is ``||L_c - L||_F / ||L||_F`` over the logits of every batch
(every position, or every k-th when a batch's logits exceed ``MAX_KEPT_LOGITS`` values: both
sides keep the same positions);
``compression_loss_rel_diff`` is ``|loss_c - loss| / loss`` of the mean cross-entropy over the
batches' targets (as loss parity does for precision). ``weight_bytes`` counts each parameter and
persistent buffer once (a tied weight once): a torchao or semi-structured tensor by the bytes of
the tensors it holds (int8 data, scales, zero points, sparse metadata), a CSR tensor by its
values and indices.
"""
from __future__ import annotations

import torch

from implementations.model import forward_batch

MAX_KEPT_LOGITS = 2**25  # values of one batch's logits kept for the comparison (128 MiB fp32)


def outputs(model, batches, enc_dec: bool, autocast) -> list[tuple[torch.Tensor, float]]:
    """Logits and loss of each batch, without gradients, under ``autocast`` (a context factory)."""
    out = []
    with torch.no_grad():
        for batch in batches:
            with autocast():
                logits = forward_batch(model, batch, enc_dec)  # (B, S, V)
            B, S, V = logits.shape
            step = -(-B * S * V // MAX_KEPT_LOGITS)  # keep every step-th position
            out.append((logits[:, ::step].float().cpu(), float(model.loss(logits, batch.targets))))
    return out


def quality_cost(reference, compressed) -> dict[str, float]:
    num = sum(float((c[0] - r[0]).pow(2).sum()) for r, c in zip(reference, compressed))
    den = sum(float(r[0].pow(2).sum()) for r in reference)
    loss_r = sum(r[1] for r in reference) / len(reference)
    loss_c = sum(c[1] for c in compressed) / len(compressed)
    return {"compression_logits_rel_diff": (num / den) ** 0.5 if den else None,
            "compression_loss_rel_diff": abs(loss_c - loss_r) / abs(loss_r) if loss_r else None}


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor holds: a wrapper subclass by its inner tensors, sparse CSR by its parts."""
    if t.layout == torch.sparse_csr:
        return sum(tensor_bytes(p) for p in (t.crow_indices(), t.col_indices(), t.values()))
    if hasattr(t, "__tensor_flatten__") and type(t) not in (torch.Tensor, torch.nn.Parameter):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names if getattr(t, n) is not None)
    return t.numel() * t.element_size()


def weight_bytes(model) -> int:
    seen, total = set(), 0
    for t in list(model.parameters()) + [b for _, b in model.named_buffers()
                                         if b.layout == torch.sparse_csr]:
        if id(t) not in seen:
            seen.add(id(t))
            total += tensor_bytes(t)
    return total
