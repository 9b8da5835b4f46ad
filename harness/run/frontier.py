"""The OOM frontier: for each point of a suite, the largest batch size or sequence length that
runs within a memory budget, found by real probes.

    AXES = ("workload.batch_size", "workload.seq_len")
    parse_budget("2GiB") -> bytes                        FrontierError on a bad value
    free_points(suite, points, axis) -> points           FrontierError if the suite sweeps ``axis``
    run_frontier(points, axis, budget, out_dir, *, resume=False, cap=None, resolution=1,
                 progress=None, doc=None) -> [Frontier]

Search, per point (its other fields fixed): start from the memory model's prediction
(``harness.measure.memory_model``: the largest value predicted to fit), then grow (x1.25 first,
then doubling) while probes run, or halve while they fail, until one value runs and a larger one
does not; then bisect between them down to ``resolution``. The frontier is the largest value
that ran. Every probe is a point of its own (the axis set, ``measure.rounds = 1``,
``measure.memory_budget_bytes`` = the budget, ``model.max_seq_len`` raised when a probed length
needs it) run in a fresh worker like any point (``rounds.measured_round``: isolation, timeout,
torchrun for distributed points), where the budget is enforced by the kernel or the allocator
(``harness.measure.budget``). A probe that runs out of memory -- ``oom``, or ``crashed`` with an
allocation failure in its output or killed by SIGKILL (the kernel's OOM killer) -- fails that
probe only. Any other failure (error, timeout) also ends the growth: the frontier is then
limited by that status, and says so (``limited_by``).

Run folder: locked, opened and closed as a sweep's (``harness.run.lifecycle.Session``:
``env.json``, ``run.json``, ``suite.resolved.json`` of the suite's points); every probe's record appended to ``results.jsonl`` at once (with
``frontier: {base_id, axis, value, budget_bytes}``), so ``tbench report`` reads the probes like
any run; one line per finished point in ``frontier.jsonl``. ``resume=True`` replays each search
from the recorded probes and runs only the ones missing (the search is deterministic given the
probes' outcomes).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from harness import records
from harness.measure import memory_model
from harness.measure.faults import OOM_MARKERS
from harness.run import rounds
from harness.run.lifecycle import Session
from harness.run.record import point_record
from harness.run.signals import stop_signals
from harness.suite.errors import SuiteError
from harness.suite.point import Point
from harness.suite.sizes import SIZE_HELP, parse_size
from harness.suite.sweep import label_of

AXES = ("workload.batch_size", "workload.seq_len")
FRONTIER_FILE = "frontier.jsonl"
DEFAULT_CAP = {"workload.batch_size": 4096, "workload.seq_len": 131072}
FIRST_STEP = 1.25  # the first step up from the prediction, within the model's tolerance


class FrontierError(SuiteError):
    """Bad frontier input (axis, budget, range): one line, exit 2."""

    def __init__(self, line: str):
        super().__init__([line])


def parse_budget(text: str) -> int:
    """``"2GiB"``, ``"512MiB"``, ``"1.5GB"``, ``"1000000"`` -> bytes (> 0)."""
    size = parse_size(text)
    if size is None:
        raise FrontierError(f"--memory-budget: got {text!r}, allowed: {SIZE_HELP}")
    return size


def check_axis(axis: str) -> str:
    if axis not in AXES:
        raise FrontierError(f"--axis: got {axis!r}, allowed: {', '.join(AXES)}")
    return axis


def free_points(suite, points, axis: str) -> list[Point]:
    """``points`` when the suite leaves ``axis`` free (not swept); else a FrontierError."""
    check_axis(axis)
    swept = [f"sweep.grid.{axis}"] if axis in suite.sweep.grid else []
    swept += [f"sweep.zip[{i}]" for i, g in enumerate(suite.sweep.zip) if axis in g]
    if swept:
        raise FrontierError(f"--axis {axis}: the suite sweeps it ({', '.join(swept)}); a frontier "
                            f"searches it itself: remove it from the sweep, or pin it with --set "
                            f"{axis}=VALUE")
    return list(points)


@dataclass
class Probe:
    value: int
    status: str  # the record's status; "oom" also for a crash by allocation failure / SIGKILL
    point_id: str
    peak_bytes: int | None  # the measured peak (records.memory_metric of the record)
    predicted_bytes: int | None
    tokens_per_s: float | None
    error: str | None = None


@dataclass
class Frontier:
    base_id: str
    label: str
    axis: str
    budget_bytes: int
    value: int | None  # the largest value that ran (None: not even the smallest)
    limited_by: str  # "oom", another failure status, "cap", "not_supported" or "nothing_fits"
    predicted_value: int | None  # the memory model's largest value within the budget
    strategies: dict = field(default_factory=dict)  # axis -> label, for the report
    probes: list[Probe] = field(default_factory=list)

    @property
    def at_frontier(self) -> Probe | None:
        return next((p for p in self.probes if p.value == self.value and p.status == "ok"), None)


def probe_point(base: Point, axis: str, value: int, budget: int) -> Point:
    """``base`` with ``axis = value``, one round, under ``budget``; a point of its own."""
    section, name = axis.split(".")
    model = base.config().model_dump(mode="json")["model"]
    w = base.workload
    longest = value + (w.new_tokens if w.kind == "generate" else 0)
    if name == "seq_len" and longest > base.model.resolved()["max_seq_len"]:
        model["overrides"]["max_seq_len"] = longest
    point = base.derive(model=model, **{section: {name: value}},
                        measure={"rounds": 1, "memory_budget_bytes": budget})
    return point.model_copy(update={"label": label_of(point.config(), {axis: value})})


def predicted_value(base: Point, axis: str, budget: int, cap: int) -> int | None:
    """The largest value in ``[1, cap]`` whose predicted peak fits ``budget`` (prediction
    grows with the value); None when not even 1 does."""
    def fits(v: int) -> bool:
        return memory_model.predict(probe_point(base, axis, v, budget)).peak_bytes <= budget

    if not fits(1):
        return None
    lo, hi = 1, 2
    while hi <= cap and fits(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, cap + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def search(run: Callable[[int], Probe], start: int, cap: int, resolution: int = 1) -> tuple[int | None, str]:
    """(largest value that ran, what stopped it): grow from ``start`` or shrink, then bisect."""
    ok, bad, why = None, None, "cap"
    v = max(1, min(start, cap))
    while True:
        p = run(v)
        if p.status == "not_supported":
            return None, "not_supported"
        if p.status == "ok":
            ok = v
            if bad is not None or v >= cap:
                break
            v = min(cap, max(v + 1, int(v * (FIRST_STEP if v == start else 2))))
        else:
            bad, why = v, p.status
            if ok is not None or v == 1:
                break
            v = max(1, v // 2)
    if ok is None:
        return None, "nothing_fits" if why == "oom" else why
    while bad is not None and bad - ok > resolution:
        mid = (ok + bad) // 2
        p = run(mid)
        if p.status == "ok":
            ok = mid
        else:
            bad, why = mid, p.status
    return ok, why if bad is not None else "cap"


def probe_status(record: dict) -> str:
    """The record's status; a crash by an allocation failure or by SIGKILL (the OOM killer) is
    an ``oom`` of the probe."""
    status = record.get("status")
    if status == "crashed":
        text = f"{record.get('error') or ''} {record.get('stderr_tail') or ''}".lower()
        if "sigkill" in text or any(marker in text for marker in OOM_MARKERS):
            return "oom"
    return status


def _probe(point: Point, record: dict, value: int) -> Probe:
    metrics = record.get("metrics") or {}
    peak = metrics.get(records.memory_metric([record])) if metrics else None
    error = ((record.get("error") or "").strip().splitlines() or [None])[-1]
    return Probe(value, probe_status(record), point.id, peak,
                 memory_model.predict(point).peak_bytes, metrics.get("tokens_per_s"), error)


def run_frontier(points, axis: str, budget: int, out_dir, *, resume: bool = False,
                 cap: int | None = None, resolution: int = 1, grace_s: float = 5.0,
                 progress: Callable[[str], None] | None = None, doc: dict | None = None) -> list[Frontier]:
    """Search the frontier of every point (see the module docstring) in a run folder locked,
    opened and closed like a sweep's."""
    check_axis(axis)
    cap = cap or DEFAULT_CAP[axis]
    run_dir = Path(out_dir).resolve()
    say = progress or (lambda line: None)
    out = []
    with Session(run_dir, points, resume=resume, doc=doc, say=say) as session:
        recorded = {r["point_id"]: r for r in session.opened.records}
        with stop_signals():
            for base in points:
                out.append(_search_point(base, axis, budget, cap, resolution, run_dir, recorded,
                                         grace_s, say))
                records.append_record(run_dir / FRONTIER_FILE, frontier_json(out[-1]))
    return out


