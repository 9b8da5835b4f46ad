"""``tbench run --launcher slurm`` against a real single-node Slurm (tests/slurm_cluster.py:
munged, MariaDB + slurmdbd, slurmctld, slurmd started for this module and stopped after).

Skipped, with the reason, only where the cluster cannot exist (Slurm not installed, not root);
a cluster that is installed but fails to start is a failure. Five tests, about three minutes:
the same suite through Slurm and locally (same form and statuses), a job killed by its time
limit (``timeout``; Slurm's limits are whole minutes, so this one costs ~70 s), ``scancel``
plus Ctrl-C mid-sweep then ``--resume`` (nothing lost, nothing measured twice), a job sbatch
refuses (one ``error:`` line, exit 2), and an FSDP point through srun + torchrun. The rest need
no cluster: the fallback for a cluster without accounting (squeue given), state mapping, mixed
nodes, the ``--resume`` hint.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import pytest
import yaml

from harness import records
from harness.run import env as env_mod
from harness.run import lifecycle
from harness.run.plan import points_plan
from harness.suite.sweep import load_points
from tests.slurm_cluster import SlurmCluster, wait_for, why_not

ROOT = Path(__file__).resolve().parents[2]
FAST = {"warmup_iters": 1, "warmup_s": 0.0, "min_samples": 10, "min_time_s": 0.0, "max_samples": 10,
        "rounds": 1}


@pytest.fixture(scope="module")
def cluster():
    reason = why_not()
    if reason:
        pytest.skip(reason)
    pytest.importorskip("submitit", reason="submitit is not installed (pip install -e .)")
    root = tempfile.mkdtemp(prefix="tbench-slurm-")  # not under pytest's 0700 folders: mysql reads it
    try:
        with SlurmCluster(Path(root)) as running:
            yield running
    finally:
        shutil.rmtree(root, ignore_errors=True)  # the database alone is ~100 MB


def write_suite(tmp_path, seq_lens, timeout_s=120) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({
        "name": "slurm-test", "device": "cpu", "model": {"preset": "tiny"},
        "workload": {"kind": "forward", "batch_size": 1, "seq_len": 8, "num_batches": 1},
        "measure": {**FAST, "timeout_s": timeout_s},
        "sweep": {"grid": {"workload.seq_len": seq_lens}}}, sort_keys=False))
    return path


def tbench_env(cluster, fault: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in cluster.env.items() if k != "TBENCH_FAULT"}
    env["PYTHONPATH"] = str(ROOT)
    if fault:
        env["TBENCH_FAULT"] = fault
    return env


def tbench(cluster, tmp_path, *args, fault=None, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "run", *map(str, args)],
                          cwd=tmp_path, env=tbench_env(cluster, fault), capture_output=True,
                          text=True, timeout=timeout)


def latest(out) -> dict[str, dict]:
    return {r["point_id"]: r for r in records.latest_records(records.read_records(out))}


@pytest.mark.slow
def test_a_suite_on_slurm_records_what_the_local_runner_records(cluster, tmp_path, monkeypatch):
    suite = write_suite(tmp_path, [8, 9])
    points = load_points(suite, "cpu", [])[1]
    fault = f"{points[1].id}=raise"
    done = tbench(cluster, tmp_path, suite, "--out", tmp_path / "slurm", "--launcher", "slurm",
                  fault=fault)
    assert done.returncode == 3, done.stderr[-3000:]  # one point failed, as it should
    monkeypatch.setenv("TBENCH_FAULT", fault)
    lifecycle.run(points_plan(points, tmp_path / "local"), reports=False)

    on_slurm, here = latest(tmp_path / "slurm"), latest(tmp_path / "local")
    assert list(on_slurm) == list(here) == [p.id for p in points]  # same points, same order
    for pid in here:
        a, b = on_slurm[pid], here[pid]
        assert a["status"] == b["status"] and a["error"] == b["error"] and a["params"] == b["params"]
        assert set(a) == set(b)
        assert [set(r) - {"node"} for r in a["rounds"]] == [set(r) for r in b["rounds"]]
        assert len(a["samples_ms"]) == len(b["samples_ms"])
    assert [r["status"] for r in on_slurm.values()] == ["ok", "error"]
    # the worker's files per point, as locally; the environment taken on the compute node
    assert (tmp_path / "slurm" / "workers" / points[0].id / "worker.log").exists()
    node = on_slurm[points[0].id]["rounds"][0]["node"]
    assert node["fingerprint"] == env_mod.fingerprint(env_mod.collect_env())  # one machine here
    assert node["job_id"] and node["hostname"] == cluster.node
    nodes = json.loads((tmp_path / "slurm" / "nodes.json").read_text())
    assert list(nodes) == [node["fingerprint"]] and nodes[node["fingerprint"]]["rounds"] == 2
    assert "node types" not in done.stderr
    assert not cluster.queue()


@pytest.mark.slow
def test_a_job_killed_by_its_time_limit_is_a_timeout(cluster, tmp_path):
    suite = write_suite(tmp_path, [8], timeout_s=600)  # the point would wait 10 min: Slurm stops it
    out = tmp_path / "run"
    started = time.monotonic()
    done = tbench(cluster, tmp_path, suite, "--out", out, "--launcher", "slurm", "--time-min", "1",
                  fault="*=hang")
    assert done.returncode == 3, done.stderr[-3000:]
    assert time.monotonic() - started < 150
    (rec,) = records.read_records(out)
    assert rec["status"] == "timeout", rec
    assert "Slurm job" in rec["error"]
    assert wait_for(lambda: not cluster.queue(), 20, 0.5), cluster.queue()


def array_tasks(out) -> list[str]:
    """The job-array tasks submitted for ``out`` (submitit's folder per task: ``JOB_TASK``)."""
    return [p.name for p in (out / "slurm").iterdir() if re.fullmatch(r"\d+_\d+", p.name)]


def job_ids(cluster, state: str) -> list[str]:
    return sorted(line.split()[0] for line in cluster.queue() if line.split()[1] == state)


@pytest.mark.slow
def test_scancel_and_ctrl_c_mid_sweep_then_resume_lose_and_repeat_nothing(cluster, tmp_path):
    suite = write_suite(tmp_path, [8, 9, 10], timeout_s=600)
    points = load_points(suite, "cpu", [])[1]
    out = tmp_path / "run"
    # the cancelled point's worker dies of scancel's SIGTERM and its job returns that "crashed"
    # record; the other ignores SIGTERM, so its job ends without one
    hang = f"{points[1].id}=stall,{points[2].id}=hang"
    with open(tmp_path / "stderr", "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(suite), "--out",
                                 str(out), "--launcher", "slurm"], cwd=tmp_path,
                                env=tbench_env(cluster, hang), stdout=subprocess.DEVNULL,
                                stderr=stderr)
    try:
        # the first point is recorded and the two hanging ones run (the node has 2 CPUs);
        # one array: task i is point i
        def hanging() -> bool:
            running = job_ids(cluster, "RUNNING")
            return (len(records.read_records(out)) == 1 and len(running) == 2
                    and [j.split("_")[1] for j in running] == ["1", "2"])

        assert wait_for(hanging, 120, 0.3), cluster.queue()
        first, _ = job_ids(cluster, "RUNNING")
        cluster.run("scancel", first)  # the user cancels one job: that point is interrupted
        assert wait_for(lambda: len(records.read_records(out)) == 2, 60, 0.3)
        proc.send_signal(signal.SIGINT)  # Ctrl-C: tbench cancels the job it still waits for
        assert proc.wait(timeout=60) == 130, (tmp_path / "stderr").read_text()[-3000:]
    finally:
        proc.kill()
    assert wait_for(lambda: not cluster.queue(), 20, 0.3), cluster.queue()
    recs = records.read_records(out)
    assert [r["status"] for r in recs] == ["ok", "interrupted", "interrupted"]
    assert "ended CANCELLED" in recs[1]["error"], recs[1]["error"]
    assert json.loads((out / "run.json").read_text())["state"] == "interrupted"
    jobs_before = len(array_tasks(out))

    again = tbench(cluster, tmp_path, suite, "--out", out, "--launcher", "slurm", "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    recs = records.read_records(out)
    oks = sorted(r["point_id"] for r in recs if r["status"] == "ok")
    assert oks == sorted(p.id for p in points)  # every point once: none lost, none twice
    assert len(array_tasks(out)) - jobs_before == 2  # only the missing ones ran
    assert os.path.exists(out / "nodes.json")


def test_a_job_sbatch_refuses_is_one_line_and_exit_2(cluster, tmp_path):
    suite = write_suite(tmp_path, [8])
    done = tbench(cluster, tmp_path, suite, "--out", tmp_path / "run", "--launcher", "slurm",
                  "--partition", "no-such-partition", timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert "sbatch refused the job(s)" in errors[0] and "partition" in errors[0].lower()
    assert "sbatch: error" not in done.stderr  # sbatch's own lines are in that one line
    assert not cluster.queue()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["state"] == "failed"


@pytest.mark.slow
def test_a_distributed_point_runs_its_ranks_through_srun_and_torchrun(cluster, tmp_path):
    """An FSDP point of 2 ranks: the job's srun starts torchrun on the job's node, the ranks
    meet at a c10d store there and train; more nodes than the cluster has, or than divide the
    ranks, is one line and exit 2."""
    suite = tmp_path / "fsdp.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "slurm-fsdp", "device": "cpu", "model": {"preset": "tiny"},
        "workload": {"kind": "train", "batch_size": 2, "seq_len": 16, "num_batches": 1},
        "strategies": {"parallel": {"name": "fsdp", "nproc": 2}},
        "measure": {**FAST, "timeout_s": 180}}, sort_keys=False))
    done = tbench(cluster, tmp_path, suite, "--out", tmp_path / "run", "--launcher", "slurm",
                  "--nodes-per-point", "1", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (rec,) = latest(tmp_path / "run").values()
    assert rec["status"] == "ok" and len(rec["ranks"]) == 2, rec.get("error")
    job_id = rec["rounds"][0]["node"]["job_id"]
    steps = subprocess.run(["sacct", "-j", job_id, "-n", "-P", "-o", "JobID,JobName"],
                           env=tbench_env(cluster), capture_output=True, text=True).stdout
    # submitit's own step (.0) runs the job; a second one is srun's, running torchrun
    assert any(re.fullmatch(rf"{re.escape(job_id)}\.[1-9]\d*\|python\S*", line)
               for line in steps.splitlines()), steps
    assert not cluster.queue()

    for nodes, said in (("2", "sbatch refused the job(s)"), ("3", "allowed: a number of nodes")):
        refused = tbench(cluster, tmp_path, suite, "--out", tmp_path / f"n{nodes}", "--launcher",
                         "slurm", "--nodes-per-point", nodes, timeout=120)
        errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
        assert refused.returncode == 2 and len(errors) == 1 and said in errors[0], refused.stderr[-2000:]
        assert "Traceback" not in refused.stderr
    assert not cluster.queue()


class GoneJob:
    """A submitit job handle whose job ended without a result, on a cluster without
    accounting: sacct never says it is done (the squeue boundary is given to ``note_gone``)."""

    num_tasks = 1

    def __init__(self, folder: Path):
        self.job_id = "77_0"
        self.paths = type("Paths", (), {"result_pickle": folder / "77_0_result.pkl",
                                        "stdout": folder / "77_0.out"})()
        self.watcher = type("Watcher", (), {"is_done": lambda *a, **k: False,
                                            "update": lambda *a: None,
                                            "get_state": lambda *a, **k: "UNKNOWN"})()


def test_a_job_gone_from_squeue_without_accounting_is_crashed(tmp_path, monkeypatch):
    from harness.run import slurm

    backend = slurm.Backend(None)
    backend.run_dir, backend.queued, backend.name = tmp_path, [], "tbench-t-1"
    backend.jobs, backend.points, backend.gone = {0: GoneJob(tmp_path)}, {0: object()}, {}
    backend.tasks = {0: types.SimpleNamespace(block=1, group=0, order=0)}
    backend.last_sacct = 0.0
    listed = {"77_0"}
    monkeypatch.setattr(slurm, "squeue_ids", lambda name: set(listed))
    monkeypatch.setattr(slurm, "GONE_GRACE_S", 0.3)
    monkeypatch.setattr(slurm, "SACCT_EVERY_S", 0.1)
    monkeypatch.setattr(slurm, "POLL_S", 0.05)
    backend.note_gone()
    assert not backend.gone  # squeue lists it: it runs
    listed.clear()
    seq, (rec,) = backend.next_done()  # once squeue has not listed it for the grace
    assert seq == 0 and rec["block"] == 1
    assert rec["status"] == "crashed"
    assert rec["error"] == "Slurm job 77_0 ended, state unknown (no accounting: sacct has no record)"
    assert not backend.jobs


def test_a_multi_node_jobs_record_is_its_first_tasks(tmp_path):
    """A job of 2 nodes is a submitit job of 2 tasks (``result()`` refuses it): the record is
    task 0's, the node that measured (``job`` returns None on the others)."""
    from submitit.core.utils import cloudpickle_dump
    from submitit.slurm.slurm import SlurmJob

    from harness.run import slurm

    handle = SlurmJob(tmp_path / "%j", "88", tasks=(0, 1))
    record = {"status": "ok", "error": None, "samples_ms": [1.0]}
    for task, value in ((0, record), (1, None)):
        path = handle.task(task).paths.result_pickle
        path.parent.mkdir(parents=True, exist_ok=True)
        cloudpickle_dump(("success", value), path)
    assert handle.num_tasks == 2
    with pytest.raises(AssertionError):
        handle.result()
    assert slurm.Backend(None).record(handle, None, time.monotonic()) == record


@pytest.mark.parametrize("launcher, parallel, said", [
    ({"name": "slurm", "nodes_per_point": 2}, {"name": "fsdp", "nproc": 3},
     "nodes_per_point (--nodes-per-point) 2: point"),
    ({"name": "slurm", "gpus_per_point": 3, "nodes_per_point": 2}, {"name": "fsdp", "nproc": 2},
     "gpus_per_point 3, allowed: a number of nodes that divides both"),
    ({"name": "slurm"}, {"name": "zero", "nproc": 2, "launcher_args": ["--nnodes", "2"]},
     "strategies.parallel.launcher_args: point"),
    ({"name": "local", "nodes_per_point": 2}, {"name": "fsdp", "nproc": 2},
     "launcher.nodes_per_point: got 2, allowed: 1 with the local launcher"),
])
def test_nodes_that_cannot_work_are_one_line_before_anything_runs(tmp_path, monkeypatch, launcher,
                                                                   parallel, said):
    from typer.testing import CliRunner

    from harness.cli import app

    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")  # no cluster needed
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "nodes", "device": "cpu", "model": {"preset": "tiny"}, "launcher": launcher,
        "workload": {"kind": "train", "batch_size": 2, "seq_len": 8, "num_batches": 1},
        "strategies": {"parallel": parallel}}))
    done = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path / "run")])
    assert done.exit_code == 2, done.output
    (line,) = [x for x in done.output.splitlines() if x.startswith("error:")]
    assert said in line
    assert not (tmp_path / "run" / "results.jsonl").exists()


