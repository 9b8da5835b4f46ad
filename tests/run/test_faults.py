"""Faults survived, not just reported: tbench killed (SIGKILL, SIGTERM) mid-point leaves no
process behind and a run that ``--resume`` finishes with every point once; every I/O failure of
the run folder (read-only, permission denied, disk full, a corrupt results line) is one
``error:`` line and exit code 2, with nothing already measured lost.

The kill tests run ``python -m harness.cli run`` in a subprocess on a tiny suite whose point
hangs (``TBENCH_FAULT=...=hang``: the step ignores SIGTERM and sleeps); "hung" is read from
/proc (SIGTERM in the worker's ignored-signal mask). A process "of the run" is any whose command
line names the run folder. The I/O tests raise the kernel's OSError at the write boundary
(as root, chmod cannot make a folder read-only) and, where a private mount namespace is
allowed, meet the real thing on a read-only or full tmpfs.
"""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from harness import cli, records
from harness.measure import lifeline
from harness.records import files as record_files
from harness.run import rounds, rundir
from harness.suite.sweep import load_points

ROOT = Path(__file__).resolve().parents[2]
FAST = {"warmup_iters": 1, "warmup_s": 0.0, "min_samples": 10, "min_time_s": 0.0, "max_samples": 10,
        "rounds": 1}
TINY = {"name": "faults", "device": "cpu", "model": {"preset": "tiny"},
        "workload": {"kind": "forward", "batch_size": 1, "seq_len": 8, "num_batches": 1},
        "measure": FAST}


def write_suite(tmp_path, **extra) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({**TINY, **extra}, sort_keys=False))
    return path


