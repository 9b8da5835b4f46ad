"""The ``run``, ``list`` and ``env`` commands of the ``tbench`` CLI.

    tbench run SUITE [--out DIR] [--device auto|cpu|cuda] [--set PATH=VALUE]... [--resume]
                     [--on-corrupt refuse|skip] [--dry-run] [--profile]
    tbench list        strategies per axis (documented parameters), model presets, metrics
    tbench env         the environment a run records (harness.run.env.collect_env)

``run`` validates and expands the whole sweep, and refuses ``cuda`` (from ``--device`` or the
suite's ``device``) when torch sees no CUDA device, before anything runs; then it writes
``RUN_DIR/suite.resolved.json`` (source, device, overrides, the resolved suite and every point),
runs the points (harness.run.runner), writes the reports, and prints the results path last on stdout.
``--on-corrupt`` decides what ``--resume`` does with a corrupt line of results.jsonl: ``refuse``
(an error naming the file and the line) or ``skip`` (set aside with a warning; its point is
recorded again from rounds.jsonl, else reruns).
``--dry-run`` lists the points, even for a ``cuda`` run on a machine without CUDA (a warning says
so: the listing is for planning), and the duration the previous runs under ``runs/`` measured for
the same points (``estimate_duration``: reads only their results.jsonl files, never torch).
``--profile`` is ``--set measure.profile=true``: each point's last round adds a profiled pass
after its timed samples (``harness.measure.profiling``; a profiled point has its own id).
Exit codes: 0 every point ok or not supported, 2 bad usage or input or an I/O failure of the run
folder (disk full, read-only, permission denied: one ``error:`` line, never a traceback; what was
measured stays on disk), 3 some points failed (oom / error / crashed / timeout), 130 interrupted by
Ctrl-C, 143 by SIGTERM (the running point recorded ``interrupted``; ``--resume`` finishes the run).
"""
from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from harness.analyse.results import RESULTS_FILE
from harness.cli.app import app, console, default
from harness.cli.errors import user_errors
from harness.suite.errors import SuiteError

FAILED = ("oom", "error", "crashed", "timeout", "interrupted", "contended")
FLAG_TEXT = {"contended": "measured while other work used the machine",
             "noisy": "a round with IQR/median >= 10%",
             "drift": "round medians differ by more than 5%"}


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


