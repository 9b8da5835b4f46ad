"""How a run measures what it compares: groups, baselines, blocks, duets, threads, stopping.

    design = Design.build(points, compare_spec, choice)     choice: ``choose(points, spec)``
    design.first_tasks() -> [Task]                           the blocks every group starts with
    design.after_block(group, rounds) -> [Task]              the next block, or [] when it stops

A *group* is the points that differ only in their strategies (same model, workload, measure,
device); its *baseline* is the first point matching ``compare.baseline``, else the first whose
attention is dense, else its first point. The comparisons that matter are each point against
the baseline (``compare.pairs: baseline``) or every pair (``all``).

A *block* is one round of every point of a group, measured close together so that a pair of
points -- A's round and B's round of the same block -- sees the same machine:
  * ``interleaved`` (randomized multiple interleaved trials): the group's points one after
    another in consecutive worker processes, in an order drawn anew for every block (seeded by
    ``compare.seed``, the group and the block; recorded as each round's ``order``);
  * ``duet``: each point at the same time as the baseline, each on its own disjoint set of CPU
    cores (``lanes``), their sampling windows started together (``harness.run.duet``); the
    cores are swapped between consecutive duets, so whatever differs between the two halves of
    the machine hits both sides alike over the pairs (``tbench`` reports the ratio by lane
    order, ``duet_lane_effect``, so a lasting asymmetry is seen). With ``pairs: all`` a group is
    interleaved (every pair would take its own duet).
  * ``independent``: rounds in run order across the whole sweep, as separate measurements.
Blocks of all groups go round-robin (block 1 of every group, then block 2, ...), so slow drift
spreads over every group alike. ``measure.rounds`` N: N blocks. ``auto``: ``min_rounds``
blocks, then after each block every comparison of the group is looked at
(``harness.records.pairs``, the sequential rule); the group gets another block until all are
decided, ``max_rounds`` is reached or its rounds took ``budget_s``.

``choose`` decides the design and the threads, once per run, from the machine: on CPU, when
others hold cores a point gets one thread per rank and points run interleaved (two threads
beside a busy core ran 3-51x slower and spread far wider than one); when at least two cores
are free and every point is a single process, points run as duets, each side on half the free
cores with that many threads. ``measure.threads`` set by the suite wins; the choice is the
same for both sides of every pair and is recorded in run.json.
"""
from __future__ import annotations

import json
import math
import os
import random
from dataclasses import asdict, dataclass, field

from harness.measure import workload
from harness.records import pairs
from harness.run.record import round_entries

PROBE_S = 0.5  # how long the run looks at the machine's load before choosing


@dataclass(frozen=True)
class Choice:
    """The run-wide decision of ``choose`` (recorded in run.json as ``design``)."""

    kind: str  # interleaved | duet | independent
    threads: int | None  # threads per rank for points without measure.threads (None: theirs)
    lanes: tuple[tuple[int, ...], ...] = ()  # duet: the two core sets
    cores: int = 1  # usable cores of the run
    others_cores: float = 0.0  # what other work used when the run started
    why: str = ""

    def as_json(self) -> dict:
        return {k: list(map(list, v)) if k == "lanes" else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict) -> "Choice":
        return cls(**{**data, "lanes": tuple(tuple(x) for x in data.get("lanes") or ())})


@dataclass(frozen=True)
class Task:
    """What a backend runs at once: one round of one point, or a duet of two."""

    members: tuple  # ((point, round_no), ...)
    group: int
    block: int
    order: int = 0  # place in its block
    lanes: tuple[tuple[int, ...], ...] = ()  # duet: each member's cores
    threads: int | None = None

    @property
    def duet(self) -> bool:
        return len(self.members) == 2

    @property
    def points(self) -> tuple:
        return tuple(p for p, _ in self.members)

    def label(self) -> str:
        names = " ∥ ".join(p.label for p in self.points)
        return names if self.group is None else f"{names} [block {self.block}]"


@dataclass
class Group:
    index: int
    points: list  # supported points, suite order
    baseline: object | None
    kind: str
    blocks: int = 0  # blocks planned so far
    looks: int = 0
    spent_s: float = 0.0
    stopped: str | None = None  # decided | max_rounds | budget | fixed
    results: dict = field(default_factory=dict)  # (candidate id, base id) -> pairs.Ratio

    def comparisons(self, mode: str) -> list[tuple]:
        if self.baseline is None:
            return []
        if mode == "all":
            return [(a, b) for i, b in enumerate(self.points) for a in self.points[i + 1:]]
        return [(p, self.baseline) for p in self.points if p.id != self.baseline.id]