def run_processes(run_dir) -> list[int]:
    """pids whose command line names ``run_dir`` (tbench, torchrun, workers)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(run_dir) in cmd:
            pids.append(int(proc.name))
    return pids


def ignores_sigterm(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:"))
    return bool(int(mask, 16) >> (signal.SIGTERM - 1) & 1)


def wait_for(condition, timeout_s: float, every_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every_s)
    return condition()


def tbench_env(fault: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TBENCH_FAULT"}
    env["PYTHONPATH"] = str(ROOT)
    if fault:
        env["TBENCH_FAULT"] = fault
    return env


def start_tbench(suite, out, tmp_path, fault: str) -> subprocess.Popen:
    """``tbench run`` in the background, its output in files (never a full pipe)."""
    with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "run", str(suite), "--out", str(out)],
            cwd=tmp_path, env=tbench_env(fault), stdin=subprocess.DEVNULL, stdout=stdout,
            stderr=stderr)


def hung(out) -> bool:
    """A worker of ``out`` sits in the hang fault (it ignores SIGTERM from then on)."""
    return any(ignores_sigterm(pid) for pid in run_processes(out))


def resume(suite, out, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "run", str(suite), "--out", str(out),
                           "--resume"], cwd=tmp_path, env=tbench_env(), capture_output=True,
                          text=True, timeout=300)


def assert_each_point_once(out, points):
    latest = records.latest_records(records.read_records(out))
    assert sorted(r["point_id"] for r in latest) == sorted(p.id for p in points)
    assert all(r["status"] == "ok" for r in latest), latest
    oks = [r["point_id"] for r in records.read_records(out) if r["status"] == "ok"]
    assert sorted(oks) == sorted(p.id for p in points)  # none measured twice


@pytest.mark.slow  # three worker starts and two tbench starts, each importing torch
def test_kill_9_mid_point_leaves_no_process_and_resume_runs_each_point_once(tmp_path):
    suite = write_suite(tmp_path, sweep={"grid": {"workload.seq_len": [8, 9]}})
    points = load_points(suite, "cpu", [])[1]
    out = tmp_path / "run"
    proc = start_tbench(suite, out, tmp_path, fault=f"{points[1].id}=hang")  # the 2nd point hangs
    try:
        assert wait_for(lambda: hung(out), 180, 0.2), (tmp_path / "stderr").read_text()
    finally:
        proc.kill()
        proc.wait()
    assert wait_for(lambda: not run_processes(out), 2.0), run_processes(out)
    assert [r["status"] for r in records.read_records(out)] == ["ok"]
    assert json.loads((out / "run.json").read_text())["state"] == "running"  # died unannounced

    again = resume(suite, out, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already done (resume)" in again.stdout
    assert_each_point_once(out, points)
    assert json.loads((out / "run.json").read_text())["state"] == "finished"


@pytest.mark.slow
def test_sigterm_mid_point_records_interrupted_and_exits_143(tmp_path):
    suite = write_suite(tmp_path)
    points = load_points(suite, "cpu", [])[1]
    out = tmp_path / "run"
    proc = start_tbench(suite, out, tmp_path, fault="*=hang")
    try:
        assert wait_for(lambda: hung(out), 180, 0.2), (tmp_path / "stderr").read_text()
        proc.send_signal(signal.SIGTERM)  # the worker ignores SIGTERM: the runner must SIGKILL it
        assert proc.wait(timeout=120) == 143
    finally:
        proc.kill()
    assert wait_for(lambda: not run_processes(out), 2.0), run_processes(out)
    stderr = (tmp_path / "stderr").read_text()
    assert "Traceback" not in stderr and "interrupted (SIGTERM); finish with:" in stderr
    (rec,) = records.read_records(out)
    assert rec["status"] == "interrupted" and "SIGTERM" in rec["error"]
    run = json.loads((out / "run.json").read_text())
    assert run["state"] == "interrupted" and run["reason"] == "SIGTERM"

    again = resume(suite, out, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_each_point_once(out, points)


@pytest.mark.parametrize("sig, code, says", [(signal.SIGINT, 130, "Ctrl-C"),
                                             (signal.SIGTERM, 143, "SIGTERM")])
def test_a_signal_mid_point_exits_128_plus_it_and_restores_the_handlers(
        tmp_path, monkeypatch, quick_env, sig, code, says):
    before = signal.getsignal(sig)

    def run_round(point, run_dir, grace_s, round_no, where=None):  # the signal arrives while it "runs"
        os.kill(os.getpid(), sig)
        time.sleep(30)
        pytest.fail("the signal did not stop the point")

    monkeypatch.setattr(rounds, "run_round", run_round)
    out = tmp_path / "run"
    result = invoke("run", write_suite(tmp_path), "--out", out)
    assert result.exit_code == code, result.output
    assert f"interrupted ({sig.name}); finish with:" in result.stderr
    (rec,) = records.read_records(out)
    assert rec["status"] == "interrupted" and says in rec["error"]
    assert json.loads((out / "run.json").read_text())["reason"] == sig.name
    assert signal.getsignal(sig) is before


# --- the worker's own guard, without a runner or torch --------------------------------------

GUARDED = """
import os, subprocess, sys, time
from harness.measure import lifeline
if sys.argv[2] == "no-pidfd":
    def no_pidfd(pid):
        raise OSError(38, "Function not implemented")
    os.pidfd_open = no_pidfd
