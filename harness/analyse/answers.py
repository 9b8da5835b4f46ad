"""Answers, not only numbers: per comparable group, the fastest and the leanest strategy.

Input: a run's records (docs/DESIGN.md "Result record"). Output:
  * ``answers(records, baseline=None) -> list[Answer]``: one per group of comparable points
    holding at least two ok points. Comparable: the same value of every param that is no
    strategy (same workload kind, batch, seq_len, preset, device, lengths, ...).
    Fastest: the lowest ``latency_ms_p50``; a tie with every point whose 95% CI overlaps its
    CI. Leanest: the lowest peak memory (``records.memory_metric``); a tie with every point
    within 2% of it. Each with its ratio to the group's baseline point: speed-up base/p50 with
    the conservative CI [base_low / p50_high, base_high / p50_low], memory mem/base_mem.
  * ``answer_lines(answers, limit=MAX_GROUPS) -> list[str]``: one plain-text line per group.
Groups, rows and baselines are ``harness.analyse.layout``'s. Never imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

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
from harness.records import memory_metric

MEMORY_TIE = 0.02
MAX_GROUPS = 12
KIND_WORDS = {"forward": "forward pass", "train": "training step", "generate": "generation"}
DESCRIBED = ("kind", "batch_size", "seq_len", "preset", "device", "new_tokens")


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
