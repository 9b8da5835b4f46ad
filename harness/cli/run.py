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
) -> None:
    """Run every point of a suite, each in a fresh worker process.

    cuda with no visible CUDA device: exit 2 before anything runs.
    --dry-run lists the points anyway (with a warning) and their duration in previous runs."""
    from harness.run import rundir, runner
    from harness.suite.sweep import load_points

    if profile:
        set_ = [*set_, "measure.profile=true"]
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
    else:
        typer.echo(f"reports: {summary.run_dir / 'report.md'}, {summary.run_dir / 'report.html'}",
                   err=True)
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