lifeline.DEADLINE_MARGIN_S = 0.0
lifeline.guard(sys.argv[1])
# a process the worker started, in its group: it must die with it
child = subprocess.Popen(["sleep", "60"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(child.pid, flush=True)
time.sleep(60)
"""


def guarded(tmp_path, timeout_s: float, runner_pid: int | None, pidfd: str = "pidfd"):
    point = tmp_path / "point.json"
    point.write_text(json.dumps({"measure": {"timeout_s": timeout_s}}))
    env = tbench_env()
    if runner_pid is not None:
        env[lifeline.RUNNER_PID_ENV] = str(runner_pid)
    proc = subprocess.Popen([sys.executable, "-c", GUARDED, str(point), pidfd], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    return proc, int(proc.stdout.readline())


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except OSError:
        return True


@pytest.mark.parametrize("pidfd", ["pidfd", "no-pidfd"])
def test_worker_dies_with_its_runner_and_takes_its_group_along(tmp_path, pidfd):
    fake_runner = subprocess.Popen(["sleep", "60"])
    proc, child = guarded(tmp_path, 600, fake_runner.pid, pidfd)
    assert proc.poll() is None and not gone(child)
    fake_runner.kill()
    fake_runner.wait()
    assert proc.wait(timeout=2.0) == -signal.SIGKILL  # it killed its own group
    assert wait_for(lambda: gone(child), 2.0)
    assert "is gone; killing its process group" in proc.stderr.read()


def test_worker_enforces_its_own_deadline(tmp_path):
    t0 = time.monotonic()
    proc, child = guarded(tmp_path, 0.5, None)  # no runner known: it only exits
    assert proc.wait(timeout=10) == 70 and time.monotonic() - t0 < 10
    assert "past its deadline" in proc.stderr.read()
    os.kill(child, signal.SIGKILL)


# --- I/O failures through the CLI, in process -----------------------------------------------

def invoke(*args):
    started = time.monotonic()
    result = CliRunner().invoke(cli.app, [str(a) for a in args])
    assert time.monotonic() - started < 60
    return result


def assert_one_error_line(result, *expected):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, (SystemExit, type(None)))
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for text in expected:
        assert text in errors[0]
    return errors[0]


@pytest.fixture
def quick_env(monkeypatch):
    """The environment without importing torch (~6 s here); the same for a run and its resume."""
    monkeypatch.setattr(rundir.env_mod, "collect_env", lambda: {"python": "3", "git": {}})


def fake_point_runs(monkeypatch) -> list[str]:
    """Points "run" in no time (an ok record); the ids that ran."""
    ran = []

    def run_round(point, run_dir, grace_s, round_no, where=None):
        ran.append(point.id)
        return {"status": "ok", "samples_ms": [1.0] * 10, "metrics": {}, "warnings": [],
                "contention": {"contended": False, "reasons": []}, "round": round_no,
                "started_at": rundir.now_iso(), "duration_s": 0.0}

    monkeypatch.setattr(rounds, "run_round", run_round)
    return ran


def refuse(err: int):
    def failing_open(file, mode="r", *args, **kwargs):
        if any(m in mode for m in "wax+"):
            raise OSError(err, os.strerror(err), str(file))
        return open(file, mode, *args, **kwargs)

    return failing_open


@pytest.mark.parametrize("err, hint", [
    (errno.EROFS, "Read-only file system (choose a writable --out folder)"),
    (errno.EACCES, "Permission denied (choose a folder you may write to"),
    (errno.ENOSPC, "No space left on device (free some space"),
])
def test_an_unwritable_out_folder_is_one_error_line(tmp_path, monkeypatch, quick_env, err, hint):
    ran = fake_point_runs(monkeypatch)
    monkeypatch.setattr(record_files, "open", refuse(err), raising=False)  # every write of the folder
    out = tmp_path / "run"
    result = invoke("run", write_suite(tmp_path), "--out", out)
    assert_one_error_line(result, f"{out / records.RESOLVED_FILE}: {hint}")
    assert not ran and not list(out.glob("*.tmp"))


def test_disk_full_mid_sweep_keeps_earlier_records_and_resume_finishes(tmp_path, monkeypatch, quick_env):
    suite = write_suite(tmp_path, sweep={"grid": {"workload.seq_len": [8, 9]}})
    out = tmp_path / "run"
    fake_point_runs(monkeypatch)
    real_write, appends = os.write, []

    def write(fd, data):  # results.jsonl: the 2nd record gets half a line on disk, then ENOSPC
        if os.readlink(f"/proc/self/fd/{fd}").endswith(records.RESULTS_FILE):
            appends.append(fd)
            if len(appends) == 2:
                return real_write(fd, bytes(data[:len(data) // 2]))
            if len(appends) == 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    result = invoke("run", suite, "--out", out)
    monkeypatch.setattr(os, "write", real_write)
    assert_one_error_line(result, f"{out / records.RESULTS_FILE}: No space left on device")
    assert (out / records.RESULTS_FILE).read_bytes().endswith(b"\n")  # the half line was cut
    (first,) = records.read_records(out)
    assert first["status"] == "ok"
    run = json.loads((out / "run.json").read_text())
    assert run["state"] == "failed" and "No space left on device" in run["reason"]

    ran = fake_point_runs(monkeypatch)
    again = invoke("run", suite, "--out", out, "--resume")
    assert again.exit_code == 0, again.output
    # the second point's round was durable in rounds.jsonl before its record hit the full
    # disk: resume writes that record from it, measuring nothing again
    assert len(ran) == 0 and len(records.read_records(out)) == 2


@pytest.fixture
def finished_run(tmp_path, monkeypatch, quick_env):
    """A run of two points (recorded in no time), then its first line corrupted."""
    suite = write_suite(tmp_path, sweep={"grid": {"workload.seq_len": [8, 9]}})
    out = tmp_path / "run"
    fake_point_runs(monkeypatch)
    assert invoke("run", suite, "--out", out).exit_code == 0
    path = out / records.RESULTS_FILE
    first, second = path.read_text().splitlines()
    path.write_text('{"point_id": "trunc\n' + second + "\n")
    return suite, out, json.loads(first)["point_id"]


def test_a_corrupt_line_refuses_resume_naming_file_and_line(finished_run):
    suite, out, _ = finished_run
    before = (out / records.RESULTS_FILE).read_bytes()
    result = invoke("run", suite, "--out", out, "--resume")
    assert_one_error_line(result, f"{out / records.RESULTS_FILE}:1: corrupt record", "--on-corrupt skip")
    assert (out / records.RESULTS_FILE).read_bytes() == before  # nothing touched


def test_on_corrupt_skip_sets_the_line_aside_and_reruns_its_point(finished_run, monkeypatch):
    suite, out, lost = finished_run
    ran = fake_point_runs(monkeypatch)
    result = invoke("run", suite, "--out", out, "--resume", "--on-corrupt", "skip")
    assert result.exit_code == 0, result.output
    assert f"warning: {out / records.RESULTS_FILE}:1: corrupt record skipped" in result.stderr
    # its measured round is still in rounds.jsonl: the record is written again from it
    assert ran == [] and lost in {r["point_id"] for r in records.read_records(out)}
    assert (out / records.CORRUPT_FILE).read_text() == '{"point_id": "trunc\n'
    assert len(records.read_run_folder(out).records) == 2
    (out / rundir.ROUNDS_FILE).unlink()  # without its rounds, the point is measured again
    (out / records.RESULTS_FILE).write_text('{"point_id": "trunc\n')
    result = invoke("run", suite, "--out", out, "--resume", "--on-corrupt", "skip")
    assert result.exit_code == 0 and sorted(ran) == sorted(lost_and_other(out, lost))


def lost_and_other(out, lost) -> list[str]:
    return [lost] + [r["point_id"] for r in records.read_records(out) if r["point_id"] != lost][:1]


def test_a_corrupt_run_json_refuses_resume(finished_run):
    suite, out, _ = finished_run
    (out / "run.json").write_text("{not json")
    assert_one_error_line(invoke("run", suite, "--out", out, "--resume"), "run.json: not valid JSON")


# --- the real kernel errors, in a private mount namespace -----------------------------------

def can_mount(tmp_path) -> bool:
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=4k tmpfs {tmp_path}"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.parametrize("options, reason", [("ro", "Read-only file system"),
                                             ("size=4k", "No space left on device")])
def test_real_read_only_or_full_filesystem_is_one_error_line(tmp_path, options, reason):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if not can_mount(mnt):
        pytest.skip("no private mount namespace here (needs unshare -m and mount)")
    suite = write_suite(tmp_path)
    script = 'mount -t tmpfs -o "$1" tmpfs "$2" && exec "$3" -m harness.cli run "$4" --out "$2/run"'
    done = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", options, str(mnt),
                           sys.executable, str(suite)], cwd=tmp_path, env=tbench_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert str(mnt) in line and reason in line