def _search_point(base, axis, budget, cap, resolution, run_dir, recorded, grace_s, say) -> Frontier:
    predicted = predicted_value(base, axis, budget, cap)
    frontier = Frontier(base.id, base.label, axis, budget, None, "cap", predicted,
                        strategies={a: getattr(base.strategies, a).label
                                    for a in type(base.strategies).model_fields})
    seen: dict[int, Probe] = {}

    def run(value: int) -> Probe:
        if value in seen:
            return seen[value]
        point = probe_point(base, axis, value, budget)
        record = recorded.get(point.id)
        if record is None:
            say(f"probe {point.label}: running")
            record = point_record(point, [rounds.measured_round(point, run_dir, grace_s, 1)])
            record["frontier"] = {"base_id": base.id, "axis": axis, "value": value,
                                  "budget_bytes": budget}
            record["metrics"].update(memory_model.predicted_metrics(point))
            records.append_record(run_dir / records.RESULTS_FILE, record)
        probe = seen[value] = _probe(point, record, value)
        frontier.probes.append(probe)
        say(f"probe {point.label}: {probe.status}")
        return probe

    frontier.value, frontier.limited_by = search(run, predicted or 1, cap, resolution)
    return frontier


def frontier_json(f: Frontier) -> dict:
    out = {"point_id": f.base_id, **asdict(f)}  # point_id: a results-file line like any
    at = f.at_frontier
    out["tokens_per_s_at_frontier"] = at.tokens_per_s if at else None
    out["peak_bytes_at_frontier"] = at.peak_bytes if at else None
    return out
