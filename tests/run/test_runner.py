"""The runner under failure: every kind of broken point is recorded and the sweep goes on.

Worker processes import torch (~3 s each on this machine), so the tests share few sweeps:
one sweep holds every failure mode, one is interrupted and resumed.
"""
import json
import os
import signal
import threading
from pathlib import Path

import pytest

from harness import records
from harness.analyse import frame as frame_mod
from harness.measure import faults, worker
from harness.run import launcher, lifecycle, rundir
from harness.run.plan import points_plan
from harness.suite.loader import parse_suite
from harness.suite.sweep import expand

FAST = {"warmup_iters": 1, "warmup_s": 0.0, "min_samples": 10, "min_time_s": 0.0, "max_samples": 10,
        "rounds": 1}


def points(seq_lens, timeouts=None, **extra):
    zipped = {"workload.seq_len": seq_lens}
    if timeouts:
        zipped["measure.timeout_s"] = timeouts
    data = {"name": "runner-test", "model": {"preset": "tiny"},
            "workload": {"kind": "forward", "batch_size": 2, "num_batches": 1},
            "measure": FAST, "sweep": {"zip": [zipped]}, **extra}
    return expand(parse_suite(data, "test"), "cpu")


def by_id(run_dir):
    return {r["point_id"]: r for r in records.read_records(run_dir)}


@pytest.mark.slow
def test_every_failure_is_recorded_and_the_sweep_finishes(tmp_path, monkeypatch):
    pts = points([8, 9, 10, 11, 12], timeouts=[120, 120, 120, 4, 120])
    faults = dict(zip((p.id for p in pts[:4]), ("raise", "oom", "segfault", "hang")))
    monkeypatch.setenv("TBENCH_FAULT", ",".join(f"{k}={v}" for k, v in faults.items()))
    unsupported = expand(parse_suite({
        "name": "runner-test-ns", "workload": {"kind": "forward"},
        "strategies": {"parallel": {"name": "zero", "nproc": 2}}}, "test"), "cpu")
    events = []
    summary = lifecycle.run(points_plan(pts + unsupported, tmp_path), progress=events.append, grace_s=1.0, reports=False)

    recs = by_id(tmp_path)
    assert len(recs) == 6 and summary.total == 6 and not summary.interrupted
    raised, oom, segv, hang, ok = (recs[p.id] for p in pts)
    assert raised["status"] == "error" and "injected fault" in raised["error"]
    assert "Traceback" in raised["stderr_tail"]
    assert oom["status"] == "oom" and "can't allocate memory" in oom["error"]
    assert segv["status"] == "crashed" and "SIGSEGV" in segv["error"]
    assert hang["status"] == "timeout" and "4 s" in hang["error"]
    assert ok["status"] == "ok" and ok["error"] is None and len(ok["samples_ms"]) == 10
    assert ok["metrics"]["latency_ms_p50"] > 0 and ok["metrics"]["tokens_per_s"] > 0
    assert ok["metrics"]["mem_peak_rss_bytes"] > ok["metrics"]["mem_rss_baseline_bytes"] > 0
    ns = recs[unsupported[0].id]
    assert ns["status"] == "not_supported" and "not train" in ns["error"]
    assert summary.counts == {"error": 1, "oom": 1, "crashed": 1, "timeout": 1, "ok": 1,
                              "not_supported": 1}
    assert [e.kind for e in events].count("finish") == 6
    assert not live_workers(tmp_path)  # the hung worker's group is gone
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["state"] == "finished" and run["points_total"] == 6
    assert (tmp_path / "env.json").exists()


