"""A worker never outlives its sweep.

The runner starts each worker in a session of its own (so a kill of tbench's process group does
not reach it), hence the worker's ``main`` first arms ``guard``:
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
import select
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

RUNNER_PID_ENV = "TBENCH_RUNNER_PID"
DEADLINE_MARGIN_S = 30.0  # past the runner's timeout + kill grace: the runner reports it first
DEFAULT_TIMEOUT_S = 600.0  # MeasureSpec's default, for a point file too broken to say
PR_SET_PDEATHSIG = 1
POLL_S = 0.5  # only without pidfd_open (Linux < 5.3)


def _prctl() -> Callable[..., int]:
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl


def pdeathsig_hook(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` that gives the child ``sig`` (SIGKILL by default; the fork server asks
    for SIGTERM, to remove its folder first) when the thread that started it exits (None off
    Linux). libc is looked up here, before the fork: the child only makes the call."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = _prctl()

    def die_with_parent() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

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