def test_the_resume_hint_repeats_every_option_quoted():
    import shlex
    from types import SimpleNamespace

    from harness.run.plan import Local, RunOptions, RunPlan, Slurm

    slurm = dict(partition="gpu", account="lab", time_min=30, gpus_per_point=2,
                 nodes_per_point=None, sbatch_args=("--qos=high", "--constraint=h100&nvlink"))
    options = RunOptions(Path("my suite.yaml"), variants=("quick",), fresh_workers=True,
                         sets=("workload.seq_len=[8, 9]", "measure.profile=true"), slurm=slurm)
    plan = RunPlan(options, None, (SimpleNamespace(device="cpu"),), Path("runs/x"), Slurm(None))
    assert shlex.split(plan.resume_command()) == [
        "tbench", "run", "my suite.yaml", "--out", "runs/x", "--device", "cpu", "--variant",
        "quick", "--set", "workload.seq_len=[8, 9]", "--set", "measure.profile=true",
        "--fresh-workers", "--launcher", "slurm", "--partition", "gpu", "--account", "lab",
        "--time-min", "30", "--gpus-per-point", "2", "--sbatch-arg=--qos=high",
        "--sbatch-arg=--constraint=h100&nvlink", "--resume"]
    local = RunPlan(RunOptions(Path("s.yaml"), devices="0,1"), None,
                    (SimpleNamespace(device="cuda"),), Path("r"), Local())
    assert shlex.split(local.resume_command()) == ["tbench", "run", "s.yaml", "--out", "r",
                                                   "--device", "cuda", "--devices", "0,1", "--resume"]