def _points_table(points, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name in ("#", "id", "label", "kind", "batch", "seq_len", "device"):
        table.add_column(name, no_wrap=True)
    for p in points:
        table.add_row(str(p.index), p.id, p.label, p.workload.kind, str(p.workload.batch_size),
                      str(p.workload.seq_len), p.device)
    return table


def _summary_table(summary) -> Table:
    table = Table()
    table.add_column("status")
    table.add_column("points", justify="right")
    for status, n in sorted(summary.counts.items()):
        table.add_row(status, str(n))
    if summary.skipped:
        table.add_row("already done (resume)", str(summary.skipped))
    for flag, n in sorted(summary.flags.items()):
        table.add_row(f"⚠ {flag}: {FLAG_TEXT.get(flag, flag)}", str(n))
    return table


def _answers(run_dir: Path) -> list[str]:
    """The run's answers (fastest / leanest strategy per group of comparable points)."""
    from harness.analyse.answers import answer_lines, answers
    from harness.analyse.results import BadInput, read_run_folder

    try:
        return answer_lines(answers(read_run_folder(run_dir).records))
    except BadInput:
        return []


def _failures(run_dir: Path) -> list[str]:
    from harness.analyse.results import BadInput, read_run_folder

    try:
        records = read_run_folder(run_dir).records
    except BadInput:  # the summary still stands without the details
        return []
    lines = []
    for rec in records:
        if rec.get("status") in FAILED:
            last = ((rec.get("error") or "").strip().splitlines() or ["(no error text)"])[-1]
            lines.append(f"{rec.get('label')}: {rec['status']}: {last}")
    return lines


def _cuda_missing(dev: str, explicit: bool, suite: Path) -> str | None:
    """The error line when the points are to run on CUDA and torch sees no CUDA device."""
    if dev != "cuda":
        return None
    import torch

    if torch.cuda.is_available():
        return None
    where = "--device cuda" if explicit else f"{suite}: device: cuda"
    return (f"{where}: no CUDA device is visible (torch.cuda.is_available() is False); "
            "use --device cpu or auto")


def previous_durations(root: Path, point_ids) -> dict[str, tuple[float, Path]]:
    """point id -> (``duration_s``, run folder) of its latest final record among the runs under
    ``root`` (``root/*/results.jsonl``, read in modification order, so a later run wins).
    Unreadable files and lines are skipped; ``interrupted`` records (partial) do not count."""
    wanted, found = set(point_ids), {}
    try:
        files = sorted(root.glob(f"*/{RESULTS_FILE}"), key=lambda f: f.stat().st_mtime)
    except OSError:
        return {}
    for path in files:
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                rec = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if not isinstance(rec, dict) or not isinstance(rec.get("point_id"), str):
                continue
            took = rec.get("duration_s")
            if (rec["point_id"] in wanted and rec.get("status") != "interrupted"
                    and isinstance(took, (int, float)) and took >= 0):
                found[rec["point_id"]] = (float(took), path.parent)
    return found


def human_duration(seconds: float) -> str:
    """``42 s``, ``3 min 20 s``, ``1 h 05 min``."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def estimate_duration(root: Path, point_ids: list[str]) -> str:
    """One line: the sum of the points' previous durations (an unmeasured point counted at the
    mean of the measured ones), where they come from, how many are unknown."""
    found = previous_durations(root, point_ids)
    if not found:
        return f"estimated duration: unknown (no previous run of these points under {root})"
    known = [found[p][0] for p in point_ids if p in found]
    unknown = len(point_ids) - len(known)
    total = sum(known) + unknown * sum(known) / len(known)
    folders = sorted({str(folder) for _took, folder in found.values()})
    where = folders[-1] if len(folders) == 1 else f"{len(folders)} runs under {root}"
    tail = f"; {unknown} unknown, counted at the mean" if unknown else ""
    return (f"estimated duration: ~{human_duration(total)} (from {len(known)} of {len(point_ids)} "
            f"points measured in {where}{tail})")


class SweepProgress:
    """Progress on stderr: a rich bar (done/total, ETA, current point) on a terminal, else one
    plain line per finished point."""

    def __init__(self, total: int):
        self.total, self.done, self.bar = total, 0, None

    def __enter__(self):
        if sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TextColumn("ETA"), TimeRemainingColumn(),
                                TextColumn("{task.description}"), console=console(stderr=True))
            self.bar.start()
            self.task = self.bar.add_task("starting", total=self.total)
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()

    def update(self, event) -> None:
        self.total = event.total  # rounds: one event per round of every point
        if self.bar is not None:
            self.bar.update(self.task, total=event.total)
        if event.kind == "start":
            if self.bar is not None:
                self.bar.update(self.task, description=event.label)
            return
        self.done += 1
        if self.bar is not None:
            self.bar.update(self.task, advance=1)
        elif event.kind == "finish":
            took = f" ({event.duration_s:.1f} s)" if event.duration_s is not None else ""
            typer.echo(f"[{self.done}/{self.total}] {event.status}: {event.label}{took}", err=True)


@app.command()
def run(
    suite: Path = typer.Argument(..., help="suite YAML file, e.g. suites/attention.yaml"),
    out: Optional[Path] = typer.Option(None, "--out", help="run folder" + default("runs/<suite>-<time>")),
    device: Optional[Device] = typer.Option(
        None, "--device", help="where the points run: auto (cuda if available, else cpu), cpu or cuda"
                               + default("the suite's device, auto")),
    set_: List[str] = typer.Option([], "--set", metavar="PATH=VALUE",
                                   help="override a field (workload.seq_len=256) or a sweep axis "
                                        "(workload.seq_len=[128,256]); repeatable" + default("none")),
    variant: List[str] = typer.Option([], "--variant", metavar="NAME",
                                      help="apply the suite's variants.NAME after the device profile "
                                           "(e.g. quick: sized for a short run); repeatable"
                                           + default("none")),
    resume: bool = typer.Option(False, "--resume", help="finish the run in --out, skipping finished "
                                                        "points" + default("off")),
    on_corrupt: OnCorrupt = typer.Option(OnCorrupt.refuse, "--on-corrupt",
                                         help="--resume with a corrupt line in results.jsonl: "
                                              "refuse, or skip it (set aside; its point is recorded "
                                              "again from its rounds, else reruns)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the points and their duration in "
                                                          "previous runs; run nothing" + default("off")),
    profile: bool = typer.Option(False, "--profile", help="after each point's timed samples, profile "
                                                          "a few steps: time and memory per region "
                                                          "and operator, and a trace (same as --set "
                                                          "measure.profile=true)" + default("off")),
    devices: Optional[str] = typer.Option(
        None, "--devices", metavar="all|0,1,3|cpu:N",
        help="run points at once, one per GPU (CUDA_VISIBLE_DEVICES per worker; a multi-rank "
             "point takes nproc GPUs): all, or GPU indices; GPUs must be of one model. On CPU, "
             "points run one at a time unless cpu:N is given (concurrent points disturb each "
             "other's timing and are flagged contended)" + default("one point at a time")),
    fresh_workers: bool = typer.Option(
        False, "--fresh-workers", help="start every single-process worker as a new Python "
                                       "process instead of forking it from the run's warm fork "
                                       "server (slower start; to compare)" + default("off")),
    launcher: Optional[Launcher] = typer.Option(
        None, "--launcher", help="where points run: local, or slurm (a job per point and round, "
                                 "through submitit)" + default("the suite's launcher.name, local")),
    partition: Optional[str] = typer.Option(None, "--partition", help="slurm: the partition"
                                            + default("the suite's launcher, else the cluster's")),
    account: Optional[str] = typer.Option(None, "--account", help="slurm: the account to charge"
                                          + default("the suite's launcher, else none")),
    time_min: Optional[int] = typer.Option(None, "--time-min", min=1,
                                           help="slurm: a job's time limit in minutes"
                                           + default("from measure.timeout_s")),
    gpus_per_point: Optional[int] = typer.Option(None, "--gpus-per-point", min=0,
                                                 help="slurm: GPUs per job (split evenly over "
                                                      "its nodes)"
                                                 + default("the point's ranks on cuda, 0 on cpu")),
    nodes_per_point: Optional[int] = typer.Option(
        None, "--nodes-per-point", min=1,
        help="slurm: nodes of a distributed point's job (its nproc ranks split evenly over them, "
             "one torchrun per node started by srun)" + default("the suite's launcher, 1")),
    sbatch_arg: List[str] = typer.Option([], "--sbatch-arg", metavar="--OPTION[=VALUE]",
                                         help="slurm: an extra sbatch option, e.g. --qos=high; "
                                              "repeatable" + default("the suite's launcher")),
) -> None:
    """Run every point of a suite, each in a fresh worker process.

    cuda with no visible CUDA device: exit 2 before anything runs.
    --dry-run lists the points anyway (with a warning) and their duration in previous runs."""
    # first of all: the fork server imports torch while this process imports the rest
    early_name, early_dir, server = ((None, None, None) if dry_run or fresh_workers
                                     else early_server(suite, out, launcher))
    from harness.run import rundir, runner
    from harness.suite.sweep import load_points

    if profile:
        set_ = [*set_, "measure.profile=true"]
    try:
        with user_errors():
            resolved, points = load_points(suite, device.value if device else None, set_, variant)
            dev = points[0].device
            no_cuda = _cuda_missing(dev, device is not None, suite)
            if dry_run:
                console().print(_points_table(points, f"{resolved.name} on {dev}: {len(points)} "
                                                       "point(s) (dry run: nothing runs)"))
                typer.echo(estimate_duration(rundir.default_run_dir(resolved.name).parent,
                                             [p.id for p in points]))
                if no_cuda:
                    typer.echo(f"warning: {no_cuda}: a real run would stop here", err=True)
                return
            if no_cuda:
                raise SuiteError([no_cuda])
            if resume and out is None:
                raise SuiteError(["--resume needs --out RUN_DIR (the folder of the run to finish)"])
            if out is None and early_name != resolved.name:  # --set name=... renamed the run
                early_dir = None  # its folder follows the resolved name, as does the server's
                if server is not None:
                    server.close()
                    server = None
            run_dir = out or early_dir or rundir.default_run_dir(resolved.name)
            spec = launcher_spec(resolved.launcher, launcher, partition, account, time_min,
                                 gpus_per_point, sbatch_arg, nodes_per_point)
            slurm_options = any(v is not None for v in (partition, account, time_min, gpus_per_point,
                                                        nodes_per_point))
            where = placement(spec, devices, dev, points, fresh_workers,
                              slurm_options or bool(sbatch_arg))
            if "warm" in where:
                where["server"] = server
            with SweepProgress(len(points)) as bar:
                summary = runner.run_suite(run_dir, suite, set_, resolved, points, resume=resume,
                                           progress=bar.update, on_corrupt=on_corrupt.value,
                                           say=lambda line: typer.echo(line, err=True), **where)
    finally:
        if server is not None:
            server.close()
    again = resume_command(suite, run_dir, dev, variant, set_, devices, fresh_workers, spec.name,
                           partition=partition, account=account, time_min=time_min,
                           gpus_per_point=gpus_per_point, nodes_per_point=nodes_per_point,
                           sbatch_arg=sbatch_arg)
    tell(summary, spec.name, again)


def tell(summary, launcher: str, again: str) -> None:
    """After a sweep: the summary table, failures, reports, answers, flags, the resume command
    of an interrupted run, then the exit code (128 + signal, 3 on a failed point)."""
    from harness.run import rundir

    run_dir = summary.run_dir
    typer.echo(f"run folder: {run_dir}", err=True)
    if launcher == "slurm":
        from harness.run.slurm import write_nodes

        mixed = write_nodes(run_dir)
        if mixed:
            typer.echo(mixed, err=True)
    console().print(_summary_table(summary))
    for line in _failures(run_dir):
        typer.echo(f"failed: {line}", err=True)
    warning = rundir.write_reports(run_dir)
    typer.echo(warning or f"reports: {run_dir / 'report.md'}, {run_dir / 'report.html'}", err=True)
    lines = _answers(run_dir)
    if lines:
        typer.echo("answers:", err=True)
        for line in lines:
            typer.echo(f"  {line}", err=True)
    if summary.flags:
        typer.echo("warning: " + ", ".join(f"{n} point(s) {flag}" for flag, n in
                                           sorted(summary.flags.items()))
                   + " -- see the ⚠ rows of the summary and the reports' badges", err=True)
    if summary.interrupted:
        typer.echo(f"interrupted ({summary.interrupted_by.name}); finish with: {again}", err=True)
    typer.echo(str(summary.results_path))
    if summary.interrupted:
        raise typer.Exit(128 + summary.interrupted_by)  # the shell's code for death by it
    if summary.failed:
        raise typer.Exit(3)


def resume_command(suite, run_dir, dev, variant, sets, devices, fresh, launcher, **slurm) -> str:
    """``tbench run ... --resume`` with every option the run was given, quoted for the shell
    (``--profile`` is in ``sets`` as measure.profile=true)."""
    import shlex

    args = ["tbench", "run", str(suite), "--out", str(run_dir), "--device", dev]
    args += [a for v in variant for a in ("--variant", v)] + [a for s in sets for a in ("--set", s)]
    args += (["--devices", devices] if devices else []) + (["--fresh-workers"] if fresh else [])
    if launcher == "slurm":
        args += ["--launcher", "slurm"]
        for key, value in slurm.items():
            for one in (value if isinstance(value, list) else [] if value is None else [value]):
                flag = "--" + key.replace("_", "-")
                args += [f"{flag}={one}"] if key == "sbatch_arg" else [flag, str(one)]
    return shlex.join([*args, "--resume"])


def early_server(suite: Path, out: Optional[Path], launcher):
    """(the suite's raw name, run folder, fork server started now): the server imports torch
    while this process loads the suite (two cores at work, not one after the other). (None,
    None, None) where the run may not use one (Slurm) or the suite cannot even be read here
    (loading will say why). ``run`` keeps the folder only if the resolved name is the raw one.

    The server gets this process's environment, not ``launcher.worker_env`` (which imports
    torch): its environment matters only to what ``PRELOAD`` reads at import time, and the two
    differ in PYTHONPATH (the server puts the same project root first), TORCH_EXTENSIONS_DIR
    (read by torch.utils.cpp_extension when an op is built: in the worker, from its own
    environment, which is ``worker_env``) and DS_ACCELERATOR (read when deepspeed is imported:
    not preloaded, so the worker imports it under its own environment)."""
    import yaml

    from harness.run import forkserver, rundir

    try:
        raw = yaml.safe_load(suite.read_text()) if out is None or launcher is None else {}
    except (OSError, ValueError, yaml.YAMLError):
        return None, None, None
    raw = raw if isinstance(raw, dict) else {}
    section = raw.get("launcher") if isinstance(raw.get("launcher"), dict) else {}
    where = launcher.value if launcher else section.get("name", "local")
    name = raw.get("name") if isinstance(raw.get("name"), str) else None
    if where != "local" or (out is None and not name):
        return None, None, None
    run_dir = (out or rundir.default_run_dir(name)).resolve()
    return name, run_dir, forkserver.ForkServer(run_dir).spawn()


def launcher_spec(spec, name, partition, account, time_min, gpus, sbatch_args, nodes=None):
    """The suite's ``launcher:`` section with the CLI's options laid over it."""
    changes = {k: v for k, v in dict(name=name.value if name else None, partition=partition,
                                     account=account, time_min=time_min, gpus_per_point=gpus,
                                     nodes_per_point=nodes).items() if v is not None}
    if sbatch_args:
        changes["sbatch_args"] = list(sbatch_args)
    if not changes:
        return spec
    from harness.suite.schema import LauncherSpec

    data = spec.model_dump()
    data.update(changes)
    try:
        return LauncherSpec.model_validate(data)
    except Exception as exc:  # a pydantic ValidationError: one line per field
        option = {"sbatch_args": "sbatch-arg", "time_min": "time-min", "name": "launcher",
                  "gpus_per_point": "gpus-per-point", "nodes_per_point": "nodes-per-point"}
        lines = [f"--{option.get(str(e['loc'][0]), str(e['loc'][0]))}: "
                 + e["msg"].removeprefix("Value error, ")
                 for e in getattr(exc, "errors", lambda: [])()] or [str(exc)]
        raise SuiteError(lines) from None


def placement(spec, devices, dev: str, points, fresh: bool, slurm_options: bool) -> dict:
    """``run_sweep``'s ``slots`` / ``warm`` / ``backend`` from the options."""
    if spec.name == "slurm":
        if devices:
            raise SuiteError(["--devices: not with --launcher slurm (Slurm places each job; "
                              "use --gpus-per-point)"])
        import shutil

        if shutil.which("sbatch") is None:
            raise SuiteError(["--launcher slurm: sbatch not found on PATH (run tbench where "
                              "Slurm's client commands work)"])
        from harness.run.slurm import Backend, check_nodes

        bad = check_nodes(points, spec)
        if bad:
            raise SuiteError(bad)
        return {"backend": Backend(spec)}
    if spec.nodes_per_point != 1:
        raise SuiteError([f"launcher.nodes_per_point: got {spec.nodes_per_point}, allowed: 1 with "
                          "the local launcher (more nodes need --launcher slurm)"])
    if slurm_options:
        raise SuiteError(["--partition, --account, --time-min, --gpus-per-point, --nodes-per-point "
                          "and --sbatch-arg need --launcher slurm (or launcher.name: slurm in the "
                          "suite)"])
    where: dict = {"warm": not fresh}
    if devices:
        from harness.run.devices import slots

        where["slots"] = slots(devices, dev, points)
    return where


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
