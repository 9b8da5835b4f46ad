"""Answers, not only numbers: per group of comparable points, the strategies ranked by their
step time against the group's baseline, each ratio with its interval and its verdict.

    answers(records, baseline=None) -> [GroupAnswer]
    answer_lines(answers, limit=MAX_GROUPS) -> [str]   one header line per group, then at most
                                                       one line per strategy

A group is the points that differ only in their strategies. A run measured by a paired design
(``harness.run.design``) records each point's ``design`` (its group, baseline, how measuring
stopped) and rounds tagged with their block; the ratio of two points is then
``harness.records.pairs.paired`` over their pairs -- at the sequential look the run stopped at,
so the interval is the one its decision was taken on. Where neither was the duet's baseline
(``--baseline`` naming another), each block's ratio is taken through the baseline they were both
measured beside: ``log(A/C) = log(A/B) - log(C/B)``. Records from a run without blocks (an
older run, ``compare.design: independent``) are grouped like the report's tables and compared
``independent``ly from their round medians. Each row: the strategy (``layout``'s label), the
ratio ``time / baseline time`` with its interval and verdict (faster / slower / equal within the
resolution / undecided, and then the smallest difference it could have resolved), the point's
own time and peak memory. Rows rank by their ratio; a point that did not run comes last with
its status. ``GroupAnswer.notes``: one line of how it was measured, and of what was
re-measured after contention, instead of a badge per cell. Never imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.analyse.layout import (
    COLUMN_AXIS,
    _json,
    baselines,
    layout,
    param_keys,
    point_flags,
    sort_key,
    strategy_keys,
    table_groups,
    value,
    varying,
)
from harness.analyse.units import fmt_bytes, fmt_ms
from harness.records import memory_metric, pairs

MAX_GROUPS = 12
KIND_WORDS = {"forward": "forward pass", "train": "training step", "generate": "generation"}
DESCRIBED = ("kind", "batch_size", "seq_len", "preset", "device", "new_tokens")


@dataclass(frozen=True)
class Row:
    label: str
    point_id: str
    status: str
    ratio: pairs.Ratio | None  # None: the baseline itself, or a point that did not run
    p50: float | None
    ci: tuple[float, float] | None
    memory: float | None
    flags: tuple[str, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class GroupAnswer:
    group: str  # the group in words: workload, shape, model, device
    params: dict
    baseline: str | None  # the baseline's label (None: it did not run)
    rows: tuple[Row, ...]  # ranked: baseline and compared points by ratio, then failures
    memory_metric: str
    notes: tuple[str, ...] = ()
    resolution: float = pairs.RESOLUTION

    @property
    def decided(self) -> list[Row]:
        return [r for r in self.rows if r.ratio is not None and r.ratio.decided]

    @property
    def leanest(self) -> Row | None:
        """The ok row with the least ``memory_metric`` (first by rank on a tie)."""
        sized = [r for r in self.rows if r.status == "ok" and r.memory is not None]
        return min(sized, key=lambda r: r.memory) if sized else None

    @property
    def fastest(self) -> Row | None:
        """The row decided faster than the baseline with the lowest ratio; None when nothing
        was decided faster."""
        faster = [r for r in self.rows if r.ratio is not None and r.ratio.verdict == "faster"]
        return min(faster, key=lambda r: r.ratio.estimate) if faster else None


# ---- groups ----------------------------------------------------------------------------------

def describe(params: dict, extra: list[str]) -> str:
    """``forward pass, batch 1 × 256 tokens, tiny model, fp32 on cpu``: the known params in
    words, any other param that tells groups apart as ``name=value``."""
    words = []
    kind = params.get("kind")
    if kind is not None:
        words.append(KIND_WORDS.get(kind, str(kind)))
        if kind == "generate" and params.get("new_tokens"):
            words[-1] += f" of {params['new_tokens']} tokens"
    batch, seq = params.get("batch_size"), params.get("seq_len")
    shape = [f"batch {batch}" if batch is not None else "", f"{seq} tokens" if seq is not None else ""]
    if any(shape):
        words.append(" × ".join(s for s in shape if s))
    words += [f"{k}={params.get(k)}" for k in extra if params.get(k) is not None]  # a foreign
    # model has no such field: it is told apart by its preset name below
    if params.get("preset") is not None:
        words.append(f"{params['preset']} model")
    tail = " ".join(x for x in (params.get("precision"),
                                f"on {params['device']}" if params.get("device") else None) if x)
    return ", ".join(words + ([tail] if tail else [])) or "all points"


def _groups(records: list[dict], lay) -> list[list[dict]]:
    """Points that differ only in strategies: by the run's design where recorded, else by
    every non-strategy param; in the order of the report's tables and columns."""
    shared = [k for k in param_keys(records) if k not in set(strategy_keys(records, param_keys(records)))]
    split: dict[tuple, list[dict]] = {}
    table_of: dict[tuple, int] = {}
    for t, (_, recs) in enumerate(table_groups(records, lay)):
        for r in recs:
            design = r.get("design") or {}
            key = ("design", design["group"]) if design.get("group") is not None else \
                tuple(_json(r, k) for k in shared)
            split.setdefault(key, []).append(r)
            table_of.setdefault(key, t)
    order = sorted(split, key=lambda k: (table_of[k], sort_key(value(split[k][0], COLUMN_AXIS)),
                                         min(r.get("index", 0) for r in split[k])))
    return [split[k] for k in order]