@pytest.mark.parametrize("state, error, status", [
    ("COMPLETED", None, "crashed"),  # completed without a record: the job died oddly
    ("TIMEOUT", None, "timeout"),
    ("FAILED", "UncompletedJobError: Job not requeued because: timed-out and not checkpointable.",
     "timeout"),  # submitit stops the job just before the limit
    ("OUT_OF_MEMORY", None, "oom"),
    ("FAILED", "FailedJobError: boom", "crashed"),
    ("NODE_FAIL", None, "interrupted"),  # the node, not the point: --resume reruns it
    ("PREEMPTED", None, "interrupted"),
    ("CANCELLED by 0", None, "interrupted"),
    ("", None, "crashed"),
])
def test_slurm_states_map_to_ours(state, error, status):
    from harness.run.slurm import status_of

    assert status_of(state, error) == status



@pytest.mark.parametrize("state, own, status", [
    ("CANCELLED by 0", "crashed", "interrupted"),  # scancel SIGTERM'd the worker
    ("PREEMPTED", "crashed", "interrupted"),
    ("NODE_FAIL", "error", "interrupted"),
    ("COMPLETED", "crashed", "crashed"),  # the worker's own crash: kept
    ("CANCELLED by 0", "ok", "ok"),  # measured to its end before the cancellation
])
def test_a_record_the_job_wrote_is_interrupted_when_slurm_ended_the_job(state, own, status):
    from harness.run import slurm

    handle = types.SimpleNamespace(job_id="91_3", watcher=types.SimpleNamespace(
        get_state=lambda job_id, mode: state))
    rec = {"status": own, "error": None if own == "ok" else "worker died of signal SIGTERM"}
    got = slurm.Backend(None).own_record(handle, rec)
    assert got["status"] == status
    if status == "interrupted":
        assert got["error"] == (f"Slurm job 91_3 ended {state} (the worker: worker died of "
                                "signal SIGTERM)")