def group_key(point) -> str:
    """Everything of a point but its strategies and its identity: what makes points comparable."""
    data = point.to_json()
    for key in ("strategies", "index", "id", "label", "seed", "suite"):
        data.pop(key, None)
    return json.dumps(data, sort_keys=True)


def pick_baseline(points, rule: dict):
    from harness.suite.sweep import matches

    if rule:
        for p in points:
            if matches(rule, p.to_json()):
                return p
    dense = [p for p in points if p.strategies.attention.everything_allowed]
    return (dense or points)[0] if points else None


def choose(points, spec, *, others_cores: float | None = None) -> Choice:
    """The run's design and threads (see the module docstring); ``others_cores``: the load
    measured elsewhere (tests), else measured here for ``PROBE_S``."""
    cores = sorted(os.sched_getaffinity(0))
    if spec.design == "independent":
        return Choice("independent", None, (), len(cores), 0.0, "asked for: compare.design independent")
    if points[0].device != "cpu":
        return Choice("interleaved", None, (), len(cores), 0.0, "a CUDA run: points in turn")
    if others_cores is None:
        from harness.measure.contention import others_busy

        others_cores = others_busy(PROBE_S)
    free = max(1, min(len(cores), len(cores) - math.ceil(others_cores - 0.25)))
    fixed = {p.measure.threads for p in points if p.measure.threads}
    need = max(fixed) if fixed else None
    single = all(not p.strategies.parallel.distributed for p in points)
    lane = need or free // 2
    duet_ok = single and lane >= 1 and 2 * lane <= free
    want_duet = spec.design == "duet" or (spec.design == "auto" and spec.pairs == "baseline")
    if not (want_duet and duet_ok):
        threads = max(1, free // max(workload.nproc_of(p) for p in points))
        why = (f"{others_cores:.2f} cores busy with other work, {free} of {len(cores)} free: "
               f"interleaved, {threads} thread(s) per rank")
        return Choice("interleaved", threads, (), len(cores), others_cores, why)
    lanes = (tuple(cores[:lane]), tuple(cores[lane:2 * lane]))
    why = (f"{others_cores:.2f} cores busy with other work, {free} of {len(cores)} free: duet, "
           f"each side on {lane} core(s) with {lane} thread(s)")
    return Choice("duet", lane, lanes, len(cores), others_cores, why)


class Design:
    """See the module docstring."""

    def __init__(self, points, spec, choice: Choice, pairs_of=None):
        """``pairs_of``: explicit groups of two, (baseline id, other id) (``gate --ab``: the
        same point under two override sets), instead of grouping by ``group_key``."""
        self.spec, self.choice = spec, choice
        self.rounds_of: dict[str, int] = {}  # point id -> rounds planned so far
        supported = [p for p in points if not workload.unsupported_reasons(p)]
        self.unsupported = [p for p in points if p not in supported]
        by_id = {p.id: p for p in supported}
        if pairs_of:
            groups = [[by_id[a], by_id[b]] for a, b in pairs_of if a in by_id and b in by_id]
            lone = [p for p in supported if not any(p in g for g in groups)]
            groups += [[p] for p in lone]
        else:
            by_key: dict[str, list] = {}
            for p in supported:
                by_key.setdefault(group_key(p), []).append(p)
            groups = list(by_key.values())
        self.groups = []
        for i, members in enumerate(groups):
            kind = choice.kind if len(members) > 1 or choice.kind != "duet" else "interleaved"
            if kind == "duet" and spec.pairs == "all":
                kind = "interleaved"
            base = members[0] if pairs_of else pick_baseline(members, spec.baseline)
            self.groups.append(Group(i, members, base, kind))
        self.group_of = {p.id: g for g in self.groups for p in g.points}

    # ---- which tasks --------------------------------------------------------------------
    def planned_blocks(self, group: Group) -> int:
        rounds = group.points[0].measure.rounds
        return group.points[0].measure.min_rounds if rounds == "auto" else rounds

    def first_tasks(self) -> list[Task]:
        tasks = [Task(((p, self.next_round(p)),), None, 1) for p in self.unsupported]
        if self.choice.kind == "independent":
            top = max((self.planned_blocks(g) for g in self.groups), default=0)
            for b in range(1, top + 1):
                for p in sorted((p for g in self.groups for p in g.points), key=lambda p: p.index):
                    g = self.group_of[p.id]
                    if b <= self.planned_blocks(g):
                        g.blocks = max(g.blocks, b)
                        tasks.append(Task(((p, self.next_round(p)),), g.index, b,
                                          threads=self.choice.threads))
            return tasks
        top = max((self.planned_blocks(g) for g in self.groups), default=0)
        for b in range(1, top + 1):
            for g in self.groups:
                if b <= self.planned_blocks(g):
                    tasks += self.block(g)
        return tasks

    def next_round(self, point) -> int:
        self.rounds_of[point.id] = self.rounds_of.get(point.id, 0) + 1
        return self.rounds_of[point.id]

    def block(self, g: Group) -> list[Task]:
        """The next block of ``g``: its tasks in this block's random order."""
        g.blocks += 1
        b = g.blocks
        rng = random.Random(f"{self.spec.seed}/{g.index}/{b}")
        t = self.choice.threads
        if g.kind == "duet":
            others = [p for p in g.points if p.id != g.baseline.id]
            place = {p.id: i for i, p in enumerate(others)}
            rng.shuffle(others)
            out = []
            for k, p in enumerate(others):
                swap = (b + place[p.id]) % 2 == 1  # each point's lanes alternate block by block
                lanes = self.choice.lanes[::-1] if swap else self.choice.lanes
                out.append(Task(((p, self.next_round(p)), (g.baseline, self.next_round(g.baseline))),
                                g.index, b, k, lanes, t))
            return out
        order = list(g.points)
        rng.shuffle(order)
        return [Task(((p, self.next_round(p)),), g.index, b, k, (), t) for k, p in enumerate(order)]

    # ---- when to stop ---------------------------------------------------------------------
    def evaluate(self, g: Group, have: dict[str, list[dict]], look: int | None) -> dict:
        """Every comparison of ``g`` on the rounds committed so far: (cand id, base id) -> Ratio."""
        out = {}
        for cand, base in g.comparisons(self.spec.pairs):
            if cand.id not in have or base.id not in have:
                continue  # a side failed (its record says why) or was finished before a resume
            cur, ref = round_entries(have.get(cand.id, [])), round_entries(have.get(base.id, []))
            if self.choice.kind == "independent":
                ratio = pairs.independent([r["latency_ms_p50"] for r in ref if r["latency_ms_p50"]],
                                          [r["latency_ms_p50"] for r in cur if r["latency_ms_p50"]],
                                          self.spec.resolution, self.spec.confidence)
                out[(cand.id, base.id)] = (ratio, 0)
                continue
            logs, left_out = pairs.block_pairs(cur, ref, cand.id, base.id)
            out[(cand.id, base.id)] = (pairs.paired(logs, self.spec.resolution, self.spec.confidence,
                                                     look), left_out)
        return out

    def after_block(self, g: Group, block: int, have: dict[str, list[dict]],
                    took_s: float) -> list[Task]:
        """Block ``block`` of the group was committed: its next block, or [] (``g.stopped``
        says why once the group is done)."""
        g.spent_s += took_s
        m = g.points[0].measure
        if m.rounds != "auto":
            if block >= m.rounds:
                g.results, g.stopped = self.evaluate(g, have, None), "fixed"
            return []
        if block < m.min_rounds or block < g.blocks:
            return []
        g.looks += 1
        g.results = self.evaluate(g, have, g.looks)
        if not g.results:
            g.stopped = "nothing_to_compare"
        elif all(r.decided for r, _ in g.results.values()):
            g.stopped = "decided"
        elif g.blocks >= m.max_rounds:
            g.stopped = "max_rounds"
        elif g.spent_s >= m.budget_s:
            g.stopped = "budget"
        if g.stopped:
            return []
        return [t for t in self.block(g) if all(p.id in have for p in t.points)]

    def summary(self, g: Group) -> dict:
        """What a point's record says of its group: kind, baseline, why measuring stopped."""
        return {"group": g.index, "kind": g.kind, "baseline": g.baseline.id if g.baseline else None,
                "pairs": self.spec.pairs, "blocks": g.blocks, "looks": g.looks,
                "stopped": g.stopped, "spent_s": round(g.spent_s, 3),
                "resolution": self.spec.resolution, "confidence": self.spec.confidence}
