"""``tbench run --launcher slurm``: each round of each point is a Slurm job, through submitit.

    Backend(spec, grace_s)(run_round, run_dir) -> a ``harness.run.schedule`` backend
    job(point_file, run_dir, grace_s, round_no) -> the round's record   (runs on the compute node)

The runner hands the backend its rounds in order; the backend writes each round's point file
(``RUN_DIR/workers/<id>[/round<N>]/point.json``, the same resolved point JSON a local worker
reads) and submits what may start as one job array (``executor.batch()``). On the compute node
``job`` runs ``harness.run.rounds.measured_round`` -- the same worker (forked from the job's
process, ``forkserver.DirectFork``: torch is imported once per job), the same timeout, crash
and contention handling, srun + torchrun for a multi-rank point (on the job's nodes) --
and adds ``node``: the compute node's hostname and environment fingerprint
(``harness.run.env``), taken there. Records flow back through the shared run folder and
submitit's result file; the runner appends them as locally.

A job that ends without a record maps Slurm's state to ours: TIMEOUT -> ``timeout`` (also a job
that submitit stopped as "timed-out" just before the limit), OUT_OF_MEMORY -> ``oom``,
FAILED / BOOT_FAIL / anything else -> ``crashed``, CANCELLED / PREEMPTED / NODE_FAIL ->
``interrupted`` (``--resume`` runs that point again, like a Ctrl-C'd one) -- also when the job
wrote a failed record of its own (``scancel`` SIGTERMs the forked worker, submitit's process
outlives it and returns the worker's "crashed"); the error names the job and its
state, ``stderr_tail`` is the end of the job's log. Without accounting (no slurmdbd: sacct
knows no job) the state cannot be read: a job that ``squeue`` no longer lists and that left no
result ``GONE_GRACE_S`` later is ``crashed``, "state unknown". ``cancel`` (Ctrl-C) cancels every
job this run submitted that has not ended (by handle, and by the run's own job name, which also
reaches a job whose ``sbatch`` returned a moment before the interrupt). sbatch refusing a job
(bad partition or account, time above MaxTime, more GPUs than a node has) is a ``SubmitError``:
one line, the jobs already submitted cancelled. Job logs and submitit's files: ``RUN_DIR/slurm/``.

Resources per job (``LauncherSpec`` in the suite's ``launcher:`` section, overridden by the
CLI): partition, account, time limit (default: enough for the point's timeouts, whole minutes),
GPUs (default: the point's ranks on a CUDA run, none on CPU), CPUs, extra sbatch arguments
(``--qos=high``, ``--constraint=h100``), and ``nodes_per_point``: a distributed point's job
takes that many nodes, ``nproc / nodes`` ranks (GPUs, CPUs) on each; its ranks start through
``srun`` + torchrun (``harness.run.launcher.srun_command``).
"""
from __future__ import annotations

import contextlib
import io
import math
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from harness.records import write_json_atomic
from harness.run.schedule import ranks_of
from harness.run.slurm_job import SIGNAL_DELAY_S, job, nodes_of, timed_out_by_warning

STATE_STATUS = {"TIMEOUT": "timeout", "DEADLINE": "timeout", "OUT_OF_MEMORY": "oom",
                "CANCELLED": "interrupted", "PREEMPTED": "interrupted", "NODE_FAIL": "interrupted",
                "FAILED": "crashed", "BOOT_FAIL": "crashed"}
# Slurm ended the job from outside: whatever its worker wrote (a SIGTERM'd worker is "crashed"),
# the point was not measured to its end, and ``--resume`` runs it again
ENDED_FROM_OUTSIDE = ("CANCELLED", "PREEMPTED", "NODE_FAIL")
PENDING = ("PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", "SUSPENDED", "READY",
           "RESIZING", "UNKNOWN", "")
POLL_S = 0.5  # how often result files are looked for; sacct is asked every SACCT_EVERY_S
SACCT_EVERY_S = 2.0
GONE_GRACE_S = 30.0  # a job squeue no longer lists may still be writing its result
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class SubmitError(RuntimeError):
    """sbatch refused a job (one line: what sbatch said); ``tbench run`` exits 2 on it."""


def status_of(state: str, error: str | None) -> str:
    """Our status for a job that left no record: Slurm's ``state`` (``CANCELLED by 0`` ...)."""
    if error and "timed-out" in error:  # submitit stopped it just before the limit
        return "timeout"
    return STATE_STATUS.get((state or "").split(" ")[0].upper(), "crashed")


def time_limit_min(point, spec) -> int:
    """The job's time limit: the spec's, else every try of the round's timeout plus start-up."""
    if spec.time_min is not None:
        return spec.time_min
    tries = 3 if point.measure.on_contention == "retry" else 1
    return max(1, math.ceil((tries * point.measure.timeout_s + 120) / 60))


