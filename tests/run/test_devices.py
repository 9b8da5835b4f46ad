"""``tbench run --devices``: slots from the option (harness.run.devices), rounds at once on them
with results in a stable order (harness.run.schedule.Pool under harness.run.lifecycle).

GPU model names are the NVML boundary (no driver here) and are given as a dict; the scheduler
is tested with a stand-in round that sleeps (to force out-of-order ends) and, end to end, with
real workers on CPU slots (``cpu:N``), Ctrl-C and ``--resume``.
"""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness import records
from harness.run import devices, lifecycle, rundir
from harness.run.plan import points_plan
from harness.suite.errors import SuiteError
from harness.suite.loader import parse_suite
from harness.suite.sweep import expand, load_points
from tests.run.test_faults import ignores_sigterm, run_processes, wait_for, write_suite

ROOT = Path(__file__).resolve().parents[2]
H100, A100 = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"
FOUR = {0: H100, 1: H100, 2: H100, 3: H100}


def pts(seq_lens, nproc=None, device="cpu"):
    data = {"name": "devices-test", "model": {"preset": "tiny"},
            "workload": {"kind": "forward", "batch_size": 1, "num_batches": 1},
            "measure": {"rounds": 1}, "sweep": {"grid": {"workload.seq_len": seq_lens}}}
    if nproc:
        data["strategies"] = {"parallel": {"name": "zero", "nproc": nproc}}
        data["workload"]["kind"] = "train"
    return expand(parse_suite(data, "test"), device)


@pytest.mark.parametrize("spec, device, gpus, expected", [
    ("all", "cuda", FOUR, [(0,), (1,), (2,), (3,)]),
    ("0,3", "cuda", FOUR, [(0,), (3,)]),
    ("cpu:3", "cpu", {}, [None, None, None]),
])
def test_slots(spec, device, gpus, expected):
    assert devices.slots(spec, device, pts([8], device=device), gpus=gpus) == expected


BAD = [
    ("0,1", "cuda", {0: H100, 1: A100}, "GPUs of different models (0: NVIDIA H100 80GB HBM3, 1: NVIDIA A1"),
    ("0,7", "cuda", FOUR, "no GPU 7 here; GPUs: 0 (NVIDIA H100"),
    ("0,0", "cuda", FOUR, "an index is listed twice"),
    ("all", "cuda", {}, "NVML reports no GPU here"),
    ("cpu:2", "cuda", FOUR, "this run is on cuda; give GPU indices or all"),
    ("all", "cpu", {}, "CPU points run one at a time (concurrent points disturb each other's timing)"),
    ("0,1", "cpu", {}, "--devices cpu:N runs N at once anyway"),
    ("cpu:0", "cpu", {}, "cpu:N needs N >= 1"),
    ("gpu0", "cuda", FOUR, "not understood; allowed: all, GPU indices like 0,1,3"),
]


@pytest.mark.parametrize("spec, device, gpus, says", BAD)
def test_bad_devices_are_one_line(spec, device, gpus, says):
    with pytest.raises(SuiteError) as err:
        devices.slots(spec, device, pts([8], device=device), gpus=gpus)
    (line,) = err.value.lines
    assert line.startswith(f"--devices {spec}") or line.startswith(f"--devices {spec!r}")
    assert says in line


def test_a_point_with_more_ranks_than_slots_is_refused():
    with pytest.raises(SuiteError, match="needs 4 devices \\(nproc\\), the run has 2"):
        devices.slots("0,1", "cuda", pts([8], nproc=4, device="cuda"), gpus=FOUR)


def test_rounds_run_at_once_and_results_keep_the_suite_order(tmp_path, monkeypatch):
    points = pts([8, 9, 10, 11]) + pts([12], nproc=2)
    naps = {p.id: nap for p, nap in zip(points, (0.6, 0.1, 0.4, 0.1, 0.2))}  # ends out of order
    lock, running, seen = threading.Lock(), [], {"max": 0, "ends": [], "devices": {}}

    def measured_round(point, run_dir, grace_s, round_no, where):
        mine = where.devices
        with lock:
            assert not set(mine) & {d for r in running for d in r}  # no device shared
            running.append(mine)
            seen["max"] = max(seen["max"], len(running))
            seen["devices"][point.id] = mine
        time.sleep(naps[point.id])
        with lock:
            running.remove(mine)
            seen["ends"].append(point.id)
        return {"status": "ok", "samples_ms": [1.0] * 10, "metrics": {}, "warnings": [],
                "contention": {"contended": False, "reasons": []}, "round": round_no,
                "started_at": "t", "duration_s": naps[point.id]}

    monkeypatch.setattr(rundir.env_mod, "collect_env", lambda: {"python": "3", "git": {}})
    summary = lifecycle.run(points_plan(points, tmp_path, slots=[(0,), (1,), (2,)], warm=False),
                            measure_round=measured_round, reports=False)
    assert summary.counts == {"ok": 5}
    assert seen["max"] == 3 and seen["ends"] != [p.id for p in points]  # at once, out of order
    assert [r["point_id"] for r in records.read_records(tmp_path)] == [p.id for p in points]
    assert len(seen["devices"][points[-1].id]) == 2  # the 2-rank point took two devices
    assert all(len(d) == 1 for pid, d in seen["devices"].items() if pid != points[-1].id)


