"""``tbench tune``: the best configuration of a search space that fits and stays correct, found
by pruning, successive halving and a paired final instead of a full sweep.

    result = run_tune(suite, points, run_dir, *, resume=False, say=None, measure_round=None)

The stages, each a normal run folder inside ``run_dir`` (every measured configuration a point
record with its rounds; ``tbench report RUN_DIR/final`` reads one like any run):
  1. prune (``tune_space.prune``): not_supported and over-budget configurations skipped, each
     with its reason; the ones the memory model puts within its error of the budget are
     measured like the rest and, if they reach the finalists, probed (``probes/``: one round
     under the real budget, RLIMIT_DATA on CPU) -- an OOM skips it;
  2. ``rung0/``, ``rung1/``, ...: successive halving (``tune_space.schedule``): one round each,
     windows ``first_window_s x eta^rung``, the best ``1/eta`` by the objective go on; a
     configuration that fails, exceeds the budget by its measured peak or compiles longer
     than ``max_compile_s`` is skipped with the reason;
  3. ``check/``: every finalist once with ``measure.check`` (``implementations.correctness``:
     its model against its reference twin, float64) and, for another precision, loss parity
     against fp32; the leader and the space's baseline also profiled (where the time goes). A
     finalist that fails is never named;
  4. ``final/``: one paired run (``harness.run.design``: duet or interleaved, rounds until
     decided) of the passing finalists, the leader's one-axis variants (each axis where it
     differs from the baseline set back to the baseline's value) and the baseline, all against
     the leader (``harness.run.tune_decide``: the winner, the runner-up verdict);
  5. ``explain/``, when the winner is not the leader and time is left: the winner's own one-axis
     variants and the baseline, paired against the winner (what each axis contributed; else
     the leader's, said so).
``tune.json`` holds the state and the answer, ``winner.yaml`` a suite of the winner that
``tbench run`` measures as the same point. The wall-time budget: the rungs stop at
``1 - final_share`` of it, the final's rounds get what is left, and a timer interrupts
whatever runs at the end (as SIGINT does: the running points are recorded ``interrupted``), so
it is never exceeded by more than the interrupted point's clean-up; the answer is then made
from what was measured, and says so. ``--resume`` reruns the stages with ``resume`` (only the
missing points run; each stage's points follow from the records before it).
"""
from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harness import records
from harness.run import lifecycle
from harness.run import tune_space as ts
from harness.run.lock import FolderLock
from harness.run.plan import points_plan
from harness.run.signals import Interrupted, stop_signals

TUNE_FILE = "tune.json"


class Deadline:
    """Interrupts the process (SIGINT, as Ctrl-C) at ``seconds`` from now, once. ``expire()``
    is what the timer does; ``Deadline.active[-1].expire()`` ends the innermost budget now
    (tests: a budget that runs out after a known number of points, without a clock)."""

    active: list["Deadline"] = []

    def __init__(self, seconds: float):
        self.at, self.expired = time.monotonic() + max(seconds, 0.0), False
        self.timer = threading.Timer(max(seconds, 0.0), self.expire)
        self.timer.daemon = True

    def left(self) -> float:
        return self.at - time.monotonic()

    def expire(self) -> None:
        if not self.expired:
            self.expired = True
            os.kill(os.getpid(), signal.SIGINT)

    def __enter__(self) -> "Deadline":
        Deadline.active.append(self)
        self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.cancel()
        Deadline.active.remove(self)


@dataclass
class Tune:
    """A search in progress: its folder, settings, what was measured and what was skipped."""

    run_dir: Path
    spec: object  # the suite's TuneSpec
    say: Callable[[str], None]
    measure_round: Callable | None
    name: str = ""
    state: dict = field(default_factory=dict)
    measured: dict = field(default_factory=dict)  # base point id -> latest record (highest rung)
    skipped: list = field(default_factory=list)
    close: set = field(default_factory=set)  # ids the memory model puts within its error of the budget
    started: float = field(default_factory=time.monotonic)

    def stage(self, name: str, points, compare=None, reports: bool = False):
        """``points`` into ``RUN_DIR/name`` (resumed where it exists): the run's result. A
        stage without a compare section measures each point once, one after another
        (``independent``; on CPU one per core at once, ``tune_space.ranking_slots``; a
        stand-in ``measure_round`` runs in this process, one at a time): its points are
        ranked, not paired."""
        from harness.suite.schema import CompareSpec

        slots = None if compare or self.measure_round else ts.ranking_slots(points)
        compare = compare or CompareSpec(design="independent")
        folder = self.run_dir / name
        plan = points_plan(points, folder, resume=(folder / records.RUN_FILE).exists(),
                           compare=compare, slots=slots)
        self.say(f"tune: {name}: {len(points)} configuration(s)")
        result = lifecycle.run(plan, say=self.say, measure_round=self.measure_round, reports=reports)
        if result.interrupted and not any(d.expired for d in Deadline.active):
            raise Interrupted(result.interrupted_by)  # the user's Ctrl-C or SIGTERM: stop here
        return result  # interrupted: by a budget's timer, decided by the caller

    def skip(self, point, reason: str, kind: str) -> None:
        self.skipped.append(ts.Skipped(point.id, point.label, reason, kind))

    def spent_s(self) -> float:
        return self.state.get("spent_before_s", 0.0) + time.monotonic() - self.started


