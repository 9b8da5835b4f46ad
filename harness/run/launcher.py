"""One point, one worker process (group): start it, wait for it, kill it, read what it left.

    launch(point, work_dir, grace_s) -> the worker's part of the record, or a failure record

A worker runs in its own session (process group); on ``measure.timeout_s`` the group gets
SIGTERM, then SIGKILL after ``grace_s`` -> status ``timeout``. A worker that dies by a signal or
leaves no result -> ``crashed`` with the tail of its output. Distributed points (ZeRO, one rank
too) run under torchrun (``python -m torch.distributed.run``) on a free port, and the ranks'
results are merged (``merge_rank_results``). No worker outlives the sweep: the worker dies with
the runner (``harness.measure.lifeline.guard``, told the runner's pid in ``TBENCH_RUNNER_PID``;
torchrun is given PR_SET_PDEATHSIG here), and whatever ends ``launch`` -- a result, a timeout, an
exception such as an interrupt -- ends with the worker's group killed. The worker's files
(point.json, result.json, worker.log) stay in ``work_dir``.

    launch(point, work_dir, grace_s, where=LaunchOptions(server=, devices=, nodes=, on_start=))

``where.server`` (a ``harness.run.forkserver.ForkServer``): a single-process point is forked from it
(warm: torch already imported) instead of started fresh; the same command, the same files, the
same group kill; a distributed point still starts torchrun. ``where.devices``: the CUDA devices
the worker may see (``CUDA_VISIBLE_DEVICES``; None leaves the environment's). ``where.nodes``
(in a Slurm job): a distributed point's torchrun is started on that many nodes by ``srun``.
``where.on_start(proc)`` and ``where.on_end(proc)`` bracket the worker's life, so a scheduler
can kill it from another thread.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness.measure import workload
from harness.measure.lifeline import RUNNER_PID_ENV, pdeathsig_hook
from harness.measure.worker import rank_result_path
from harness.records import write_json_atomic
from harness.run import extensions
from harness.run.forkserver import ServerTimeout
from implementations.parallel.base import free_port
from implementations.parallel.state_bytes import aggregate_ranks

STDERR_TAIL_CHARS = 4000


@dataclass(frozen=True)
class LaunchOptions:
    """How a round's worker starts (see the module docstring); passed down by the scheduler."""

    server: Any = None  # a ForkServer (or forkserver.DirectFork in a Slurm job); None: fresh
    devices: tuple[int, ...] | None = None  # CUDA devices the worker may see
    nodes: int | None = None  # inside a Slurm job: the nodes a distributed point spans
    on_start: Callable[[Any], None] | None = None  # on_start(proc) when the worker starts,
    on_end: Callable[[Any], None] | None = None  # on_end(proc) once its group is gone
    env: tuple[tuple[str, str], ...] = ()  # more environment: the run's threads, a duet's lane


def launched(point) -> bool:
    """Whether the point runs under torchrun: every distributed point, one rank included
    (without torchrun's RANK / WORLD_SIZE / MASTER_* DeepSpeed falls back to MPI discovery)."""
    return point.strategies.parallel.distributed


def worker_command(point, point_file: Path, result_file: Path, nodes: int | None = None) -> list[str]:
    """``python -m harness.measure.worker ...``; under torchrun (the strategy's own launch command,
    multi-node launcher arguments passed through) for a distributed point; ``nodes`` (inside a
    Slurm job): through ``srun_command`` on that many nodes."""
    worker = ["harness.measure.worker", str(point_file), str(result_file)]
    if not launched(point):
        return [sys.executable, "-m", *worker]
    if nodes is not None:
        return srun_command(point, worker, nodes)
    return point.strategies.parallel.launch_command(worker)  # picks a free rendezvous port


def srun_command(point, worker: list[str], nodes: int) -> list[str]:
    """Inside a Slurm job: ``srun`` starts one torchrun per node of the job (``--overlap``: the
    job's own step, which runs this, holds its CPUs), ``nproc / nodes`` ranks each, meeting at a
    c10d store on this node (a free port; the job id as the rendezvous id). SIGTERM to srun (the
    worker's group, on a timeout or an interrupt) makes Slurm end the step on every node; if
    srun must be SIGKILLed after the grace, the other nodes' tasks end with the job instead."""
    port = free_port("")
    job = os.environ.get("SLURM_JOB_ID", "tbench")
    torchrun = point.strategies.parallel.launch_command(
        worker, nodes=nodes, rendezvous=(f"{socket.gethostname()}:{port}", f"{job}-{port}"))
    return ["srun", "--overlap", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1",
            "--kill-on-bad-exit=1", "--export=ALL", *torchrun]


def kill_group(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the worker's whole process group, SIGKILL it after ``grace_s``; whatever
    happens meanwhile (Ctrl-C), the SIGKILL is sent."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    finally:  # the leader may be gone while members of its group live on
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10.0)


def tail(path: Path, chars: int = STDERR_TAIL_CHARS) -> str | None:
    if not path.exists():
        return None
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - chars))
        return f.read().decode("utf-8", "replace") or None


def worker_env(point) -> dict[str, str]:
    """This process's environment with the project on PYTHONPATH and this environment's folder
    of DeepSpeed extensions (``extensions.extensions_env``: TORCH_EXTENSIONS_DIR; DS_ACCELERATOR=cpu on a CPU
    point), cleared of locks that killed builds left there, so no rank polls one."""
    env = extensions.extensions_env(point.device)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    extensions.clear_stale_locks(Path(env["TORCH_EXTENSIONS_DIR"]))
    return env


