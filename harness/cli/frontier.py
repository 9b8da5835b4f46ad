"""The ``frontier`` command: the largest batch size or sequence length each point of a suite
runs within a memory budget (``harness.run.frontier``).

    tbench frontier SUITE --axis workload.batch_size|workload.seq_len --memory-budget 2GiB
                    [--out DIR] [--device auto|cpu|cuda] [--set PATH=VALUE]... [--variant NAME]...
                    [--max N] [--resolution N] [--resume]

Every probe is a point run in its own worker under the budget (RLIMIT_DATA on CPU, the CUDA
allocator's memory fraction on GPU). Writes the run folder (probes in results.jsonl, one line
per point in frontier.jsonl), ``frontier.md`` and ``frontier.png``, and prints the frontier
table and the path of frontier.md last on stdout. Exit codes: 0 done (a point whose frontier
is limited by a failure other than out-of-memory is reported, not an error), 2 bad input (an
axis not allowed or swept by the suite, a bad budget, ``--max``/``--resolution`` below 1),
130 / 143 interrupted (``--resume`` finishes).
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from harness.cli.app import app, console, default
from harness.cli.user_errors import user_errors
from harness.cli.run import Device


def _table(frontiers) -> Table:
    from harness.analyse.units import fmt_bytes

    table = Table(title=f"frontier of {frontiers[0].axis} within {fmt_bytes(frontiers[0].budget_bytes)}"
                  if frontiers else "frontier", title_justify="left")
    for name in ("point", "frontier", "limited by", "predicted", "tokens/s", "probes"):
        table.add_column(name)
    for f in frontiers:
        at = f.at_frontier
        table.add_row(f.label, str(f.value) if f.value is not None else "—", f.limited_by,
                      str(f.predicted_value or "—"),
                      f"{at.tokens_per_s:,.0f}" if at and at.tokens_per_s else "—", str(len(f.probes)))
    return table


def resume_command(suite, axis, memory_budget, run_dir, device, set_, variant, max_value,
                   resolution) -> str:
    """The command line finishing this frontier run: every option given (the same points, the
    same probe ids), ``--out`` and ``--resume``; shell-quoted."""
    args = ["tbench", "frontier", str(suite), "--axis", axis, "--memory-budget", memory_budget,
            "--out", str(run_dir)]
    if device is not None:
        args += ["--device", device.value]
    args += [a for s in set_ for a in ("--set", s)] + [a for v in variant for a in ("--variant", v)]
    if max_value is not None:
        args += ["--max", str(max_value)]
    if resolution != 1:
        args += ["--resolution", str(resolution)]
    return shlex.join(args + ["--resume"])


@app.command()
def frontier(
    suite: Path = typer.Argument(..., help="suite YAML file, e.g. suites/memory.yaml"),
    axis: str = typer.Option(..., "--axis", help="the field to push: workload.batch_size or "
                                                 "workload.seq_len (the suite must not sweep it)"),
    memory_budget: str = typer.Option(..., "--memory-budget", help="memory each worker may use, "
                                      "e.g. 2GiB, 40GB (CPU: above the runtime, RLIMIT_DATA; GPU: "
                                      "the allocator's fraction of the device)"),
    out: Optional[Path] = typer.Option(None, "--out", help="run folder"
                                       + default("runs/<suite>-frontier-<time>")),
    device: Optional[Device] = typer.Option(None, "--device", help="auto, cpu or cuda"
                                            + default("the suite's device, auto")),
    set_: List[str] = typer.Option([], "--set", metavar="PATH=VALUE", help="override a field; "
                                   "repeatable" + default("none")),
    variant: List[str] = typer.Option([], "--variant", metavar="NAME", help="apply the suite's "
                                      "variants.NAME; repeatable" + default("none")),
    max_value: Optional[int] = typer.Option(None, "--max", help="largest value probed"
                                            + default("4096 batch, 131072 seq_len")),
    resolution: int = typer.Option(1, "--resolution", help="stop bisecting when the largest value "
                                   "that ran and the smallest that failed are this close"),
    resume: bool = typer.Option(False, "--resume", help="finish the frontier run in --out, "
                                "reusing its probes" + default("off")),
) -> None:
    """Find, for every point of a suite, the largest batch size or sequence length that runs
    within a memory budget: doubling then bisection, each probe an isolated worker."""
    from harness.analyse.frontier_report import write_frontier_report
    from harness.run import frontier as fr
    from harness.run import rundir
    from harness.run.plan import cuda_missing
    from harness.suite.sweep import load_points

    with user_errors():
        fr.check_axis(axis)
        budget = fr.parse_budget(memory_budget)
        for flag, value in (("--max", max_value), ("--resolution", resolution)):
            if value is not None and value < 1:
                raise fr.FrontierError(f"{flag}: got {value}, allowed: an integer >= 1")
        if resume and out is None:
            raise fr.FrontierError("--resume needs --out RUN_DIR (the folder of the frontier to finish)")
        resolved, points = load_points(suite, device.value if device else None, set_, variant)
        points = fr.free_points(resolved, points, axis)
        no_cuda = cuda_missing(points[0].device, device is not None, suite)
        if no_cuda:
            raise fr.FrontierError(no_cuda)
        run_dir = out or rundir.default_run_dir(f"{resolved.name}-frontier")
        doc = rundir.resolved_doc(suite, points[0].device, set_, resolved, points)
        try:
            found = fr.run_frontier(points, axis, budget, run_dir, resume=resume, cap=max_value,
                                    resolution=resolution, doc=doc,
                                    progress=lambda line: typer.echo(line, err=True))
        except KeyboardInterrupt as exc:
            sig = getattr(exc, "signal", 2)
            again = resume_command(suite, axis, memory_budget, run_dir, device, set_, variant,
                                   max_value, resolution)
            typer.echo(f"interrupted; finish with: {again}", err=True)
            raise typer.Exit(128 + int(sig))
        paths = write_frontier_report(run_dir)
    console().print(_table(found))
    typer.echo(f"run folder: {Path(run_dir).resolve()}", err=True)
    typer.echo(str(paths[0].resolve()))
