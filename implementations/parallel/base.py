"""What the parallel strategies share: how many ranks a point needs and how the model is wrapped;
for the strategies launched through torchrun (ZeRO, FSDP), the launch command and joining and
destroying the process group."""
from __future__ import annotations

import datetime
import os
import socket
import sys

from implementations.registry import Strategy


class ParallelStrategy(Strategy):
    """Base of the parallel axis: ``nproc`` ranks (> 1 launches through torchrun) and
    ``wrap(model, optimizer, precision, micro_batch)`` -> what the train step drives."""

    distributed = False  # True: the point's ranks run under torchrun (one rank included)
    zero_sharded = False  # True: DeepSpeed ZeRO holds the states (fp32 master copy under AMP)

    @property
    def nproc(self) -> int:
        return 1

    def wrap(self, model, optimizer, precision, micro_batch: int = 1):
        raise NotImplementedError

    def deepspeed_extensions(self, device: str) -> tuple[str, ...]:
        """DeepSpeed C++ extension builders a rank JIT-compiles on ``device`` (built before the first
        point by ``harness.run.extensions``); none for a strategy without DeepSpeed."""
        return ()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (127.0.0.1: a local torchrun's rendezvous; "": every
    interface, for a store other nodes reach)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class TorchrunParallel(ParallelStrategy):
    """A strategy of ``nproc`` ranks, each a process started by torchrun (ZeRO, FSDP)."""

    distributed = True

    def launch_command(self, module_args: list[str], master_port: int | None = None, *,
                       nodes: int = 1, rendezvous: tuple[str, str] | None = None) -> list[str]:
        """torchrun command line running ``python -m <module_args>`` on ``nproc`` local ranks;
        ``launcher_args`` (where the strategy has them) replace the local rendezvous.
        ``rendezvous=(host:port, id)``: one torchrun of ``nodes`` (each started on its node,
        ``nproc / nodes`` ranks each) meeting at a c10d store on host:port (a Slurm job's
        first node, ``harness.run.launcher.srun_command``)."""
        rdzv = list(getattr(self, "launcher_args", ()))
        if rendezvous is not None:
            rdzv = ["--nnodes", str(nodes), "--rdzv_backend", "c10d", "--rdzv_endpoint",
                    rendezvous[0], "--rdzv_id", rendezvous[1]]
        elif not rdzv:
            rdzv = ["--master_addr", "127.0.0.1", "--master_port", str(master_port or free_port())]
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                str(self.nproc // nodes), *rdzv, "-m", *module_args]


def init_process_group(backend: str, timeout_s: float) -> None:
    """Join torchrun's process group (RANK, WORLD_SIZE, MASTER_ADDR, ...), a no-op if joined;
    ``torch._dynamo`` is imported first (``implementations.parallel.zero.destroy_distributed``
    says why). The caller registers its ``destroy`` at exit."""
    import torch
    import torch._dynamo  # noqa: F401 -- before the group exists
    import torch.distributed as dist

    if not dist.is_initialized():
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))


def destroy_process_groups(destroy=None) -> None:
    """Destroy this rank's process groups (``destroy``: the library's own, default torch's) and
    collect the reference cycles that still hold them, so gloo's threads are joined while the
    interpreter is whole; a no-op after the first."""
    import gc

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        (destroy or dist.destroy_process_group)()
    gc.collect()