def start_worker(point, work_dir: Path, env: dict[str, str], server=None, nodes: int | None = None):
    """The worker (group) of ``point``: forked from ``server`` or a fresh process (torchrun for
    a distributed point); a ``Popen`` or a ``ForkedWorker``."""
    point_file, result_file, log_file = (work_dir / n for n in ("point.json", "result.json", "worker.log"))
    if server is not None and not launched(point):
        return server.start([str(point_file), str(result_file)], env=env, cwd=work_dir, log=log_file)
    # torchrun is not our code: it gets PDEATHSIG from here. It starts each rank in a session
    # of its own, out of reach of kill_group; a rank dies with torchrun by its own PDEATHSIG.
    hook = pdeathsig_hook() if launched(point) else None
    with open(log_file, "wb") as log:
        return subprocess.Popen(worker_command(point, point_file, result_file, nodes), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=work_dir, start_new_session=True, preexec_fn=hook)


def launch(point, work_dir: Path, grace_s: float,
           where: LaunchOptions = LaunchOptions()) -> dict[str, Any]:
    """Run one worker (group) to completion or timeout; the worker's record or a failure.
    However this returns or raises, no process of the worker's group is left."""
    devices, nodes, on_start = where.devices, where.nodes, where.on_start
    work_dir.mkdir(parents=True, exist_ok=True)
    point_file, result_file, log_file = (work_dir / n for n in ("point.json", "result.json", "worker.log"))
    write_json_atomic(point_file, point.to_json())
    for stale in work_dir.glob("result*.json"):
        stale.unlink()
    env = worker_env(point)
    env.update(dict(where.env))
    env[RUNNER_PID_ENV] = str(os.getpid())
    if nodes is not None and nodes > 1:  # ranks on other nodes cannot watch this pid: Slurm
        env.pop(RUNNER_PID_ENV)  # ends the step when srun dies
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in devices)
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # the indices are NVML's (harness.run.devices)
    try:
        proc = start_worker(point, work_dir, env, where.server, nodes)
    except ServerTimeout as exc:  # a frozen server: this point's record says so, the sweep goes on
        return {"status": "crashed", "error": str(exc), "stderr_tail": None}
    if on_start is not None:
        on_start(proc)
    try:
        rc = proc.wait(timeout=point.measure.timeout_s)
    except subprocess.TimeoutExpired:
        rc = None
    finally:  # also on Ctrl-C / SIGTERM: no worker may outlive the sweep
        kill_group(proc, grace_s)
        if where.on_end is not None:
            where.on_end(proc)
    if rc is None:
        return {"status": "timeout", "stderr_tail": tail(log_file),
                "error": f"point exceeded its timeout of {point.measure.timeout_s:g} s; "
                         "worker process group killed"}
    record = collect(point, result_file, rc, tail(log_file))
    if getattr(proc, "lost", False) and record.get("status") == "crashed":
        record["error"] += " (its fork server died; the next point starts a new one)"
    if getattr(proc, "unreported", False):
        record.setdefault("warnings", []).append(
            "its fork server did not report the worker's exit (stopped or frozen): it was "
            "killed, and the next point starts a new one; the result file says how it went")
    return record


def collect(point, result_file: Path, rc: int, stderr_tail: str | None) -> dict[str, Any]:
    if launched(point):
        record = merge_rank_results(result_file, workload.nproc_of(point))
    else:
        record = json.loads(result_file.read_text()) if result_file.exists() else None
    if record is None:
        how = (f"killed by signal {signal.Signals(-rc).name}" if rc < 0
               else f"exited with code {rc}")
        return {"status": "crashed", "error": f"worker {how} without writing a result",
                "stderr_tail": stderr_tail}
    record.pop("rank", None)
    record.pop("rank_metrics", None)
    record["stderr_tail"] = stderr_tail if record.get("status") != "ok" else None
    return record


def merge_rank_results(result_path: str | os.PathLike, nproc: int) -> dict[str, Any] | None:
    """Rank 0's record with ``ranks`` = every rank's own numbers; None if no rank wrote one."""
    found = {}
    for rank in range(nproc):
        path = rank_result_path(result_path, rank)
        if path.exists():
            found[rank] = json.loads(path.read_text())
    if not found:
        return None
    base = dict(found.get(0) or next(iter(found.values())))
    missing = [r for r in range(nproc) if r not in found]
    failed = [r for r, rec in found.items() if rec.get("status") != "ok"]
    if missing and base.get("status") == "ok":
        base.update(status="crashed", error=f"ranks {missing} left no result")
    elif failed and base.get("status") == "ok":
        first = found[failed[0]]
        base.update(status=first["status"], error=f"rank {failed[0]}: {first.get('error')}")
    base["ranks"] = [{**rec.get("rank_metrics", {"rank": r}),
                      **{k: (rec.get("metrics") or {}).get(k) for k in PER_RANK}}
                     for r, rec in sorted(found.items())]
    metrics = base.setdefault("metrics", {})
    metrics.update(aggregate_ranks(base["ranks"]))
    metrics.update(across_ranks(base["ranks"]))
    return base


# each rank's own timing and GPU telemetry, kept in ``ranks`` (the record's metrics are rank 0's)
PER_RANK = ("latency_ms_p50", "power_w_mean", "energy_j", "throttled", "power_capped")


def across_ranks(ranks: list[dict]) -> dict[str, Any]:
    """The slowest rank's median (what the step costs: every rank waits for it), the energy of
    all ranks' GPUs together, and whether any rank throttled."""
    def values(key):
        return [r[key] for r in ranks if r.get(key) is not None]

    latency, energy, throttled = values("latency_ms_p50"), values("energy_j"), values("throttled")
    return {"latency_ms_p50_rank_max": max(latency) if latency else None,
            "energy_j_all_ranks": sum(energy) if len(energy) == len(ranks) else None,
            "throttled_any_rank": any(throttled) if throttled else None}