def sbatch_parameters(args: list[str]) -> dict[str, Any]:
    """``--qos=high`` / ``--exclusive`` -> submitit's ``additional_parameters``."""
    out: dict[str, Any] = {}
    for arg in args:
        key, eq, value = arg.lstrip("-").partition("=")
        out[key.replace("-", "_")] = value if eq else True
    return out


class Backend:
    """Rounds as Slurm jobs (see the module docstring); ``Backend(spec, grace)(run, run_dir)``."""

    def __init__(self, spec, grace_s: float = 5.0):
        self.spec, self.grace_s = spec, grace_s

    def __call__(self, run_round, run_dir: Path) -> "Backend":
        import submitit

        self.run_dir = Path(run_dir)
        self.executor = submitit.SlurmExecutor(folder=self.run_dir / "slurm" / "%j")
        self.queued: list[tuple[int, Any, int]] = []
        self.jobs: dict[int, Any] = {}  # seq -> submitit job, until it ends
        self.points: dict[int, Any] = {}
        self.tasks: dict[int, Any] = {}  # seq -> its design task (block, group, order)
        self.last_sacct = 0.0
        self.submitted = 0
        self.name: str | None = None  # this run's jobs: tbench-SUITE-TOKEN (scancel --name)
        self.gone: dict[int, float] = {}  # seq -> when squeue stopped listing its job
        return self

    def fits(self, task) -> bool:
        return True  # Slurm queues what does not fit now

    def submit(self, seq: int, task) -> None:
        (point, round_no), = task.members  # no duet: the design interleaves a Slurm run
        self.tasks[seq] = task
        self.queued.append((seq, point, round_no))

    def parameters(self, point) -> dict[str, Any]:
        spec, ranks, nodes = self.spec, ranks_of(point), nodes_of(point, self.spec)
        gpus = spec.gpus_per_point if spec.gpus_per_point is not None else (
            ranks if point.device == "cuda" else 0)  # per job, split over its nodes
        self.name = self.name or f"tbench-{point.suite}-{uuid.uuid4().hex[:8]}"
        params = {"job_name": self.name, "time": time_limit_min(point, spec),
                  "nodes": nodes, "ntasks_per_node": 1,
                  "cpus_per_task": -(-(spec.cpus_per_point or ranks) // nodes),
                  "signal_delay_s": SIGNAL_DELAY_S, "stderr_to_stdout": True,
                  "array_parallelism": spec.array_parallelism,
                  "setup": [f"export PYTHONPATH={PROJECT_ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"],
                  "additional_parameters": sbatch_parameters(list(spec.sbatch_args))}
        if gpus:
            params["gpus_per_node"] = gpus // nodes
        if spec.partition:
            params["partition"] = spec.partition
        if spec.account:
            params["account"] = spec.account
        return params

    def flush(self) -> None:
        """Submit the queued rounds: one array per run of rounds with equal job parameters."""
        groups: list[tuple[dict, list]] = []
        for item in self.queued:
            params = self.parameters(item[1])
            if groups and groups[-1][0] == params:
                groups[-1][1].append(item)
            else:
                groups.append((params, [item]))
        self.queued = []
        from submitit.core.utils import FailedJobError, FailedSubmissionError

        for params, items in groups:
            self.executor.update_parameters(**params)
            said = io.StringIO()  # submitit prints sbatch's stderr: it goes in our one line
            try:
                with contextlib.redirect_stderr(said), self.executor.batch():
                    for seq, point, r in items:  # recorded at once: cancel() reaches every one
                        self.jobs[seq] = self.executor.submit(
                            job, str(self.point_file(point, r)), str(self.run_dir), self.grace_s, r,
                            nodes_of(point, self.spec))
                        self.points[seq] = point
            except (FailedJobError, FailedSubmissionError) as exc:
                for seq, _, _ in items:  # never submitted
                    self.jobs.pop(seq, None)
                    self.points.pop(seq, None)
                self.cancel()
                raise SubmitError(f"--launcher slurm: sbatch refused the job(s): {refusal(exc)}"
                                  ) from None
            self.submitted += len(items)

    def point_file(self, point, round_no: int) -> Path:
        work = self.run_dir / "workers" / point.id
        if point.measure.rounds != 1:
            work = work / f"round{round_no}"
        work.mkdir(parents=True, exist_ok=True)
        write_json_atomic(work / "point.json", point.to_json())
        return work / "point.json"

    def next_done(self) -> tuple[int, dict]:
        if self.queued:
            self.flush()
        started = time.monotonic()
        while True:
            for seq in sorted(self.jobs):
                handle = self.jobs[seq]
                gone = time.monotonic() - self.gone.get(seq, math.inf) >= GONE_GRACE_S
                if gone or handle.paths.result_pickle.exists() or (
                        self.last_sacct and handle.watcher.is_done(handle.job_id, mode="cache")):
                    del self.jobs[seq]
                    self.gone.pop(seq, None)
                    rec = self.record(handle, self.points.pop(seq), started, gone=gone)
                    task = self.tasks.pop(seq)
                    return seq, [dict(rec, block=task.block, group=task.group, order=task.order)]
            if time.monotonic() - self.last_sacct >= SACCT_EVERY_S and self.jobs:
                next(iter(self.jobs.values())).watcher.update()  # one sacct for every job
                self.last_sacct = time.monotonic()
                self.note_gone()
            time.sleep(POLL_S)

    def note_gone(self) -> None:
        """When each job squeue no longer lists first went missing (the fallback of a cluster
        without accounting, where sacct never says a job ended)."""
        listed = squeue_ids(self.name)
        now = time.monotonic()
        for seq, handle in self.jobs.items():
            if listed is None or handle.job_id in listed:
                self.gone.pop(seq, None)
            else:
                self.gone.setdefault(seq, now)

    def record(self, handle, point, started: float, gone: bool = False) -> dict[str, Any]:
        """The round's record: the job's own, else one made from its Slurm state (``gone``:
        squeue lost it and sacct has no state)."""
        error = None
        first = handle.task(0) if handle.num_tasks > 1 else handle  # a multi-node job: node 0's
        for _ in range(20):  # the result file may be written a moment after sacct says done
            if first.paths.result_pickle.exists():
                try:
                    return self.own_record(handle, first.result())
                except Exception as exc:  # noqa: BLE001 -- the job raised: a failure record
                    error = str(exc)
                    break
            time.sleep(0.1)
        state = self.final_state(handle) if not gone or error else ""
        status = status_of(state, error)
        text = f"Slurm job {handle.job_id} ended {state or 'without a state'}"
        if gone and not error:
            text = (f"Slurm job {handle.job_id} ended, state unknown (no accounting: sacct has "
                    "no record)")
        elif status == "timeout":
            text = f"Slurm job {handle.job_id} reached its time limit (state {state or 'unknown'})"
        elif error:
            text += ": " + error_line(error)
        return {"status": status, "error": text,
                "stderr_tail": log_tail(handle), "samples_ms": [], "metrics": {}, "warnings": [],
                "contention": {"contended": False, "reasons": []},
                "started_at": None, "duration_s": time.monotonic() - started}

    def own_record(self, handle, rec: dict[str, Any]) -> dict[str, Any]:
        """The record the job wrote, unless it failed because Slurm ended the job (scancel,
        preemption, a node failure): then ``interrupted``, its error kept after Slurm's state."""
        rec = timed_out_by_warning(rec, handle.job_id)
        if rec.get("status") == "ok":
            return rec  # measured to its end: a cancellation after it loses nothing
        state = self.final_state(handle)
        if state.split(" ")[0].upper() not in ENDED_FROM_OUTSIDE:
            return rec
        said = error_line(rec["error"]) if rec.get("error") else rec.get("status")
        return dict(rec, status="interrupted",
                    error=f"Slurm job {handle.job_id} ended {state} (the worker: {said})")

    def final_state(self, handle) -> str:
        deadline = time.monotonic() + 10.0
        state = handle.watcher.get_state(handle.job_id, mode="cache")
        while state.split(" ")[0].upper() in PENDING and time.monotonic() < deadline:
            time.sleep(0.5)
            state = handle.watcher.get_state(handle.job_id, mode="force")
        return state

    def cancel(self) -> list[int]:
        """scancel every job not ended (an interrupt); their seqs."""
        if self.queued:
            self.queued = []
        for handle in self.jobs.values():
            try:
                handle.cancel(check=False)
            except Exception:  # noqa: BLE001 -- cancel the others whatever one does
                pass
        if self.name:  # also a job whose sbatch returned but whose handle never came back
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(["scancel", "--name", self.name], capture_output=True, timeout=30)
        return sorted(self.jobs)

    def close(self) -> None:
        pass


def squeue_ids(name: str) -> set[str] | None:
    """The ids squeue lists for jobs named ``name`` (array tasks one per line, ``JOB_TASK``);
    None when squeue cannot say (then nothing counts as gone)."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-n", name], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return set(out.stdout.split()) if out.returncode == 0 else None


def refusal(exc: Exception) -> str:
    """sbatch's complaint in one line (``sbatch: error:`` prefixes dropped, repeats removed)."""
    lines = [ln.strip().removeprefix("sbatch: error:").strip() for ln in str(exc).splitlines()]
    said = list(dict.fromkeys(ln for ln in lines if ln))
    return "; ".join(said) or type(exc).__name__


def error_line(text: str) -> str:
    """The line of a job's error that says what happened (submitit appends log paths)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    said = [ln for ln in lines if "Error" in ln or "error" in ln] or lines or ["(no error text)"]
    return said[-1]


def log_tail(handle, chars: int = 4000) -> str | None:
    try:
        text = Path(handle.paths.stdout).read_text(errors="replace")
    except OSError:
        return None
    return text[-chars:] or None
