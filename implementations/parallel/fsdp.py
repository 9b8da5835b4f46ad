"""fsdp: PyTorch's fully sharded data parallelism (FSDP2, ``torch.distributed.fsdp.fully_shard``).

Each of ``nproc`` ranks is a process started by torchrun (``launch_command``, as for ZeRO);
every rank builds the same seeded model, then ``wrap`` shards it: ``fully_shard`` on every
Transformer block (encoder and decoder), then on the root (embedding / tied LM head, norms).
Each parameter is split along dim 0 into N chunks (``torch.chunk``: rank r keeps chunk r, the
last ones possibly shorter) and held as a DTensor; the optimizer, built after ``wrap`` over
those shards, keeps its states for the local chunk only. So per rank, in fp32 with AdamW:

    params 4 psi / N  +  grads 4 psi / N  +  m, v 8 psi / N  =  16 psi / N   (ZeRO-3's layout,
    without DeepSpeed's separate fp32 master: FSDP2 in fp32 steps the sharded params directly)

In the forward, a block's parameters are all-gathered just before it runs and, with
``reshard_after_forward`` (default), freed right after (gathered again for the backward: ZeRO-3's
behaviour); off, they stay gathered until the backward (more memory, one all-gather less, like
ZeRO-2). Precision: ``amp_bf16`` becomes a ``MixedPrecisionPolicy`` (bf16 compute copies,
fp32 gradient reduction, fp32 sharded master), so the worker adds no autocast on top;
``amp_fp16`` would need a sharded loss scaler and is refused. ``cpu_offload`` keeps the sharded
parameters, gradients and optimizer states in host memory (``CPUOffloadPolicy``; GPU points only:
a CPU point holds them there already). Collectives: gloo on CPU, NCCL on GPU.
"""
from __future__ import annotations

import atexit
from typing import Literal

from pydantic import Field

from implementations.parallel.base import TorchrunParallel, destroy_process_groups, init_process_group
from implementations.regions import region
from implementations.registry import Context, RANKS_CAP, TIMEOUT_CAP_S, register

_PRECISIONS = ("fp32", "tf32", "amp_bf16")


@register("parallel", "fsdp")
class FsdpParallel(TorchrunParallel):
    """PyTorch FSDP2 (fully_shard) over nproc ranks launched by torchrun (gloo on CPU, NCCL on GPU)."""

    nproc: int = Field(2, ge=1, le=RANKS_CAP, description="data-parallel ranks (processes), launched through torchrun")
    reshard_after_forward: bool = Field(True, description="free each block's gathered parameters "
                                                          "after its forward (ZeRO-3-like); off: "
                                                          "keep them until the backward")
    cpu_offload: bool = Field(False, description="keep sharded parameters, gradients and optimizer "
                                                 "states in host memory (GPU only)")
    backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="collective backend: auto (nccl on cuda, gloo on cpu), gloo, nccl")
    timeout_s: float = Field(120.0, gt=0, le=TIMEOUT_CAP_S, description="collective timeout; below the point timeout so "
                                                      "a hang errors")

    @property
    def label(self) -> str:
        extra = "" if self.reshard_after_forward else "_noreshard"
        extra += "_offload" if self.cpu_offload else ""
        return f"fsdp{extra}_n{self.nproc}"

    def not_supported_reasons(self, ctx: Context) -> list[str]:
        reasons = []
        if self.nproc > ctx.max_nproc:
            reasons.append(f"needs {self.nproc} ranks, this machine hosts {ctx.max_nproc}")
        if ctx.workload != "train":
            reasons.append(f"FSDP shards training state; workload {ctx.workload!r} is not train")
        if ctx.precision not in _PRECISIONS:
            reasons.append(f"precision {ctx.precision!r}: FSDP here maps {', '.join(_PRECISIONS)} "
                           "(fp16 needs a sharded loss scaler)")
        if ctx.device == "cpu" and self.cpu_offload:
            reasons.append("cpu_offload moves GPU-resident shards to the host; a CPU point has them "
                           "there already")
        if ctx.device == "cpu" and self.backend == "nccl":
            reasons.append("backend nccl needs GPUs; use gloo (or auto) on CPU")
        return reasons

    def resolved_backend(self, device: str) -> str:
        if self.backend != "auto":
            return self.backend
        return "nccl" if device == "cuda" else "gloo"

    def mixed_precision(self, precision_label: str):
        """The ``MixedPrecisionPolicy`` of the precision axis (None: plain fp32 / tf32)."""
        if precision_label != "amp_bf16":
            return None
        import torch
        from torch.distributed.fsdp import MixedPrecisionPolicy

        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)

    def wrap(self, model, precision_label: str, device: str):
        """Shard ``model`` in place (blocks, then the root); the optimizer is built after."""
        from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

        kwargs = {"reshard_after_forward": self.reshard_after_forward}
        policy = self.mixed_precision(precision_label)
        if policy is not None:
            kwargs["mp_policy"] = policy
        if self.cpu_offload:
            kwargs["offload_policy"] = CPUOffloadPolicy()
        for stack in ("encoder", "decoder"):
            for block in getattr(model, stack, None) or []:
                fully_shard(block, **kwargs)
        fully_shard(model, **kwargs)
        return model


def init_distributed(backend: str, timeout_s: float) -> None:
    """Join torchrun's process group; destroyed at exit (no gloo thread may outlive the
    interpreter: ``implementations.parallel.zero.destroy_distributed`` says why)."""
    init_process_group(backend, timeout_s)
    atexit.register(destroy_distributed)


destroy_distributed = destroy_process_groups


def train_step(model, optimizer, batch, enc_dec: bool = False, on_grads=None) -> float:
    """One optimizer step of a sharded model on a padding-axis ``Batch``; the loss on this
    rank's batch. ``on_grads()`` is called after the backward, while the gradient shards exist."""
    from implementations.model import forward_batch

    logits = forward_batch(model, batch, enc_dec)  # (B, S, V)
    loss = model.loss(logits.float(), batch.targets)
    with region("backward"):
        loss.backward()  # reduce-scatters gradient shards
    if on_grads is not None:
        on_grads()
    with region("optimizer"):
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return loss.item()
