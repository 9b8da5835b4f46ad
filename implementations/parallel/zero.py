"""zero: DeepSpeed ZeRO data parallelism, stages 0-3, optionally offloading to CPU.

Each of ``nproc`` ranks is a process started by torchrun (``launch_command``); every rank builds
the same model and optimizer, then ``wrap`` hands both to ``deepspeed.initialize`` with a config
generated from the strategy (``deepspeed_config``), never written by hand. What each stage
partitions across the N ranks (Rajbhandari et al. 2020):

    stage 0  nothing (plain data parallelism)    stage 2  + gradients
    stage 1  optimizer states (and fp32 master)  stage 3  + parameters

Under ZeRO the precision is DeepSpeed's own (bf16 / fp16 sections: the model is cast to 16 bit
and an fp32 master copy is kept), so the worker must not add autocast or a GradScaler on top.
"""
from __future__ import annotations

import datetime
import os
import socket
import sys
from dataclasses import dataclass

from implementations.registry import Context, param, register

BACKENDS = ("auto", "gloo", "nccl")
_PRECISION_SECTIONS = {"fp32": None, "tf32": None, "amp_bf16": "bf16", "amp_fp16": "fp16"}


@register("parallel", "zero")
@dataclass(frozen=True)
class ZeroStrategy:
    """DeepSpeed ZeRO stage 0-3 over nproc ranks launched by torchrun (gloo on CPU, NCCL on GPU)."""

    stage: int = param(2, "ZeRO stage: 0 none, 1 optimizer states, 2 + gradients, 3 + parameters")
    offload_optimizer: bool = param(False, "keep optimizer states and fp32 master on the CPU")
    offload_params: bool = param(False, "keep parameter partitions on the CPU (stage 3 only)")
    nproc: int = param(2, "data-parallel ranks (processes); > 1 launches through torchrun")
    backend: str = param("auto", "collective backend: auto (nccl on cuda, gloo on cpu), gloo, nccl")
    timeout_s: float = param(120.0, "collective timeout; below the point timeout so a hang errors")
    persistence_threshold: int = param(
        0, "stage 3: parameters with fewer elements stay whole on every rank (DeepSpeed: 1e5)")
    launcher_args: tuple = param((), "torchrun arguments replacing the local rendezvous "
                                     "(multi-node: --nnodes, --node_rank, --rdzv-endpoint ...)")

    def __post_init__(self):
        if self.stage not in (0, 1, 2, 3):
            raise ValueError(f"stage={self.stage!r}: allowed 0, 1, 2, 3")
        if self.offload_params and self.stage != 3:
            raise ValueError(f"offload_params=True needs stage 3, got stage={self.stage}")
        if not isinstance(self.nproc, int) or self.nproc < 1:
            raise ValueError(f"nproc={self.nproc!r}: must be an integer >= 1")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r}: allowed {', '.join(BACKENDS)}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s={self.timeout_s!r}: must be > 0 seconds")
        if self.persistence_threshold < 0:
            raise ValueError(f"persistence_threshold={self.persistence_threshold!r}: must be >= 0")
        if isinstance(self.launcher_args, str) or not all(
                isinstance(a, str) for a in self.launcher_args):
            raise ValueError(f"launcher_args={self.launcher_args!r}: must be a list of strings")
        object.__setattr__(self, "launcher_args", tuple(self.launcher_args))  # YAML gives a list

    @property
    def label(self) -> str:
        off = ("_offopt" if self.offload_optimizer else "") + ("_offpar" if self.offload_params else "")
        return f"zero{self.stage}{off}_n{self.nproc}"

    def not_supported_reasons(self, ctx: Context) -> list[str]:
        reasons = []
        if self.nproc > ctx.max_nproc:
            reasons.append(f"needs {self.nproc} ranks, this machine hosts {ctx.max_nproc}")
        if ctx.workload != "train":
            reasons.append(f"ZeRO partitions training state; workload {ctx.workload!r} is not train")
        if ctx.device == "cpu" and ctx.dtype == "amp_fp16":
            reasons.append("DeepSpeed fp16 (loss-scaled half precision) needs a GPU; CPU has bf16 only")
        if ctx.device == "cpu" and self.backend == "nccl":
            reasons.append("backend nccl needs GPUs; use gloo (or auto) on CPU")
        if ctx.dtype not in _PRECISION_SECTIONS:
            reasons.append(f"precision {ctx.dtype!r} has no DeepSpeed mapping; "
                           f"allowed: {', '.join(_PRECISION_SECTIONS)}")
        return reasons

    def resolved_backend(self, device: str) -> str:
        if self.backend != "auto":
            return self.backend
        return "nccl" if device == "cuda" else "gloo"

    def deepspeed_config(self, precision_label: str, micro_batch: int) -> dict:
        """The DeepSpeed config of this point (precision label as in the precision axis)."""
        if precision_label not in _PRECISION_SECTIONS:
            raise ValueError(f"precision {precision_label!r} has no DeepSpeed mapping; "
                             f"allowed: {', '.join(_PRECISION_SECTIONS)}")
        zero: dict = {"stage": self.stage}
        if self.offload_optimizer:
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
        if self.offload_params:
            zero["offload_param"] = {"device": "cpu", "pin_memory": False}
        if self.stage == 3:
            zero["stage3_param_persistence_threshold"] = self.persistence_threshold
        config = {
            "train_micro_batch_size_per_gpu": int(micro_batch),
            "gradient_accumulation_steps": 1,
            "zero_optimization": zero,
            "zero_force_ds_cpu_optimizer": False,  # keep the torch optimizer the ops axis made
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        section = _PRECISION_SECTIONS[precision_label]
        if section:
            config[section] = {"enabled": True}
        return config

    def wrap(self, model, optimizer, precision_label: str, micro_batch: int):
        """A DeepSpeed engine over ``model`` and the torch ``optimizer`` (after init_distributed)."""
        import deepspeed

        engine, _, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer,
            config=self.deepspeed_config(precision_label, micro_batch))
        return engine

    def launch_command(self, module_args: list[str], master_port: int | None = None) -> list[str]:
        """torchrun command line running ``python -m <module_args>`` on ``nproc`` local ranks."""
        rdzv = list(self.launcher_args)
        if not rdzv:
            rdzv = ["--master_addr", "127.0.0.1", "--master_port", str(master_port or free_port())]
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                str(self.nproc), *rdzv, "-m", *module_args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(backend: str, timeout_s: float) -> None:
    """Join the process group torchrun described (RANK, WORLD_SIZE, MASTER_ADDR, ...)."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # read when deepspeed is imported
    import deepspeed

    deepspeed.init_distributed(dist_backend=backend,
                               timeout=datetime.timedelta(seconds=timeout_s))


def train_step(engine, batch, enc_dec: bool = False) -> float:
    """One optimizer step on a padding-axis ``Batch``; returns the loss on this rank's batch.
    No autocast or GradScaler: the engine's bf16 / fp16 config does precision."""
    from implementations.model import forward_batch

    logits = forward_batch(engine, batch, enc_dec)  # (B, S, V)
    loss = engine.module.loss(logits.float(), batch.targets)
    engine.backward(loss)
    engine.step()
    return loss.item()
