"""What every activation-checkpointing policy shares: which modules it checkpoints, how, and
what that costs in recomputed FLOPs.

A checkpointed module keeps only its inputs for the backward pass; its forward runs again inside
the backward (``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``), with the RNG
state of the first run (dropout draws the same mask), so loss and gradients equal those of no
checkpointing exactly in fp64. What a policy may checkpoint, per layer of a stack:

    block      the whole Transformer layer (self-attention, cross-attention, FFN, norms)
    attention  the self- and cross-attention sub-layers' attention modules (projections included)
    ffn        the position-wise FFN

The wrapping replaces the module instance's ``forward`` (parameter names and hooks unchanged,
so ZeRO, FSDP and ``torch.compile`` see the same module tree). Under ``no_grad`` (forward,
generate) nothing is saved and the module runs plainly.
"""
from __future__ import annotations

import functools

from implementations.registry import Context, Strategy

PARTS = ("block", "attention", "ffn")
# flops_breakdown keys of one stack's layer parts (implementations.flops)
_FLOP_KEYS = {"attention": ("self_attn.proj", "self_attn.scores", "cross_attn.proj", "cross_attn.scores"),
              "ffn": ("ffn",)}


class MemoryStrategy(Strategy):
    """Base of the memory axis: ``parts(layer, n_layers)`` is the policy; the rest follows."""

    recomputes = True  # False for none: nothing is run twice in the backward

    def parts(self, layer: int, n_layers: int) -> frozenset[str]:
        """The parts of layer ``layer`` (0-based, of a stack of ``n_layers``) checkpointed."""
        return frozenset()

    def not_supported_reasons(self, ctx: Context) -> list[str]:
        if self.recomputes and ctx.workload != "train":
            return [f"activation checkpointing saves training activations; workload "
                    f"{ctx.workload!r} keeps none (no_grad)"]
        return []

    def apply(self, model) -> int:
        """Checkpoint the chosen modules of every stack of ``model``; the number wrapped."""
        wrapped = 0
        for stack in ("encoder", "decoder"):
            blocks = list(getattr(model, stack, None) or [])
            for i, block in enumerate(blocks):
                parts = self.parts(i, len(blocks))
                targets = [block] if "block" in parts else []
                if "block" not in parts and "attention" in parts:
                    targets += [m for m in (block.self_attn, block.cross_attn) if m is not None]
                if "block" not in parts and "ffn" in parts:
                    targets.append(block.ffn)
                for module in targets:
                    wrapped += _checkpoint_forward(module)
        return wrapped

    def recompute_flops(self, cfg, breakdown: dict[str, int]) -> int:
        """Forward FLOPs run again in the backward of one training step, from the model's
        forward ``breakdown`` (``implementations.flops.flops_breakdown``; per stack, summed
        over its layers, each layer alike).

        Non-reentrant checkpointing stops a recomputation as soon as every tensor the backward
        needs is back (PyTorch's default early stop), so a region's trailing products whose
        outputs nothing in the region saves are not run again: the attention module's output
        projection ``W_o`` (one of its 4 self-attention products; of cross-attention's, the
        target-side ``W_o``), the FFN's second layer ``fc2`` (half the FFN), and in a whole
        pre-norm block without dropout its ``fc2`` too (the block ends in a residual add; a
        post-norm block ends in a LayerNorm, which saves its input, and dropout saves a mask).
        ``tests/implementations/test_checkpointing.py`` checks the total against ``torch.utils.flop_counter``."""
        total = 0
        for stack, n in (("encoder", cfg.n_encoder_layers), ("decoder", cfg.n_decoder_layers)):
            if not n:
                continue
            per = {k.split(".", 1)[1]: v // n for k, v in breakdown.items() if k.startswith(stack + ".")}
            w_o = _w_o(cfg, per.get("self_attn.proj", 0))
            cross_w_o = per.get("cross_attn.proj", 0) - _cross_memory_side(cfg, breakdown, stack, n)
            cross_w_o //= 2  # W_q and W_o on the target side, alike
            attention = sum(per.get(k, 0) for k in _FLOP_KEYS["attention"])
            ffn = per.get("ffn", 0)
            for i in range(n):
                parts = self.parts(i, n)
                if "block" in parts:
                    ends_in_fc2 = cfg.norm == "pre" and cfg.dropout == 0
                    total += attention + ffn - (ffn // 2 if ends_in_fc2 else 0)
                    continue
                if "attention" in parts:
                    total += attention - w_o - (cross_w_o if per.get("cross_attn.proj") else 0)
                if "ffn" in parts:
                    total += ffn - ffn // 2
        return total


def _w_o(cfg, self_proj: int) -> int:
    """``W_o``'s share of a layer's self-attention projections: ``W_q`` and ``W_o`` are C x C,
    ``W_k`` and ``W_v`` C x C_kv (GQA: ``C_kv = n_kv_heads * head_dim``; MHA: a quarter)."""
    C = cfg.d_model
    return self_proj * C // (2 * (C + cfg.kv_heads * cfg.head_dim))


def _cross_memory_side(cfg, breakdown: dict[str, int], stack: str, n: int) -> int:
    """Per layer, the cross-attention products on the memory side (W_k, W_v over the source):
    ``cross_attn.proj`` less the target side, which has the self-attention's token count."""
    if stack != "decoder" or not breakdown.get("decoder.cross_attn.proj"):
        return 0
    target_one = _w_o(cfg, breakdown["decoder.self_attn.proj"] // n)  # one C x C on the target
    return breakdown["decoder.cross_attn.proj"] // n - 2 * target_one


def _checkpoint_forward(module) -> int:
    """Make ``module`` run under non-reentrant checkpointing when gradients are on; 0 if it
    already does."""
    if getattr(module, "_tbench_checkpointed", False):
        return 0
    import torch
    from torch.utils.checkpoint import checkpoint

    forward = module.forward

    @functools.wraps(forward)
    def checkpointed(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    module.forward = checkpointed
    module._tbench_checkpointed = True
    return 1
