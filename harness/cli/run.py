"""The ``run``, ``list`` and ``env`` commands of the ``tbench`` CLI.

    tbench run SUITE [--out DIR] [--device auto|cpu|cuda] [--set PATH=VALUE]... [--resume]
                     [--on-corrupt refuse|skip] [--dry-run] [--profile] [--devices ...]
                     [--fresh-workers] [--launcher local|slurm] [slurm options]
    tbench list        strategies per axis (documented parameters), model presets, metrics
    tbench env         the environment a run records (harness.run.env.collect_env)

``run`` parses its options into a ``harness.run.plan.RunOptions``, turns them into a plan
(``plan_run``: the whole sweep validated and expanded, ``cuda`` refused when torch sees no
CUDA device, before anything runs), runs it (``harness.run.lifecycle.run``: the run folder,
the rounds, the reports, the answers) and prints the result (``harness.cli.output.tell``),
the results path last on stdout. ``--dry-run`` lists the points, even for a ``cuda`` run on a
machine without CUDA (a warning says so), and the duration previous runs under ``runs/``
measured for them. ``--profile`` is ``--set measure.profile=true``.
Exit codes: 0 every point ok or not supported, 2 bad usage or input or an I/O failure of the
run folder (one ``error:`` line, never a traceback; what was measured stays on disk), 3 some
points failed, 130 interrupted by Ctrl-C, 143 by SIGTERM (``--resume`` finishes the run).
"""
from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from harness.cli.app import app, console, default
from harness.cli.user_errors import fail, user_errors


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Launcher(str, Enum):
    local = "local"
    slurm = "slurm"


class OnCorrupt(str, Enum):
    refuse = "refuse"
    skip = "skip"


SUITE = typer.Argument(..., help="suite YAML file, e.g. suites/attention.yaml")
OUT = typer.Option(None, "--out", help="run folder" + default("runs/<suite>-<time>"))
DEVICE = typer.Option(None, "--device", help="where the points run: auto (cuda if available, "
                      "else cpu), cpu or cuda" + default("the suite's device, auto"))
SET = typer.Option([], "--set", metavar="PATH=VALUE", help="override a field (workload.seq_len=256) "
                   "or a sweep axis (workload.seq_len=[128,256]); repeatable" + default("none"))
VARIANT = typer.Option([], "--variant", metavar="NAME", help="apply the suite's variants.NAME after "
                       "the device profile (e.g. quick: sized for a short run); repeatable"
                       + default("none"))
RESUME = typer.Option(False, "--resume", help="finish the run in --out, skipping finished points"
                      + default("off"))
ON_CORRUPT = typer.Option(OnCorrupt.refuse, "--on-corrupt", help="--resume with a corrupt line in "
                          "results.jsonl: refuse, or skip it (set aside; its point is recorded "
                          "again from its rounds, else reruns)")
DRY_RUN = typer.Option(False, "--dry-run", help="list the points and their duration in previous "
                       "runs; run nothing" + default("off"))
PROFILE = typer.Option(False, "--profile", help="after each point's timed samples, profile a few "
                       "steps: time and memory per region and operator, and a trace (same as --set "
                       "measure.profile=true)" + default("off"))
DEVICES = typer.Option(None, "--devices", metavar="all|0,1,3|cpu:N", help="run points at once, one "
                       "per GPU (CUDA_VISIBLE_DEVICES per worker; a multi-rank point takes nproc "
                       "GPUs): all, or GPU indices; GPUs must be of one model. On CPU, points run "
                       "one at a time unless cpu:N is given (concurrent points disturb each other's "
                       "timing and are flagged contended)" + default("one point at a time"))
FRESH = typer.Option(False, "--fresh-workers", help="start every single-process worker as a new "
                     "Python process instead of forking it from the run's warm fork server "
                     "(slower start; to compare)" + default("off"))
LAUNCHER = typer.Option(None, "--launcher", help="where points run: local, or slurm (a job per "
                        "point and round, through submitit)" + default("the suite's launcher.name, local"))
PARTITION = typer.Option(None, "--partition", help="slurm: the partition"
                         + default("the suite's launcher, else the cluster's"))
ACCOUNT = typer.Option(None, "--account", help="slurm: the account to charge"
                       + default("the suite's launcher, else none"))
