"""The results file of a run folder: durable append, tolerant read, one DataFrame.

Input: a run folder holding ``results.jsonl`` (one JSON record per line, DESIGN.md "Result
record") and ``run.json`` (suite, device, device name, git commit, fingerprint).
Output:
  * ``append_record(path, record)``: one line appended and fsync'ed before returning (a partial
    last line left by a killed writer is cut first, so the file stays valid JSON Lines);
  * ``read_records(run_dir)`` -> list of records in file order; a partial last line (a writer
    killed mid-write) is skipped, a corrupt line elsewhere raises ``ValueError``;
  * ``latest_records(records)``: the last record per ``point_id`` (a resumed run may hold an
    ``interrupted`` record followed by the finished one), in first-seen order;
  * ``read_run_folder(run_dir)`` -> ``RunFolder`` (path, latest records, run.json, env.json,
    suite.resolved.json; non-finite floats read as None): the one loader that report, compare,
    gate and export use. A folder (or a ``results.jsonl`` path) that is missing, holds no
    results file or an unreadable one raises ``BadInput`` (a user error, CLI exit code 2);
  * ``load_run(run_dir)`` -> pandas DataFrame, one row per point: provenance columns
    (``PROVENANCE``), then every swept/key parameter (dotted names, e.g. ``attention``,
    ``attention.window``, ``seq_len``), then every metric of ``METRICS`` (units in the names;
    missing = NaN/None, never 0), then ``samples_ms`` (list of ms), ``warnings`` and ``ranks``;
  * ``memory_metric(records)``: the peak-memory metric the records carry, in the order of
    ``MEMORY_METRICS`` (GPU allocator peak, else RSS above the pre-point baseline, else RSS).

Never imports torch: runs on a CPU-only CI box.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

RESULTS_FILE = "results.jsonl"
RUN_FILE = "run.json"
ENV_FILE = "env.json"
RESOLVED_FILE = "suite.resolved.json"

STATUSES = ("ok", "oom", "error", "crashed", "timeout", "not_supported", "interrupted")

PROVENANCE = (
    "point_id", "label", "suite", "index", "status", "error", "stderr_tail",
    "started_at", "duration_s", "device", "device_name", "git_commit", "git_dirty",
    "fingerprint",
)

METRICS = (
    "latency_ms_p50", "latency_ms_mean", "latency_ms_std", "latency_ms_iqr",
    "latency_ms_p10", "latency_ms_p90", "latency_ms_p99",
    "latency_ms_p50_ci_low", "latency_ms_p50_ci_high", "n_samples",
    "samples_per_s", "tokens_per_s", "real_tokens_per_s", "padding_efficiency",
    "mem_peak_allocated_bytes", "mem_peak_reserved_bytes", "mem_nvml_peak_bytes",
    "mem_process_gpu_bytes", "mem_peak_rss_bytes", "mem_rss_baseline_bytes",
    "mem_peak_rss_above_baseline_bytes",
    "power_w_mean", "energy_j", "gpu_util_pct_mean",
    "sm_clock_mhz_min", "sm_clock_mhz_median", "sm_clock_mhz_max",
    "temperature_c_max", "throttled", "throttle_reasons",
    "flops_per_step", "tflops_per_s", "mfu", "peak_tflops",
    "compile_s", "loss_final", "loss_ref_fp32", "loss_parity_rel_diff", "loss_parity_ok",
    "amp_skipped_steps", "model_state_bytes_max", "model_state_imbalance",
    "per_token_latency_ms",
)

LIST_COLUMNS = ("samples_ms", "warnings", "ranks")

# Peak memory of a point, best first: what the point itself allocated on the GPU, else on the
# CPU above the baseline taken after imports (torch alone is ~250 MB of RSS), else raw RSS.
MEMORY_METRICS = ("mem_peak_allocated_bytes", "mem_peak_rss_above_baseline_bytes",
                  "mem_peak_rss_bytes")


class BadInput(ValueError):
    """Input the user must fix (missing folder, corrupt file, unknown name): CLI exit code 2."""


@dataclass
class RunFolder:
    path: Path
    records: list[dict]  # the latest record per point, file order
    run: dict  # run.json
    env: dict  # env.json
    suite: dict  # suite.resolved.json

def write_json_atomic(path: str | os.PathLike, data: dict, indent: int | None = None) -> None:
    """Temporary file, fsync, rename: a reader sees the old file or the whole new one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, default=str, indent=indent)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _drop_partial_tail(path: Path) -> None:
    """Cut a line left unfinished by a killed writer, so the next record starts on its own line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        f.truncate(f.read().rfind(b"\n") + 1)


def append_record(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append ``record`` as one line and fsync, so it survives a kill right after return."""
    path = Path(path)
    _drop_partial_tail(path)
    line = json.dumps(record, default=str, allow_nan=True) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_records(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record of ``run_dir/results.jsonl`` in order ([] when the file does not exist)."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    records = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            is_last = all(not rest.strip() for rest in lines[n:])
            if is_last:  # a writer killed mid-line: the point is simply not finished
                break
            raise ValueError(f"{path}:{n}: corrupt record (not JSON)") from None
    return records


def latest_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last record of each point id, ordered by first appearance."""
    latest: dict[str, dict[str, Any]] = {}
    for rec in records:
        latest[rec["point_id"]] = rec  # dict keeps first-insertion order
    return list(latest.values())


def _finite(obj):
    """Non-finite floats (NaN, inf) become None: unavailable metrics are null, never NaN."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _read_json(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a JSON object")
    return _finite(data)


