"""DeepSpeed's extensions are built once per environment, before the first point (harness.run.extensions).

Unit tests: the folder belongs to the environment; a lock that torch's FileBaton left behind in a
killed process is stale, one held by a live process (or a compiler working in the op's folder) is
not. End to end, through the real runner (2 ranks under torchrun, gloo on CPU): a ZeRO point on
a machine where a killed build left the op's lock still runs, within its timeout; and
``tbench run`` shows a preparing phase before the first point only when the sweep has ZeRO points.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from harness.run import extensions, lifecycle
from harness.run.plan import points_plan

OP = "deepspeed_shm_comm"  # the one op a CPU ZeRO point builds (DeepSpeed 0.19, torch 2.13)
HOLD_BATON = """
import sys, time
from torch.utils.file_baton import FileBaton
assert FileBaton(sys.argv[1]).try_acquire()  # what torch's _jit_compile does around a build
print("held", flush=True)
time.sleep(120)
"""


def suite(**parallel) -> dict:
    strategies = {"parallel": {"name": "zero", "stage": 2, "nproc": 2, **parallel}} if parallel else {}
    return {"name": "prep", "model": {"preset": "tiny"},
            "workload": {"kind": "train", "batch_size": 2, "seq_len": 16, "num_batches": 2},
            "strategies": strategies,
            "measure": {"warmup_iters": 1, "warmup_s": 0.0, "min_time_s": 0.0, "max_samples": 10,
                        "timeout_s": 150, "rounds": 1}}


def points_of(data: dict):
    from harness.suite.loader import parse_suite
    from harness.suite.sweep import expand

    return expand(parse_suite(data, "t"), "cpu")


def test_the_folder_belongs_to_the_environment(tmp_path, monkeypatch):
    assert extensions.extensions_dir({"TORCH_EXTENSIONS_DIR": "/mine"}) == Path("/mine")
    torch_tag = f"torch-{metadata.version('torch')}"
    venv = tmp_path / "venv"
    venv.mkdir()
    monkeypatch.setattr(sys, "prefix", str(venv))
    assert extensions.extensions_dir({}) == venv / "var/cache/tbench/torch_extensions" / torch_tag
    # a prefix this user cannot write: the user's cache, one folder per environment
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    cache = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    here = extensions.extensions_dir(cache)
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "other-venv"))
    there = extensions.extensions_dir(cache)
    assert here.parent == there.parent == tmp_path / "cache/tbench/torch_extensions"
    assert here != there and here.name.endswith(torch_tag)
    env = extensions.extensions_env("cpu", {"TORCH_EXTENSIONS_DIR": "/mine"})
    assert env["TORCH_EXTENSIONS_DIR"] == "/mine" and env["DS_ACCELERATOR"] == "cpu"
    assert "DS_ACCELERATOR" not in extensions.extensions_env("cuda", {"TORCH_EXTENSIONS_DIR": "/mine"})


def test_a_lock_left_by_a_killed_build_is_stale_a_held_one_is_not(tmp_path):
    lock = tmp_path / OP / "lock"
    lock.parent.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_BATON, str(lock)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert extensions.lock_holders(lock) == {holder.pid}
        assert not extensions.is_stale(lock)
        assert extensions.clear_stale_locks(tmp_path) == [] and lock.exists()
    finally:
        holder.kill()  # killed while building, as a point's timeout kills its ranks
        holder.wait()
    assert lock.exists() and extensions.is_stale(lock)
    assert extensions.clear_stale_locks(tmp_path) == [lock] and not lock.exists()


def test_a_compiler_working_in_the_folder_keeps_the_lock(tmp_path):
    """ninja and the compilers run in the op's folder and may outlive the Python that holds the
    lock; while they run, a second build must not start."""
    lock = tmp_path / OP / "lock"
    lock.parent.mkdir()
    lock.touch()
    compiler = subprocess.Popen(["sleep", "60"], cwd=lock.parent)
    try:
        assert not extensions.is_stale(lock)
    finally:
        compiler.kill()
        compiler.wait()
    assert extensions.is_stale(lock)


def test_without_proc_a_lock_is_stale_after_an_hour(tmp_path, monkeypatch):
    monkeypatch.setattr(extensions, "lock_holders", lambda lock: None)
    lock = tmp_path / OP / "lock"
    lock.parent.mkdir()
    lock.touch()
    assert not extensions.is_stale(lock)
    old = time.time() - extensions.NO_PROC_STALE_S - 60
    os.utime(lock, (old, old))
    assert extensions.is_stale(lock)
    assert not extensions.is_stale(tmp_path / "gone" / "lock")


def no_child(*args, **kwargs):
    raise AssertionError("a build child ran")


def test_only_points_that_will_run_zero_need_ops(monkeypatch):
    monkeypatch.setattr(subprocess, "run", no_child)
    plain = points_of(suite())
    said = []
    assert extensions.needed_extensions(plain) == {} and extensions.prepare(plain, said.append)
    assert said == []
    assert extensions.needed_extensions(points_of(suite(stage=3, offload_optimizer=True))) == {
        "cpu": ("ShareMemCommBuilder",)}
    too_many = points_of(suite(nproc=(os.cpu_count() or 1) + 1))  # not supported here: never runs
    assert extensions.needed_extensions(too_many) == {}


@pytest.mark.slow
def test_zero_point_runs_within_its_timeout_despite_a_stale_lock(tmp_path):
    """A build killed while holding torch's lock leaves ``<folder>/<op>/lock``; every later rank
    used to poll it until the point's timeout. The runner now removes it before the launch."""
    from harness import records

    (point,) = points_of(suite(stage=2))
    said = []
    assert extensions.prepare([point], said.append), said  # built outside any point's timeout
    lock = extensions.extensions_dir() / OP / "lock"
    lock.touch()  # what the killed build left (no process holds it)
    lifecycle.run(points_plan([point], tmp_path), reports=False)
    (rec,) = records.read_records(tmp_path)
    assert rec["status"] == "ok", (rec["error"], rec["stderr_tail"])
    assert rec["duration_s"] < point.measure.timeout_s and not lock.exists()
    assert len(rec["ranks"]) == 2


