"""The ``tune`` command: the best configuration of a suite's search space that fits and stays
correct (``harness.run.tune``).

    tbench tune SUITE [--out DIR] [--device auto|cpu|cuda] [--set PATH=VALUE]... [--variant NAME]...
                      [--budget-s S] [--dry-run] [--resume]

The suite's ``sweep`` is the space, its ``tune:`` section the objective, constraints and
budget. Writes the run folder (a run folder per stage, ``tune.json``, ``tune.md``,
``tune.html``, ``winner.yaml``) and prints the decision, what each axis contributed and the
path of tune.md last on stdout. ``--dry-run`` prints what would be measured: the space, what is
skipped before measuring (with the reasons) and the rungs. Exit codes: 0 done (a search that
names no winner says why), 2 bad input, 130 / 143 interrupted (``--resume`` finishes).
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import List, Optional

import typer

from harness.cli.app import app, default
from harness.cli.run import DEVICE, OUT, RESUME, SET, SUITE, VARIANT, Device
from harness.cli.user_errors import user_errors


def answer_lines(answer) -> list[str]:
    """The CLI's last lines: the winner and its decision, the axes, the front, the notes."""
    from harness.analyse.tune_report import summary_lines

    return summary_lines(answer.as_json())


def resume_command(suite, out, device, sets, variants, budget_s) -> str:
    args = ["tbench", "tune", str(suite), "--out", str(out)]
    args += ["--device", device.value] if device else []
    args += [a for s in sets for a in ("--set", s)] + [a for v in variants for a in ("--variant", v)]
    args += ["--budget-s", f"{budget_s:g}"] if budget_s else []
    return shlex.join(args + ["--resume"])


@app.command()
def tune(
    suite: Path = SUITE,
    out: Optional[Path] = OUT,
    device: Optional[Device] = DEVICE,
    set_: List[str] = SET,
    variant: List[str] = VARIANT,
    budget_s: Optional[float] = typer.Option(None, "--budget-s", help="wall time of the whole "
                                             "search, seconds" + default("the suite's tune.budget_s, 600")),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the space, what is skipped before "
                                 "measuring and the rungs; run nothing" + default("off")),
    resume: bool = RESUME,
) -> None:
    """Search the suite's sweep for the best configuration under its tune: section (objective,
    memory budget, correctness, time budget): memory-model pruning, successive halving, a
    paired final, checked finalists, the trade-offs explained."""
    from harness.analyse.tune_report import write_tune_report
    from harness.run import rundir
    from harness.run import tune as tuning
    from harness.run import tune_space as ts
    from harness.run.plan import cuda_missing
    from harness.suite.errors import SuiteError
    from harness.suite.sweep import load_points

    sets = list(set_)
    with user_errors():
        if budget_s is not None and budget_s <= 0:
            raise SuiteError([f"--budget-s: got {budget_s:g}, allowed: a number of seconds > 0"])
        if resume and out is None:
            raise SuiteError(["--resume needs --out RUN_DIR (the folder of the search to finish)"])
        resolved, points = load_points(suite, device.value if device else None, sets, list(variant))
        if budget_s is not None:
            resolved = resolved.model_copy(update={"tune": resolved.tune.model_copy(update={"budget_s": budget_s})})
        ts.check_space(points)
        no_cuda = cuda_missing(points[0].device, device is not None, suite)
        if no_cuda and not dry_run:
            raise SuiteError([no_cuda])
        if dry_run:
            for line in dry_run_lines(resolved.tune, points):
                typer.echo(line)
            return
        run_dir = out or rundir.default_run_dir(f"{resolved.name}-tune")
        doc = rundir.resolved_doc(suite, points[0].device, sets, resolved, points)
        try:
            answer = tuning.run_tune(resolved, points, run_dir, resume=resume, doc=doc,
                                     say=lambda line: typer.echo(line, err=True))
        except KeyboardInterrupt as exc:
            sig = getattr(exc, "signal", 2)
            again = resume_command(suite, run_dir, device, set_, variant, budget_s)
            typer.echo(f"interrupted; finish with: {again}", err=True)
            raise typer.Exit(128 + int(sig))
        paths = write_tune_report(Path(run_dir))
    for line in answer_lines(answer):
        typer.echo(line, err=True)
    typer.echo(f"run folder: {Path(run_dir).resolve()}", err=True)
    typer.echo(str(paths[0].resolve()))


def dry_run_lines(spec, points) -> list[str]:
    from harness.run import tune_space as ts

    kept, close, skipped = ts.prune(points, spec.memory_budget)
    sizes = ts.schedule(len(kept) + len(close), spec.eta, spec.finalists)
    lines = [f"space: {len(points)} configurations; {len(kept)} kept, {len(close)} close to the "
             f"memory budget (probed under it), {len(skipped)} skipped before measuring"]
    lines += [f"  skipped {s.label}: {s.reason}" for s in skipped]
    lines.append("rungs: " + ", ".join(f"{n} x {spec.first_window_s * spec.eta ** i:g} s"
                                       for i, n in enumerate(sizes))
                 + f"; then at most {spec.finalists} finalists checked and compared in pairs; "
                 f"budget {spec.budget_s:g} s")
    return lines