def _pick_baseline(group: list[dict], lay, wanted: str | None) -> tuple[str | None, dict | None]:
    """(the baseline's label, its record if it ran): the run's recorded baseline, else
    ``wanted`` or the layout's default (``layout.baselines``). A baseline that did not run is
    named, with no record: nothing is compared against another point in its place."""
    recorded = next((r.get("design") or {}).get("baseline") for r in group)
    chosen = next((r for r in group if r["point_id"] == recorded), None) if wanted is None else None
    if chosen is None:
        (label,) = baselines([((), group)], lay, wanted)
        chosen = next((r for r in group if lay.row_label(r) == label), None)
    if chosen is None:
        return None, None
    return lay.row_label(chosen), chosen if chosen.get("status") == "ok" else None


# ---- ratios ----------------------------------------------------------------------------------

def _block_logs(cand: dict, base: dict) -> dict[int, float]:
    """block -> log(cand / base) of their pairs (the clean ones, ``pairs.block_log_ratios``)."""
    return pairs.block_log_ratios(cand.get("rounds") or [], base.get("rounds") or [],
                                  cand["point_id"], base["point_id"])[0]


def ratio_of(cand: dict, base: dict, group: list[dict]) -> pairs.Ratio:
    """``cand / base`` (see the module docstring)."""
    design = cand.get("design") or {}
    resolution = design.get("resolution", pairs.RESOLUTION)
    confidence = design.get("confidence", pairs.CONFIDENCE)
    look = design.get("looks") if design.get("stopped") not in (None, "fixed") else None
    if not design or design.get("kind") == "independent":
        medians = [[r["latency_ms_p50"] for r in rec.get("rounds") or []
                    if r.get("status") == "ok" and r.get("latency_ms_p50")] for rec in (base, cand)]
        if not all(medians):
            medians = [[(rec.get("metrics") or {}).get("latency_ms_p50")] for rec in (base, cand)]
        return pairs.independent(*medians, resolution=resolution, confidence=confidence)
    anchor = next((r for r in group if r["point_id"] == design.get("baseline")), None)
    if design.get("kind") == "duet" and anchor is not None and anchor not in (cand, base):
        a, c = _block_logs(cand, anchor), _block_logs(base, anchor)
        logs = [a[b] - c[b] for b in sorted(set(a) & set(c))]
    else:
        logs, _ = pairs.block_pairs(cand.get("rounds") or [], base.get("rounds") or [],
                                    cand["point_id"], base["point_id"])
    return pairs.paired(logs, resolution, confidence, look or None)


# ---- answers -----------------------------------------------------------------------------------

def _row(rec: dict, label: str, base: dict | None, group: list[dict], metric: str) -> Row:
    m = rec.get("metrics") or {}
    ci = (m.get("latency_ms_p50_ci_low"), m.get("latency_ms_p50_ci_high"))
    ok = rec.get("status") == "ok" and m.get("latency_ms_p50") is not None
    ratio = ratio_of(rec, base, group) if ok and base is not None and rec is not base else None
    error = ((rec.get("error") or "").strip().splitlines() or [""])[-1]
    return Row(label, rec["point_id"], rec.get("status", "?"), ratio, m.get("latency_ms_p50"),
               ci if None not in ci else None, m.get(metric), point_flags(rec), error)


