"""Answers, not only numbers: per comparable group, the fastest and the leanest strategy.

Input: a run's records (docs/DESIGN.md "Result record"). Output:
  * ``answers(records, baseline=None) -> list[Answer]``: one per group of comparable points
    holding at least two ok points. Comparable: the same value of every param that is no
    strategy (same workload kind, batch, seq_len, preset, device, lengths, ...); a param ``X``
    is a strategy axis when the records carry ``X.name``, and ``X.p`` belongs to axis ``X``.
    Fastest: the lowest ``latency_ms_p50``; a tie with every point whose 95% CI overlaps its
    CI. Leanest: the lowest peak memory (``results.memory_metric``); a tie with every point
    within 2% of it. Each with its ratio to the group's baseline point: speed-up base/p50 with
    the conservative CI [base_low / p50_high, base_high / p50_low], memory mem/base_mem.
  * ``answer_lines(answers, limit=MAX_GROUPS) -> list[str]``: one plain-text line per group.

It also holds what the report shares with it, so both name things the same way:
  * ``layout(records)``: which param gives the columns (``seq_len``), the rows (the varying
    strategy axes) and the tables (every other varying param); ``Layout.row_label(rec)`` is a
    strategy's label, the text of its table row and of its answers.
  * ``baselines(table_groups(records, lay), lay, wanted)``: the baseline row per table,
    ``wanted`` (``--baseline``) given as a row label (``dense · fused``), a part of one
    (``dense``), a point label's strategy part (``dense/fused/fixed/fp32/none`` of
    ``dense/fused/fixed/fp32/none · forward B=1 S=256``, as the CLI prints it) or a '/'-part of
    that which only one row has; by default the row whose attention is ``dense``, else the
    first. An unknown ``wanted`` raises ``BadInput`` listing the labels allowed.
  * ``point_flags(rec)``: the badges of a point (``contended``, ``noisy``, ``drift``,
    ``single_round``); a warning starting "noisy measurement" counts as ``noisy``.
  * human units: ``fmt_ms`` (0.885 ms, 312 ms, 1.52 s), ``fmt_bytes`` (KiB/MiB/GiB),
    ``fmt_num`` (25.6k, 1.2M).
  * the profiled pass (``measure.profile``), as report, plots and compare read it:
    ``region_shares(rec)`` (``profile_share_<region>``, in ``REGIONS`` order) and
    ``region_ms(rec)``: each share times the timed median ``latency_ms_p50``, so regions of two
    points compare in milliseconds of the step the verdicts are about.
Never imports torch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from harness.analyse.results import BadInput, memory_metric

__all__ = [
    "Answer",
    "Pick",
    "answer_lines",
    "answers",
    "baselines",
    "fmt_bytes",
    "fmt_ms",
    "fmt_num",
    "layout",
    "point_flags",
    "region_ms",
    "region_shares",
]

COLUMN_AXIS = "seq_len"
POINT_LABEL = "point"  # the row key of last resort: the record's label
FLAGS = ("contended", "noisy", "drift", "single_round")
MEMORY_TIE = 0.02
MAX_GROUPS = 12
MAX_LISTED = 20  # labels an error message lists
KIND_WORDS = {"forward": "forward pass", "train": "training step", "generate": "generation"}
DESCRIBED = ("kind", "batch_size", "seq_len", "preset", "device", "new_tokens")


# ---- human units -------------------------------------------------------------------------

def _sig(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def fmt_ms(ms: float, low: float | None = None, high: float | None = None) -> str:
    """``0.885 ms``, ``312 ms``, ``1.52 s``; with a CI, ``10 ms [9.9, 10.1]`` (same unit)."""
    scale, unit = (1000.0, "s") if abs(ms) >= 1000 else (1.0, "ms")
    text = f"{_sig(ms / scale)} {unit}"
    if low is not None and high is not None:
        text += f" [{_sig(low / scale)}, {_sig(high / scale)}]"
    return text


def fmt_bytes(n) -> str:
    if n is None:
        return "—"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def fmt_num(x: float) -> str:
    for suffix, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.3g}{suffix}"
    return f"{x:.3g}"


# ---- the profiled pass: where the time goes -------------------------------------------------

REGIONS = ("embedding", "attention", "ffn", "norm", "lm_head", "loss", "forward_other",
           "backward", "optimizer", "communication", "other")  # harness.measure.profiling's
SHARE = "profile_share_"


def region_shares(rec: dict) -> dict[str, float]:
    """Region -> share of the profiled step, ``REGIONS`` first; {} for a point not profiled."""
    m = rec.get("metrics") or {}
    found = {k[len(SHARE):]: float(v) for k, v in m.items()
             if k.startswith(SHARE) and isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {r: found[r] for r in [r for r in REGIONS if r in found] + sorted(set(found) - set(REGIONS))}


def region_ms(rec: dict) -> dict[str, float]:
    """Region -> milliseconds of the timed median (share x ``latency_ms_p50``); {} without both."""
    p50 = (rec.get("metrics") or {}).get("latency_ms_p50")
    shares = region_shares(rec) if rec.get("status", "ok") == "ok" else {}
    return {r: s * p50 for r, s in shares.items()} if p50 is not None else {}


def point_flags(rec: dict) -> tuple[str, ...]:
    have = {str(f) for f in rec.get("flags") or []}
    if any(str(w).startswith("noisy measurement") for w in rec.get("warnings") or []):
        have.add("noisy")
    return tuple([f for f in FLAGS if f in have] + sorted(have - set(FLAGS)))


# ---- how points are laid out: columns, rows (strategies), tables ---------------------------

def value(rec: dict, key: str):
    if key == POINT_LABEL:
        return rec.get("label", rec.get("point_id"))
    return (rec.get("params") or {}).get(key)


def _json(rec: dict, key: str) -> str:
    return json.dumps(value(rec, key), sort_keys=True, default=str)


def sort_key(v):
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


def param_keys(records: list[dict]) -> list[str]:
    """Every param name, in order of first appearance (the runner's: axis, then its params)."""
    return list(dict.fromkeys(k for r in records for k in (r.get("params") or {})))


def strategy_keys(records: list[dict], keys: list[str]) -> list[str]:
    """Those of ``keys`` that are strategy axes (``X`` with ``X.name`` among the params) or
    their params (``X.window``)."""
    params = set(param_keys(records))
    return [k for k in keys if f"{k.split('.')[0]}.name" in params]


def _fixed_by_head(records: list[dict], key: str) -> bool:
    """``X.p`` whose value is the same wherever ``X``'s is (a strategy's label carries its
    params): grouping by ``X`` already tells its points apart."""
    head = key.split(".")[0]
    if head == key:
        return False
    seen: dict[str, str] = {}
    return all(seen.setdefault(_json(r, head), _json(r, key)) == _json(r, key) for r in records)


def varying(records: list[dict]) -> list[str]:
    keys = sorted(k for k in param_keys(records) if len({_json(r, k) for r in records}) > 1)
    return [k for k in keys if not _fixed_by_head(records, k)]


@dataclass(frozen=True)
class Layout:
    column: str | None      # the param of the columns (seq_len where it varies)
    rows: tuple[str, ...]   # the params of the rows: the varying strategy axes, else the others
    tables: tuple[str, ...]  # every other varying param: one table per combination
    row_axis: str           # what the rows are: "strategy", else the params named

    def row_parts(self, rec: dict) -> tuple[str, ...]:
        return tuple(str(value(rec, k)) for k in self.rows)

    def row_label(self, rec: dict) -> str:
        return " · ".join(self.row_parts(rec)) or str(rec.get("suite", "run"))


def layout(records: list[dict]) -> Layout:
    var = varying(records)
    col = COLUMN_AXIS if COLUMN_AXIS in var else None
    strategy_rows = strategy_keys(records, [k for k in param_keys(records) if k in var])
    rows = strategy_rows or [k for k in var if k != col]
    tables = [k for k in var if k != col and k not in rows]
    if len({tuple(_json(r, k) for k in var) for r in records}) < len(records):
        rows = rows + [POINT_LABEL]  # points no param tells apart: a row each, by label
    row_axis = "strategy" if rows == strategy_rows else " · ".join(rows)
    return Layout(col, tuple(rows), tuple(tables), row_axis)


def table_groups(records: list[dict], lay: Layout) -> list[tuple[tuple, list[dict]]]:
    """(values of ``lay.tables``, records) per table, sorted by those values."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(tuple(_json(r, k) for k in lay.tables), []).append(r)
    values = {t: tuple(value(g[0], k) for k in lay.tables) for t, g in groups.items()}
    order = sorted(groups, key=lambda t: [sort_key(v) for v in values[t]])
    return [(values[t], groups[t]) for t in order]


def row_labels(recs: list[dict], lay: Layout) -> dict[str, tuple[str, ...]]:
    """Row label -> its parts, in suite order (the first record of each row, by index)."""
    parts: dict[str, tuple[str, ...]] = {}
    first: dict[str, int] = {}
    for r in recs:
        parts.setdefault(lay.row_label(r), lay.row_parts(r))
        first.setdefault(lay.row_label(r), r.get("index", 0))
    return {lbl: parts[lbl] for lbl in sorted(parts, key=lambda lbl: (first[lbl], lbl))}


def _prefix(rec: dict) -> str:
    """A point label's strategy part: ``dense/fused/fixed/fp32/none`` of
    ``dense/fused/fixed/fp32/none · forward B=1 S=256``."""
    return str(rec.get("label", "")).split(" · ")[0]


def _pick(recs: list[dict], lay: Layout, wanted: str | None) -> str | None:
    rows = row_labels(recs, lay)
    if wanted is None:
        return next((lbl for lbl, parts in rows.items() if "dense" in parts), next(iter(rows), None))
    by_part = [lbl for lbl, parts in rows.items() if lbl == wanted or wanted in parts]
    if by_part:
        return wanted if wanted in rows else by_part[0]
    by_prefix = {lay.row_label(r) for r in recs if _prefix(r) == wanted}
    by_piece = {lay.row_label(r) for r in recs if wanted in _prefix(r).split("/")}
    for found in (by_prefix, by_piece):
        if len(found) == 1:
            return found.pop()
    return None


def baselines(groups: list[tuple[tuple, list[dict]]], lay: Layout,
              wanted: str | None = None) -> list[str | None]:
    """The baseline row label of each table of ``table_groups`` (see the module docstring)."""
    picked = [_pick(recs, lay, wanted) for _, recs in groups]
    if wanted is not None and groups and all(p is None for p in picked):
        recs = [r for _, g in groups for r in g]
        rows = list(dict.fromkeys(lbl for _, g in groups for lbl in row_labels(g, lay)))
        prefixes = list(dict.fromkeys(_prefix(r) for r in recs if " · " in str(r.get("label"))))
        raise BadInput(f"baseline strategy {wanted!r} not found; allowed: a row label "
                       f"({_listed(rows)})" + (f", a point label's strategy part ({_listed(prefixes)})"
                                               " or one '/'-part of it that only one row has"
                                               if prefixes else ""))
    return [p if p is not None else _pick(recs, lay, None) for p, (_, recs) in zip(picked, groups)]


def _listed(labels: list[str]) -> str:
    more = len(labels) - MAX_LISTED
    return ", ".join(labels[:MAX_LISTED]) + (f", … ({more} more)" if more > 0 else "")


# ---- answers -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pick:
    label: str                          # the strategy, as its table row reads
    value: float                        # latency p50 (ms) or peak memory (bytes)
    ci: tuple[float, float] | None      # the latency p50's 95% CI (ms); None for memory
    ratio: float | None                 # vs the baseline: speed-up base/p50, memory mem/base
    ratio_ci: tuple[float, float] | None  # the speed-up's conservative CI
    flags: tuple[str, ...] = ()
    tied: tuple[Pick, ...] = ()       # the others it cannot be told apart from


@dataclass(frozen=True)
class Answer:
    group: str                          # the group in words: workload, shape, model, device
    params: dict                        # the non-strategy params the group's points share
    baseline: str | None                # the group's baseline label, None if it is not ok here
    baseline_flags: tuple[str, ...]
    memory_metric: str
    points: int                         # ok points compared
    fastest: Pick | None
    leanest: Pick | None
    flags: dict[str, tuple[str, ...]] = field(default_factory=dict)  # label -> flags, if any


def _metric(rec: dict | None, name: str):
    return None if rec is None else (rec.get("metrics") or {}).get(name)


def _ci(rec: dict):
    lo, hi = _metric(rec, "latency_ms_p50_ci_low"), _metric(rec, "latency_ms_p50_ci_high")
    return (lo, hi) if lo is not None and hi is not None else None


def _speed(label: str, rec: dict, base: dict | None) -> Pick:
    p50, ci = _metric(rec, "latency_ms_p50"), _ci(rec)
    ratio = ratio_ci = None
    if base is not None and base is not rec and p50 and _metric(base, "latency_ms_p50"):
        ratio = _metric(base, "latency_ms_p50") / p50
        bci = _ci(base)
        if ci and bci and ci[0] > 0:
            ratio_ci = (bci[0] / ci[1], bci[1] / ci[0])
    return Pick(label, p50, ci, ratio, ratio_ci, point_flags(rec))


def _overlap(a: Pick, b: Pick) -> bool:
    if a.ci is None or b.ci is None:
        return a.value == b.value
    return max(a.ci[0], b.ci[0]) <= min(a.ci[1], b.ci[1])


def _fastest(points: dict[str, dict], base: dict | None) -> Pick | None:
    timed = sorted((_speed(lbl, r, base) for lbl, r in points.items()
                    if _metric(r, "latency_ms_p50") is not None), key=lambda p: (p.value, p.label))
    if len(timed) < 2:
        return None
    best = timed[0]
    return replace(best, tied=tuple(p for p in timed[1:] if _overlap(best, p)))


def _leanest(points: dict[str, dict], base: dict | None, metric: str) -> Pick | None:
    base_mem = _metric(base, metric)
    sized = sorted((Pick(lbl, _metric(r, metric), None,
                         _metric(r, metric) / base_mem if base_mem and r is not base else None,
                         None, point_flags(r))
                    for lbl, r in points.items() if _metric(r, metric) is not None),
                   key=lambda p: (p.value, p.label))
    if len(sized) < 2:
        return None
    best = sized[0]
    close = tuple(p for p in sized[1:] if p.value <= best.value + MEMORY_TIE * abs(best.value))
    return replace(best, tied=close)


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
    words += [f"{k}={params.get(k)}" for k in extra]
    if params.get("preset") is not None:
        words.append(f"{params['preset']} model")
    tail = " ".join(x for x in (params.get("precision"),
                                f"on {params['device']}" if params.get("device") else None) if x)
    return ", ".join(words + ([tail] if tail else [])) or "all points"


def answers(records: list[dict], baseline: str | None = None) -> list[Answer]:
    """One ``Answer`` per group of comparable points with at least two ok points, in the order
    of the report's tables and columns."""
    lay = layout(records)
    groups = table_groups(records, lay)
    keys = param_keys(records)
    strategy = set(strategy_keys(records, keys))
    shared = [k for k in keys if k not in strategy]
    extra = [k for k in varying(records) if k not in strategy and k not in DESCRIBED]
    out = []
    for (_, recs), base_label in zip(groups, baselines(groups, lay, baseline)):
        split: dict[tuple, list[dict]] = {}
        for r in recs:
            split.setdefault(tuple(_json(r, k) for k in shared), []).append(r)
        for group in sorted(split.values(), key=lambda g: (sort_key(value(g[0], COLUMN_AXIS)),
                                                           g[0].get("index", 0))):
            answer = _answer(group, lay, base_label, shared, extra)
            if answer is not None:
                out.append(answer)
    return out


def _answer(group, lay, base_label, shared, extra) -> Answer | None:
    ok = {lay.row_label(r): r for r in group if r.get("status") == "ok"}
    if len(ok) < 2:
        return None
    base = ok.get(base_label)
    metric = memory_metric(group)
    kv = [(r.get("metrics") or {}).get("kv_cache_bytes") for r in ok.values()]
    if None not in kv and len(set(kv)) > 1:  # decode across patterns: the cache is what grows
        metric = "kv_cache_bytes"
    fastest, leanest = _fastest(ok, base), _leanest(ok, base, metric)
    if fastest is None and leanest is None:
        return None
    params = {k: value(group[0], k) for k in shared}
    precisions = {_json(r, "precision") for r in group}  # named when not compared
    described = dict(params, precision=value(group[0], "precision") if len(precisions) == 1 else None)
    return Answer(describe(described, extra), params, base_label if base else None,
                  point_flags(base) if base else (), metric, len(ok), fastest, leanest,
                  {lbl: point_flags(r) for lbl, r in ok.items() if point_flags(r)})


def _name(label: str, flags) -> str:
    return label + "".join(f" ⚠ {f}" for f in flags)


def _versus(a: Answer, p: Pick, speed: bool) -> str:
    if p.label == a.baseline:
        return " (the baseline)"
    if p.ratio is None:
        return ""
    ci = f" [{p.ratio_ci[0]:.2f}, {p.ratio_ci[1]:.2f}]" if p.ratio_ci else ""
    return f", ×{p.ratio:.2f}{ci} {'vs' if speed else 'of'} {_name(a.baseline, a.baseline_flags)}"


def _text(a: Answer, p: Pick, what: str, fmt, speed: bool) -> str:
    if not p.tied:
        return f"{what} {_name(p.label, p.flags)} {fmt(p.value)}{_versus(a, p, speed)}"
    why = "CIs overlap" if speed else f"within {MEMORY_TIE:.0%}"
    listed = ", ".join(f"{_name(x.label, x.flags)} {fmt(x.value)}" for x in (p, *p.tied))
    best = _versus(a, p, speed)
    return f"{what}: tie between {listed} ({why})" + (f"; best{best[1:]}" if best.startswith(",")
                                                       else "")


def answer_line(a: Answer) -> str:
    parts = ([_text(a, a.fastest, "fastest", fmt_ms, True)] if a.fastest else []) + (
        [_text(a, a.leanest, "leanest KV cache" if a.memory_metric == "kv_cache_bytes" else "leanest",
               fmt_bytes, False)] if a.leanest else [])
    return f"{a.group}: " + "; ".join(parts)


def answer_lines(answers: list[Answer], limit: int | None = MAX_GROUPS) -> list[str]:
    """One line per group; past ``limit`` groups, one line saying how many more."""
    shown = answers if limit is None else answers[:limit]
    lines = [answer_line(a) for a in shown]
    if len(shown) < len(answers):
        lines.append(f"… and {len(answers) - len(shown)} more groups, see report.md")
    return lines
