"""Run a sweep: every point in a fresh worker process, each result durable as soon as it exists.

Input: ``run_sweep(points, out_dir, *, resume=False, progress=None, kill_grace_s=5.0, doc=None,
on_corrupt="refuse")`` with resolved ``Point`` objects (their order is the run order) and the run
folder (a relative path is taken from the current directory; the summary's paths are absolute).
The folder is opened and closed by ``harness.run.rundir`` (its one owner: env.json, run.json,
suite.resolved.json); ``run_suite`` also records the resolved suite there.
Output: ``results.jsonl`` in the folder (one DESIGN.md record per finished point, appended and
fsync'ed at once); returns ``RunSummary`` (counts by status, total, results_path, run_dir,
skipped, interrupted_by). ``progress(ProgressEvent)`` hears "start" / "finish" / "skip" per point.

Isolation: each point runs in a worker process of its own (``harness.run.launcher``: timeouts,
crashes, torchrun for distributed points, no worker outliving the sweep).

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
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.analyse import results
from harness.measure import workload
from harness.run import extensions, rundir
from harness.run.launcher import launch
from harness.run.rundir import now_iso
from implementations import registry

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
