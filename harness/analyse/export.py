"""Export a run folder to other tools' formats.

Input: a run folder. Output (``export(run_dir, fmt, out)`` -> list of paths written):
  * ``pytest-benchmark``: one JSON file in pytest-benchmark's saved-run schema (machine_info,
    commit_info, benchmarks[...stats...], datetime, version), times in SECONDS as pytest-benchmark
    stores them, so ``pytest-benchmark compare`` reads it. One benchmark per ok point with
    samples; ``fullname`` is ``tbench/<suite>::<label>`` (what compare pairs on).
  * ``github-action-benchmark``: two files for its ``customSmallerIsBetter`` (latency p50 in ms,
    peak memory in bytes, ``harness.records.memory_metric`` of the point) and
    ``customBiggerIsBetter`` (tokens/s) tools:
    ``[{name, unit, value, range, extra}]``.
  * ``csv`` / ``parquet``: the ``harness.records`` DataFrame (list/dict cells as JSON
    text, except ``samples_ms`` which stays a list in Parquet).
Deterministic: no wall-clock time is written (the run's own timestamps are used).
Never imports torch.
"""
from __future__ import annotations

import json
from pathlib import Path

from pytest_benchmark.stats import Stats

from harness import records
from harness.analyse import frame as frame_mod
from harness.records import BadInput, RunFolder, read_run_folder

FORMATS = ("pytest-benchmark", "github-action-benchmark", "csv", "parquet")
PYTEST_BENCHMARK_SCHEMA_VERSION = "5.2.3"


def benchmark_stats(samples_s: list[float]) -> dict:
    """pytest-benchmark's ``stats`` block for per-round times in seconds, computed by
    pytest-benchmark's own ``Stats``, plus the rounds themselves (``data``)."""
    stats = Stats()
    for x in samples_s:
        stats.update(x)
    return {**stats.as_dict(), "data": list(samples_s), "iterations": 1}


def _suite(run: RunFolder) -> str:
    return str(run.run.get("suite") or (run.records[0].get("suite") if run.records else "run"))


def to_pytest_benchmark(run: RunFolder) -> dict:
    suite, env = _suite(run), run.env
    git = env.get("git") if isinstance(env.get("git"), dict) else {}
    benches = []
    for r in run.records:
        if r.get("status") != "ok" or not r.get("samples_ms"):
            continue
        label = str(r.get("label") or r["point_id"])
        benches.append({
            "group": suite, "name": label, "fullname": f"tbench/{suite}::{label}",
            "params": r.get("params") or {}, "param": r["point_id"],
            "extra_info": {k: v for k, v in (r.get("metrics") or {}).items()
                           if k in ("tokens_per_s", "mem_peak_allocated_bytes", "mfu")},
            "options": {"disable_gc": False, "timer": "tbench", "min_rounds": 10,
                        "max_time": None, "min_time": None, "warmup": True},
            "stats": benchmark_stats([x / 1000.0 for x in r["samples_ms"]]),
        })
    return {
        "machine_info": {"node": str(env.get("hostname", "")), "machine": str(env.get("machine", "")),
                         "processor": str(env.get("cpu", "")), "system": str(env.get("system", "")),
                         "python_version": str(env.get("python", "")),
                         "python_implementation": "CPython", "cpu": {"brand_raw": str(env.get("cpu", ""))},
                         "tbench_device": str(run.run.get("device", "")),
                         "tbench_fingerprint": str(run.run.get("fingerprint", ""))},
        "commit_info": {"id": str(git.get("commit") or run.run.get("git_commit") or ""),
                        "dirty": bool(git.get("dirty", False)), "project": "tbench",
                        "branch": str(git.get("branch", "")), "time": "", "author_time": ""},
        "benchmarks": benches,
        "datetime": str(run.run.get("finished_at") or run.run.get("started_at") or ""),
        "version": PYTEST_BENCHMARK_SCHEMA_VERSION,
    }


def to_github_action_benchmark(run: RunFolder) -> tuple[list[dict], list[dict]]:
    smaller, bigger = [], []
    for r in run.records:
        m = r.get("metrics") or {}
        if r.get("status") != "ok":
            continue
        label = str(r.get("label") or r["point_id"])
        if m.get("latency_ms_p50") is not None:
            entry = {"name": f"{label} latency p50", "unit": "ms", "value": m["latency_ms_p50"],
                     "extra": f"point {r['point_id']}; n={m.get('n_samples')}"}
            if m.get("latency_ms_p50_ci_low") is not None:
                entry["range"] = f"{m['latency_ms_p50_ci_low']:.6g} .. {m['latency_ms_p50_ci_high']:.6g}"
            smaller.append(entry)
        key = records.memory_metric([r])
        if m.get(key) is not None:
            smaller.append({"name": f"{label} {key}", "unit": "bytes", "value": m[key]})
        if m.get("tokens_per_s") is not None:
            bigger.append({"name": f"{label} tokens/s", "unit": "tokens/s", "value": m["tokens_per_s"]})
    return smaller, bigger


def _table_for(fmt: str, run: RunFolder):
    df = frame_mod.frame(run.records, run.run)
    for col in df.columns:
        if fmt == "parquet" and col == "samples_ms":
            df[col] = df[col].map(lambda xs: [float(x) for x in xs])
            continue
        values = [v for v in df[col] if v is not None and v == v]
        if any(isinstance(v, (list, dict)) for v in values):
            df[col] = df[col].map(lambda v: json.dumps(v, sort_keys=True))
        elif fmt == "parquet" and len({type(v) for v in values}) > 1:
            df[col] = df[col].map(lambda v: None if v is None else str(v))
    return df


def _dump(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")
    return path


def export(run_dir, fmt: str, out=None) -> list[Path]:
    """Write ``run_dir`` in format ``fmt``; ``out`` is a file (a folder for the two-file format)."""
    if fmt not in FORMATS:
        raise BadInput(f"unknown export format {fmt!r}; allowed: {', '.join(FORMATS)}")
    run = read_run_folder(run_dir)
    export_dir = run.path / "export"
    if fmt == "pytest-benchmark":
        return [_dump(Path(out) if out else export_dir / "pytest-benchmark.json",
                      to_pytest_benchmark(run))]
    if fmt == "github-action-benchmark":
        folder = Path(out) if out else export_dir
        smaller, bigger = to_github_action_benchmark(run)
        return [_dump(folder / "benchmark-smaller-is-better.json", smaller),
                _dump(folder / "benchmark-bigger-is-better.json", bigger)]
    path = Path(out) if out else export_dir / f"results.{fmt}"
    path.parent.mkdir(parents=True, exist_ok=True)
    df = _table_for(fmt, run)
    if fmt == "csv":
        df.to_csv(path, index=False)
    else:
        try:
            df.to_parquet(path, index=False)
        except ImportError as e:
            raise BadInput(f"parquet export needs pyarrow: pip install pyarrow ({e})") from None
    return [path]