TIME_MIN = typer.Option(None, "--time-min", min=1, help="slurm: a job's time limit in minutes"
                        + default("from measure.timeout_s"))
GPUS = typer.Option(None, "--gpus-per-point", min=0, help="slurm: GPUs per job (split evenly over "
                    "its nodes)" + default("the point's ranks on cuda, 0 on cpu"))
NODES = typer.Option(None, "--nodes-per-point", min=1, help="slurm: nodes of a distributed point's "
                     "job (its nproc ranks split evenly over them, one torchrun per node started by "
                     "srun)" + default("the suite's launcher, 1"))
SBATCH = typer.Option([], "--sbatch-arg", metavar="--OPTION[=VALUE]", help="slurm: an extra sbatch "
                      "option, e.g. --qos=high; repeatable" + default("the suite's launcher"))


@app.command()
def run(suite: Path = SUITE, out: Optional[Path] = OUT, device: Optional[Device] = DEVICE,
        set_: List[str] = SET, variant: List[str] = VARIANT, resume: bool = RESUME,
        on_corrupt: OnCorrupt = ON_CORRUPT, dry_run: bool = DRY_RUN, profile: bool = PROFILE,
        devices: Optional[str] = DEVICES, fresh_workers: bool = FRESH,
        launcher: Optional[Launcher] = LAUNCHER, partition: Optional[str] = PARTITION,
        account: Optional[str] = ACCOUNT, time_min: Optional[int] = TIME_MIN,
        gpus_per_point: Optional[int] = GPUS, nodes_per_point: Optional[int] = NODES,
        sbatch_arg: List[str] = SBATCH) -> None:
    """Run every point of a suite, each in a fresh worker process.

    cuda with no visible CUDA device: exit 2 before anything runs.
    --dry-run lists the points anyway (with a warning) and their duration in previous runs."""
    from harness.suite.limits import too_large

    if too_large(suite):  # before torch is imported: a 50 MB file is refused at once
        raise fail(too_large(suite))
    from harness.run import lifecycle, plan

    slurm = dict(partition=partition, account=account, time_min=time_min,
                 gpus_per_point=gpus_per_point, nodes_per_point=nodes_per_point,
                 sbatch_args=tuple(sbatch_arg))
    options = plan.RunOptions(suite, out, device.value if device else None,
                              tuple(set_) + (("measure.profile=true",) if profile else ()),
                              tuple(variant), resume, on_corrupt.value, devices, fresh_workers,
                              launcher.value if launcher else None, slurm)
    with user_errors():
        loaded = plan.load(options)
        if dry_run:
            return show_dry_run(options, *loaded)
        the_plan = plan.plan_run(options, loaded)
        from harness.cli.output import tell
        from harness.cli.progress import SweepProgress

        with SweepProgress(len(the_plan.points)) as bar:
            result = lifecycle.run(the_plan, progress=bar.update,
                                   say=lambda line: typer.echo(line, err=True))
    tell(result, the_plan.resume_command())


def show_dry_run(options, suite, points) -> None:
    """The points, their duration in previous runs, and whether a real run could start."""
    from harness.analyse.estimate import estimate_duration
    from harness.cli.output import points_table
    from harness.run import plan, rundir

    dev = points[0].device
    console().print(points_table(points, f"{suite.name} on {dev}: {len(points)} point(s) "
                                         "(dry run: nothing runs)"))
    typer.echo(estimate_duration(rundir.default_run_dir(suite.name).parent, [p.id for p in points]))
    no_cuda = plan.cuda_missing(dev, options.device is not None, options.suite)
    if no_cuda:
        typer.echo(f"warning: {no_cuda}: a real run would stop here", err=True)


@app.command("list")
def list_() -> None:
    """Strategies per axis with their documented parameters, model presets, metric names."""
    from harness.cli.catalog import metrics_table, presets_table, strategy_tables

    out = console()
    for table in strategy_tables():
        out.print(table)
    out.print(presets_table())
    out.print(metrics_table())


@app.command()
def env() -> None:
    """Print the environment a run records (torch, CUDA, GPU, CPU, packages, git) as JSON."""
    from harness.run.env import collect_env, fingerprint

    data = collect_env()
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    typer.echo(f"fingerprint: {fingerprint(data)}")
