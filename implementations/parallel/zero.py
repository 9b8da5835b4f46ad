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

import atexit
import datetime
import os
import sys
from typing import Literal

from pydantic import Field

from implementations.parallel.base import TorchrunParallel, destroy_process_groups, free_port  # noqa: F401
from implementations.regions import region
from implementations.registry import Context, RANKS_CAP, TIMEOUT_CAP_S, register

_PRECISION_SECTIONS = {"fp32": None, "tf32": None, "amp_bf16": "bf16", "amp_fp16": "fp16"}


@register("parallel", "zero")
class ZeroParallel(TorchrunParallel):
    """DeepSpeed ZeRO stage 0-3 over nproc ranks launched by torchrun (gloo on CPU, NCCL on GPU)."""

    zero_sharded = True

    stage: int = Field(2, ge=0, le=3, description="ZeRO stage: 0 none, 1 optimizer states, "
                                                  "2 + gradients, 3 + parameters")
    offload_optimizer: bool = Field(False, description="keep optimizer states and fp32 master on the CPU")
    offload_params: bool = Field(False, description="keep parameter partitions on the CPU (stage 3 only)")
    pin_memory: bool = Field(True, description="offload into page-locked host memory (DeepSpeed's "
                                               "recommended set-up: faster copies, less free RAM)")
    nproc: int = Field(2, ge=1, le=RANKS_CAP, description="data-parallel ranks (processes); > 1 launches through "
                                            "torchrun")
    backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="collective backend: auto (nccl on cuda, gloo on cpu), gloo, nccl")
    timeout_s: float = Field(120.0, gt=0, le=TIMEOUT_CAP_S, description="collective timeout; below the point timeout so "
                                                      "a hang errors")
    persistence_threshold: int = Field(
        0, ge=0, le=1 << 40, description="stage 3: parameters with fewer elements stay whole on every rank "
                             "(DeepSpeed: 1e5)")
    launcher_args: tuple[str, ...] = Field(
        (), description="torchrun arguments replacing the local rendezvous (multi-node: --nnodes, "
                        "--node_rank, --rdzv-endpoint ...)")

    def __post_init__(self):
        if self.offload_params and self.stage != 3:
            raise ValueError(f"offload_params=True needs stage 3, got stage={self.stage}")

    @property
    def label(self) -> str:
        off = ("_offopt" if self.offload_optimizer else "") + ("_offpar" if self.offload_params else "")
        if off and not self.pin_memory:
            off += "_pageable"
        return f"zero{self.stage}{off}_n{self.nproc}"

    def not_supported_reasons(self, ctx: Context) -> list[str]:
        reasons = []
        if self.nproc > ctx.max_nproc:
            reasons.append(f"needs {self.nproc} ranks, this machine hosts {ctx.max_nproc}")
        if ctx.workload != "train":
            reasons.append(f"ZeRO partitions training state; workload {ctx.workload!r} is not train")
        if ctx.device == "cpu" and ctx.precision == "amp_fp16":
            reasons.append("DeepSpeed fp16 (loss-scaled half precision) needs a GPU; CPU has bf16 only")
        if ctx.device == "cpu" and self.backend == "nccl":
            reasons.append("backend nccl needs GPUs; use gloo (or auto) on CPU")
        if ctx.precision not in _PRECISION_SECTIONS:
            reasons.append(f"precision {ctx.precision!r} has no DeepSpeed mapping; "
                           f"allowed: {', '.join(_PRECISION_SECTIONS)}")
        return reasons

    def resolved_backend(self, device: str) -> str:
        if self.backend != "auto":
            return self.backend
        return "nccl" if device == "cuda" else "gloo"

    def deepspeed_extensions(self, device: str) -> tuple[str, ...]:
        """DeepSpeed extension builders a rank JIT-compiles on ``device`` (harness.run.extensions builds
        them before the first point). Found by running stages 0-3, with and without offload, in
        fp32 and bf16, against an empty extensions folder: on CPU only the shared-memory
        collectives the CPU accelerator loads in ``deepspeed.init_distributed``; offload adds no
        cpu_adam, as the torch optimizer is kept. The CUDA accelerator has no such op (NCCL)."""
        return ("ShareMemCommBuilder",) if device == "cpu" else ()

    def deepspeed_config(self, precision_label: str, micro_batch: int) -> dict:
        """The DeepSpeed config of this point (precision label as in the precision axis)."""
        if precision_label not in _PRECISION_SECTIONS:
            raise ValueError(f"precision {precision_label!r} has no DeepSpeed mapping; "
                             f"allowed: {', '.join(_PRECISION_SECTIONS)}")
        zero: dict = {"stage": self.stage}
        if self.offload_optimizer:
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": self.pin_memory}
        if self.offload_params:
            zero["offload_param"] = {"device": "cpu", "pin_memory": self.pin_memory}
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


