"""The run-folder format, the bottom layer of the harness: file names, atomic writes, tolerant
reads, the record schema and metric catalogue, and the statistics of a point's rounds.

Every stage imports it (the parent runner, the child worker, Slurm's job, the offline analysis);
it imports nothing of tbench and never torch (``tests/e2e/test_layers.py``).
"""
from harness.records.files import (
    CORRUPT_FILE,
    ENV_FILE,
    LOCK_FILE,
    RESOLVED_FILE,
    RESULTS_FILE,
    ROUNDS_FILE,
    RUN_FILE,
    append_record,
    scan,
    write_json_atomic,
)
from harness.records.folder import (
    BadInput,
    CorruptRecord,
    RunFolder,
    finite,
    latest_records,
    read_json,
    read_records,
    read_rounds,
    read_run_folder,
    read_run_info,
    set_aside_corrupt,
)
from harness.records.metrics import MEMORY_METRICS, METRICS, PROVENANCE, memory_metric

__all__ = [
    "CORRUPT_FILE", "ENV_FILE", "LOCK_FILE", "RESOLVED_FILE", "RESULTS_FILE", "ROUNDS_FILE",
    "RUN_FILE", "BadInput", "CorruptRecord", "MEMORY_METRICS", "METRICS", "PROVENANCE", "RunFolder",
    "append_record", "finite", "latest_records", "memory_metric", "read_json", "read_records",
    "read_rounds", "read_run_folder", "read_run_info", "scan", "set_aside_corrupt",
    "write_json_atomic",
]
