"""Run a sweep: every point in a fresh worker process, each result durable as soon as it exists.

Input: ``run_sweep(points, out_dir, *, resume=False, progress=None, kill_grace_s=5.0, doc=None)``
with resolved ``Point`` objects (their order is the run order) and the run folder (a relative
path is taken from the current directory; the summary's paths are absolute). The folder is
opened and closed by ``harness.run.rundir`` (its one owner: env.json, run.json,
suite.resolved.json); ``run_suite`` also records the resolved suite there.
Output: ``results.jsonl`` in the folder (one DESIGN.md record per finished point, appended and
fsync'ed at once); returns ``RunSummary`` (counts by status, total, results_path, run_dir,
skipped, interrupted). ``progress(ProgressEvent)`` hears "start" / "finish" / "skip" per point.

Isolation: a worker runs in its own session (process group); on ``measure.timeout_s`` the group
gets SIGTERM, then SIGKILL after ``kill_grace_s`` -> status ``timeout``. A worker that dies by a
signal or leaves no result -> ``crashed`` with the tail of its output. Points with nproc > 1 run
under torchrun (``python -m torch.distributed.run``) on a free port. Ctrl-C kills the current
worker group, records that point as ``interrupted`` and returns with every finished point kept.
``resume=True`` skips points whose latest record is not ``interrupted``.
Per point, the worker's files (point.json, result.json, worker.log) stay in RUN_DIR/workers/<id>/.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.analyse import results
from harness.analyse.results import write_json_atomic
from harness.measure import workload
from harness.measure.worker import merge_rank_results
from harness.run import rundir
from harness.run.rundir import now_iso
from implementations import registry

STDERR_TAIL_CHARS = 4000


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
    interrupted: bool = False

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.counts.items() if status not in ("ok", "not_supported"))


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
        params[axis] = None if strategy is None else strategy.label
        params.update({f"{axis}.{k}": v for k, v in (data["strategies"][axis] or {}).items()})
    return params


def base_record(point, started_at: str) -> dict[str, Any]:
    return {"point_id": point.id, "label": point.label, "suite": point.suite,
            "index": point.index, "status": None, "error": None, "stderr_tail": None,
            "started_at": started_at, "duration_s": None, "params": point_params(point),
            "samples_ms": [], "metrics": {}, "ranks": [], "warnings": []}


def worker_command(point, point_file: Path, result_file: Path) -> list[str]:
    """``python -m harness.measure.worker ...``; under torchrun (the strategy's own launch command,
    multi-node launcher arguments passed through) when the point has nproc > 1."""
    worker = ["harness.measure.worker", str(point_file), str(result_file)]
    if workload.nproc_of(point) <= 1:
        return [sys.executable, "-m", *worker]
    return point.strategies.parallel.launch_command(worker)  # picks a free rendezvous port


def kill_group(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the worker's whole process group, SIGKILL what is left after ``grace_s``."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
            if sig == signal.SIGTERM:  # leader gone; make sure no group member survives it
                os.killpg(proc.pid, signal.SIGKILL)
            break
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            break


def tail(path: Path, chars: int = STDERR_TAIL_CHARS) -> str | None:
    if not path.exists():
        return None
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - chars))
        return f.read().decode("utf-8", "replace") or None


def worker_env(point) -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    if point.device == "cpu":
        env.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed on a CPU point
    return env


def launch(point, work_dir: Path, grace_s: float) -> dict[str, Any]:
    """Run one worker (group) to completion or timeout; the worker's record or a failure."""
    work_dir.mkdir(parents=True, exist_ok=True)
    point_file, result_file, log_file = (work_dir / n for n in ("point.json", "result.json", "worker.log"))
    write_json_atomic(point_file, point.to_json())
    for stale in work_dir.glob("result*.json"):
        stale.unlink()
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(worker_command(point, point_file, result_file), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=worker_env(point), cwd=work_dir, start_new_session=True)
        try:
            rc = proc.wait(timeout=point.measure.timeout_s)
        except subprocess.TimeoutExpired:
            kill_group(proc, grace_s)
            return {"status": "timeout", "stderr_tail": tail(log_file),
                    "error": f"point exceeded its timeout of {point.measure.timeout_s:g} s; "
                             "worker process group killed"}
        except BaseException:  # KeyboardInterrupt: no worker may outlive the sweep
            kill_group(proc, grace_s)
            raise
        kill_group(proc, 0.0)  # reap anything the worker left in its group
    return collect(point, result_file, rc, tail(log_file))


