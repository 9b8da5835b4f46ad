"""Where the rounds of a sweep run: one at a time here, several at once on device slots, or as
Slurm jobs (``harness.run.slurm``). The runner hands a backend tasks in its order and commits
their rounds in that same order, whichever finishes first (``harness.run.runner.run_points``).

A backend:
    fits(task) -> bool               may this task start now (free slots for its ranks)?
    submit(seq, task)                start it (``Inline`` runs it to the end right here)
    next_done() -> (seq, [round rec])  block until one started task has ended
    cancel() -> [seq]                stop every started task (an interrupt); the seqs stopped
    close()

A task is ``harness.run.design.Task``: one round of one point, or a duet of two. A backend runs
it by calling ``run(task, where)``, the task function it was built with (its rounds' records),
``where`` being the ``launcher.LaunchOptions`` of that task: passed as an argument,
never through thread or module state. ``Inline``: one task at a time in the calling (main)
thread, with the run's fork server. ``Pool``: one thread per running task over ``slots`` (each
slot a tuple of CUDA device indices, or ``None`` for a CPU slot); a task takes
``ranks_of(task)`` slots and its workers see only their devices (``CUDA_VISIBLE_DEVICES``),
with a hook that lets ``cancel`` kill its group from the main thread.
"""
from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
import time
from typing import Any, Callable

from harness.run.launcher import LaunchOptions


def ranks_of(point) -> int:
    """Device slots a point takes: its ranks under torchrun, else one."""
    return int(getattr(point.strategies.parallel, "nproc", 1) or 1)


def slots_of(task) -> int:
    """Device slots a task takes: its members' ranks."""
    return sum(ranks_of(p) for p in task.points)


RunTask = Callable[[Any, LaunchOptions], list]  # (task, where) -> its rounds' records


class Inline:
    """One task at a time, run to its end by ``submit`` in the calling thread."""

    def __init__(self, run: RunTask, server=None):
        self.run, self.server, self.done = run, server, []

    def fits(self, task) -> bool:
        return not self.done

    def submit(self, seq: int, task) -> None:
        self.done.append((seq, self.run(task, LaunchOptions(server=self.server))))

    def next_done(self) -> tuple[int, dict]:
        return self.done.pop()

    def cancel(self) -> list[int]:
        return []  # the running worker's group was killed by launch's own cleanup

    def close(self) -> None:
        pass


class Pool:
    """Tasks at once on ``slots``, one thread each (see the module docstring)."""

    def __init__(self, run: RunTask, slots: list, server=None, grace_s: float = 5.0):
        self.run, self.server, self.grace_s = run, server, grace_s
        self.free = list(range(len(slots)))
        self.slots = slots
        self.results: queue.Queue = queue.Queue()
        self.running: dict[int, tuple[threading.Thread, list[int]]] = {}
        self.procs: dict[int, set] = {}  # seq -> its live workers (Popen / ForkedWorker)
        self.lock = threading.Lock()
        self.cancelled = False

    def fits(self, task) -> bool:
        return len(self.free) >= slots_of(task)

    def devices(self, taken: list[int]) -> tuple[int, ...] | None:
        devs = [d for i in taken if self.slots[i] is not None for d in self.slots[i]]
        return tuple(devs) or None

    def submit(self, seq: int, task) -> None:
        n = slots_of(task)
        taken, self.free = self.free[:n], self.free[n:]

        def on_start(proc) -> None:
            with self.lock:
                self.procs.setdefault(seq, set()).add(proc)
                if self.cancelled:  # started after cancel(): stop it too
                    kill_now(proc)

        def on_end(proc) -> None:
            with self.lock:
                self.procs.get(seq, set()).discard(proc)

        def body() -> None:
            try:
                where = LaunchOptions(server=self.server, devices=self.devices(taken),
                                      on_start=on_start, on_end=on_end)
                rec = self.run(task, where)
            except BaseException as exc:  # noqa: BLE001 -- carried to the main thread
                rec = exc
            self.results.put((seq, rec))

        thread = threading.Thread(target=body, name=f"tbench-round-{seq}", daemon=True)
        self.running[seq] = (thread, taken)
        thread.start()

    def next_done(self) -> tuple[int, dict]:
        while True:
            try:  # a timeout keeps the main thread responsive to Ctrl-C
                seq, rec = self.results.get(timeout=0.5)
                break
            except queue.Empty:
                continue
        thread, taken = self.running.pop(seq)
        thread.join()
        self.free = sorted(self.free + taken)
        if isinstance(rec, BaseException):
            raise rec
        return seq, rec

    def cancel(self) -> list[int]:
        """SIGTERM every running worker group, SIGKILL after ``grace_s``; wait for the threads."""
        with self.lock:
            self.cancelled = True
            procs = [p for group in self.procs.values() for p in group]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        with self.lock:
            for proc in [p for group in self.procs.values() for p in group]:
                kill_now(proc)
        stopped = sorted(self.running)
        for thread, _ in self.running.values():
            thread.join(timeout=30.0)
        self.running.clear()
        return stopped

    def close(self) -> None:
        pass


def kill_now(proc) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
