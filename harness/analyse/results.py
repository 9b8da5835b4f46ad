"""The results file of a run folder: durable append, tolerant read, one DataFrame.

Input: a run folder holding ``results.jsonl`` (one JSON record per line, DESIGN.md "Result
record") and ``run.json`` (suite, device, device name, git commit, fingerprint).
Output:
  * ``write_json_atomic(path, data)``: temporary file, fsync, rename;
  * ``append_record(path, record)``: one line appended and fsync'ed before returning (a partial
    last line left by a killed writer is cut first, so the file stays valid JSON Lines);
  * both raise ``OSError`` naming the file (disk full, read-only, permission denied) and leave
    the file as it was: no temporary file, no half-written line;
  * ``read_records(run_dir)`` -> list of records in file order; a partial last line (no newline:
    a writer killed mid-write) is skipped; any other line that is not a JSON object with a
    ``point_id`` raises ``CorruptRecord`` naming the file and the line number;
  * ``set_aside_corrupt(run_dir)`` -> line numbers of the corrupt lines it moved from
    ``results.jsonl`` to ``results.jsonl.corrupt`` (appended there, so nothing is lost);
  * ``latest_records(records)``: the last record per ``point_id`` (a resumed run may hold an
    ``interrupted`` record followed by the finished one), in first-seen order;
  * ``read_json(path)``: a run folder's JSON file (run.json, ...) as a dict, ``BadInput`` if it
    is not a JSON object;
  * ``read_run_folder(run_dir)`` -> ``RunFolder`` (path, latest records, run.json, env.json,
    suite.resolved.json; non-finite floats read as None): the one loader that report, compare,
    gate and export use. A folder (or a ``results.jsonl`` path) that is missing, holds no
    results file or an unreadable one raises ``BadInput`` (a user error, CLI exit code 2);
  * ``load_run(run_dir)`` -> pandas DataFrame, one row per point (``BadInput`` as above, except
    that a started run with no record yet gives no rows): provenance columns
    (``PROVENANCE``), then every swept/key parameter (dotted names, e.g. ``attention``,
    ``attention.window``, ``seq_len``), then every metric of ``METRICS`` (units in the names;
    missing = NaN/None, never 0), then ``samples_ms`` (list of ms), ``warnings`` and ``ranks``;
  * ``memory_metric(records)``: the peak-memory metric the records carry, in the order of
    ``MEMORY_METRICS`` (GPU allocator peak, else RSS above the pre-point baseline, else RSS).

Never imports torch: runs on a CPU-only CI box.
"""
from __future__ import annotations

import contextlib
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
CORRUPT_FILE = RESULTS_FILE + ".corrupt"

STATUSES = ("ok", "oom", "error", "crashed", "timeout", "not_supported", "interrupted",
            "contended")

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
    "temperature_c_max", "throttled", "throttle_reasons", "power_capped",
    "flops_per_step", "tflops_per_s", "mfu", "peak_tflops",
    "compile_s", "attention_products", "flex_block_masks", "flex_block_mask_ms", "loss_final", "loss_ref_fp32", "loss_parity_rel_diff", "loss_parity_ok",
    "amp_skipped_steps", "model_state_bytes_max", "model_state_imbalance",
    "per_token_latency_ms", "loss_parity_final", "loss_parity_amp_skipped_steps",
    "energy_j_per_step", "energy_j_per_token", "energy_j_point", "sdpa_backends", "warmup_steps",
    "latency_ms_p50_rank_max", "energy_j_all_ranks", "throttled_any_rank",
    # inference workloads (prefill / decode / generate) and their KV caches
    "ttft_ms_p50", "itl_ms_p50", "itl_ms_p90", "itl_ms_p99", "prefill_tokens_per_s",
    "decode_tokens_per_s", "generated_tokens_per_step", "kv_cache_bytes",
    "kv_cache_analytic_bytes", "kv_cache_slots", "kv_read_step_bytes", "decode_step_read_bytes",
    "mem_bw_gbs", "mem_bw_util", "peak_bandwidth_gbs",
    # compression: weights and quality cost against the uncompressed model
    "weight_bytes", "weight_uncompressed_bytes", "compression_logits_rel_diff",
    "compression_loss_rel_diff",
    # activation checkpointing (hardware FLOPs) and the memory model
    "hardware_flops_per_step", "hfu", "mem_predicted_bytes", "mem_predicted_states_bytes",
    "mem_predicted_activations_bytes",
)

LIST_COLUMNS = ("samples_ms", "warnings", "ranks")

# Peak memory of a point, best first: what the point itself allocated on the GPU, else on the
# CPU above the baseline taken after imports (torch alone is ~250 MB of RSS), else raw RSS.
MEMORY_METRICS = ("mem_peak_allocated_bytes", "mem_peak_rss_above_baseline_bytes",
                  "mem_peak_rss_bytes")


class BadInput(ValueError):
    """Input the user must fix (missing folder, corrupt file, unknown name): CLI exit code 2."""


class CorruptRecord(BadInput):
    """A line of a results file that is not a record (not a partial last line)."""

    def __init__(self, path: Path, line: int):
        super().__init__(f"{path}:{line}: corrupt record (not a JSON object with a point_id)")
        self.path, self.line = path, line


