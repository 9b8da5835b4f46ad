"""Unstructured magnitude pruning, run with dense kernels or as a sparse CSR matmul."""
from __future__ import annotations

import warnings
from typing import Literal

import torch
import torch.nn as nn
from pydantic import Field

from implementations.registry import register

from .base import CompressionStrategy, compressible


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Bool mask keeping the ``round((1 - sparsity) * numel)`` entries of largest magnitude."""
    keep = max(1, round((1.0 - sparsity) * weight.numel()))
    top = weight.abs().flatten().topk(keep).indices
    return torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device).index_fill_(
        0, top, True).view_as(weight)


class CsrLinear(nn.Module):
    """``y = x W^T + b`` with ``W (out, in)`` held as a sparse CSR tensor (int32 indices: 8 bytes
    per kept fp32 weight, so the format saves memory only above 50% sparsity) and multiplied
    with ``torch.sparse.mm`` (MKL on CPU, cuSPARSE on CUDA)."""

    def __init__(self, linear: nn.Linear, mask: torch.Tensor):
        super().__init__()
        with warnings.catch_warnings():  # "sparse CSR support is in beta": known, said above
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            w = (linear.weight.detach() * mask).to_sparse_csr()
            self.register_buffer("weight", torch.sparse_csr_tensor(
                w.crow_indices().int(), w.col_indices().int(), w.values(), w.shape,
                check_invariants=True))
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape  # (.., in)
        flat = x.reshape(-1, shape[-1]).to(self.weight.dtype)  # (N, in)
        y = torch.sparse.mm(self.weight, flat.t()).t()  # (N, out)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], y.shape[-1]).to(x.dtype)


@register("compression", "magnitude")
class MagnitudeCompression(CompressionStrategy):
    """Each Linear keeps its ``1 - sparsity`` largest-magnitude weights (per layer, no
    retraining) and zeroes the rest. ``format: dense`` keeps the zeros in the dense weight and
    the dense kernels (the same FLOPs and bytes: it can only show the quality cost);
    ``format: csr`` stores the kept weights as sparse CSR and multiplies with
    ``torch.sparse.mm``, on CPU and CUDA: whether that saves time or memory at this sparsity is
    what the point measures (CSR needs 8 bytes per kept fp32 weight)."""

    sparsity: float = Field(0.5, gt=0, lt=1, description="fraction of each Linear's weights set to zero")
    format: Literal["dense", "csr"] = Field("dense", description="dense: zeros in the dense weight; "
                                                                 "csr: sparse CSR matmul")

    @property
    def label(self) -> str:
        return f"magnitude_s{round(self.sparsity * 100)}" + ("_csr" if self.format == "csr" else "")

    def compress(self, model, device: str, precision) -> None:
        parents = dict(model.named_modules())
        for name, linear in compressible(model):
            mask = magnitude_mask(linear.weight.detach(), self.sparsity)
            if self.format == "dense":
                with torch.no_grad():
                    linear.weight.mul_(mask)
                continue
            parent, _, child = name.rpartition(".")
            setattr(parents[parent] if parent else model, child, CsrLinear(linear, mask))
