"""The ``run``, ``list`` and ``env`` commands of the ``tbench`` CLI.

    tbench run SUITE [--out DIR] [--device auto|cpu|cuda] [--set PATH=VALUE]... [--resume]
                     [--on-corrupt refuse|skip] [--dry-run]
    tbench list        strategies per axis (documented parameters), model presets, metrics
    tbench env         the environment a run records (harness.run.env.collect_env)

``run`` validates and expands the whole sweep before anything runs, writes
``RUN_DIR/suite.resolved.json`` (source, device, overrides, the resolved suite and every point),
runs the points (harness.run.runner), writes the reports, and prints the results path last on stdout.
``--on-corrupt`` decides what ``--resume`` does with a corrupt line of results.jsonl: ``refuse``
(an error naming the file and the line) or ``skip`` (set aside with a warning; its point reruns).
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

from harness.cli.app import app, console
from harness.cli.errors import user_errors
from harness.suite.errors import SuiteError

FAILED = ("oom", "error", "crashed", "timeout", "interrupted")


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


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
    return table


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
    out: Optional[Path] = typer.Option(None, "--out", help="run folder [default: runs/<suite>-<time>]"),
    device: Optional[Device] = typer.Option(None, "--device", help="[default: the suite's device, auto]"),
    set_: List[str] = typer.Option([], "--set", metavar="PATH=VALUE",
                                   help="override a field (workload.seq_len=256) or a sweep axis "
                                        "(workload.seq_len=[128,256]); repeatable"),
    variant: List[str] = typer.Option([], "--variant", metavar="NAME",
                                      help="apply the suite's variants.NAME after the device profile "
                                           "(e.g. quick: sized for a short run); repeatable"),
    resume: bool = typer.Option(False, "--resume", help="finish the run in --out, skipping finished points"),
    on_corrupt: OnCorrupt = typer.Option(OnCorrupt.refuse, "--on-corrupt",
                                         help="--resume with a corrupt line in results.jsonl: "
                                              "refuse, or skip it (set aside, its point reruns)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the points; run nothing"),
) -> None:
    """Run every point of a suite, each in a fresh worker process."""
    from harness.run import rundir, runner
    from harness.suite.sweep import load_points

    with user_errors():
        resolved, points = load_points(suite, device.value if device else None, set_, variant)
        dev = points[0].device
        if dry_run:
            console().print(_points_table(points, f"{resolved.name} on {dev}: {len(points)} "
                                                   "point(s) (dry run: nothing runs)"))
            return
        if resume and out is None:
            raise SuiteError(["--resume needs --out RUN_DIR (the folder of the run to finish)"])
        run_dir = out or rundir.default_run_dir(resolved.name)
        with SweepProgress(len(points)) as bar:
            summary = runner.run_suite(run_dir, suite, set_, resolved, points, resume=resume,
                                       progress=bar.update, on_corrupt=on_corrupt.value,
                                       say=lambda line: typer.echo(line, err=True))
    typer.echo(f"run folder: {summary.run_dir}", err=True)
    console().print(_summary_table(summary))
    for line in _failures(run_dir):
        typer.echo(f"failed: {line}", err=True)
    warning = rundir.write_reports(run_dir)
    if warning:
        typer.echo(warning, err=True)
    if summary.interrupted:
        again = " ".join([f"--device {dev}"] + [f"--variant {v}" for v in variant]
                         + [f"--set '{item}'" for item in set_])
        typer.echo(f"interrupted ({summary.interrupted_by.name}); finish with: tbench run {suite} "
                   f"--out {run_dir} {again} --resume", err=True)
    typer.echo(str(summary.results_path))
    if summary.interrupted:
        raise typer.Exit(128 + summary.interrupted_by)  # the shell's code for death by it
    if summary.failed:
        raise typer.Exit(3)


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
