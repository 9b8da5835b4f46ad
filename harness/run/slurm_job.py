"""The compute-node side of ``--launcher slurm`` and what the run learns about its nodes.

    job(point_file, run_dir, grace_s, round_no, nodes) -> the round's record, ``node`` added
    timed_out_by_warning(rec, job_id)   a worker ended by Slurm's SIGUSR2 -> ``timeout``
    nodes_of / check_nodes(points, spec)  a distributed point's nodes; [] or the one-line refusal
    node_summary / write_nodes(run_dir)   ``nodes.json`` and the mixed-node-types warning

Submitted by ``harness.run.slurm.Backend`` through submitit (which pickles ``job`` by name).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from harness.records import write_json_atomic
from harness.run.schedule import ranks_of

SIGNAL_DELAY_S = 5  # submitit's USR2 before the time limit (its default, 90 s, would hit at once)


def timed_out_by_warning(rec: dict[str, Any], job_id) -> dict[str, Any]:
    """A worker ended by Slurm's SIGUSR2 (sent ``SIGNAL_DELAY_S`` before the time limit to every
    process of the job; a forked worker keeps no handler for it) reached the time limit."""
    if rec.get("status") == "crashed" and "SIGUSR2" in (rec.get("error") or ""):
        rec = dict(rec, status="timeout", error=f"Slurm job {job_id} reached its time limit "
                   f"(Slurm's SIGUSR2, {SIGNAL_DELAY_S} s before it, ended the worker)")
    return rec


def job(point_file: str, run_dir: str, grace_s: float, round_no: int,
        nodes: int = 1) -> dict[str, Any] | None:
    """On the compute node: one round of the point in ``point_file``, with ``node`` added. A
    distributed point's ranks start through ``srun`` on the job's ``nodes`` nodes; submitit runs
    this on every node of the job, and only the first one measures (the others return None)."""
    if int(os.environ.get("SLURM_PROCID", "0")) != 0:
        return None
    from harness.run import env, forkserver, launcher, rounds
    from harness.suite.point import Point

    point = Point.from_json(json.loads(Path(point_file).read_text()))
    found = env.collect_env()  # imports torch, reads GPUs through NVML: no CUDA context here
    srun = nodes if launcher.launched(point) else None
    where = launcher.LaunchOptions(server=forkserver.DirectFork(), nodes=srun)  # forks from this job
    rec = rounds.measured_round(point, Path(run_dir), grace_s, round_no, where)
    rec["node"] = {"hostname": found.get("hostname"), "fingerprint": env.fingerprint(found),
                   "gpu": (found.get("gpu") or {}).get("name"),
                   "cpu": (found.get("cpu") or {}).get("model"),
                   "job_id": slurm_job_id()}
    return rec


def slurm_job_id() -> str | None:
    """``ARRAY_TASK`` for a task of a job array (what squeue and sacct show), else the job id."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def nodes_of(point, spec) -> int:
    """The nodes of a point's job: ``spec.nodes_per_point`` for a distributed point, else 1."""
    from harness.run.launcher import launched

    return spec.nodes_per_point if launched(point) else 1


def check_nodes(points, spec) -> list[str]:
    """The first distributed point whose ranks (or ``gpus_per_point``) do not split evenly over
    ``nodes_per_point`` nodes, or that sets its own ``launcher_args`` (srun chooses the
    rendezvous), as one line; [] when every point fits."""
    from harness.run.launcher import launched

    for p in points:
        nodes = nodes_of(p, spec)
        gpus = spec.gpus_per_point or 0
        if ranks_of(p) % nodes or gpus % nodes:
            return [f"nodes_per_point (--nodes-per-point) {nodes}: point {p.label} has "
                    f"{ranks_of(p)} rank(s) and gpus_per_point {gpus}, allowed: a number of "
                    "nodes that divides both"]
        if launched(p) and getattr(p.strategies.parallel, "launcher_args", ()):
            return [f"strategies.parallel.launcher_args: point {p.label} sets its own "
                    "rendezvous, allowed: none with --launcher slurm (srun and torchrun "
                    "rendezvous on the job's first node)"]
    return []


def node_summary(run_dir: Path) -> dict[str, dict]:
    """fingerprint -> {hostnames, gpu, cpu, rounds} of the nodes the run's rounds ran on
    (read from rounds.jsonl); more than one key: the run is on mixed node types."""
    from harness.records import read_rounds

    found: dict[str, dict] = {}
    for rounds in read_rounds(run_dir).values():
        for rec in rounds:
            node = rec.get("node")
            if not node:
                continue
            entry = found.setdefault(node["fingerprint"], {"hostnames": [], "gpu": node.get("gpu"),
                                                           "cpu": node.get("cpu"), "rounds": 0})
            if node.get("hostname") not in entry["hostnames"]:
                entry["hostnames"].append(node.get("hostname"))
            entry["rounds"] += 1
    return found


def write_nodes(run_dir: Path) -> str | None:
    """``RUN_DIR/nodes.json`` (``node_summary``); a warning line when node types differ."""
    found = node_summary(run_dir)
    if not found:
        return None
    write_json_atomic(Path(run_dir) / "nodes.json", found, indent=2)
    if len(found) > 1:
        kinds = "; ".join(f"{fp}: {', '.join(map(str, n['hostnames']))} ({n['gpu'] or n['cpu']})"
                          for fp, n in found.items())
        return (f"warning: the points ran on {len(found)} node types (environment fingerprints "
                f"{kinds}); compare points across them with care (nodes.json)")
    return None