def init_distributed(backend: str, timeout_s: float) -> None:
    """Join the process group torchrun described (RANK, WORLD_SIZE, MASTER_ADDR, ...); at exit
    the groups are destroyed (``destroy_distributed``, registered here through ``_exit_rank``)."""
    import torch
    import torch._dynamo  # noqa: F401 -- before the group exists; see destroy_distributed

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # read when deepspeed is imported
    import deepspeed

    deepspeed.init_distributed(dist_backend=backend,
                               timeout=datetime.timedelta(seconds=timeout_s))
    atexit.register(_exit_rank)


def destroy_distributed() -> None:
    """Destroy every process group of this rank and so join gloo's threads; a no-op after the first.

    gloo runs each group's collectives on threads of its own, joined only when the group is
    freed. A group still alive when the interpreter exits keeps them running, and one that then
    completes a work touching Python (a future's callback, a tensor whose Python object it frees)
    must take the GIL: CPython ends such a thread with pthread_exit, whose unwinding through a
    noexcept C++ frame calls std::terminate -- "terminate called without an active exception",
    SIGABRT, after the rank's work is done. So the groups go while the interpreter is whole:
    DeepSpeed's destroy (torch's, plus the references DeepSpeed keeps: its clone of the world
    group), then a collection of the engines' reference cycles, which hold the groups too.
    ``torch._dynamo`` is imported before the group exists (``init_distributed``): imported later
    (the first torch.optim optimizer does), it keeps references to the default group, which
    destroying then cannot free."""
    def destroy():
        import deepspeed.comm
        from deepspeed.runtime.zero import parameter_offload

        deepspeed.comm.destroy_process_group()
        parameter_offload.FWD_MODULE_STACK.clear()  # stage 3 pushes the model there, never pops it

    destroy_process_groups(destroy)


def _gloo_threads() -> int:
    """gloo worker threads alive in this process (Linux thread names; 0 where unreadable)."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0
    names = []
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                names.append(f.read().strip())
        except OSError:  # the thread ended meanwhile
            continue
    return names.count("pt_gloo_runloop")


def _exit_rank() -> None:
    """At exit: ``destroy_distributed``. If gloo threads survive it (a ZeRO-3 engine that has
    taken two or more steps stays reachable from outside Python's GC, and with it its groups),
    a normal exit skips the interpreter's finalization, where they would be killed, by
    ``os._exit(0)``; a rank's outcome is in its result file, written before. An uncaught
    exception (``sys.last_value``) keeps Python's own exit and its status."""
    destroy_distributed()
    if _gloo_threads() and not hasattr(sys, "last_value"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def train_step(engine, batch, enc_dec: bool = False) -> float:
    """One optimizer step on a padding-axis ``Batch``; returns the loss on this rank's batch.
    No autocast or GradScaler: the engine's bf16 / fp16 config does precision. Profiler ranges
    ``backward`` and ``optimizer`` hold the engine's gradient reduction and parameter gathers;
    their collectives count as ``communication`` in the breakdown (by operator name)."""
    from implementations.model import forward_batch

    logits = forward_batch(engine, batch, enc_dec)  # (B, S, V)
    loss = engine.module.loss(logits.float(), batch.targets)
    with region("backward"):
        engine.backward(loss)
    with region("optimizer"):
        engine.step()
    return loss.item()
