"""A CPU point measured while another process burns every CPU is marked contended, with the
evidence; the same point on a quiet machine is not. Real workers, real /proc/stat, generous
margins: this checks the mechanism (harness.measure.contention through the runner), not a speed.
"""
import os
import subprocess
import sys
import time

import pytest

from harness import records
from harness.measure.contention import HostWindow, judge, others_busy
from harness.run import lifecycle
from harness.run.plan import points_plan
from harness.suite.loader import parse_suite
from harness.suite.sweep import expand

BURN = "import time\nt = time.time()\nwhile time.time() - t < 120: pass\n"


def _point(tmp_name: str):
    data = {"name": tmp_name, "model": {"preset": "tiny"},
            "workload": {"kind": "forward", "batch_size": 2, "seq_len": 32, "num_batches": 1},
            "measure": {"warmup_iters": 1, "warmup_s": 0.0, "min_samples": 10, "min_time_s": 1.5,
                        "max_samples": 100_000, "rounds": 1, "contention_wait_s": 0.0}}
    return expand(parse_suite(data, "test"), "cpu")


def _measure(tmp_path):
    lifecycle.run(points_plan(_point("contention"), tmp_path), reports=False)
    (rec,) = records.read_records(tmp_path)
    assert rec["status"] == "ok", rec.get("error")
    return rec


@pytest.mark.slow
def test_a_point_beside_a_cpu_burner_is_marked_contended(tmp_path):
    """Two burners per core, each in a session of its own (the scheduler shares CPU between
    sessions, so that is what takes cores from a worker), retried and still flagged."""
    cpus = os.cpu_count() or 2
    burners = [subprocess.Popen([sys.executable, "-c", BURN], start_new_session=True)
               for _ in range(2 * cpus)]
    try:
        while others_busy(0.2) < 0.9 * cpus:  # until they burn (no fixed sleep)
            pass
        rec = _measure(tmp_path)
    finally:
        for b in burners:
            b.kill()
            b.wait()
    evidence = rec["rounds"][0]["contention"]
    assert "contended" in rec["flags"]
    assert evidence["contended"] and evidence["others_cpu_cores"] >= 0.5
    assert "other processes used" in evidence["reasons"][0]
    assert evidence["window_s"] >= 1.5 and evidence["loadavg_after"] is not None
    assert rec["rounds"][0]["attempts"] == 3  # measure.on_contention: retry, three tries in all


@pytest.mark.slow
def test_the_same_point_on_a_quiet_machine_is_not(tmp_path):
    if others_busy(1.0) >= 0.3:
        pytest.skip("the machine is busy with other work right now")
    rec = _measure(tmp_path)
    evidence = rec["rounds"][0]["contention"]
    assert not evidence["contended"] and "contended" not in rec["flags"], evidence
    assert evidence["own_cpu_cores"] > 0.5  # it did see the point's own work
    import json

    chosen = json.loads((tmp_path / "run.json").read_text())["design"]["threads"]
    assert rec["metrics"]["threads"] == chosen  # the run's choice for the machine it found


def test_the_window_counts_its_own_work_apart_from_others():
    w = HostWindow().start()
    t = time.perf_counter()
    while time.perf_counter() - t < 0.5:
        pass
    evidence = w.stop(threshold_cores=5.0)
    assert evidence["own_cpu_cores"] == pytest.approx(1.0, abs=0.3)
    assert not evidence["contended"] and evidence["threshold_cores"] == 5.0


def test_judge_names_the_numbers():
    """Contended: other work + steal + the point's planned threads reach the cores + the limit
    (1.2 + 0.3 + 1 = 2.5 >= 2 + 0.25)."""
    base = {"threshold_cores": 0.25, "cpus": 2, "threads_planned": 1, "own_cpu_cores": 0.8}
    e = judge(dict(base, others_cpu_cores=1.2, steal_cpu_cores=0.3))
    assert e["contended"]
    assert e["reasons"] == ["other processes used 1.20 CPU cores (+0.30 stolen by the hypervisor) "
                            "during sampling, beside the point's 1 thread(s) on 2 cores (limit: "
                            "0.25 more than the cores; the point itself used 0.80)"]
    # a steady load that leaves a one-thread point its core hits both sides of a pair alike
    assert not judge(dict(base, others_cpu_cores=1.0, steal_cpu_cores=0.0))["contended"]
    # the same load beside a point planned on both cores takes one of them
    assert judge(dict(base, others_cpu_cores=1.0, steal_cpu_cores=0.0, threads_planned=2))["contended"]