def _rank(row: Row) -> tuple:
    if row.status != "ok":
        return (2, 0.0, row.label)
    return (0, row.ratio.estimate if row.ratio and row.ratio.estimate else 1.0, row.label)


def notes(group: list[dict]) -> tuple[str, ...]:
    """How the group was measured, and what was re-measured or left out: one line each."""
    out = []
    design = next((r.get("design") for r in group if r.get("design")), None)
    if design:
        blocks = design.get("blocks")
        stop = {"decided": "every comparison decided", "max_rounds": "max_rounds reached",
                "budget": "budget_s spent", "fixed": "fixed rounds",
                "nothing_to_compare": "nothing left to compare"}.get(design.get("stopped"),
                                                                      design.get("stopped"))
        out.append(f"{design.get('kind')}, {blocks} block(s), {stop}")
    retried = sum(1 for r in group if any((x.get("attempts") or 1) > 1 for x in r.get("rounds") or []))
    left = sum((r.get("metrics") or {}).get("latency_ms_rounds_excluded") or 0 for r in group)
    if retried or left:
        out.append(f"{retried} of {len(group)} points re-measured after contention"
                   + (f", {left} disturbed round(s) kept out of the headline" if left else ""))
    return tuple(out)


def answers(records: list[dict], baseline: str | None = None) -> list[GroupAnswer]:
    """One ``GroupAnswer`` per group holding at least two points, at least one of them ok."""
    lay = layout(records)
    keys = param_keys(records)
    strategy = set(strategy_keys(records, keys))
    shared = [k for k in keys if k not in strategy]
    extra = [k for k in varying(records) if k not in strategy and k not in DESCRIBED]
    out = []
    for group in _groups(records, lay):
        if len(group) < 2 or not any(r.get("status") == "ok" for r in group):
            continue
        base_label, base = _pick_baseline(group, lay, baseline)
        metric = memory_metric(group)
        kv = [(r.get("metrics") or {}).get("kv_cache_bytes") for r in group if r.get("status") == "ok"]
        if None not in kv and len(set(kv)) > 1:  # decode across patterns: the cache is what grows
            metric = "kv_cache_bytes"
        rows = sorted((_row(r, lay.row_label(r), base, group, metric) for r in group), key=_rank)
        params = {k: value(group[0], k) for k in shared}
        precisions = {_json(r, "precision") for r in group}
        described = dict(params, precision=value(group[0], "precision") if len(precisions) == 1 else None)
        design = next((r.get("design") for r in group if r.get("design")), {}) or {}
        out.append(GroupAnswer(describe(described, extra), params, base_label, tuple(rows),
                               metric, notes(group) + (() if base or not base_label else
                                                        (f"the baseline {base_label} did not run: "
                                                         "nothing is compared",)),
                               design.get("resolution", pairs.RESOLUTION)))
    return out


def row_text(a: GroupAnswer, i: int, r: Row) -> str:
    mem = f", {fmt_bytes(r.memory)}" if r.memory is not None else ""
    if r.status != "ok":
        return f"–. {r.label}: {r.status}" + (f" ({r.error})" if r.error else "")
    own = fmt_ms(r.p50, *(r.ci or (None, None))) if r.p50 is not None else "—"
    if r.label == a.baseline:
        return f"{i}. {r.label} (the baseline): {own}{mem}"
    if r.ratio is None:
        return f"{i}. {r.label}: {own}{mem}"
    return (f"{i}. {r.label}: {r.ratio.verdict_text()}, {r.ratio.interval_text()} the "
            f"baseline's time; {own}{mem}")


def answer_lines(found: list[GroupAnswer], limit: int | None = MAX_GROUPS) -> list[str]:
    """Per group: a header line, then one line per strategy (ranked); past ``limit`` groups,
    one line saying how many more."""
    shown = found if limit is None else found[:limit]
    lines = []
    for a in shown:
        head = f"{a.group}: baseline {a.baseline or '(did not run)'}"
        if a.notes:
            head += " — " + "; ".join(a.notes)
        if a.memory_metric == "kv_cache_bytes" and a.leanest is not None:
            head += f"; leanest KV cache {a.leanest.label} {fmt_bytes(a.leanest.memory)}"
        lines.append(head)
        lines += [f"  {row_text(a, i, r)}" for i, r in enumerate(a.rows, start=1)]
    if len(shown) < len(found):
        lines.append(f"… and {len(found) - len(shown)} more groups, see report.md")
    return lines
