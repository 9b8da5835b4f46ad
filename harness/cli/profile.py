"""The ``profile`` command of the ``tbench`` CLI: profile one point again, without the sweep.

    tbench profile RUN_DIR --point ID                    a point of a run (suite.resolved.json)
    tbench profile SUITE.yaml --point ID [--out DIR] [--device D] [--set PATH=VALUE]... [--variant V]

The point is the one of that id, resolved as the run resolved it (its model, workload,
strategies, measure and seed), with ``measure.profile`` on and one round: one worker times it
as before, then profiles it (``harness.measure.profiling``).
  * A run folder: the folder is locked while this runs (``harness.run.lock``: not while its run
    is still measuring). The worker (``harness.run.rounds.run_round``, as a run starts it) writes
    into ``RUN_DIR/profiles/<ID>/``: point.json, result.json, worker.log, ``trace.json.gz`` (and
    ``memory_snapshot.pickle`` on CUDA), and ``breakdown.json``: the ``profile_*`` metrics, the
    timed median and the warnings, which the run's reports show for a point that has no profile
    of its own (rewritten here).
  * A suite: that one point is a run of its own (``harness.run.lifecycle.run``: the folder
    ``--out``, default ``runs/<suite>-profile-<time>``, its records and reports), like any run.
Prints the regions in ms of the timed median, the top operators and the trace's path. Exit
codes: 0 profiled, 2 bad input (an unknown id: the ids allowed are listed; a folder in use), 3
the point failed or is not supported (the status and the reason are printed).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from harness.cli.app import app, console, default
from harness.cli.user_errors import fail, user_errors
from harness.cli.run import Device

PROFILES = "profiles"


def profiled_point(data: dict):
    """The point of ``data`` (``Point.to_json()``) with ``measure.profile`` on and one round;
    its own id (the config changed), the original's seed (the same batches)."""
    from harness.suite.point import Point

    orig = Point.from_json(data)
    measure = orig.measure.model_copy(update={"profile": True, "rounds": 1})
    cfg = orig.config().model_copy(update={"measure": measure})
    return Point(**dict(cfg), suite=orig.suite, index=orig.index, id=cfg.point_id(),
                 label=orig.label, seed=orig.seed)


def _pick(points: list[dict], point_id: str, where: str) -> dict:
    for p in points:
        if p.get("id") == point_id:
            return p
    ids = [f"{p.get('id')} ({p.get('label')})" for p in points[:20]]
    more = f", … {len(points) - 20} more" if len(points) > 20 else ""
    raise fail(f"--point: got {point_id!r}, not a point of {where}; allowed: {', '.join(ids)}{more}")


def from_run(run_dir: Path, point_id: str) -> dict:
    from harness.records import RESOLVED_FILE, BadInput, read_json

    doc = read_json(run_dir / RESOLVED_FILE)
    if not doc.get("points"):
        raise BadInput(f"{run_dir}: no {RESOLVED_FILE} with points (give the folder `tbench run` "
                       "wrote, or a suite file)")
    return _pick(doc["points"], point_id, str(run_dir))


def in_run_folder(run_dir: Path, point_id: str) -> tuple[dict, Path]:
    """Profile a run's point into ``RUN_DIR/profiles/<ID>/``, the folder locked meanwhile;
    (the record, the folder of its files)."""
    from harness.run import extensions, launcher
    from harness.run.lock import FolderLock

    with FolderLock(run_dir):
        pt = profiled_point(from_run(run_dir, point_id))
        extensions.prepare([pt], lambda line: typer.echo(line, err=True))
        folder = run_dir.resolve() / PROFILES / point_id
        typer.echo(f"profiling {pt.label} in {folder}", err=True)
        rec = launcher.launch(pt, folder, 5.0)
        rec.update(point_id=pt.id, label=pt.label)
        if ok(rec):
            save(run_dir, point_id, rec)
            from harness.run.lifecycle import write_reports
            from harness.records import read_run_folder

            if (run_dir / "results.jsonl").is_file():  # the run's reports show the new profile
                warning = write_reports(read_run_folder(run_dir))
                typer.echo(warning or f"reports: {run_dir / 'report.md'}, {run_dir / 'report.html'}",
                           err=True)
    return rec, folder


def from_suite(suite: Path, point_id: str, out: Optional[Path], device, sets, variants):
    """Profile a suite's point as a run of its own; (the record, its worker folder)."""
    from harness.run import lifecycle, plan

    options = plan.RunOptions(suite, out, device.value if device else None, tuple(sets),
                              tuple(variants))
    loaded = plan.load(options)
    data = _pick([p.to_json() for p in loaded[1]], point_id, str(suite))
    options = replace(options, out=out or plan.rundir.default_run_dir(f"{loaded[0].name}-profile"))
    the_plan = plan.with_points(plan.plan_run(options, loaded), [profiled_point(data)])
    result = lifecycle.run(the_plan, say=lambda line: typer.echo(line, err=True))
    rec = result.records[-1]
    return rec, the_plan.run_dir / "workers" / rec["point_id"]