@dataclass
class RunFolder:
    path: Path
    records: list[dict]  # the latest record per point, file order
    run: dict  # run.json
    env: dict  # env.json
    suite: dict  # suite.resolved.json


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):  # a read-only folder cannot drop it either
            tmp.unlink(missing_ok=True)
        if exc.filename == str(tmp):  # the user knows the file, not our temporary
            exc.filename = None
        raise _naming(exc, path)


def write_json_atomic(path: str | os.PathLike, data: dict, indent: int | None = None) -> None:
    """Temporary file, fsync, rename: a reader sees the old file or the whole new one."""
    _write_atomic(Path(path), json.dumps(data, default=str, indent=indent).encode("utf-8"))


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path`` when the failing call (write, fsync) named no file."""
    if exc.filename is None:
        exc.filename = str(path)
    return exc


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
    """Append ``record`` as one line and fsync, so it survives a kill right after return. On an
    OSError (disk full) the file is cut back to its old end: no half line stays behind."""
    path = Path(path)
    line = memoryview((json.dumps(record, default=str, allow_nan=True) + "\n").encode("utf-8"))
    try:
        _drop_partial_tail(path)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            try:
                while line:  # unbuffered: no write is left pending to land after the cut
                    line = line[os.write(fd, line):]
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):  # else the reader skips the partial line
                    os.ftruncate(fd, end)
                raise
        finally:
            os.close(fd)
    except OSError as exc:
        raise _naming(exc, path)


def _parse(raw: bytes) -> dict[str, Any] | None:
    """The record on one line, or None if the line is not one."""
    try:
        rec = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return rec if isinstance(rec, dict) and "point_id" in rec else None


def _scan(path: Path) -> list[tuple[int, bytes, dict[str, Any] | None]]:
    """(line number, line, record or None if corrupt) per non-blank line of ``path``, except
    a last line without its newline: a writer killed mid-line, so the point is not finished."""
    *complete, _partial = path.read_bytes().split(b"\n")
    return [(n, raw, _parse(raw)) for n, raw in enumerate(complete, start=1) if raw.strip()]


def read_records(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record of ``run_dir/results.jsonl`` in order ([] when the file does not exist)."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.exists():
        return []
    records = []
    for n, _raw, rec in _scan(path):
        if rec is None:
            raise CorruptRecord(path, n)
        records.append(rec)
    return records


def set_aside_corrupt(run_dir: str | os.PathLike) -> list[int]:
    """Move the corrupt lines of ``run_dir/results.jsonl`` to ``CORRUPT_FILE`` (appended) and
    rewrite the results without them (atomically); their line numbers, [] when there are none."""
    path = Path(run_dir) / RESULTS_FILE
    lines = _scan(path) if path.exists() else []
    corrupt = [(n, raw) for n, raw, rec in lines if rec is None]
    if not corrupt:
        return []
    aside = path.with_name(CORRUPT_FILE)
    try:
        with open(aside, "ab") as f:
            f.write(b"".join(raw + b"\n" for _n, raw in corrupt))
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise _naming(exc, aside)
    _write_atomic(path, b"".join(raw + b"\n" for _n, raw, rec in lines if rec is not None))
    return [n for n, _raw in corrupt]


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


def read_json(path: Path) -> dict:
    """The JSON object in ``path`` ({} when absent, non-finite floats as None); ``BadInput`` if
    it is not one."""
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
    return read_json(Path(run_dir) / RUN_FILE)


def read_run_folder(run_dir: str | os.PathLike) -> RunFolder:
    """Load a run folder, or the folder of a given ``results.jsonl`` (see the module docstring)."""
    path = Path(run_dir)
    if path.is_file() and path.name == RESULTS_FILE:
        path = path.parent
    if not path.is_dir():
        raise BadInput(f"{run_dir}: not a run folder (no such directory); give the folder "
                       f"`tbench run` wrote (runs/<suite>-<time>) or its {RESULTS_FILE}")
    if not (path / RESULTS_FILE).is_file():
        raise BadInput(f"{run_dir}: not a run folder (it has no {RESULTS_FILE}); give the folder "
                       f"`tbench run` wrote (runs/<suite>-<time>) or its {RESULTS_FILE}")
    try:
        records = latest_records(read_records(path))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise BadInput(f"{run_dir}: unreadable results ({e})") from None
    for n, r in enumerate(records):
        if not isinstance(r, dict) or "point_id" not in r or "status" not in r:
            raise BadInput(f"{run_dir}: record {n + 1} lacks point_id/status")
    return RunFolder(path, _finite(records), read_run_info(path), read_json(path / ENV_FILE),
                     read_json(path / RESOLVED_FILE))


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
    """One row per point of ``run_dir`` (the latest record of each). A run that has started
    (``run.json`` written) but recorded no point yet gives no rows; a folder that does not exist
    or is not a run folder raises ``BadInput`` (as ``read_run_folder``)."""
    path = Path(run_dir)
    if path.is_dir() and (path / RUN_FILE).is_file() and not (path / RESULTS_FILE).exists():
        return frame([], read_run_info(path))
    run = read_run_folder(run_dir)
    return frame(run.records, run.run)
