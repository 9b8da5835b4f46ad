"""harness.records: durable append, tolerant read, one DataFrame row per point."""
import json

import pytest

from harness import records
from harness.analyse import frame as frame_mod


def record(pid, status="ok", **metrics):
    return {"point_id": pid, "label": f"dense/{pid}", "suite": "s", "index": 0, "status": status,
            "error": None if status == "ok" else "boom", "stderr_tail": None,
            "started_at": "2025-01-01T00:00:00+00:00", "duration_s": 1.5,
            "params": {"device": "cpu", "attention": "local_w4", "attention.window": 4, "seq_len": 64},
            "samples_ms": [1.0, 2.0, 3.0], "metrics": {"latency_ms_p50": 2.0, **metrics},
            "ranks": [], "warnings": ["w"]}


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps(
        {"suite": "s", "device": "cpu", "device_name": "Some CPU", "git_commit": "abc",
         "git_dirty": False, "fingerprint": "f" * 16}))
    return tmp_path


def test_append_then_read_in_order(run_dir):
    path = run_dir / records.RESULTS_FILE
    for pid in ("a", "b"):
        records.append_record(path, record(pid))
    assert [r["point_id"] for r in records.read_records(run_dir)] == ["a", "b"]


def test_partial_last_line_is_skipped(run_dir):
    path = run_dir / records.RESULTS_FILE
    records.append_record(path, record("a"))
    with open(path, "a") as f:
        f.write('{"point_id": "b", "sta')  # writer killed mid-line
    assert [r["point_id"] for r in records.read_records(run_dir)] == ["a"]
    records.append_record(path, record("c"))  # the next append cuts the partial line first
    assert [r["point_id"] for r in records.read_records(run_dir)] == ["a", "c"]


def test_corrupt_line_in_the_middle_is_an_error(run_dir):
    path = run_dir / records.RESULTS_FILE
    path.write_text('{"point_id": "a"}\nnot json\n{"point_id": "c"}\n')
    with pytest.raises(ValueError, match=":2: corrupt record"):
        records.read_records(run_dir)


def test_missing_file_reads_empty(tmp_path):
    assert records.read_records(tmp_path) == []
    with pytest.raises(records.BadInput, match="results.jsonl"):
        frame_mod.load_run(tmp_path)  # not a run folder: no silent empty table
    (tmp_path / records.RUN_FILE).write_text('{"state": "running"}')
    assert frame_mod.load_run(tmp_path).empty  # a run that started and recorded nothing yet


def test_latest_record_per_point_wins(run_dir):
    path = run_dir / records.RESULTS_FILE
    records.append_record(path, record("a", status="interrupted"))
    records.append_record(path, record("b"))
    records.append_record(path, record("a"))
    latest = records.latest_records(records.read_records(run_dir))
    assert [(r["point_id"], r["status"]) for r in latest] == [("a", "ok"), ("b", "ok")]


def test_load_run_columns(run_dir):
    path = run_dir / records.RESULTS_FILE
    records.append_record(path, record("a", tokens_per_s=100.0))
    records.append_record(path, record("b", status="oom"))
    df = frame_mod.load_run(run_dir)
    assert list(df["point_id"]) == ["a", "b"]
    cols = list(df.columns)
    assert cols[:len(records.PROVENANCE)] == list(records.PROVENANCE)
    for col in ("attention", "attention.window", "seq_len", *records.METRICS, "samples_ms"):
        assert col in cols
    row = df.iloc[0]
    assert row["device_name"] == "Some CPU" and row["git_commit"] == "abc"
    assert row["attention.window"] == 4 and row["tokens_per_s"] == 100.0
    assert row["samples_ms"] == [1.0, 2.0, 3.0] and row["warnings"] == ["w"]
    assert df.iloc[1]["status"] == "oom" and df.iloc[1]["error"] == "boom"
    assert df["mem_peak_allocated_bytes"].isna().all()  # unavailable is missing, never 0
