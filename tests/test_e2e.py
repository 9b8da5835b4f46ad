"""End to end: ``tbench run suites/smoke.yaml`` through the CLI, then what lands on disk."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import results

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_smoke_suite_through_the_cli(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(ROOT / "suites" / "smoke.yaml"),
         "--out", str(out), "--device", "cpu"],
        cwd=tmp_path, capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True, timeout=600)
    assert done.returncode in (0, 3), done.stderr[-3000:]
    assert str(out / "results.jsonl") in done.stdout.strip().splitlines()[-1]

    for name in ("suite.resolved.json", "env.json", "run.json", "results.jsonl"):
        assert (out / name).is_file(), name
    run = json.loads((out / "run.json").read_text())
    assert run["suite"] == "smoke" and run["state"] == "finished"
    assert run["fingerprint"] and run["points_total"] > 0

    df = results.load_run(out)
    assert len(df) == run["points_total"] and df["point_id"].is_unique
    assert set(df["status"]) <= {"ok", "not_supported"}  # nothing in the smoke suite may break
    ok = df[df["status"] == "ok"]
    assert len(ok) >= 1
    assert (ok["n_samples"] >= 10).all()
    assert ok["samples_ms"].map(len).eq(ok["n_samples"]).all()
    assert (ok["latency_ms_p50"] > 0).all() and (ok["mem_peak_rss_bytes"] > 0).all()
    for col in ("attention", "padding", "precision", "parallel", "ops", "seq_len", "device"):
        assert col in df.columns
    ns = df[df["status"] == "not_supported"]
    assert ns["error"].map(bool).all()  # every "not supported" says why
