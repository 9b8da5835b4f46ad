"""Where the time goes: the profiled points of a run, as the report shows them.

Points with a profiled pass (``measure.profile``), or a profile that ``tbench profile`` saved
as ``RUN_DIR/profiles/<id>/breakdown.json``: per point, the timed median beside the profiled
step time, the regions in ms of the timed median (``regions.region_ms``) and a link to its
trace (relative to the run folder: the HTML stays self-contained, traces are linked, not
embedded); then its top operators by self time (and GPU kernels). Never imports torch.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from harness.analyse.regions import region_ms, region_shares
from harness.analyse.units import fmt_ms
from harness.records import RunFolder

PROFILE_FILE = "breakdown.json"  # in RUN_DIR/profiles/<point id>/, written by `tbench profile`


@dataclass
class Profiled:
    """One profiled point, as the report shows it."""

    label: str
    p50: float | None  # timed median (ms)
    step_ms: float | None  # profiled step (ms)
    regions: list[tuple[str, float, float]]  # (region, ms of the timed median, share)
    top_ops: list[dict]  # {name, self_ms, share, calls} per step
    kernels: list[dict]  # {name, ms, share, calls} per step (GPU)
    trace: str | None  # relative to the run folder
    snapshot: str | None  # CUDA memory snapshot, relative to the run folder


def saved_profiles(run_dir) -> dict[str, dict]:
    """Point id -> the ``profile_*`` metrics ``tbench profile`` saved for it."""
    out = {}
    for path in sorted(Path(run_dir).glob(f"profiles/*/{PROFILE_FILE}")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("point_id"), str):
            out[data["point_id"]] = {k: v for k, v in data.items() if k.startswith("profile_")}
    return out


def with_profiles(run: RunFolder) -> list[dict]:
    """The run's records, a saved profile added to an ok record that has none of its own."""
    saved, out = saved_profiles(run.path), []
    for rec in run.records:
        extra = saved.get(rec.get("point_id")) if rec.get("status") == "ok" else None
        if extra and not region_ms(rec):
            rec = dict(rec, metrics={**(rec.get("metrics") or {}), **extra})
        out.append(rec)
    return out


def profiled(records: list[dict]) -> list[Profiled]:
    out = []
    for rec in sorted(records, key=lambda r: r.get("index", 0)):
        ms, shares, m = region_ms(rec), region_shares(rec), rec.get("metrics") or {}
        if not ms:
            continue
        regions = sorted(((r, t, shares[r]) for r, t in ms.items() if t > 0), key=lambda x: -x[1])
        out.append(Profiled(str(rec.get("label", rec.get("point_id"))), m.get("latency_ms_p50"),
                            m.get("profile_step_ms"), regions, list(m.get("profile_top_ops") or []),
                            list(m.get("profile_kernels") or []), link(m.get("profile_trace")),
                            link(m.get("profile_memory_snapshot"))))
    return out


def link(path) -> str | None:
    """A file of the run folder as a relative link; None for anything else (no scheme, no
    absolute path: a record cannot make the report link elsewhere)."""
    text = str(path) if path else ""
    if not re.fullmatch(r"[\w.+-]+(/[\w.+-]+)*", text) or ".." in text.split("/"):
        return None
    return text


def profile_intro(points: list[Profiled], records: list[dict]) -> str:
    basis = sorted({str((r.get("metrics") or {}).get("profile_time_basis")) for r in records
                    if region_ms(r)})
    return (f"{len(points)} profiled point(s): a few steps under torch.profiler after the timed "
            f"samples (time basis: {', '.join(basis)}; cpu = CPU time of the step, device = GPU "
            "kernel time). Regions are shares of the profiled step times the timed median, in "
            "ms; the profiled step beside the timed median shows the profiler's overhead. Open a "
            "trace in https://ui.perfetto.dev or chrome://tracing.")


def regions_text(p: Profiled, limit: int = 5) -> str:
    shown = [f"{r} {fmt_ms(t)} ({share:.0%})" for r, t, share in p.regions[:limit]]
    rest = sum(t for _, t, _ in p.regions[limit:])
    return ", ".join(shown + ([f"rest {fmt_ms(rest)}"] if rest > 0 else []))


def step_text(p: Profiled) -> str:
    if p.step_ms is None:
        return "—"
    return fmt_ms(p.step_ms) + (f" (×{p.step_ms / p.p50:.2f})" if p.p50 else "")


