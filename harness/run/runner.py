"""Run a sweep: every point in a fresh worker process, each result durable as soon as it exists.

Input: ``run_sweep(points, out_dir, *, resume=False, progress=None, kill_grace_s=5.0, doc=None,
on_corrupt="refuse")`` with resolved ``Point`` objects (their order is the run order) and the run
folder (a relative path is taken from the current directory; the summary's paths are absolute).
The folder is opened and closed by ``harness.run.rundir`` (its one owner: env.json, run.json,
suite.resolved.json); ``run_suite`` also records the resolved suite there.
Output: ``results.jsonl`` in the folder (one DESIGN.md record per finished point, appended and
fsync'ed at once); returns ``RunSummary`` (counts by status, total, results_path, run_dir,
skipped, interrupted_by). ``progress(ProgressEvent)`` hears "start" / "finish" / "skip" per point.

Rounds: a point is measured in ``measure.rounds`` fresh worker processes, interleaved across
the sweep (round 1 of every point, then round 2, ...); each finished round is appended to
``rounds.jsonl`` at once, and the point's record -- latency from the round medians
(``harness.analyse.stats.summarize_rounds``), every round's samples and contention evidence,
``flags`` (contended / noisy / drift) -- to results.jsonl after its last round. A round measured
while other work used the CPU (``measure.contention_cores``) or the GPU is handled by
``measure.on_contention`` (flag | retry | fail). ``RunSummary.flags`` counts flagged points.

Isolation: each round runs in a worker process of its own (``harness.run.launcher``: timeouts,
crashes, torchrun for distributed points, no worker outliving the sweep); a single-process
worker is forked from the run's warm fork server (``harness.run.forkserver``; ``warm=False``:
a fresh interpreter). Where rounds run is a ``harness.run.schedule`` backend: one at a time
(default), several at once on device slots (``slots``, ``tbench run --devices``), or Slurm jobs
(``backend``, ``harness.run.slurm``); whichever ends first, rounds are committed -- and records
written -- in the run order, so results.jsonl reads the same and ``--resume`` is exact.

Stopping: in the main thread, ``run_sweep`` turns SIGINT (Ctrl-C) and SIGTERM into
``Interrupted``; the current worker group is killed, that point recorded ``interrupted`` (the
error names the signal), run.json closed ``interrupted`` and ``RunSummary.interrupted_by`` says
which signal (the CLI exits 128 + it). Further signals are ignored until the sweep has closed,
so the cleanup is not cut short (kill -9 still works: the workers die with the runner).
An exception (an ``OSError`` such as a full disk) closes run.json ``failed`` where it can and
propagates; every record already appended stays. ``resume=True`` skips points whose latest
record is not ``interrupted``; a point that was running when tbench died has none and goes on
from the rounds it finished. Per point, the worker's files (point.json, result.json,
worker.log) stay in RUN_DIR/workers/<id>/ (``round<N>/`` under it when there are several).
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

from harness.analyse import results, stats
from harness.measure import workload
from harness.run import extensions, forkserver, launcher, rundir, schedule
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
    flags: dict[str, int] = field(default_factory=dict)  # contended / noisy / drift points
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

    devices = schedule.launch_options().get("devices") or range(workload.nproc_of(point))
    found = (gpu_contention_warning(int(i)) for i in devices)
    return [w for w in found if w]


def contention_reasons(point, rec: dict, gpu_warnings: list[str]) -> list[str]:
    """Why a round was measured on a disturbed machine: on CPU, the host evidence of the
    sampling window (``harness.measure.contention``); on GPU, other users of the device."""
    if point.device == "cuda":
        return list(gpu_warnings)
    return list((rec.get("contention") or {}).get("reasons") or [])


def run_round(point, run_dir: Path, grace_s: float, round_no: int) -> dict[str, Any]:
    """One round of one point: a fresh worker (group); the worker's part of the record with the
    round's ``contention`` verdict (raises only on an interrupt or an I/O error of the run
    folder, with no worker left running)."""
    started, t0 = now_iso(), time.perf_counter()
    gpu_warnings = contention_warnings(point)
    reasons = workload.unsupported_reasons(point)  # cheap: no worker start for a known no
    if reasons:
        rec = {"status": "not_supported", "error": "; ".join(reasons)}
    else:
        work = run_dir / "workers" / point.id
        rec = launcher.launch(point, work / f"round{round_no}" if point.measure.rounds > 1 else work, grace_s,
                     **schedule.launch_options())
    rec["warnings"] = gpu_warnings + list(rec.get("warnings") or [])
    why = contention_reasons(point, rec, gpu_warnings) if rec.get("status") == "ok" else []
    rec["contention"] = dict(rec.get("contention") or {}, contended=bool(why), reasons=why)
    rec.update(round=round_no, started_at=started, duration_s=time.perf_counter() - t0)
    return rec


def measured_round(point, run_dir: Path, grace_s: float, round_no: int) -> dict[str, Any]:
    """``run_round`` under ``measure.on_contention``: ``flag`` keeps a contended round (marked);
    ``retry`` waits up to ``contention_wait_s`` for a quiet CPU and measures it again (three
    tries in all), then keeps it marked; ``fail`` makes it status ``contended``."""
    spec = point.measure
    tries = 3 if spec.on_contention == "retry" else 1
    for attempt in range(1, tries + 1):
        rec = run_round(point, run_dir, grace_s, round_no)
        rec["attempts"] = attempt
        if not rec["contention"]["contended"] or attempt == tries:
            break
        wait_for_quiet(spec.contention_cores, spec.contention_wait_s)
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


ROUND_KEYS = ("round", "status", "error", "started_at", "duration_s", "attempts", "samples_ms",
              "contention", "warnings")
DRIFT_CV = 0.05  # round medians spread more than this (CV): flagged "drift"


def merge_metrics(per_round: list[dict]) -> dict[str, Any]:
    """One metrics dict from the rounds': a peak or maximum is the largest round's, a minimum
    the smallest, a flag true if any round's, another number the median over rounds (identical
    rounds -- FLOPs, parameter bytes -- keep their value); anything else is the first round's."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for m in per_round for k in m):
        values = [m[key] for m in per_round if m.get(key) is not None]
        if not values:
            out[key] = None
        elif all(isinstance(v, bool) for v in values):
            out[key] = any(values)
        elif not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = values[0]
        elif "peak" in key or key.endswith("_max") or key.startswith("mem_"):
            out[key] = max(values)
        elif key.endswith("_min"):
            out[key] = min(values)
        else:
            out[key] = stats.median(values)
    return out


