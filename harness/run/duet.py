"""A duet: two points measured at the same time, each on its own lane, sampling together.

    recs = measure_duet(task, measure_round, run_dir, grace_s, where)   one record per member

Both workers start at once, each given its lane (``TBENCH_CPUS``: the cores it is pinned to)
and the duet's rendezvous (``TBENCH_DUET``: an abstract Unix socket, ``harness.measure.
rendezvous``). Each warms up alone, then says so and waits; when both are warm -- or one side
ended without getting there (a crash, an error: the other then samples alone) -- ``Rendezvous``
answers both with the same window, ``max(min_time_s, 1.2 x min_samples x the slower warm-up
step)``, so their sampling starts within a scheduler tick of each other and lasts as long.
Afterwards each round gets ``duet``: its ``partner``, its ``lane``, the ``window_s``, the
``common_s`` both covered (the shorter of the two sampling spans) and ``common_p50_ms``: the
median of the samples that ended within it -- the numbers a pair compares. A contended duet
(either side) is measured again under ``measure.on_contention: retry``, as a single round is.
Interrupted (Ctrl-C in the calling thread), both worker groups are killed before the interrupt
goes on.
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import threading
import uuid
from dataclasses import replace

from harness.measure.rendezvous import ENV_CPUS, ENV_SOCKET
from harness.records import stats
from harness.run.rounds import RETRY_TRIES, quiet_limit, wait_for_quiet

WINDOW_MARGIN = 1.2


class Rendezvous:
    """The runner's side: a listening abstract socket, two members, one window."""

    def __init__(self, min_time_s: float, min_samples: int, cap_s: float):
        self.name = f"tbench-duet-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.min_time_s, self.min_samples, self.cap_s = min_time_s, min_samples, cap_s
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind("\0" + self.name)
        self.listener.listen(2)
        self.ended = [False, False]  # set by the member threads when a worker is gone
        self.window_s: float | None = None
        self.thread = threading.Thread(target=self.serve, name="tbench-duet", daemon=True)

    def serve(self) -> None:
        """Accept both sides (or see one end first), then send the window to those waiting."""
        waiting: list[tuple[socket.socket, float]] = []
        conns: list[socket.socket] = []
        try:
            while len(waiting) < 2 and len(waiting) + sum(self.ended) < 2:
                ready, _, _ = select.select([self.listener, *conns], [], [], 0.2)
                if self.listener in ready:
                    conns.append(self.listener.accept()[0])
                for conn in [c for c in ready if c is not self.listener]:
                    conns.remove(conn)
                    line = conn.recv(4096).split(b"\n", 1)[0]
                    if line:
                        waiting.append((conn, float(json.loads(line).get("step_ms") or 0.0)))
            slower = max((ms for _, ms in waiting), default=0.0)
            self.window_s = min(self.cap_s, max(self.min_time_s,
                                                WINDOW_MARGIN * self.min_samples * slower / 1e3))
            for conn, _ in waiting:
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps({"window_s": self.window_s}).encode() + b"\n")
        except (OSError, ValueError):
            pass
        finally:
            for conn, _ in waiting:
                conn.close()
            self.listener.close()

    def __enter__(self) -> "Rendezvous":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.ended = [True, True]
        self.thread.join(timeout=5.0)


def common_window(recs: list[dict]) -> float | None:
    """The sampling span both sides covered: the shorter one (both started together)."""
    spans = [(r.get("sample_ends_s") or [None])[-1] for r in recs]
    return min(spans) if None not in spans and recs[0]["status"] == recs[1]["status"] == "ok" else None


def annotate(task, recs: list[dict], window_s: float | None) -> None:
    """Each member's ``duet`` entry (see the module docstring)."""
    common = common_window(recs)
    for i, (point, rec) in enumerate(zip(task.points, recs)):
        partner = task.points[1 - i]
        entry = {"partner": partner.id, "lane": list(task.lanes[i]) if task.lanes else None,
                 "window_s": window_s, "common_s": common, "common_p50_ms": None}
        if common is not None:
            inside = [x for x, end in zip(rec["samples_ms"], rec["sample_ends_s"]) if end <= common]
            entry["common_p50_ms"] = stats.median(inside or rec["samples_ms"][:1])
        rec["duet"] = entry


def run_members(task, measure_round, run_dir, grace_s: float, where) -> list[dict]:
    """Both members at once (one thread each), their worker groups killed if this is stopped."""
    point = task.points[0]
    m = point.measure
    live: set = set()
    lock = threading.Lock()

    def on_start(proc):
        with lock:
            live.add(proc)
        if where.on_start is not None:
            where.on_start(proc)

    def on_end(proc):
        with lock:
            live.discard(proc)
        if where.on_end is not None:
            where.on_end(proc)

    out: list = [None, None]
    with Rendezvous(m.min_time_s, m.min_samples, cap_s=m.timeout_s / 4) as rv:
        def member(i: int) -> None:
            p, round_no = task.members[i]
            env = dict(where.env) | {ENV_SOCKET: rv.name}
            if task.lanes:
                env[ENV_CPUS] = ",".join(map(str, task.lanes[i]))
            mine = replace(where, env=tuple(env.items()), on_start=on_start, on_end=on_end)
            try:
                out[i] = measure_round(p, run_dir, grace_s, round_no, mine)
            except BaseException as exc:  # noqa: BLE001 -- carried to the calling thread
                out[i] = exc
            finally:
                rv.ended[i] = True

        threads = [threading.Thread(target=member, args=(i,), daemon=True) for i in range(2)]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(timeout=0.5)  # a timeout keeps the calling thread responsive to Ctrl-C
        except BaseException:
            with lock:
                for proc in list(live):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, 9)
            for t in threads:
                t.join(timeout=30.0)
            raise
    for rec in out:
        if isinstance(rec, BaseException):
            raise rec
    annotate(task, out, rv.window_s)
    return out


def measure_duet(task, measure_round, run_dir, grace_s: float, where) -> list[dict]:
    """The duet under ``measure.on_contention`` (a contended side measures both again)."""
    spec = task.points[0].measure
    tries = RETRY_TRIES if spec.on_contention == "retry" else 1
    for attempt in range(1, tries + 1):
        recs = run_members(task, measure_round, run_dir, grace_s, where)
        contended = any((r.get("contention") or {}).get("contended") for r in recs)
        for r in recs:
            r["attempts"] = attempt
        if not contended or attempt == tries:
            return recs
        wait_for_quiet(quiet_limit(task.points, where), spec.contention_wait_s)
    return recs