def test_tbench_run_prepares_before_the_first_point_only_with_zero_points(tmp_path, monkeypatch):
    """The preparing phase runs (here: finds the op built, removes a stale lock) before the first
    point starts; a sweep without ZeRO points has none."""
    from harness import cli

    lock = extensions.extensions_dir() / OP / "lock"
    seen = {}

    def first_point(point, run_dir, grace_s, round_no, where=None):  # stands in for a round
        seen["lock_at_first_point"] = lock.exists()
        return {"status": "not_supported", "error": "stand-in", "round": round_no,
                "started_at": "t", "duration_s": 0.0,
                "contention": {"contended": False, "reasons": []}}

    monkeypatch.setattr("harness.run.rounds.measured_round", first_point)
    monkeypatch.setattr("harness.analyse.report.write_reports", lambda run_dir: [])
    for data, zero in ((suite(stage=2), True), (suite(), False)):
        path = tmp_path / "s.yaml"
        path.write_text(yaml.safe_dump(data))
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.touch()  # left by a killed build
        run = CliRunner().invoke(cli.app, ["run", str(path), "--out", str(tmp_path / f"run-{zero}"),
                                           "--device", "cpu"])
        lock.unlink(missing_ok=True)
        assert run.exit_code == 0, run.output
        preparing = [line for line in run.output.splitlines() if line.startswith("preparing:")]
        assert bool(preparing) == zero and seen["lock_at_first_point"] == (not zero), run.output
        if zero:
            assert any(line.startswith(f"preparing: {OP}: ready in ") for line in preparing)
            assert any("removed the stale lock" in line for line in preparing), preparing