def point_record(point, rounds: list[dict]) -> dict[str, Any]:
    """The point's record (DESIGN.md) from its rounds: the last round's status (a failed round
    ends a point); on success, the pooled samples, latency from ``stats.summarize_rounds``,
    ``merge_metrics`` for the rest, ``rounds`` (each round's samples, contention evidence and
    warnings) and ``flags``: ``contended`` (a round measured on a disturbed machine), ``noisy``
    (a round with IQR/median >= 10%), ``drift`` (round medians spread > 5%)."""
    last = rounds[-1]
    record = base_record(point, rounds[0]["started_at"])
    record.update({k: last.get(k) for k in ("status", "error", "stderr_tail") if k in last})
    record["duration_s"] = sum(r["duration_s"] for r in rounds)
    record["rounds"] = [{k: r.get(k) for k in ROUND_KEYS} for r in rounds]
    for entry, r in zip(record["rounds"], rounds):
        if r.get("node"):  # the compute node of a Slurm job (harness.run.slurm)
            entry["node"] = r["node"]
    if "ranks" in last:
        record["ranks"] = last["ranks"]
    many = len(rounds) > 1
    record["warnings"] = list(dict.fromkeys(
        (f"round {r['round']}: {w}" if many else w) for r in rounds for w in r.get("warnings") or []))
    flags = set()
    if any(r["contention"].get("contended") for r in rounds):
        flags.add("contended")
    if any(stats.noise_warning(r.get("samples_ms") or []) for r in rounds):
        flags.add("noisy")
    if last.get("status") == "ok":
        samples = [r.get("samples_ms") or [] for r in rounds]
        record["samples_ms"] = [x for r in samples for x in r]
        record["metrics"] = merge_metrics([r.get("metrics") or {} for r in rounds])
        record["metrics"].update(stats.summarize_rounds(samples))
        cv = record["metrics"]["latency_ms_between_round_cv"]
        if cv is not None and cv > DRIFT_CV:
            flags.add("drift")
            record["warnings"].append(f"round medians differ: between-round CV {cv:.1%} "
                                      f"(> {DRIFT_CV:.0%}); the CI is wide accordingly")
    for r in record["rounds"]:
        r["latency_ms_p50"] = stats.median(r["samples_ms"]) if r.get("samples_ms") else None
    record["flags"] = sorted(flags)
    return record


def run_suite(run_dir, source, sets: list[str], suite, points, *, resume: bool = False,
              progress: Callable[[ProgressEvent], None] | None = None,
              on_corrupt: str = "refuse", say: Callable[[str], None] | None = None,
              **where) -> RunSummary:
    """``run_sweep`` with the resolved suite recorded in the run folder (``tbench run``, ``gate``),
    after the preparing phase (DeepSpeed ops the points need, built outside any point's timeout;
    ``say`` hears its lines, default stderr). ``where``: ``slots``, ``warm``, ``backend`` of
    ``run_sweep``."""
    extensions.prepare(points, say or (lambda line: print(line, file=sys.stderr, flush=True)))
    doc = rundir.resolved_doc(source, points[0].device, sets, suite, points)
    return run_sweep(points, run_dir, resume=resume, progress=progress, doc=doc,
                     on_corrupt=on_corrupt, **where)