def tbench(args, cwd, fault=None, **kw):
    env = {k: v for k, v in os.environ.items() if k != "TBENCH_FAULT"}
    env["PYTHONPATH"] = str(ROOT)
    if fault:
        env["TBENCH_FAULT"] = fault
    return subprocess.Popen([sys.executable, "-m", "harness.cli", "run", *map(str, args)], cwd=cwd,
                            env=env, stdin=subprocess.DEVNULL, **kw)


@pytest.mark.slow
def test_cpu_slots_with_real_workers_ctrl_c_and_resume(tmp_path):
    suite = write_suite(tmp_path, sweep={"grid": {"workload.seq_len": [8, 9, 10]}})
    points = load_points(suite, "cpu", [])[1]
    out = tmp_path / "run"
    with open(tmp_path / "stderr", "w") as stderr:
        proc = tbench([suite, "--out", out, "--devices", "cpu:2"], tmp_path, stdout=subprocess.DEVNULL,
                      stderr=stderr, fault=f"{points[1].id}=hang,{points[2].id}=hang")
    try:
        hung = lambda: len([p for p in run_processes(out) if ignores_sigterm(p)]) == 2  # noqa: E731
        assert wait_for(hung, 180, 0.2), (tmp_path / "stderr").read_text()[-2000:]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        proc.kill()
    assert wait_for(lambda: not run_processes(out), 5.0), run_processes(out)
    assert [(r["point_id"], r["status"]) for r in records.read_records(out)] == [
        (points[0].id, "ok"), (points[1].id, "interrupted"), (points[2].id, "interrupted")]
    again = tbench([suite, "--out", out, "--devices", "cpu:2", "--resume"], tmp_path,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr[-3000:]
    oks = [r["point_id"] for r in records.read_records(out) if r["status"] == "ok"]
    assert oks == [p.id for p in points]  # each once, in the suite's order


@pytest.fixture
def four_gpus(monkeypatch):
    """NVML (the boundary: no driver here) reporting four H100s."""
    from harness.measure import telemetry

    monkeypatch.setattr(telemetry, "gpu_count", lambda: 4)
    monkeypatch.setattr(telemetry, "device_info", lambda i: {"name": H100})


@pytest.mark.parametrize("listed, expected", [(None, [0, 1, 2, 3]), ("1,3", [1, 3]), (" 2 ", [2]),
                                              ("", [])])
def test_cuda_visible_devices_narrows_the_gpus(four_gpus, monkeypatch, listed, expected):
    if listed is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", listed)
    assert sorted(devices.visible_gpus()) == expected


@pytest.mark.parametrize("listed", ["GPU-8f3a2b1c-0000-1111-2222-333344445555", "MIG-GPU-1/0/0",
                                    "0, 1", "0,GPU-1"])
def test_cuda_visible_devices_not_as_indices_is_refused(four_gpus, monkeypatch, listed):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", listed)
    with pytest.raises(SuiteError) as err:
        devices.slots("all", "cuda", pts([8], device="cuda"))
    (line,) = err.value.lines
    assert f"CUDA_VISIBLE_DEVICES={listed!r} is not a list of GPU indices" in line


def test_an_empty_cuda_visible_devices_means_no_gpu(four_gpus, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(SuiteError, match="NVML reports no GPU here \\(CUDA_VISIBLE_DEVICES is empty\\)"):
        devices.slots("all", "cuda", pts([8], device="cuda"))


# --- bad options through the CLI: one line, exit 2, nothing runs ------------------------------

BAD_CLI = [
    (["--devices", "all"], {}, "--devices all: this run is on cpu; CPU points run one at a time"),
    (["--devices", "cpu:2", "--launcher", "slurm"], {}, "--devices: not with --launcher slurm"),
    (["--partition", "gpu"], {}, "need --launcher slurm (or launcher.name: slurm in the suite)"),
    (["--sbatch-arg=qos=high", "--launcher", "slurm"], {"PATH": ""},
     "--sbatch-arg: got 'qos=high', allowed: a long sbatch option like --qos=high"),
    (["--launcher", "slurm"], {"PATH": ""}, "--launcher slurm: sbatch not found on PATH"),
    ([], {"launcher": {"name": "slurm", "partiton": "gpu"}},
     "launcher.partiton: unknown key 'partiton' (did you mean 'partition'?)"),
]


@pytest.mark.parametrize("args, extra, says", BAD_CLI)
def test_bad_run_options_are_one_line(tmp_path, monkeypatch, args, extra, says):
    from typer.testing import CliRunner

    from harness import cli

    monkeypatch.setattr("harness.run.lifecycle.sweep", lambda *a, **k: pytest.fail("a point ran"))
    if "PATH" in extra:
        monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    suite = write_suite(tmp_path, **{k: v for k, v in extra.items() if k != "PATH"})
    result = CliRunner().invoke(cli.app, ["run", str(suite), "--out", str(tmp_path / "run"), *args])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0], result.output
    assert not (tmp_path / "run").exists()
