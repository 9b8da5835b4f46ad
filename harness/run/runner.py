"""Run a sweep: every point in a fresh worker process, each result durable as soon as it exists.

Input: ``run_sweep(points, out_dir, *, resume=False, progress=None, kill_grace_s=5.0, doc=None,
on_corrupt="refuse")`` with resolved ``Point`` objects (their order is the run order) and the run
folder (a relative path is taken from the current directory; the summary's paths are absolute).
The folder is opened and closed by ``harness.run.rundir`` (its one owner: env.json, run.json,
suite.resolved.json); ``run_suite`` also records the resolved suite there.
Output: ``results.jsonl`` in the folder (one DESIGN.md record per finished point, appended and
fsync'ed at once); returns ``RunSummary`` (counts by status, total, results_path, run_dir,
skipped, interrupted_by). ``progress(ProgressEvent)`` hears "start" / "finish" / "skip" per point.

Isolation: a worker runs in its own session (process group); on ``measure.timeout_s`` the group
gets SIGTERM, then SIGKILL after ``kill_grace_s`` -> status ``timeout``. A worker that dies by a
signal or leaves no result -> ``crashed`` with the tail of its output. Distributed points (ZeRO, one rank too) run
under torchrun (``python -m torch.distributed.run``) on a free port. No worker outlives the
sweep: the worker dies with the runner (``harness.measure.worker.guard``, told the runner's pid in
``TBENCH_RUNNER_PID``; torchrun is given PR_SET_PDEATHSIG here), and whatever ends ``launch``
-- a result, a timeout, an exception -- ends with the worker's group killed.

Stopping: in the main thread, ``run_sweep`` turns SIGINT (Ctrl-C) and SIGTERM into
``Interrupted``; the current worker group is killed, that point recorded ``interrupted`` (the
error names the signal), run.json closed ``interrupted`` and ``RunSummary.interrupted_by`` says
which signal (the CLI exits 128 + it). Further signals are ignored until the sweep has closed,
so the cleanup is not cut short (kill -9 still works: the workers die with the runner).
An exception (an ``OSError`` such as a full disk) closes run.json ``failed`` where it can and
propagates; every record already appended stays. ``resume=True`` skips points whose latest
record is not ``interrupted``; a point that was running when tbench died has none and reruns.
Per point, the worker's files (point.json, result.json, worker.log) stay in RUN_DIR/workers/<id>/.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.analyse import results
from harness.analyse.results import write_json_atomic
from harness.measure import workload
from harness.measure.worker import RUNNER_PID_ENV, merge_rank_results, pdeathsig_hook
from harness.run import extensions, rundir
from harness.run.rundir import now_iso
from implementations import registry

STDERR_TAIL_CHARS = 4000
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class ProgressEvent:
    kind: str  # "start" | "finish" | "skip"
    position: int  # 0-based place in this sweep
    total: int
    point_id: str
    label: str
    status: str | None = None  # finish / skip
    duration_s: float | None = None  # finish


@dataclass
class RunSummary:
    run_dir: Path
    results_path: Path
    total: int
    counts: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    interrupted_by: signal.Signals | None = None  # SIGINT (Ctrl-C) or SIGTERM

    @property
    def interrupted(self) -> bool:
        return self.interrupted_by is not None

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.counts.items() if status not in ("ok", "not_supported"))


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM during a sweep; a KeyboardInterrupt, so Ctrl-C paths handle both."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signal = signal.Signals(signum)


@contextlib.contextmanager
def stop_signals():
    """SIGINT and SIGTERM raise ``Interrupted`` once; later ones are ignored until the block
    ends, so cleanup after the first is not cut short. Yields ``disarm()``: from then on every
    such signal is ignored. Outside the main thread signals cannot be caught: no change."""
    armed = [threading.current_thread() is threading.main_thread()]

    def disarm() -> None:
        armed[0] = False

    if not armed[0]:
        yield disarm
        return

    def handler(signum, frame):
        if armed[0]:
            disarm()
            raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield disarm
    finally:
        for sig, old in previous.items():
            signal.signal(sig, signal.SIG_DFL if old is None else old)


def interruption(exc: KeyboardInterrupt) -> tuple[signal.Signals, str]:
    """The signal behind ``exc`` and the error text of the point it stopped."""
    sig = exc.signal if isinstance(exc, Interrupted) else signal.SIGINT
    if sig == signal.SIGINT:
        return sig, "interrupted by the user (Ctrl-C, SIGINT)"
    return sig, f"interrupted by {sig.name} (tbench was asked to stop)"


def point_params(point) -> dict[str, Any]:
    """Flattened swept + key config fields with dotted names (DESIGN.md "params")."""
    data = point.to_json()
    params: dict[str, Any] = {"device": point.device, "preset": point.model.preset}
    params.update(point.model.overrides)
    w = data["workload"]
    lengths = w.pop("lengths") or {"distribution": "fixed"}
    params.update(w)
    params["lengths"] = lengths.pop("distribution")
    params.update({f"lengths.{k}": v for k, v in lengths.items() if v is not None})
    for axis in registry.AXES:
        strategy = getattr(point.strategies, axis)
        params[axis] = strategy.label
        params.update({f"{axis}.{k}": v for k, v in (data["strategies"][axis] or {}).items()})
    return params


def base_record(point, started_at: str) -> dict[str, Any]:
    return {"point_id": point.id, "label": point.label, "suite": point.suite,
            "index": point.index, "status": None, "error": None, "stderr_tail": None,
            "started_at": started_at, "duration_s": None, "params": point_params(point),
            "samples_ms": [], "metrics": {}, "ranks": [], "warnings": []}


def launched(point) -> bool:
    """Whether the point runs under torchrun: every distributed point, one rank included
    (without torchrun's RANK / WORLD_SIZE / MASTER_* DeepSpeed falls back to MPI discovery)."""
    return point.strategies.parallel.name != "none"


def worker_command(point, point_file: Path, result_file: Path) -> list[str]:
    """``python -m harness.measure.worker ...``; under torchrun (the strategy's own launch command,
    multi-node launcher arguments passed through) for a distributed point."""
    worker = ["harness.measure.worker", str(point_file), str(result_file)]
    if not launched(point):
        return [sys.executable, "-m", *worker]
    return point.strategies.parallel.launch_command(worker)  # picks a free rendezvous port


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
    of DeepSpeed ops (``extensions.ops_env``: TORCH_EXTENSIONS_DIR; DS_ACCELERATOR=cpu on a CPU
    point), cleared of locks that killed builds left there, so no rank polls one."""
    env = extensions.ops_env(point.device)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    extensions.clear_stale_locks(Path(env["TORCH_EXTENSIONS_DIR"]))
    return env


def launch(point, work_dir: Path, grace_s: float) -> dict[str, Any]:
    """Run one worker (group) to completion or timeout; the worker's record or a failure.
    However this returns or raises, no process of the worker's group is left."""
    work_dir.mkdir(parents=True, exist_ok=True)
    point_file, result_file, log_file = (work_dir / n for n in ("point.json", "result.json", "worker.log"))
    write_json_atomic(point_file, point.to_json())
    for stale in work_dir.glob("result*.json"):
        stale.unlink()
    env = worker_env(point)
    env[RUNNER_PID_ENV] = str(os.getpid())
    # torchrun is not our code: it gets PDEATHSIG from here. It starts each rank in a session
    # of its own, out of reach of kill_group; a rank dies with torchrun by its own PDEATHSIG.
    hook = pdeathsig_hook() if launched(point) else None
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(worker_command(point, point_file, result_file), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=work_dir, start_new_session=True, preexec_fn=hook)
        try:
            rc = proc.wait(timeout=point.measure.timeout_s)
        except subprocess.TimeoutExpired:
            rc = None
        finally:  # also on Ctrl-C / SIGTERM: no worker may outlive the sweep
            kill_group(proc, grace_s)
    if rc is None:
        return {"status": "timeout", "stderr_tail": tail(log_file),
                "error": f"point exceeded its timeout of {point.measure.timeout_s:g} s; "
                         "worker process group killed"}
    return collect(point, result_file, rc, tail(log_file))


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


def contention_warnings(point) -> list[str]:
    """Other users of any GPU the point's ranks will use (local ranks 0..nproc-1)."""
    if point.device != "cuda":
        return []
    from harness.measure.telemetry import gpu_contention_warning

    found = (gpu_contention_warning(i) for i in range(workload.nproc_of(point)))
    return [w for w in found if w]


def run_point(point, run_dir: Path, grace_s: float) -> dict[str, Any]:
    """The full result record of one point (raises only on an interrupt or an I/O error of the
    run folder, with no worker left running)."""
    record = base_record(point, now_iso())
    t0 = time.perf_counter()
    warnings = contention_warnings(point)
    reasons = workload.unsupported_reasons(point)  # cheap: no worker start for a known no
    if reasons:
        record.update(status="not_supported", error="; ".join(reasons))
    else:
        record.update(launch(point, run_dir / "workers" / point.id, grace_s))
    record["warnings"] = warnings + list(record.get("warnings") or [])
    record["duration_s"] = time.perf_counter() - t0
    return record


def run_suite(run_dir, source, sets: list[str], suite, points, *, resume: bool = False,
              progress: Callable[[ProgressEvent], None] | None = None,
              on_corrupt: str = "refuse", say: Callable[[str], None] | None = None) -> RunSummary:
    """``run_sweep`` with the resolved suite recorded in the run folder (``tbench run``, ``gate``),
    after the preparing phase (DeepSpeed ops the points need, built outside any point's timeout;
    ``say`` hears its lines, default stderr)."""
    extensions.prepare(points, say or (lambda line: print(line, file=sys.stderr, flush=True)))
    doc = rundir.resolved_doc(source, points[0].device, sets, suite, points)
    return run_sweep(points, run_dir, resume=resume, progress=progress, doc=doc,
                     on_corrupt=on_corrupt)


def run_sweep(points, out_dir, *, resume: bool = False,
              progress: Callable[[ProgressEvent], None] | None = None,
              kill_grace_s: float = 5.0, doc: dict | None = None,
              on_corrupt: str = "refuse") -> RunSummary:
    """Open the run folder (``harness.run.rundir.open_run``), run every point not done yet,
    close the folder with the run's final state (see the module docstring)."""
    run_dir = Path(out_dir).resolve()  # workers run with cwd = their own folder
    run, done = rundir.open_run(run_dir, points, resume=resume, doc=doc, on_corrupt=on_corrupt)
    with stop_signals() as disarm:
        try:
            summary = run_points(points, run_dir, done, progress=progress,
                                 kill_grace_s=kill_grace_s)
        except Exception as exc:  # a full disk, a vanished folder: say so where still possible
            with contextlib.suppress(OSError):
                rundir.close_run(run_dir, run, "failed", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            disarm()  # closing run.json must not be cut short by a late signal
        if summary.interrupted:
            rundir.close_run(run_dir, run, "interrupted", summary.interrupted_by.name)
        else:
            rundir.close_run(run_dir, run, "finished")
    return summary


def run_points(points, run_dir: Path, done: set[str], *,
               progress: Callable[[ProgressEvent], None] | None = None,
               kill_grace_s: float = 5.0) -> RunSummary:
    """Run, in order, every point whose id is not in ``done``; each record appended at once.
    An interrupt stops the sweep (``RunSummary.interrupted_by``); an OSError propagates."""
    summary = RunSummary(run_dir, run_dir / results.RESULTS_FILE, len(points))
    notify = progress or (lambda event: None)
    running = None  # the point being measured, until its record exists
    try:
        for pos, point in enumerate(points):
            event = dict(position=pos, total=len(points), point_id=point.id, label=point.label)
            if point.id in done:
                summary.skipped += 1
                notify(ProgressEvent("skip", status="done", **event))
                continue
            notify(ProgressEvent("start", **event))
            running = point
            record = run_point(point, run_dir, kill_grace_s)
            running = None  # interrupted from here on, it has its record or simply reruns
            results.append_record(summary.results_path, record)
            summary.counts[record["status"]] = summary.counts.get(record["status"], 0) + 1
            notify(ProgressEvent("finish", status=record["status"],
                                 duration_s=record["duration_s"], **event))
    except KeyboardInterrupt as exc:
        summary.interrupted_by, error = interruption(exc)
        if running is not None:  # keep a trace of the point that was stopped
            record = base_record(running, now_iso())
            record.update(status="interrupted", error=error)
            results.append_record(summary.results_path, record)
            summary.counts["interrupted"] = summary.counts.get("interrupted", 0) + 1
    return summary