def test_a_worker_ended_by_slurms_time_limit_warning_is_a_timeout():
    from harness.run.slurm_job import timed_out_by_warning

    warned = {"status": "crashed", "error": "worker killed by signal SIGUSR2 without writing a result"}
    assert timed_out_by_warning(warned, 7)["status"] == "timeout"
    assert "Slurm job 7 reached its time limit" in timed_out_by_warning(warned, 7)["error"]
    segv = {"status": "crashed", "error": "worker killed by signal SIGSEGV"}
    assert timed_out_by_warning(segv, 7) == segv  # any other crash stays a crash


def test_a_run_on_two_node_types_says_so(tmp_path):
    from harness.run.slurm_job import write_nodes

    def node(host, fp, gpu):
        return {"hostname": host, "fingerprint": fp, "gpu": gpu, "cpu": "x", "job_id": "1_0"}

    rounds = [{"point_id": "a", "status": "ok", "node": node("n1", "f1", "H100")},
              {"point_id": "b", "status": "ok", "node": node("n2", "f1", "H100")},
              {"point_id": "c", "status": "ok", "node": node("n3", "f2", "A100")}]
    (tmp_path / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rounds))
    line = write_nodes(tmp_path)
    assert line.startswith("warning: the points ran on 2 node types")
    assert "f1: n1, n2 (H100)" in line and "f2: n3 (A100)" in line
    nodes = json.loads((tmp_path / "nodes.json").read_text())
    assert {fp: n["rounds"] for fp, n in nodes.items()} == {"f1": 2, "f2": 1}
    (tmp_path / "rounds.jsonl").write_text(json.dumps(rounds[0]) + "\n")
    assert write_nodes(tmp_path) is None  # one node type: nothing to say
