"""The bookkeeping of a sweep: which rounds are to run, which started, which ended, and the
order in which they are committed and the points' records written.

    ledger = Ledger(points, run_dir, done, rounds_before, notify)
    ledger.run(backend)          every task to its end (an interrupt propagates)
    ledger.interrupted(exc)      an ``interrupted`` record for every point that was running

Tasks are (point, round) in run order (``round_tasks``): round 1 of every point, then round 2,
... (slow drift of the machine spreads over all points alike); rounds already in
``rounds.jsonl`` (a resumed run) are left out. Each round is appended to ``rounds.jsonl`` as it
ends (durable at once, in whatever order rounds end); rounds are then *committed* in task
order, so ``results.jsonl`` gets a point's record -- once its last round is done or a round
failed (a failure ends the point) -- in the same order however many run at once. A task starts
only after its point's previous round is committed. ``records`` holds the record written for
every point, ``counts`` and ``flags`` count them; ``notify(ProgressEvent)`` hears "start" /
"finish" / "skip".
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness import records
from harness.run.record import base_record, point_record
from harness.run.rundir import now_iso
from harness.run.signals import interruption


@dataclass
class ProgressEvent:
    kind: str  # "start" | "finish" | "skip"
    position: int  # 0-based place in this sweep
    total: int
    point_id: str
    label: str
    status: str | None = None  # finish / skip
    duration_s: float | None = None  # finish


def round_tasks(todo, have: dict[str, list]) -> list[tuple[Any, int]]:
    """(point, round) in run order; rounds already measured are left out."""
    top = max((p.measure.rounds for p in todo), default=0)
    return [(p, r) for r in range(1, top + 1) for p in todo
            if len(have[p.id]) < r <= p.measure.rounds]


class Ledger:
    """See the module docstring."""

    def __init__(self, points, run_dir: Path, done: set[str], before: dict[str, list[dict]],
                 notify: Callable[[ProgressEvent], None]):
        self.results_path, self.rounds_path = run_dir / records.RESULTS_FILE, run_dir / records.ROUNDS_FILE
        self.notify = notify
        self.records: list[dict] = []
        self.counts: dict[str, int] = {}
        self.flags: dict[str, int] = {}
        self.interrupted_by = None
        todo = [p for p in points if p.id not in done]
        self.skipped = len(points) - len(todo)
        self.total = sum(p.measure.rounds for p in todo) + self.skipped
        self.pos = 0
        for point in (p for p in points if p.id in done):
            notify(ProgressEvent("skip", self.pos, self.total, point.id, point.label, status="done"))
            self.pos += 1
        self.have = {p.id: [r for r in before.get(p.id, []) if r.get("status") == "ok"] for p in todo}
        self.pos += sum(len(v) for v in self.have.values())
        self.open = {p.id for p in todo}
        for point in todo:  # every round measured before tbench stopped, the record not written
            if len(self.have[point.id]) >= point.measure.rounds:
                self.finish(point)
        self.tasks = round_tasks(todo, self.have)
        self.started: dict[int, dict] = {}  # seq -> its progress event fields, until it ends
        self.ended: dict[int, dict | None] = {}  # seq -> its round (None: skipped), until committed
        self.committed = self.nxt = 0

    def count(self, record: dict) -> None:
        self.records.append(record)
        self.counts[record["status"]] = self.counts.get(record["status"], 0) + 1
        for flag in record.get("flags") or []:
            self.flags[flag] = self.flags.get(flag, 0) + 1

    def finish(self, point) -> None:
        """The point's record, from its committed rounds, appended to results.jsonl."""
        record = point_record(point, self.have[point.id])
        records.append_record(self.results_path, record)
        self.open.discard(point.id)
        self.count(record)

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
            if round_no > 1 and self.blocked(self.nxt):
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

    def blocked(self, nxt: int) -> bool:
        """Whether the task at ``nxt`` waits for its point's previous round, not yet committed."""
        point, round_no = self.tasks[nxt]
        return any(p.id == point.id and r == round_no - 1 for p, r in self.tasks[self.committed:nxt])

    def wait_one(self, runs) -> None:
        """The next round to end, durable in rounds.jsonl at once."""
        seq, rec = runs.next_done()
        records.append_record(self.rounds_path, {"point_id": self.tasks[seq][0].id, **rec})
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
        self.interrupted_by, error = interruption(exc)
        for seq in sorted(self.started):
            record = base_record(self.tasks[seq][0], now_iso())
            record.update(status="interrupted", error=error)
            records.append_record(self.results_path, record)
            self.count(record)
