"""End to end: ``tbench run suites/smoke.yaml`` through the CLI, what lands on disk, and the
CI gate: its deterministic metrics (FLOPs, model-state bytes, padding efficiency) against the
committed baseline run in ``reports/baseline/smoke`` (timing informational on a shared CPU).

When the smoke suite changes on purpose, refresh the baseline:
    rm -rf reports/baseline/smoke && tbench run suites/smoke.yaml --out reports/baseline/smoke
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import records
from harness.analyse import frame as frame_mod

ROOT = Path(__file__).resolve().parents[2]


BASELINE = ROOT / "reports" / "baseline" / "smoke"


def tbench(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *map(str, args)], cwd=cwd, capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True, timeout=600)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    out = tmp / "run"
    done = tbench("run", ROOT / "suites" / "smoke.yaml", "--out", out, "--device", "cpu", cwd=tmp)
    return out, done


@pytest.mark.slow
def test_smoke_suite_through_the_cli(smoke_run):
    out, done = smoke_run
    assert done.returncode in (0, 3), done.stderr[-3000:]
    assert str(out / "results.jsonl") in done.stdout.strip().splitlines()[-1]

    for name in ("suite.resolved.json", "env.json", "run.json", "results.jsonl"):
        assert (out / name).is_file(), name
    run = json.loads((out / "run.json").read_text())
    assert run["suite"] == "smoke" and run["state"] == "finished"
    assert run["fingerprint"] and run["points_total"] > 0

    df = frame_mod.load_run(out)
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


@pytest.mark.slow
def test_smoke_deterministic_metrics_match_the_committed_baseline(smoke_run, tmp_path):
    out, done = smoke_run
    assert done.returncode in (0, 3), done.stderr[-3000:]
    verdict_file = tmp_path / "verdict.json"
    # --force: the CI machine's CPU may differ from the baseline's; deterministic metrics do not
    gate = tbench("compare", BASELINE, out, "--deterministic-only", "--force",
                  "--json", verdict_file, cwd=tmp_path)
    assert gate.returncode == 0, gate.stdout[-3000:] + gate.stderr[-2000:]
    verdict = json.loads(verdict_file.read_text())
    points = verdict["points"]
    baseline_ids = {r["point_id"] for r in records.read_records(BASELINE)}
    matched = {p["point_id"] for p in points if p["presence"] == "matched"}
    assert matched == baseline_ids  # every baseline point ran again: none went missing
    compared = [m for p in points for m in p["metrics"]
                if m["kind"] == "deterministic" and m["base"] is not None]
    assert compared and all(m["verdict"] == "ok" for m in compared)
    assert verdict["verdict"] in ("ok", "improvement", "inconclusive")