def run_tune(suite, points, run_dir, *, resume: bool = False, say=None, measure_round=None,
             doc: dict | None = None):
    """Search the space (see the module docstring); the ``tune_decide.TuneAnswer``."""
    from harness.run import tune_decide

    ts.check_space(points)
    run_dir = Path(run_dir).resolve()
    tune = Tune(run_dir, suite.tune, say or (lambda line: None), measure_round, suite.name)
    lock = FolderLock(run_dir)
    lock.acquire(create=not resume)
    try:
        tune.state = records.read_json(run_dir / TUNE_FILE) if resume else {}
        tune.state.pop("cut", None)
        left = tune.spec.budget_s - tune.state.get("spent_before_s", 0.0)
        with Deadline(left) as deadline, stop_signals():
            try:
                finalists = search(tune, list(points), deadline)
                answer = tune_decide.final(tune, suite, list(points), finalists, deadline)
            except KeyboardInterrupt:
                if not deadline.expired:
                    save(tune, "interrupted", doc)
                    raise
                answer = tune_decide.from_measured(tune, suite, list(points))
        answer.budget_spent = deadline.expired or "cut" in tune.state
        if "cut" in tune.state:
            answer.notes.append(tune.state["cut"])
        save(tune, "finished", doc, answer)
        return answer
    finally:
        lock.release()


def search(tune: Tune, points, deadline: Deadline) -> list:
    """Steps 1 and 2: the finalists and their spares (base points, best first: a finalist that
    fails its check is replaced by the next spare). The rungs stop at their share
    of the budget (a rung cut short ranks what it measured)."""
    spec = tune.spec
    kept, close, skipped = ts.prune(points, spec.memory_budget)
    tune.skipped += skipped
    tune.close = {p.id for p in close}
    tune.say(f"tune: {len(points)} configurations: {len(kept) + len(close)} kept, "
             f"{len(skipped)} skipped before measuring ({len(close)} close to the budget: probed "
             "if they reach the finalists)")
    kept += close
    share_end = spec.budget_s * (1 - spec.final_share)
    tune.state["rungs"] = []
    survivors = sorted(kept, key=lambda p: p.index)
    for rung, n in enumerate(ts.schedule(len(kept), spec.eta, spec.finalists)):
        if tune.spent_s() >= share_end and rung:
            tune.say(f"tune: the rungs' share of the budget is spent: stopping before rung {rung}")
            break
        with Deadline(share_end - tune.spent_s()):
            survivors, interrupted = measure_rung(tune, survivors[:n], rung)
        if interrupted and deadline.expired:
            raise KeyboardInterrupt  # the whole budget: the caller answers from what was measured
        if interrupted:
            tune.state["cut"] = (f"rung {rung} was cut at the rungs' share of the budget: the "
                                 "finalists come from what it measured")
            tune.say(f"tune: {tune.state['cut']}")
            break
    return survivors[:2 * spec.finalists]  # the finalists and as many spares, for the checks


def measure_rung(tune: Tune, survivors, rung: int) -> tuple[list, bool]:
    """One rung: every survivor measured once; (the eligible ones, best first; whether the
    rung was interrupted)."""
    spec = tune.spec
    # measured best first (the design runs independent rounds in index order): a rung cut short
    # has refined the configurations that matter most
    derived = {p.id: ts.rung_point(p, rung, spec).model_copy(update={"index": i})
               for i, p in enumerate(survivors)}
    result = tune.stage(f"rung{rung}", list(derived.values()))
    by_id = ts.measured_records(result, list(derived.values()))
    ranked = []
    for p in survivors:
        rec = by_id.get(derived[p.id].id)
        if rec is None:
            continue  # not measured: the budget ran out during the rung
        why = ineligible(rec, spec)
        if why:
            tune.skip(p, f"rung {rung}: {why[0]}", why[1])
            continue
        tune.measured[p.id] = dict(rec, rung=rung, label=p.label)
        ranked.append((ts.score(rec, spec.objective), p.index, p))
    ranked.sort(key=lambda t: (t[0], t[1]))
    if result.interrupted and rung:  # cut: the ones it did not reach keep their earlier order
        done = {p.id for _, _, p in ranked} | {s.point_id for s in tune.skipped}
        ranked += [(None, p.index, p) for p in survivors if p.id not in done]
    tune.state["rungs"].append({"rung": rung, "configurations": len(survivors),
                                "measured": len(by_id), "eligible": len(ranked),
                                "window_s": spec.first_window_s * spec.eta ** rung,
                                "folder": f"rung{rung}"})
    return [p for _, _, p in ranked], result.interrupted


def ineligible(rec: dict, spec) -> tuple[str, str] | None:
    """Why a measured configuration cannot win: (reason, kind), or None."""
    if rec.get("status") != "ok":
        return f"{rec.get('status')}: {ts.last_line(rec)}", "failed"
    peak = ts.peak_of(rec)
    if spec.memory_budget and peak and peak > spec.memory_budget:
        return f"measured peak {ts.fmt(peak)} > budget {ts.fmt(spec.memory_budget)}", "over_budget"
    compile_s = (rec.get("metrics") or {}).get("compile_s")
    if spec.max_compile_s and compile_s and compile_s > spec.max_compile_s:
        return f"compiled for {compile_s:.1f} s > max_compile_s {spec.max_compile_s:g}", "compile"
    if ts.score(rec, spec.objective) is None:
        return "no value for the objective", "failed"
    return None


def save(tune: Tune, state: str, doc: dict | None, answer=None) -> None:
    """tune.json: where the search stands, what it skipped and (when done) its answer."""
    out = dict(tune.state, state=state, spent_before_s=tune.spent_s(), budget_s=tune.spec.budget_s,
               skipped=[vars(s) for s in tune.skipped], suite=tune.name,
               tune=tune.spec.model_dump(mode="json"))
    if answer is not None:
        out["answer"] = answer.as_json()
    if doc is not None:
        records.write_json_atomic(tune.run_dir / records.RESOLVED_FILE, doc)
    records.write_json_atomic(tune.run_dir / TUNE_FILE, records.finite(out), indent=1)
