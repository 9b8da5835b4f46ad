"""Evidence that the host CPU was quiet (or not) while a round was sampled.

    window = HostWindow(); window.start(); ...sampling...; evidence = window.stop(threshold, threads)

``HostWindow`` reads, at the start and the end of the sampling window, the system-wide CPU
times (``psutil.cpu_times``: /proc/stat on Linux), the CPU time of this worker's process family
(the worker, or under torchrun every rank: the agent's whole process tree) and the load average.
From the differences over the wall time it reports, in cores (1.0 = one CPU busy all the time):

  * ``own_cpu_cores``: what the point itself used;
  * ``others_cpu_cores``: everything else the machine ran (system busy time minus the family's);
  * ``steal_cpu_cores``: time the hypervisor gave to other guests (a shared VM's contention);
  * ``loadavg_before`` / ``loadavg_after`` (1 min), ``cpu_freq_mhz`` where readable, ``cpus``.

A window is ``contended`` when the machine was oversubscribed beyond the point's reach: other
work (steal included) plus the cores the point planned to keep busy (``threads_planned``: its
threads times its ranks) exceed the machine's cores by ``threshold_cores``
(``measure.contention_cores``). A steady load that leaves the point its cores -- one busy core
beside a one-thread point on two cores, or a duet's partner on its own core -- is no
contention: it hits both sides of a pair alike. ``reasons`` says why, with the numbers. ``others_busy(seconds)``
measures the same thing with nothing of ours running: the runner's "is it quiet now?" before a
retried round. psutil only; no torch.
"""
from __future__ import annotations

import os
import time

import psutil

BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq")


def _busy_and_steal() -> tuple[float, float]:
    t = psutil.cpu_times()
    return sum(getattr(t, f, 0.0) for f in BUSY_FIELDS), getattr(t, "steal", 0.0)


def family_root() -> psutil.Process:
    """The root of this worker's process family: torchrun's agent for a rank, else itself."""
    me = psutil.Process()
    if "WORLD_SIZE" in os.environ:  # a rank: its siblings are the other ranks of the point
        parent = me.parent()
        if parent is not None:
            return parent
    return me


def _family_cpu(root: psutil.Process) -> float:
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.Error:  # gone meanwhile
            continue
        total += t.user + t.system
    return total


def _load1() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _freq_mhz() -> float | None:
    try:
        f = psutil.cpu_freq()
    except (OSError, NotImplementedError, AttributeError):
        return None
    return float(f.current) if f and f.current else None


class HostWindow:
    """CPU use of this point and of everything else between ``start()`` and ``stop()``."""

    def __init__(self, root: psutil.Process | None = None):
        self.root = root or family_root()

    def start(self) -> "HostWindow":
        self.load_before = _load1()
        self.epoch0 = time.time()  # wall clock: when two workers sampled, compared across processes
        self.t0 = time.perf_counter()
        self.busy0, self.steal0 = _busy_and_steal()
        self.own0 = _family_cpu(self.root)
        return self

    def stop(self, threshold_cores: float, threads_planned: float = 1.0) -> dict:
        busy1, steal1 = _busy_and_steal()
        own1 = _family_cpu(self.root)
        wall = max(time.perf_counter() - self.t0, 1e-9)
        own = max(own1 - self.own0, 0.0) / wall
        others = max(busy1 - self.busy0 - (own1 - self.own0), 0.0) / wall
        steal = max(steal1 - self.steal0, 0.0) / wall
        evidence = {"window_s": wall, "started_epoch_s": self.epoch0, "own_cpu_cores": own, "others_cpu_cores": others,
                    "steal_cpu_cores": steal, "loadavg_before": self.load_before,
                    "loadavg_after": _load1(), "cpu_freq_mhz": _freq_mhz(),
                    "cpus": psutil.cpu_count(), "threshold_cores": threshold_cores,
                    "threads_planned": threads_planned, "own_cpu_s": max(own1 - self.own0, 0.0)}
        return judge(evidence)


def judge(evidence: dict) -> dict:
    """``evidence`` with ``contended`` and its ``reasons`` (see the module docstring)."""
    limit, cpus = evidence["threshold_cores"], evidence.get("cpus") or 1
    others, steal = evidence["others_cpu_cores"], evidence["steal_cpu_cores"]
    planned = evidence.get("threads_planned", 0.0)
    reasons = []
    if others + steal + planned >= cpus + limit:
        reasons.append(f"other processes used {others:.2f} CPU cores"
                       + (f" (+{steal:.2f} stolen by the hypervisor)" if steal >= 0.05 else "")
                       + f" during sampling, beside the point's {planned:g} thread(s) on {cpus} "
                       f"cores (limit: {limit:g} more than the cores; the point itself used "
                       f"{evidence['own_cpu_cores']:.2f})")
    return dict(evidence, contended=bool(reasons), reasons=reasons)


def others_busy(seconds: float = 1.0) -> float:
    """Cores busy with other work (steal included) over ``seconds``, this process idle (its
    own CPU time, not its children's, is taken out: the runner asks while its workers and fork
    server wait, and a process it started to load the machine is other work)."""
    me = psutil.Process()
    busy0, steal0 = _busy_and_steal()
    own0 = sum(me.cpu_times()[:2])
    t0 = time.perf_counter()
    time.sleep(seconds)
    busy1, steal1 = _busy_and_steal()
    wall = max(time.perf_counter() - t0, 1e-9)
    own = sum(me.cpu_times()[:2]) - own0
    return max(busy1 - busy0 - own + steal1 - steal0, 0.0) / wall
