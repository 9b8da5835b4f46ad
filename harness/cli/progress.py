"""Progress of a run on stderr: a rich bar (done/total, ETA, current point) on a terminal, else
one plain line per finished round."""
from __future__ import annotations

import sys

import typer

from harness.cli.app import console


class SweepProgress:
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
