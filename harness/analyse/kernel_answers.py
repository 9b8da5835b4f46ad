"""Per attention pattern, which kernel was fastest, against dense SDPA and against the ideal.

``kernel_answers(records) -> list[str]``: for every group of ok points that differ only in how
attention is computed (pattern parameters, sequence length, workload and every non-attention
setting equal; the kernel and the ops axis free), one line naming the fastest kernel with its
latency, its speed-up over dense attention on SDPA's own choice of backend (``dense`` on the
``auto`` kernel with plain ``fused`` ops, the FlashAttention-backed kernel where SDPA has it)
in the same setting, the ideal speed-up (dense's attention products over the pattern's: pairs
scored plus pairs attended, recorded by the worker as ``attention_products``) and measured /
ideal. Points that did not run (not
supported, errors) are not candidates; every kernel that runs is held to the float64 reference
by the contract tests. Never imports torch.
"""
from __future__ import annotations

from harness.analyse.units import fmt_ms

FREE = ("attention", "attention.kernel", "ops")  # what the answer chooses among


def _setting(rec: dict, with_pattern: bool) -> tuple:
    """The params that must match: everything but the kernel and the ops axis (and, without
    ``with_pattern``, the pattern itself)."""
    params = rec.get("params") or {}
    return tuple(sorted((k, repr(v)) for k, v in params.items()
                        if k not in FREE and not k.startswith("ops.")
                        and (with_pattern or not k.startswith("attention."))))


def _kernel(rec: dict) -> str:
    params = rec["params"]
    return f"{params.get('attention.kernel') or 'auto'} · {params.get('ops')}"


def _is_dense_sdpa(rec: dict) -> bool:
    p = rec["params"]
    return (p.get("attention.name") == "dense" and (p.get("attention.kernel") or "auto") == "auto"
            and p.get("ops") == "fused")


def kernel_answers(records: list[dict]) -> list[str]:
    ok = [r for r in records if r.get("status") == "ok" and "attention.name" in (r.get("params") or {})
          and (r.get("metrics") or {}).get("latency_ms_p50") is not None]
    kernels_seen = {(_setting(r, True), _kernel(r)) for r in ok}
    if len({k for _, k in kernels_seen}) < 2:
        return []  # one kernel everywhere: nothing to choose
    dense = {_setting(r, False): r for r in ok if _is_dense_sdpa(r)}
    groups: dict[tuple, list[dict]] = {}
    for r in ok:
        groups.setdefault(_setting(r, True), []).append(r)
    lines = []
    for setting, recs in groups.items():
        if len(recs) < 2:
            continue
        best = min(recs, key=lambda r: r["metrics"]["latency_ms_p50"])
        p, m = best["params"], best["metrics"]
        pattern = p["attention"].removesuffix(f"_{p.get('attention.kernel')}")
        line = (f"{pattern} · S={p.get('seq_len')} · {p.get('kind')}: fastest kernel "
                f"{_kernel(best)} ({fmt_ms(m['latency_ms_p50'])}, of {len(recs)})")
        base = dense.get(_setting(best, False))
        if base is not None and base is not best:
            speedup = base["metrics"]["latency_ms_p50"] / m["latency_ms_p50"]
            line += f"; {speedup:.2f}× dense SDPA"
            pairs, dense_pairs = m.get("attention_products"), base["metrics"].get("attention_products")
            if pairs and dense_pairs:
                ideal = dense_pairs / pairs
                line += f" (ideal {ideal:.1f}×: {speedup / ideal:.2f} of it)"
        lines.append(line)
    return lines