def ok(rec: dict) -> bool:
    return rec.get("status") == "ok" and "profile_step_ms" in (rec.get("metrics") or {})


def _summary(rec: dict, folder: Path) -> None:
    from harness.analyse.regions import region_ms
    from harness.analyse.units import fmt_ms

    m = rec.get("metrics") or {}
    out = console()
    table = Table(title=f"{rec.get('label')}: timed p50 {fmt_ms(m['latency_ms_p50'])}, profiled "
                        f"step {fmt_ms(m['profile_step_ms'])} ({m['profile_time_basis']} time)",
                  title_justify="left")
    for name in ("region", "ms of the timed median", "share"):
        table.add_column(name, justify="left" if name == "region" else "right")
    for region, ms in sorted(region_ms(rec).items(), key=lambda kv: -kv[1]):
        if ms > 0:
            table.add_row(region, f"{ms:.3g}", f"{ms / m['latency_ms_p50']:.1%}")
    out.print(table)
    ops = Table(title="top operators by self time", title_justify="left")
    for name in ("operator", "self ms/step", "share", "calls/step"):
        ops.add_column(name, justify="left" if name == "operator" else "right")
    for o in m.get("profile_top_ops") or []:
        ops.add_row(o["name"], f"{o['self_ms']:.3g}", f"{o['share']:.1%}", f"{o['calls']:g}")
    out.print(ops)
    for k in m.get("profile_kernels") or []:
        typer.echo(f"kernel {k['ms']:.3g} ms/step {k['share']:.1%}: {k['name']}")
    if m.get("profile_trace"):
        typer.echo(f"trace: {folder / Path(m['profile_trace']).name} (open in "
                   "https://ui.perfetto.dev or chrome://tracing)")


def save(run_dir: Path, point_id: str, rec: dict) -> Path:
    from harness.records import write_json_atomic

    m = rec.get("metrics") or {}
    data = {"point_id": point_id, "profiled_point_id": rec.get("point_id"),
            "label": rec.get("label"), "latency_ms_p50": m.get("latency_ms_p50"),
            "warnings": rec.get("warnings") or [],
            **{k: v for k, v in m.items() if k.startswith("profile_")}}
    path = run_dir / PROFILES / point_id / "breakdown.json"
    write_json_atomic(path, data, indent=1)
    return path


@app.command()
def profile(
    target: Path = typer.Argument(..., help="run folder (its suite.resolved.json) or suite YAML"),
    point: str = typer.Option(..., "--point", help="point id, as results.jsonl and "
                                                   "`tbench run --dry-run` show it"),
    out: Optional[Path] = typer.Option(None, "--out", help="with a suite: the run folder to write"
                                       + default("runs/<suite>-profile-<time>")),
    device: Optional[Device] = typer.Option(None, "--device", help="with a suite: auto, cpu or cuda"
                                            + default("the suite's device")),
    set_: List[str] = typer.Option([], "--set", metavar="PATH=VALUE",
                                   help="with a suite: override a field; repeatable" + default("none")),
    variant: List[str] = typer.Option([], "--variant", metavar="NAME",
                                      help="with a suite: apply variants.NAME" + default("none")),
) -> None:
    """Profile one point again (a run's, or a suite's): regions, top operators, a trace."""
    from harness.measure import workload

    with user_errors():
        if target.is_dir():
            if out or device or set_ or variant:
                raise fail("--out, --device, --set and --variant go with a suite file; a run "
                           "folder's points are already resolved")
            reasons = workload.unsupported_reasons(profiled_point(from_run(target, point)))
            if not reasons:
                rec, folder = in_run_folder(target, point)
        else:
            rec, folder = from_suite(target, point, out, device, set_, variant)
            reasons = []
    if reasons or not ok(rec):  # not_supported: known without starting a worker
        why = "; ".join(reasons) or rec.get("error") or "; ".join(rec.get("warnings") or []) \
            or "no breakdown"
        typer.echo(f"failed: {'not_supported' if reasons else rec.get('status')}: {why}", err=True)
        raise typer.Exit(3)
    _summary(rec, folder)
    for w in rec.get("warnings") or []:
        typer.echo(f"warning: {w}", err=True)
    typer.echo(str(target / PROFILES / point / "breakdown.json") if target.is_dir()
               else str(folder.parents[1] / "results.jsonl"))
