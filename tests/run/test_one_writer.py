"""Nothing doubled, nothing mixed, nothing hung, through the CLI with real processes: one writer
per run folder (a second ``run`` or ``--resume`` is refused naming the owner; a dead owner's lock
is taken over), a resume that checks the files a suite names, a stopped fork server that
cannot stall the sweep, and no fork-server folder left by ``kill -9``."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml

from harness import records

ROOT = Path(__file__).resolve().parents[2]
TINY = {"name": "writer", "device": "cpu", "model": {"preset": "tiny"},
        "workload": {"kind": "forward", "batch_size": 1, "seq_len": 8, "num_batches": 1},
        "measure": {"warmup_iters": 1, "warmup_s": 0.0, "min_samples": 10, "min_time_s": 0.0,
                    "max_samples": 10, "rounds": 1, "timeout_s": 120}}


def suite_file(tmp_path, **measure) -> Path:
    data = json.loads(json.dumps(TINY))
    data["measure"].update(measure)
    data["sweep"] = {"grid": {"workload.seq_len": [8, 9]}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def env(fault: str | None = None) -> dict:
    out = {k: v for k, v in os.environ.items() if k != "TBENCH_FAULT"}
    out["PYTHONPATH"] = str(ROOT)
    if fault:
        out["TBENCH_FAULT"] = fault
    return out


def tbench(tmp_path, *args, fault=None, wait=True):
    cmd = [sys.executable, "-m", "harness.cli", *map(str, args)]
    if wait:
        return subprocess.run(cmd, cwd=tmp_path, env=env(fault), capture_output=True, text=True,
                              timeout=300)
    return subprocess.Popen(cmd, cwd=tmp_path, env=env(fault), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def wait_for(condition, timeout_s: float = 180.0) -> bool:
    """Poll ``condition`` (a file or a process to appear) until it holds or the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def holds_lock(out: Path) -> bool:
    try:
        return json.loads((out / records.LOCK_FILE).read_text() or "{}").get("pid") is not None
    except (OSError, ValueError):
        return False


@pytest.mark.slow
def test_a_second_writer_is_refused_naming_the_owner_and_every_point_is_recorded_once(tmp_path):
    suite, out = suite_file(tmp_path), tmp_path / "run"
    first = tbench(tmp_path, "run", suite, "--out", out, fault="*=hang", wait=False)
    try:
        assert wait_for(lambda: holds_lock(out)), first.stderr
        owner = json.loads((out / records.LOCK_FILE).read_text())["pid"]
        for args in (("run", suite, "--out", out), ("run", suite, "--out", out, "--resume")):
            second = tbench(tmp_path, *args)
            assert second.returncode == 2, second.stderr
            (line,) = second.stderr.strip().splitlines()
            assert line.startswith(f"error: {out} is in use by another tbench (pid {owner} on ")
    finally:
        first.kill()
        first.wait()
    # the owner died by kill -9: its lock is free; the next writer says it took it over
    again = tbench(tmp_path, "run", suite, "--out", out, "--resume")
    assert again.returncode == 0, again.stderr
    assert f"took over the lock of {out} left by pid {owner}" in again.stderr
    latest = records.latest_records(records.read_records(out))
    assert sorted(r["status"] for r in latest) == ["ok", "ok"]
    assert len([r for r in records.read_records(out) if r["status"] == "ok"]) == 2  # once each


@pytest.mark.slow
def test_a_stopped_fork_server_does_not_stall_the_sweep(tmp_path):
    """SIGSTOP the fork server while its first worker samples: that worker ends unreported, the
    server is killed as frozen, the next point forks from a new one, tbench finishes."""
    suite, out = suite_file(tmp_path, min_time_s=2.0), tmp_path / "run"
    proc = tbench(tmp_path, "run", suite, "--out", out, wait=False)
    try:
        def server():
            for child in psutil.Process(proc.pid).children():
                if "forkserver_process" in " ".join(child.cmdline()) and child.children():
                    return child  # a server with a worker running
            return None

        assert wait_for(lambda: server() is not None), proc.stderr
        stopped = server()
        stopped.send_signal(signal.SIGSTOP)
        proc.wait(timeout=120 + 60)  # the point's timeout plus a bound: never a hang
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, proc.stderr.read()
    assert not stopped.is_running() or stopped.status() == psutil.STATUS_ZOMBIE  # killed
    recs = records.read_records(out)
    assert [r["status"] for r in recs] == ["ok", "ok"]
    assert "did not report the worker's exit" in " ".join(recs[0]["warnings"])
    assert "the fork server was killed" in (out / "forkserver.log").read_text()


@pytest.mark.slow
def test_kill_9_of_tbench_leaves_no_fork_server_folder(tmp_path):
    suite, out = suite_file(tmp_path), tmp_path / "run"
    proc = tbench(tmp_path, "run", suite, "--out", out, fault="*=hang", wait=False)
    folders = lambda: list(Path(tempfile.gettempdir()).glob(f"tbench-fs-{proc.pid}-*"))  # noqa: E731
    def servers():
        return [c for c in psutil.Process(proc.pid).children()
                if "forkserver_process" in " ".join(c.cmdline()) and c.children()]

    try:
        assert wait_for(lambda: bool(folders()) and bool(servers())), proc.stderr
        found = servers()
    finally:
        proc.kill()
        proc.wait()
    psutil.wait_procs(found, timeout=30)  # the server dies with tbench (its PDEATHSIG)
    assert not folders()


@pytest.mark.slow
def test_a_lengths_file_changed_before_a_resume_is_refused_never_pooled(tmp_path):
    lengths = tmp_path / "lengths.txt"
    lengths.write_text("8\n6\n")
    data = json.loads(json.dumps(TINY))
    data["workload"]["lengths"] = {"distribution": "file", "path": "lengths.txt"}
    data["workload"]["seq_len"] = 8
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    first = tbench(tmp_path, "run", suite, "--out", out)
    assert first.returncode == 0, first.stderr
    lengths.write_text("3\n2\n")
    again = tbench(tmp_path, "run", suite, "--out", out, "--resume")
    assert again.returncode == 2
    (line,) = again.stderr.strip().splitlines()
    assert line.startswith(f"error: --resume: {lengths} changed since the run started")
    assert len(records.read_records(out)) == 1  # nothing measured on the new lengths
