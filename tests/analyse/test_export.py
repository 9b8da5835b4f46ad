"""tbench export: pytest-benchmark JSON, github-action-benchmark JSON, CSV, Parquet."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from results_factory import attention_sweep, record, write_run
from typer.testing import CliRunner

from harness.analyse.export import benchmark_stats, export
from harness.cli import app as tbench_app


def sweep_run(path, factor=1.0):
    recs = attention_sweep(("dense", "local_w128"), (256, 512),
                           fail={("local_w128", 512): ("oom", "out of memory")})
    for r in recs:
        r["samples_ms"] = [x * factor for x in r["samples_ms"]]
    return write_run(path, recs)


def test_benchmark_stats_hand_computed():
    s = benchmark_stats([4.0, 1.0, 3.0, 2.0])
    assert (s["min"], s["max"], s["mean"], s["median"], s["rounds"]) == (1.0, 4.0, 2.5, 2.5, 4)
    assert s["stddev"] == pytest.approx(math.sqrt(5 / 3))
    assert (s["q1"], s["q3"], s["iqr"]) == (1.5, 3.5, 2.0)  # medians of the lower/upper halves
    assert (s["ld15iqr"], s["hd15iqr"], s["iqr_outliers"]) == (1.0, 4.0, 0)
    assert s["stddev_outliers"] == 2 and s["outliers"] == "2;0"  # 1 and 4 lie beyond mean +- sd
    assert (s["total"], s["ops"], s["iterations"]) == (10.0, 0.4, 1)
    assert s["data"] == [4.0, 1.0, 3.0, 2.0]


def test_pytest_benchmark_compare_reads_exports(tmp_path):
    a = export(sweep_run(tmp_path / "a"), "pytest-benchmark", tmp_path / "a.json")[0]
    b = export(sweep_run(tmp_path / "b", factor=1.1), "pytest-benchmark", tmp_path / "b.json")[0]
    saved = json.loads(a.read_text())
    assert [x["name"] for x in saved["benchmarks"]] == ["dense-256", "dense-512", "local_w128-256"]
    assert saved["benchmarks"][0]["stats"]["median"] == pytest.approx(0.010)  # 10 ms in seconds
    assert saved["benchmarks"][0]["fullname"] == "tbench/demo::dense-256"
    exe = shutil.which("pytest-benchmark") or shutil.which("py.test-benchmark")
    cmd = [exe] if exe else [sys.executable, "-m", "pytest_benchmark.cli"]
    out = subprocess.run(cmd + ["compare", str(a), str(b), "--columns", "min,median,max"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "dense-256" in out.stdout and "local_w128-256" in out.stdout


def test_github_action_benchmark_two_files(tmp_path):
    smaller, bigger = export(sweep_run(tmp_path / "a"), "github-action-benchmark", tmp_path / "gab")
    assert smaller.name == "benchmark-smaller-is-better.json"
    s, b = json.loads(smaller.read_text()), json.loads(bigger.read_text())
    assert s[0] == {"name": "dense-256 latency p50", "unit": "ms", "value": 10.0,
                    "range": "9.9 .. 10.1", "extra": "point dense-256; n=11"}
    assert s[1] == {"name": "dense-256 mem_peak_allocated_bytes", "unit": "bytes",
                    "value": 256 * 2**20}
    assert b[0] == {"name": "dense-256 tokens/s", "unit": "tokens/s", "value": 25600.0}
    assert len(s) == 6 and len(b) == 3  # the OOM point has no numbers


def test_csv_and_parquet_round_trip(tmp_path):
    run = sweep_run(tmp_path / "a")
    (csv,) = export(run, "csv")
    assert csv == run / "export" / "results.csv"
    df = pd.read_csv(csv)
    assert list(df["point_id"]) == ["dense-256", "dense-512", "local_w128-256", "local_w128-512"]
    assert list(df["status"]) == ["ok", "ok", "ok", "oom"]
    assert df.loc[0, "latency_ms_p50"] == 10.0 and df.loc[0, "seq_len"] == 256
    assert json.loads(df.loc[0, "samples_ms"])[0] == pytest.approx(9.9)
    (pq,) = export(run, "parquet", tmp_path / "r.parquet")
    back = pd.read_parquet(pq)
    assert list(back["samples_ms"][0]) == pytest.approx([10 * p for p in
                                                         [0.99, 1.0, 1.01, 1.0, 0.995, 1.005, 1.0,
                                                          0.99, 1.01, 1.0, 1.0]])
    assert back["tokens_per_s"][1] == 25600.0


def test_exports_are_deterministic(tmp_path):
    run = sweep_run(tmp_path / "a")
    for fmt in ("pytest-benchmark", "github-action-benchmark", "csv"):
        first = [p.read_bytes() for p in export(run, fmt)]
        assert first == [p.read_bytes() for p in export(run, fmt)], fmt


def test_cli_export_and_bad_format(tmp_path):
    app = tbench_app
    run = write_run(tmp_path / "a", [record("x", samples_ms=[1.0] * 5)])
    r = CliRunner().invoke(app, ["export", str(run), "--format", "csv"])
    assert r.exit_code == 0 and (run / "export" / "results.csv").exists()
    r = CliRunner().invoke(app, ["export", str(run), "--format", "xlsx"])
    assert r.exit_code == 2 and "unknown export format" in r.output and "Traceback" not in r.output
