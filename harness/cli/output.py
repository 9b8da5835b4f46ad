"""What ``tbench run`` prints: the dry run's point table, and after a run the summary table,
failures, reports, answers, flags, the resume command of an interrupted run -- then the exit
code (128 + signal when interrupted, 3 when a point failed)."""
from __future__ import annotations

import typer
from rich.table import Table

from harness.cli.app import console

FLAG_TEXT = {"contended": "measured while other work used the machine",
             "noisy": "a round with IQR/median >= 10%",
             "drift": "round medians differ by more than 5%"}


def points_table(points, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name in ("#", "id", "label", "kind", "batch", "seq_len", "device"):
        table.add_column(name, no_wrap=True)
    for p in points:
        table.add_row(str(p.index), p.id, p.label, p.workload.kind, str(p.workload.batch_size),
                      str(p.workload.seq_len), p.device)
    return table


def summary_table(result) -> Table:
    table = Table()
    table.add_column("status")
    table.add_column("points", justify="right")
    for status, n in sorted(result.counts.items()):
        table.add_row(status, str(n))
    if result.skipped:
        table.add_row("already done (resume)", str(result.skipped))
    for flag, n in sorted(result.flags.items()):
        table.add_row(f"⚠ {flag}: {FLAG_TEXT.get(flag, flag)}", str(n))
    return table


def tell(result, resume_command: str) -> None:
    """Everything after a run, on stderr; the results path last on stdout; the exit code."""
    from harness.analyse.answers import answer_lines

    run_dir = result.run_dir
    typer.echo(f"run folder: {run_dir}", err=True)
    for line in result.warnings:
        typer.echo(line, err=True)
    console().print(summary_table(result))
    for line in result.failures():
        typer.echo(f"failed: {line}", err=True)
    if not any(w.startswith("warning: the report") for w in result.warnings):
        typer.echo(f"reports: {run_dir / 'report.md'}, {run_dir / 'report.html'}", err=True)
    lines = answer_lines(result.answers)
    if lines:
        typer.echo("answers:", err=True)
        for line in lines:
            typer.echo(f"  {line}", err=True)
    if result.flags:
        typer.echo("warning: " + ", ".join(f"{n} point(s) {flag}" for flag, n in
                                           sorted(result.flags.items()))
                   + " -- see the ⚠ rows of the summary and the reports' badges", err=True)
    if result.interrupted:
        typer.echo(f"interrupted ({result.interrupted_by.name}); finish with: {resume_command}",
                   err=True)
    typer.echo(str(result.results_path))
    if result.interrupted:
        raise typer.Exit(128 + result.interrupted_by)  # the shell's code for death by it
    if result.failed:
        raise typer.Exit(3)