def read_run_info(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``run_dir/run.json`` ({} when absent)."""
    return _read_json(Path(run_dir) / RUN_FILE)


def read_run_folder(run_dir: str | os.PathLike) -> RunFolder:
    """Load a run folder, or the folder of a given ``results.jsonl`` (see the module docstring)."""
    path = Path(run_dir)
    if path.is_file() and path.name == RESULTS_FILE:
        path = path.parent
    if not path.is_dir():
        raise BadInput(f"{run_dir}: not a run folder (no such directory)")
    if not (path / RESULTS_FILE).is_file():
        raise BadInput(f"{run_dir}: not a run folder (no {RESULTS_FILE})")
    try:
        records = latest_records(read_records(path))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise BadInput(f"{run_dir}: unreadable results ({e})") from None
    for n, r in enumerate(records):
        if not isinstance(r, dict) or "point_id" not in r or "status" not in r:
            raise BadInput(f"{run_dir}: record {n + 1} lacks point_id/status")
    return RunFolder(path, _finite(records), read_run_info(path), _read_json(path / ENV_FILE),
                     _read_json(path / RESOLVED_FILE))


def memory_metric(records: list[dict[str, Any]]) -> str:
    """The first of ``MEMORY_METRICS`` that some record has a value for (else the last)."""
    for name in MEMORY_METRICS:
        if any((r.get("metrics") or {}).get(name) is not None for r in records):
            return name
    return MEMORY_METRICS[-1]


def _row(rec: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key in PROVENANCE:
        row[key] = rec.get(key, run.get(key))
    row["device"] = rec.get("params", {}).get("device", run.get("device"))
    for key, value in rec.get("params", {}).items():
        if key not in row:
            row[key] = value
    metrics = rec.get("metrics") or {}
    for key in METRICS:
        row[key] = metrics.get(key)
    for key, value in metrics.items():  # metrics added later keep their column
        row.setdefault(key, value)
    for key in LIST_COLUMNS:
        row[key] = rec.get(key) or []
    return row


def frame(records: list[dict[str, Any]], run: dict[str, Any]) -> "pd.DataFrame":
    """One row per record (see ``load_run``); ``run`` is run.json, for provenance columns."""
    import pandas as pd  # here, not at the top: a worker writing its record needs no pandas

    rows = [_row(rec, run) for rec in records]
    if not rows:
        return pd.DataFrame(columns=list(PROVENANCE) + list(METRICS) + list(LIST_COLUMNS))
    df = pd.DataFrame(rows)
    first = list(PROVENANCE)
    last = list(METRICS) + list(LIST_COLUMNS)
    params = [c for c in df.columns if c not in first and c not in last]
    return df[first + params + last]


def load_run(run_dir: str | os.PathLike) -> "pd.DataFrame":
    """One row per point of ``run_dir`` (the latest record of each); no rows before the first
    result is written."""
    if not (Path(run_dir) / RESULTS_FILE).exists():
        return frame([], {})
    run = read_run_folder(run_dir)
    return frame(run.records, run.run)
