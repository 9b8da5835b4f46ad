"""One point in one fresh process: ``python -m harness.measure.worker POINT_JSON RESULT_JSON``.

Input: ``POINT_JSON``, a file holding ``Point.to_json()`` (re-validated here).
Output: ``RESULT_JSON`` written atomically (temporary file, fsync, rename) with the worker's part
of a DESIGN.md result record: ``status`` (ok | oom | error | not_supported), ``error`` (text or
None), ``samples_ms`` (ms), ``metrics`` (units in the names), ``warnings``, ``rank``. The runner
adds the provenance fields (id, label, times, params, stderr tail) and the statuses a worker
cannot report about itself (crashed, timeout, interrupted).
Under torchrun (``WORLD_SIZE`` set, one rank too) each rank writes ``RESULT.rank<N>.json`` instead; the runner
merges them (``merge_rank_results``) because only it still sees every rank when one has died.
Failures are classified by ``harness.measure.faults`` (which also injects faults for tests).

A worker never outlives its sweep. The runner starts it in a session of its own (so a kill of
tbench's process group does not reach it), hence ``main`` first arms ``guard``:
  * Linux ``PR_SET_PDEATHSIG``: SIGKILL when the parent *thread* that started it exits (the
    runner, or torchrun for a rank; the runner gives torchrun the same, ``pdeathsig_hook``);
  * a daemon thread that waits on the runner's pid (``TBENCH_RUNNER_PID``, through torchrun
    too) and on the deadline ``measure.timeout_s + DEADLINE_MARGIN_S`` (the runner's own
    timeout comes first; this is the second line of defence). Either way it SIGKILLs its own
    process group (the session the runner, or torchrun for a rank, started it in: the worker
    and whatever it spawned) -- never tbench's or a shell's group: then it only exits (code 70).
"""
from __future__ import annotations

import json
import os
import random
import select
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from harness.analyse.results import write_json_atomic
from harness.measure.faults import classify, injected_fault

RUNNER_PID_ENV = "TBENCH_RUNNER_PID"
DEADLINE_MARGIN_S = 30.0  # past the runner's timeout + kill grace: the runner reports it first
DEFAULT_TIMEOUT_S = 600.0  # MeasureSpec's default, for a point file too broken to say
PR_SET_PDEATHSIG = 1
POLL_S = 0.5  # only without pidfd_open (Linux < 5.3)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rank_result_path(result_path: str | os.PathLike, rank: int) -> Path:
    path = Path(result_path)
    return path.with_name(f"{path.stem}.rank{rank}{path.suffix or '.json'}")


def failure(status: str, error: str) -> dict[str, Any]:
    return {"status": status, "error": error, "samples_ms": [], "metrics": {}, "warnings": []}


def run(point_path: str, result_path: str) -> int:
    """Measure the point of ``point_path``; always leaves a result file unless the process dies."""
    rank = int(os.environ.get("RANK", "0"))
    under_torchrun = "WORLD_SIZE" in os.environ  # a distributed point, one rank included
    out = rank_result_path(result_path, rank) if under_torchrun else result_path
    try:
        from harness.measure import measurement
        from harness.suite.point import Point

        point = Point.from_json(json.loads(Path(point_path).read_text()))
        seed_everything(point.seed)
        record = measurement.measure_point(point, fault=injected_fault(point.id))
    except BaseException as exc:  # noqa: BLE001 -- every failure becomes a result
        if isinstance(exc, KeyboardInterrupt):
            raise
        traceback.print_exc()
        record = failure(classify(exc), f"{type(exc).__name__}: {exc}")
    record["rank"] = rank
    write_json_atomic(out, record)
    return 0


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
    from implementations.parallel.state_bytes import aggregate_ranks

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


def _prctl() -> Callable[..., int]:
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl


def pdeathsig_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that gives the child SIGKILL when the thread that started it exits
    (None off Linux). libc is looked up here, before the fork: the child only makes the call."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = _prctl()

    def die_with_parent() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)

    return die_with_parent


def point_timeout_s(point_path: str) -> float:
    """``measure.timeout_s`` of the raw point file, read before anything heavy is imported."""
    try:
        return float(json.loads(Path(point_path).read_text())["measure"]["timeout_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_TIMEOUT_S


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def wait_for_exit(pid: int, deadline: float) -> bool:
    """True once ``pid`` has exited, False if it still runs at ``deadline`` (monotonic s)."""
    try:
        fd = os.pidfd_open(pid)  # readable when the process exits; immune to pid reuse
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):
        while time.monotonic() < deadline:
            if _group_of(pid) is None:
                return True
            time.sleep(POLL_S)
        return False
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while (left := deadline - time.monotonic()) > 0:
            if poller.poll(min(left, 3600.0) * 1000):
                return True
        return False
    finally:
        os.close(fd)


def abandon(why: str, group: int | None) -> None:
    """Say why in the worker log, then SIGKILL ``group`` (this process with it), or exit."""
    try:
        print(f"tbench worker {os.getpid()}: {why}; "
              f"{'killing its process group' if group else 'exiting'}", file=sys.stderr, flush=True)
    finally:
        if group is not None:
            os.killpg(group, signal.SIGKILL)
        os._exit(70)


def watch(runner_pid: int | None, deadline: float, group: int | None) -> None:
    """The guard thread: ``abandon`` when the runner exits or the deadline passes."""
    if runner_pid is not None and wait_for_exit(runner_pid, deadline):
        abandon(f"tbench (pid {runner_pid}) is gone", group)
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 3600.0))
    abandon(f"past its deadline (measure.timeout_s + {DEADLINE_MARGIN_S:g} s)", group)


def guard(point_path: str) -> None:
    """Tie this process's life to the sweep's (see the module docstring)."""
    hook = pdeathsig_hook()
    if hook is not None:
        hook()
    runner = os.environ.get(RUNNER_PID_ENV)
    runner_pid = int(runner) if runner and runner.isdigit() else None
    # Kill the group only if the runner made it for us: never tbench's own, never a shell's.
    runner_group = _group_of(runner_pid) if runner_pid is not None else None
    group = os.getpgrp() if runner_group not in (None, os.getpgrp()) else None
    deadline = time.monotonic() + point_timeout_s(point_path) + DEADLINE_MARGIN_S
    threading.Thread(target=watch, args=(runner_pid, deadline, group), daemon=True,
                     name="tbench-worker-guard").start()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m harness.measure.worker POINT_JSON RESULT_JSON", file=sys.stderr)
        return 2
    guard(args[0])
    return run(*args)


if __name__ == "__main__":
    sys.exit(main())