def live_workers(run_dir) -> list[int]:
    """pids whose command line names a point file of ``run_dir``."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if proc.name.isdigit() and str(run_dir) in cmd and "harness.measure.worker" in cmd:
            pids.append(int(proc.name))
    return pids


def test_cpu_memory_above_baseline_shows_what_the_point_allocated():
    from harness.measure import measurement

    vocab, d_model = 1_000_000, 64  # a 256 MB embedding table, next to ~250 MB of torch import
    (pt,) = points([8], model={"preset": "tiny", "overrides": {"vocab_size": vocab}})
    m = measurement.measure_point(pt)["metrics"]
    table = vocab * d_model * 4
    assert m["mem_peak_rss_above_baseline_bytes"] >= table
    assert m["mem_rss_baseline_bytes"] > 100 * 2**20  # the interpreter and torch, not the point
    assert m["mem_peak_rss_bytes"] == m["mem_rss_baseline_bytes"] + m["mem_peak_rss_above_baseline_bytes"]
    (small,) = points([8])
    assert measurement.measure_point(small)["metrics"]["mem_peak_rss_above_baseline_bytes"] < table / 4


@pytest.mark.slow
def test_interrupt_then_resume_loses_and_repeats_nothing(tmp_path, monkeypatch):
    pts = points([8, 9, 10])
    # the second point runs until stopped: a warm worker ends a tiny point well within a second
    monkeypatch.setenv("TBENCH_FAULT", f"{pts[1].id}=hang")

    def ctrl_c_during_second_point(event):
        if event.kind == "start" and event.position == 1:  # Ctrl-C while its worker runs
            threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()

    first = lifecycle.run(points_plan(pts, tmp_path), progress=ctrl_c_during_second_point, grace_s=1.0, reports=False)
    assert first.interrupted and first.counts == {"ok": 1, "interrupted": 1}
    assert [r["status"] for r in records.read_records(tmp_path)] == ["ok", "interrupted"]
    assert not live_workers(tmp_path)
    assert json.loads((tmp_path / "run.json").read_text())["state"] == "interrupted"
    monkeypatch.delenv("TBENCH_FAULT")

    with pytest.raises(rundir.RunDirError, match="--resume"):
        lifecycle.run(points_plan(pts, tmp_path), reports=False)
    second = lifecycle.run(points_plan(pts, tmp_path, resume=True), reports=False)
    assert second.skipped == 1 and second.counts == {"ok": 2}
    latest = records.latest_records(records.read_records(tmp_path))
    assert sorted(r["point_id"] for r in latest) == sorted(p.id for p in pts)
    assert all(r["status"] == "ok" for r in latest)
    oks = [r["point_id"] for r in records.read_records(tmp_path) if r["status"] == "ok"]
    assert len(oks) == len(set(oks)) == 3  # no point measured twice
    assert len(frame_mod.load_run(tmp_path)) == 3


def test_a_relative_run_folder_works_although_workers_run_in_their_own_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = lifecycle.run(points_plan(points([8]), Path("runs") / "rel"), reports=False)
    assert summary.counts == {"ok": 1}, records.read_records(tmp_path / "runs" / "rel")
    assert summary.results_path == tmp_path / "runs" / "rel" / records.RESULTS_FILE


def test_resume_refuses_a_changed_environment(tmp_path, monkeypatch):
    pts = points([8])
    monkeypatch.setattr(rundir.env_mod, "collect_env", lambda: {"torch": "1.0", "git": {}})
    rundir.open_run(tmp_path, pts, resume=False)
    monkeypatch.setattr(rundir.env_mod, "collect_env", lambda: {"torch": "9.9", "git": {}})
    with pytest.raises(rundir.RunDirError, match="environment changed"):
        rundir.open_run(tmp_path, pts, resume=True)


@pytest.mark.parametrize("exc, status", [
    (MemoryError(), "oom"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:119] DefaultCPUAllocator: can't allocate memory"), "oom"),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "oom"),
    (RuntimeError('"addmm_impl_cpu_" not implemented for \'Half\''), "not_supported"),
    (ValueError("bad"), "error"),
    (NotImplementedError("abstract"), "error"),
])
def test_classify(exc, status):
    assert faults.classify(exc) == status


def test_fault_hook_matches_ids_only(monkeypatch):
    monkeypatch.setenv("TBENCH_FAULT", "abc=hang,def=raise")
    assert faults.injected_fault("def") == "raise" and faults.injected_fault("xyz") is None
    monkeypatch.setenv("TBENCH_FAULT", "*=nonsense")
    with pytest.raises(ValueError, match="unknown"):
        faults.injected_fault("xyz")


def test_rank_results_merge(tmp_path):
    result = tmp_path / "result.json"
    for rank, state, p50, joules, hot in ((0, 100, 1.0, 40.0, False), (1, 60, 1.3, 50.0, True)):
        records.write_json_atomic(worker.rank_result_path(result, rank), {
            "status": "ok", "error": None, "rank": rank,
            "metrics": {"latency_ms_p50": p50, "energy_j": joules, "throttled": hot},
            "rank_metrics": {"rank": rank, "model_state_bytes": state, "mem_peak_bytes": 5}})
    merged = launcher.merge_rank_results(result, 2)
    assert [r["rank"] for r in merged["ranks"]] == [0, 1]
    assert [r["latency_ms_p50"] for r in merged["ranks"]] == [1.0, 1.3]  # each rank's own
    m = merged["metrics"]
    assert m["model_state_bytes_max"] == 100 and m["latency_ms_p50"] == 1.0  # rank 0's record
    assert (m["latency_ms_p50_rank_max"], m["energy_j_all_ranks"], m["throttled_any_rank"]) == (1.3, 90.0, True)
    assert merged["status"] == "ok"
    assert launcher.merge_rank_results(result, 3)["status"] == "crashed"  # rank 2 left nothing


@pytest.mark.parametrize("nproc", [1, 2])
def test_distributed_points_launch_through_torchrun(tmp_path, nproc):
    pt = expand(parse_suite({"name": "z", "workload": {"kind": "train"},
                             "strategies": {"parallel": {"name": "zero", "nproc": nproc}}}, "t"), "cpu")[0]
    cmd = launcher.worker_command(pt, tmp_path / "p.json", tmp_path / "r.json")
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    assert cmd[-3:] == ["harness.measure.worker", str(tmp_path / "p.json"), str(tmp_path / "r.json")]
