"""The bookkeeping of a run: which tasks are to run, which started, which ended, the order
they are committed in, and the points' records.

    ledger = Ledger(points, run_dir, done, before, notify, design)
    ledger.run(backend)          every task to its end (an interrupt propagates)
    ledger.interrupted(exc)      an ``interrupted`` record for every point that was running

Tasks come from the design (``harness.run.design``): blocks of each group, one round of one
point or a duet of two. Each finished round is appended to ``rounds.jsonl`` as it ends (durable
at once, in whatever order rounds end); tasks are then *committed* in their order, so records
are written the same way however many run at once. When a group's block is committed, the
design says whether the group gets another block (``measure.rounds: auto``) or stops; when it
stops, every open point of the group gets its record in ``results.jsonl`` -- with the design
and its comparisons -- in suite order. A failed round ends its point at once (its record is
written, its later tasks are skipped, comparisons with it are dropped). Rounds already in
``rounds.jsonl`` (a resumed run) that a task would measure again are taken instead.
``records`` holds every record written, ``counts`` and ``flags`` count them; ``notify(ProgressEvent)``
hears "start" / "finish" / "skip".
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness import records
from harness.run.record import base_record, point_record
from harness.run.rundir import now_iso
from harness.run.signals import interruption


@dataclass
class ProgressEvent:
    kind: str  # "start" | "finish" | "skip"
    position: int  # 0-based place in this run
    total: int
    point_id: str
    label: str
    status: str | None = None  # finish / skip
    duration_s: float | None = None  # finish


def _key(rec: dict) -> tuple:
    return (rec.get("block"), (rec.get("duet") or {}).get("partner"))


class Ledger:
    """See the module docstring."""

    def __init__(self, points, run_dir: Path, done: set[str], before: dict[str, list[dict]],
                 notify: Callable[[ProgressEvent], None], design):
        self.results_path, self.rounds_path = run_dir / records.RESULTS_FILE, run_dir / records.ROUNDS_FILE
        self.notify, self.design = notify, design
        self.records: list[dict] = []
        self.counts: dict[str, int] = {}
        self.flags: dict[str, int] = {}
        self.interrupted_by = None
        self.skipped = len([p for p in points if p.id in done])
        self.pos = 0
        for point in (p for p in points if p.id in done):
            notify(ProgressEvent("skip", self.pos, len(points), point.id, point.label, status="done"))
            self.pos += 1
        self.before = {pid: [r for r in rs if r.get("status") == "ok"] for pid, rs in before.items()}
        self.have: dict[str, list[dict]] = {p.id: [] for p in points}
        self.open = {p.id for p in points if p.id not in done}
        self.tasks = [t for t in design.first_tasks() if self.wanted(t)]
        self.pending: dict[tuple, int] = {}  # (group, block) -> tasks not committed yet
        self.took: dict[tuple, float] = {}  # (group, block) -> seconds its rounds took
        for t in self.tasks:
            self.count_pending(t)
        self.started: dict[int, dict] = {}  # seq -> its progress event fields, until it ends
        self.ended: dict[int, list | None] = {}  # seq -> its rounds (None: skipped), until committed
        self.committed = self.nxt = 0

    def wanted(self, task) -> bool:
        return any(p.id in self.open for p in task.points)

    def count_pending(self, task) -> None:
        key = (task.group, task.block)
        self.pending[key] = self.pending.get(key, 0) + 1

    @property
    def total(self) -> int:
        return self.skipped + sum(len(t.members) for t in self.tasks)

    # ---- records ----------------------------------------------------------------------------
    def count(self, record: dict) -> None:
        self.records.append(record)
        self.counts[record["status"]] = self.counts.get(record["status"], 0) + 1
        for flag in record.get("flags") or []:
            self.flags[flag] = self.flags.get(flag, 0) + 1

    def finish(self, point, extra: dict | None = None) -> None:
        """The point's record, from its committed rounds, appended to results.jsonl."""
        record = point_record(point, self.have[point.id])
        record.update(extra or {})
        records.append_record(self.results_path, record)
        self.open.discard(point.id)
        self.count(record)

    def finish_group(self, g) -> None:
        """Every open point of a stopped group, with the design and its comparisons."""
        summary = self.design.summary(g)
        for point in g.points:
            if point.id not in self.open:
                continue
            comparisons = [dict(r.__dict__, vs=base, excluded_pairs=left)
                           for (cand, base), (r, left) in g.results.items() if cand == point.id]
            self.finish(point, {"design": summary, "comparisons": comparisons})

    # ---- running ------------------------------------------------------------------------------
    def run(self, runs) -> None:
        while self.committed < len(self.tasks):
            self.start_ready(runs)
            if self.committed not in self.ended:
                self.wait_one(runs)
            self.commit()
        for g in self.design.groups:  # a group whose every task was already measured
            if any(p.id in self.open for p in g.points):
                g.stopped = g.stopped or "resumed"
                self.finish_group(g)

    def taken(self, task) -> list[dict] | None:
        """The task's rounds from a run that stopped before writing their records, if every
        member has one (a duet: with this partner)."""
        found = []
        for point, _round_no in task.members:
            partner = next((p.id for p in task.points if p.id != point.id), None) if task.duet else None
            have = [r for r in self.before.get(point.id, []) if _key(r) == (task.block, partner)]
            if not have:
                return None
            found.append(have[0])
        for point, rec in zip(task.points, found):
            self.before[point.id].remove(rec)
        return found

    def start_ready(self, runs) -> None:
        """Submit the next tasks, in order, while they may start."""
        while self.nxt < len(self.tasks):
            task = self.tasks[self.nxt]
            if not self.wanted(task):
                self.ended[self.nxt], self.nxt = None, self.nxt + 1  # a failed round ended it
                continue
            reused = self.taken(task)
            if reused is not None:
                self.ended[self.nxt], self.nxt = reused, self.nxt + 1
                self.pos += len(task.members)
                continue
            if not runs.fits(task):
                return
            self.started[self.nxt] = dict(position=self.pos, total=self.total,
                                          point_id=task.points[0].id, label=task.label())
            self.pos += len(task.members)
            self.notify(ProgressEvent("start", **self.started[self.nxt]))
            runs.submit(self.nxt, task)
            self.nxt += 1

    def wait_one(self, runs) -> None:
        """The next task to end, its rounds durable in rounds.jsonl at once."""
        seq, recs = runs.next_done()
        task = self.tasks[seq]
        for point, rec in zip(task.points, recs):
            records.append_record(self.rounds_path, {"point_id": point.id, **rec})
        event = self.started.pop(seq)  # interrupted from here on, the rounds are kept
        self.ended[seq] = recs
        status = "ok" if all(r["status"] == "ok" for r in recs) else next(
            r["status"] for r in recs if r["status"] != "ok")
        self.notify(ProgressEvent("finish", status=status,
                                  duration_s=max(r["duration_s"] for r in recs), **event))

    def commit(self) -> None:
        """Commit ended tasks in order; the end of a group's block asks the design what next."""
        while self.committed in self.ended:
            recs = self.ended.pop(self.committed)
            task = self.tasks[self.committed]
            self.committed += 1
            key = (task.group, task.block)
            for point, rec in zip(task.points, recs or []):
                if point.id not in self.open:
                    continue
                self.have[point.id].append(rec)
                self.took[key] = self.took.get(key, 0.0) + float(rec.get("duration_s") or 0.0)
                if rec["status"] != "ok" or task.group is None:
                    self.finish(point)  # a failure, or a point no group compares
            self.pending[key] -= 1
            if task.group is not None and self.pending[key] == 0:
                self.block_ended(self.design.groups[task.group], key)

    def block_ended(self, g, key) -> None:
        ok = {pid: rs for pid, rs in self.have.items() if pid in self.open}
        more = [t for t in self.design.after_block(g, key[1], ok, self.took.pop(key, 0.0))
                if self.wanted(t)]
        for t in more:
            self.count_pending(t)
        self.tasks += more
        if g.stopped:
            self.finish_group(g)

    def interrupted(self, exc: KeyboardInterrupt) -> None:
        """Keep a trace (an ``interrupted`` record) of every point that was stopped."""
        self.interrupted_by, error = interruption(exc)
        stopped = {p.id: p for seq in sorted(self.started) for p in self.tasks[seq].points}
        for point in stopped.values():
            record = base_record(point, now_iso())
            record.update(status="interrupted", error=error)
            records.append_record(self.results_path, record)
            self.count(record)