def run_sweep(points, out_dir, *, resume: bool = False,
              progress: Callable[[ProgressEvent], None] | None = None,
              kill_grace_s: float = 5.0, doc: dict | None = None,
              on_corrupt: str = "refuse", slots: list | None = None, warm: bool = True,
              backend: Callable[..., Any] | None = None, server=None) -> RunSummary:
    """Open the run folder (``harness.run.rundir.open_run``), run every point not done yet,
    close the folder with the run's final state (see the module docstring). ``slots`` (from
    ``harness.run.devices.slots``): run rounds at once on them; ``warm``: fork single-process
    workers from a fork server (``server``: one already started, e.g. by the CLI while it
    loaded the suite; closed here either way); ``backend(run_round, run_dir)``: another place
    to run rounds (``harness.run.slurm``)."""
    run_dir = Path(out_dir).resolve()  # workers run with cwd = their own folder
    run, done = rundir.open_run(run_dir, points, resume=resume, doc=doc, on_corrupt=on_corrupt)
    with stop_signals() as disarm:
        try:
            if backend is not None or not warm or not needs_server(points, done):
                if server is not None:
                    server.close()
                server = None
            elif server is None:
                server = forkserver.ForkServer(run_dir, env=launcher.worker_env(points[0]))
            with schedule.placed(slots=slots, server=server, backend=backend):
                summary = run_points(points, run_dir, done, progress=progress,
                                     kill_grace_s=kill_grace_s)
        except Exception as exc:  # a full disk, a vanished folder: say so where still possible
            with contextlib.suppress(OSError):
                rundir.close_run(run_dir, run, "failed", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            disarm()  # closing run.json must not be cut short by a late signal
            if server is not None:
                server.close()
        if summary.interrupted:
            rundir.close_run(run_dir, run, "interrupted", summary.interrupted_by.name)
        else:
            rundir.close_run(run_dir, run, "finished")
    return summary


def needs_server(points, done: set[str]) -> bool:
    """Whether some point still to run starts a single-process worker (not under torchrun)."""
    return any(p.id not in done and not launcher.launched(p) for p in points)


def round_tasks(todo, have: dict[str, list]) -> list[tuple[Any, int]]:
    """(point, round) in run order: round 1 of every point, then round 2, ... (slow drift of
    the machine spreads over all points alike); rounds already measured are left out."""
    top = max((p.measure.rounds for p in todo), default=0)
    return [(p, r) for r in range(1, top + 1) for p in todo
            if len(have[p.id]) < r <= p.measure.rounds]


def run_points(points, run_dir: Path, done: set[str], *,
               progress: Callable[[ProgressEvent], None] | None = None,
               kill_grace_s: float = 5.0, slots: list | None = None, server=None,
               backend: Callable[..., Any] | None = None) -> RunSummary:
    """Run every round of every point whose id is not in ``done`` (``round_tasks`` order) on a
    ``harness.run.schedule`` backend: one at a time (default), on ``slots`` at once, or
    ``backend``. Each round is appended to ``rounds.jsonl`` as it ends (durable at once, in
    whatever order rounds end); rounds are then *committed* in task order, so results.jsonl
    gets a point's record -- once its last round is done or a round failed (a failure ends the
    point) -- in the same order however many run at once. A task starts only after its
    point's previous round is committed. Rounds already in ``rounds.jsonl`` (a resumed run) are
    not measured again. An interrupt stops the sweep (``RunSummary.interrupted_by``; every
    running point recorded ``interrupted``); an OSError propagates."""
    where = schedule.placement()  # what run_sweep chose, unless given here
    slots, server, backend = (slots or where.get("slots"), server or where.get("server"),
                              backend or where.get("backend"))
    sweep = Sweep(points, run_dir, done, progress or (lambda event: None))

    def one_round(point, round_no: int) -> dict:
        return measured_round(point, run_dir, kill_grace_s, round_no)

    if backend is not None:
        runs = backend(one_round, run_dir)
    elif slots and len(slots) > 1:
        runs = schedule.Pool(one_round, slots, server=server, grace_s=kill_grace_s)
    else:
        runs = schedule.Inline(one_round, server=server)
    try:
        sweep.run(runs)
    except KeyboardInterrupt as exc:
        runs.cancel()  # in run_sweep, later signals are ignored until the sweep has closed
        sweep.interrupted(exc)
    except BaseException:  # an OSError of the run folder: stop what still runs, then say it
        runs.cancel()
        raise
    finally:
        runs.close()
    return sweep.summary


class Sweep:
    """``run_points``' bookkeeping: the tasks (point, round), which started, which ended, the
    commit position, each open point's measured rounds and the progress position."""

    def __init__(self, points, run_dir: Path, done: set[str], notify):
        self.summary = RunSummary(run_dir, run_dir / results.RESULTS_FILE, len(points))
        self.notify, self.rounds_path = notify, run_dir / rundir.ROUNDS_FILE
        finished = rundir.read_rounds(run_dir)
        todo = [p for p in points if p.id not in done]
        self.total = sum(p.measure.rounds for p in todo) + len(points) - len(todo)
        self.pos = 0
        for point in points:
            if point.id in done:
                self.summary.skipped += 1
                notify(ProgressEvent("skip", self.pos, self.total, point.id, point.label, status="done"))
                self.pos += 1
        self.have = {p.id: [r for r in finished.get(p.id, []) if r.get("status") == "ok"] for p in todo}
        self.pos += sum(len(v) for v in self.have.values())
        self.open = {p.id for p in todo}
        for point in todo:  # every round measured before tbench stopped, the record not written
            if len(self.have[point.id]) >= point.measure.rounds:
                self.finish(point)
        self.tasks = round_tasks(todo, self.have)
        self.started: dict[int, dict] = {}  # seq -> its progress event fields, until it ends
        self.ended: dict[int, dict | None] = {}  # seq -> its round (None: skipped), until committed
        self.committed = self.nxt = 0

    def finish(self, point) -> None:
        """The point's record, from its committed rounds, appended to results.jsonl."""
        record = point_record(point, self.have[point.id])
        results.append_record(self.summary.results_path, record)
        self.open.discard(point.id)
        self.summary.counts[record["status"]] = self.summary.counts.get(record["status"], 0) + 1
        for flag in record["flags"]:
            self.summary.flags[flag] = self.summary.flags.get(flag, 0) + 1

    def run(self, runs) -> None:
        while self.committed < len(self.tasks):
            self.start_ready(runs)
            if self.committed not in self.ended:
                self.wait_one(runs)
            self.commit()

    def start_ready(self, runs) -> None:
        """Submit the next tasks, in order, while they may start."""
        while self.nxt < len(self.tasks):
            point, round_no = self.tasks[self.nxt]
            if round_no > 1 and nxt_blocked(self.tasks, self.nxt, self.committed):
                return  # its previous round is not committed yet
            if point.id not in self.open:
                self.ended[self.nxt], self.nxt = None, self.nxt + 1  # a failed round ended the point
                continue
            if not runs.fits(point):
                return
            label = (point.label if point.measure.rounds == 1
                     else f"{point.label} [round {round_no}/{point.measure.rounds}]")
            self.started[self.nxt] = dict(position=self.pos, total=self.total, point_id=point.id,
                                          label=label)
            self.pos += 1
            self.notify(ProgressEvent("start", **self.started[self.nxt]))
            runs.submit(self.nxt, point, round_no)
            self.nxt += 1

    def wait_one(self, runs) -> None:
        """The next round to end, durable in rounds.jsonl at once."""
        seq, rec = runs.next_done()
        results.append_record(self.rounds_path, {"point_id": self.tasks[seq][0].id, **rec})
        event = self.started.pop(seq)  # interrupted from here on, the round is kept
        self.ended[seq] = rec
        self.notify(ProgressEvent("finish", status=rec["status"], duration_s=rec["duration_s"], **event))

    def commit(self) -> None:
        """Commit ended rounds in task order; a point's last (or failed) round finishes it."""
        while self.committed in self.ended:
            rec = self.ended.pop(self.committed)
            point, round_no = self.tasks[self.committed]
            self.committed += 1
            if rec is None:
                continue
            self.have[point.id].append(rec)
            if rec["status"] != "ok" or round_no == point.measure.rounds:
                self.finish(point)

    def interrupted(self, exc: KeyboardInterrupt) -> None:
        """Keep a trace (an ``interrupted`` record) of every point that was stopped."""
        self.summary.interrupted_by, error = interruption(exc)
        for seq in sorted(self.started):
            record = base_record(self.tasks[seq][0], now_iso())
            record.update(status="interrupted", error=error)
            results.append_record(self.summary.results_path, record)
            self.summary.counts["interrupted"] = self.summary.counts.get("interrupted", 0) + 1


def nxt_blocked(tasks, nxt: int, committed: int) -> bool:
    """Whether the task at ``nxt`` waits for its point's previous round, not yet committed."""
    point, round_no = tasks[nxt]
    return any(p.id == point.id and r == round_no - 1 for p, r in tasks[committed:nxt])