def collect(point, result_file: Path, rc: int, stderr_tail: str | None) -> dict[str, Any]:
    nproc = workload.nproc_of(point)
    if nproc > 1:
        record = merge_rank_results(result_file, nproc)
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


def contention_warning(point) -> str | None:
    if point.device != "cuda":
        return None
    from harness.measure.telemetry import gpu_contention_warning

    return gpu_contention_warning(0)


def run_point(point, run_dir: Path, grace_s: float) -> dict[str, Any]:
    """The full result record of one point (never raises except KeyboardInterrupt)."""
    record = base_record(point, now_iso())
    t0 = time.perf_counter()
    warning = contention_warning(point)
    reasons = workload.unsupported_reasons(point)  # cheap: no worker start for a known no
    if reasons:
        record.update(status="not_supported", error="; ".join(reasons))
    else:
        record.update(launch(point, run_dir / "workers" / point.id, grace_s))
    record["warnings"] = ([warning] if warning else []) + list(record.get("warnings") or [])
    record["duration_s"] = time.perf_counter() - t0
    return record


def run_suite(run_dir, source, sets: list[str], suite, points, *, resume: bool = False,
              progress: Callable[[ProgressEvent], None] | None = None) -> RunSummary:
    """``run_sweep`` with the resolved suite recorded in the run folder (``tbench run``, ``gate``)."""
    doc = rundir.resolved_doc(source, points[0].device, sets, suite, points)
    return run_sweep(points, run_dir, resume=resume, progress=progress, doc=doc)


def run_sweep(points, out_dir, *, resume: bool = False,
              progress: Callable[[ProgressEvent], None] | None = None,
              kill_grace_s: float = 5.0, doc: dict | None = None) -> RunSummary:
    """Open the run folder (``harness.run.rundir.open_run``), run every point not done yet,
    close the folder with the run's final state."""
    run_dir = Path(out_dir).resolve()  # workers run with cwd = their own folder
    run, done = rundir.open_run(run_dir, points, resume=resume, doc=doc)
    summary = run_points(points, run_dir, done, progress=progress, kill_grace_s=kill_grace_s)
    rundir.close_run(run_dir, run, "interrupted" if summary.interrupted else "finished")
    return summary


def run_points(points, run_dir: Path, done: set[str], *,
               progress: Callable[[ProgressEvent], None] | None = None,
               kill_grace_s: float = 5.0) -> RunSummary:
    """Run, in order, every point whose id is not in ``done``; each record appended at once."""
    summary = RunSummary(run_dir, run_dir / results.RESULTS_FILE, len(points))
    notify = progress or (lambda event: None)
    for pos, point in enumerate(points):
        event = dict(position=pos, total=len(points), point_id=point.id, label=point.label)
        if point.id in done:
            summary.skipped += 1
            notify(ProgressEvent("skip", status="done", **event))
            continue
        record = None
        try:
            notify(ProgressEvent("start", **event))
            record = run_point(point, run_dir, kill_grace_s)
            results.append_record(summary.results_path, record)
            summary.counts[record["status"]] = summary.counts.get(record["status"], 0) + 1
            notify(ProgressEvent("finish", status=record["status"],
                                 duration_s=record["duration_s"], **event))
        except KeyboardInterrupt:
            if record is None:  # the point was running: keep a trace of it
                record = base_record(point, now_iso())
                record.update(status="interrupted", error="interrupted by the user (Ctrl-C)")
                results.append_record(summary.results_path, record)
                summary.counts["interrupted"] = summary.counts.get("interrupted", 0) + 1
            summary.interrupted = True
            break
    return summary
