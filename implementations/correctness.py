"""Does a configuration compute what its reference computes? One float64 training step of a
model against its reference twin.

    twin_check(cfg, memory, ops, batch, seed, rtol=RTOL) -> {check_ok, check_loss_rel_diff,
                                                             check_grad_rel_diff, check_reference}

The *twin* is the same model (the same weights, copied) with every choice that must not change
the result set to its plain form: the ops path ``eager`` (textbook matmul-softmax-matmul, module
by module), no activation checkpointing, and the attention pattern computed by the one
``S x S`` mask of its own rule (``kernel.masked_attention`` on ``dense_mask``: the path the
registry's contract tests hold against a float64 reference) instead of the pattern's kernel --
whatever that kernel does, even a subclass that overrides ``attend``. Both run one forward,
loss and backward in float64 on the same batch; the check passes when the loss and the
gradient of every parameter agree within ``rtol`` (relative: ``|a - b| / |b|``, the gradients as
one vector). Measured on tiny models: fused SDPA and checkpointed paths agree with the twin
to ~1e-7 in the gradients (the CPU's fused kernels), eager paths to ~1e-16. A kernel that skips work, a checkpointing wrapper that drops a gradient or a fused
path that differs shows up as an O(1) difference; float64 rounding is ~1e-12.

What it cannot check, said in ``check_reference``: a pattern with no positional rule (topk picks
keys by score, linformer attends to projected keys) is its own reference, so only the ops and
checkpointing axes are checked for it; precision is not (the twin runs float64): loss parity
against fp32 (``workload.parity_steps``) is that check.
"""
from __future__ import annotations

import torch

from implementations.attention import kernel

RTOL = 1e-6


class MaskReference:
    """An attention pattern computed by its own rule's ``S x S`` mask, eagerly (the contract
    tests' path); every other attribute is the pattern's."""

    def __init__(self, pattern):
        self.pattern = pattern

    def __getattr__(self, name):
        return getattr(self.pattern, name)

    def in_self_attention(self, causal: bool):
        inner = self.pattern.in_self_attention(causal)
        return self if inner is self.pattern else MaskReference(inner)

    def attend(self, q, k, v, *, causal: bool, key_padding_mask=None, segment_ids=None,
               q_offset: int = 0, ops: str = "eager", weights=None) -> torch.Tensor:
        return kernel.masked_attention(self.pattern, q, k, v, bool(causal), key_padding_mask,
                                       segment_ids, q_offset, "eager")


def has_rule(pattern, S: int) -> bool:
    """Whether the pattern's keys follow a positional rule a mask can express: not for one that
    owns projections (linformer) or picks keys by score (topk)."""
    return pattern.make_weights(max(S, 1)) is None and (
        pattern.scored_pairs(S, False) == pattern.allowed_pairs(S, False))


def reference_of(cfg, S: int):
    """(the twin's config, what the twin's attention is, in words)."""
    pattern = cfg.attention
    if has_rule(pattern, S):
        return cfg.with_strategies(MaskReference(pattern), "eager"), "its rule's mask, eager"
    return (cfg.with_strategies(pattern, "eager"),
            f"{pattern.pattern_label} itself, eager (no positional rule: its kernel is not checked)")


def _step(model, cfg, batch, run=None):
    loss = cfg.batch_loss(model, cfg.run_batch(run or model, batch), batch)
    loss.backward()
    grads = [p.grad.detach().reshape(-1) if p.grad is not None else torch.zeros(p.numel(), dtype=p.dtype)
             for p in model.parameters()]
    return float(loss.detach()), torch.cat(grads)


def rel_diff(a: torch.Tensor | float, b: torch.Tensor | float) -> float:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    scale = float(b.norm())
    return float((a - b).norm()) / scale if scale > 0 else float((a - b).norm())


def twin_check(cfg, memory, ops, batch, seed: int, rtol: float = RTOL) -> dict:
    """The point's model (``cfg`` with its attention and ops path, ``memory`` applied, run
    through ``ops.prepare``) against its twin, one float64 training step on ``batch``."""
    S = int(batch.tokens.shape[-1])
    twin_cfg, reference = reference_of(cfg, S)
    torch.manual_seed(seed)
    model = cfg.build().double().train()
    twin = twin_cfg.build().double().train()
    twin.load_state_dict(model.state_dict())
    if memory is not None:
        memory.apply(model)
    loss, grads = _step(model, cfg, batch, ops.prepare(model))
    twin_loss, twin_grads = _step(twin, twin_cfg, batch)
    loss_diff, grad_diff = rel_diff(loss, twin_loss), rel_diff(grads, twin_grads)
    ok = loss_diff <= rtol and grad_diff <= rtol
    return {"check_ok": ok, "check_loss_rel_diff": loss_diff, "check_grad_rel_diff": grad_diff,
            "check_reference": reference, "check_rtol": rtol}
