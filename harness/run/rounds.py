"""One round of one point: a fresh worker (group), and what the round's record says about the
machine it ran on.

    run_round(point, run_dir, grace_s, round_no, where) -> the round's record
    measured_round(point, run_dir, grace_s, round_no, where) -> run_round under
        ``measure.on_contention`` (flag | retry | fail)

``where`` (``launcher.LaunchOptions``) says how the worker starts: the fork server, the devices
it may see, a Slurm job's nodes, the scheduler's ``on_start`` hook. A round of a point some
strategy refuses is ``not_supported`` without a worker (the reasons are known up front). The
round's ``contention`` verdict: on CPU the host evidence of the sampling window
(``harness.measure.contention``), on GPU other users of the point's devices. Raises only on an
interrupt or an I/O error of the run folder, with no worker left running.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from harness.measure import workload
from harness.run import launcher
from harness.run.launcher import LaunchOptions
from harness.run.rundir import now_iso

RETRY_TRIES = 3  # measure.on_contention: retry -- three tries in all


def contention_warnings(point, devices=None) -> list[str]:
    """Other users of any GPU the point's ranks will use (``devices``, else local ranks
    0..nproc-1)."""
    if point.device != "cuda":
        return []
    from harness.measure.telemetry import gpu_contention_warning

    found = (gpu_contention_warning(int(i)) for i in (devices or range(workload.nproc_of(point))))
    return [w for w in found if w]


def contention_reasons(point, rec: dict, gpu_warnings: list[str]) -> list[str]:
    """Why a round was measured on a disturbed machine (see the module docstring)."""
    if point.device == "cuda":
        return list(gpu_warnings)
    return list((rec.get("contention") or {}).get("reasons") or [])


def work_dir(run_dir: Path, point, round_no: int) -> Path:
    """The worker's folder: ``RUN_DIR/workers/<id>[/round<N>]``."""
    work = Path(run_dir) / "workers" / point.id
    return work if point.measure.rounds == 1 else work / f"round{round_no}"


def run_round(point, run_dir: Path, grace_s: float, round_no: int,
              where: LaunchOptions = LaunchOptions()) -> dict[str, Any]:
    """One round: a fresh worker (group); the worker's part of the record with its verdict."""
    started, t0 = now_iso(), time.perf_counter()
    gpu_warnings = contention_warnings(point, where.devices)
    reasons = workload.unsupported_reasons(point)  # cheap: no worker start for a known no
    if reasons:
        rec = {"status": "not_supported", "error": "; ".join(reasons)}
    else:
        rec = launcher.launch(point, work_dir(run_dir, point, round_no), grace_s, where)
    rec["warnings"] = gpu_warnings + list(rec.get("warnings") or [])
    why = contention_reasons(point, rec, gpu_warnings) if rec.get("status") == "ok" else []
    rec["contention"] = dict(rec.get("contention") or {}, contended=bool(why), reasons=why)
    rec.update(round=round_no, started_at=started, duration_s=time.perf_counter() - t0)
    return rec


def planned_cores(points, where: LaunchOptions) -> float:
    """The cores a round keeps busy itself: threads times ranks of each point running."""
    chosen = dict(where.env).get("TBENCH_THREADS")
    return float(sum((p.measure.threads or int(chosen or 0) or os.cpu_count() or 1)
                     * workload.nproc_of(p) for p in points))


def quiet_limit(points, where: LaunchOptions) -> float:
    """What other work may use while a round waits for quiet: the cores the round leaves free,
    plus ``measure.contention_cores`` (the rule of ``harness.measure.contention``)."""
    cpus = os.cpu_count() or 1
    return max(cpus - planned_cores(points, where), 0.0) + points[0].measure.contention_cores


def measured_round(point, run_dir: Path, grace_s: float, round_no: int,
                   where: LaunchOptions = LaunchOptions()) -> dict[str, Any]:
    """``run_round`` under ``measure.on_contention``: ``flag`` keeps a contended round (marked);
    ``retry`` waits up to ``contention_wait_s`` for the machine to leave the point its cores
    and measures it again (``RETRY_TRIES`` in all), then keeps it marked; ``fail`` makes it
    status ``contended``. One side of a duet is retried with its partner, by the duet."""
    spec = point.measure
    alone = "TBENCH_DUET" not in dict(where.env)
    tries = RETRY_TRIES if spec.on_contention == "retry" and alone else 1
    for attempt in range(1, tries + 1):
        rec = run_round(point, run_dir, grace_s, round_no, where)
        rec["attempts"] = attempt
        if not rec["contention"]["contended"] or attempt == tries:
            break
        wait_for_quiet(quiet_limit([point], where), spec.contention_wait_s)
    if rec["contention"]["contended"] and spec.on_contention == "fail":
        rec.update(status="contended", error="measured on a disturbed machine: "
                   + "; ".join(rec["contention"]["reasons"]))
    return rec


def wait_for_quiet(limit_cores: float, max_wait_s: float) -> float:
    """Wait (1 s probes) until other work uses less than ``limit_cores``; the seconds waited."""
    from harness.measure.contention import others_busy

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait_s and others_busy(1.0) >= limit_cores:
        pass
    return time.perf_counter() - t0
