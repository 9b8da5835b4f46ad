"""The report, compare, gate and export commands of the ``tbench`` CLI.

Exit codes: 0 pass,
1 regression (compare/gate), 2 bad input (missing folder, corrupt file, unknown name,
incomparable environments, no matched points) -- with a one-line message, never a traceback.
report/compare/export never import torch; gate imports the harness lazily to run the suite.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from harness.cli.app import app, default
from harness.cli.user_errors import fail, user_errors

# harness.analyse.compare.DEFAULT_METRICS, spelled out so --help need not import scipy
# (tests/e2e/test_cli.py checks they agree).
METRICS_DEFAULT = default("latency_ms_p50, flops_per_step, model_state_bytes_max, "
                          "padding_efficiency, mem_peak_allocated_bytes")


def parse_threshold(text: str) -> float:
    """``5%`` or ``0.05`` -> 0.05."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise fail(f"--threshold: got {text!r}, allowed: a percentage like 5% or a fraction like 0.05") from None
    if not 0 < value < 1:
        raise fail(f"--threshold: got {text!r}, allowed: between 0% and 100% (exclusive)")
    return value


def parse_rounds(text: str):
    """``auto`` or an integer >= 2."""
    if text == "auto":
        return "auto"
    if not text.isdigit() or int(text) < 2:
        raise fail(f"--rounds: got {text!r}, allowed: auto or an integer >= 2")
    return int(text)


def _emit(cmp, json_out: Optional[Path]) -> None:
    from harness.analyse.compare_markdown import to_markdown

    typer.echo(to_markdown(cmp))
    if json_out is not None:
        with user_errors():
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(cmp.to_json(), encoding="utf-8")
    if cmp.verdict == "incomparable":
        raise fail("environment fingerprints differ; rerun on the same machine or pass --force")
    raise typer.Exit(cmp.exit_code)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="run folder"),
           format: str = typer.Option("md,html", "--format", help="md, html or md,html"),
           baseline: Optional[str] = typer.Option(
               None, help="baseline strategy label" + default("the dense row, else the first row"))):
    """Write report.md / report.html into a run folder."""
    from harness.analyse.report import write_reports

    with user_errors():
        paths = write_reports(run_dir, [f.strip() for f in format.split(",") if f.strip()],
                              baseline)
    for p in paths:
        typer.echo(str(p))


@app.command()
def compare(base_run: Path = typer.Argument(..., help="baseline run folder or results.jsonl"),
            current_run: Path = typer.Argument(..., help="current run folder or results.jsonl"),
            threshold: str = typer.Option("5%", help="timing change that matters"),
            metric: Optional[List[str]] = typer.Option(None, "--metric", help="repeatable" + METRICS_DEFAULT),
            json_out: Optional[Path] = typer.Option(None, "--json", help="write the JSON verdict"
                                                    + default("none")),
            force: bool = typer.Option(False, help="compare across environments (fingerprints differ)"),
            deterministic_only: bool = typer.Option(False, help="timing informational only")):
    """Compare two runs point by point: exit 1 on a regression, 2 on bad input."""
    from harness.analyse import compare as cmp_mod
    from harness.records import read_run_folder

    t = parse_threshold(threshold)
    with user_errors():
        cmp = cmp_mod.compare_runs(read_run_folder(base_run), read_run_folder(current_run),
                                   threshold=t, metrics=tuple(metric or cmp_mod.DEFAULT_METRICS),
                                   force=force, timing_informational=deterministic_only)
    _emit(cmp, json_out)


@app.command()
def gate(suite: Path = typer.Argument(..., help="suite YAML"),
         baseline: Optional[Path] = typer.Option(None, help="baseline run folder or results.jsonl; "
                                                            "give this or --ab" + default("none")),
         out: Optional[Path] = typer.Option(None, help="run folder to write"
                                            + default("runs/gate-<time>, runs/ab-<time> with --ab")),
         set_: Optional[List[str]] = typer.Option(None, "--set", help="override key=value; repeatable"
                                                  + default("none")),
         ab: Optional[List[str]] = typer.Option(
             None, "--ab", help="A/B mode: give twice, BASE then CANDIDATE, each a "
                                "';'-separated list of key=value overrides" + default("none")),
         rev: Optional[str] = typer.Option(
             None, "--rev", help="git revision to compare the working tree with: the suite runs "
                                 "on both (a temporary worktree), interleaved round by round"
                                 + default("none")),
         rounds: str = typer.Option("auto", help="--ab and --rev: pairs of rounds, a number >= 2, "
                                                 "or auto: pairs added until every comparison "
                                                 "is decided against --threshold (or the "
                                                 "budget is spent)"),
         threshold: str = typer.Option("5%", help="timing change that matters"),
         metric: Optional[List[str]] = typer.Option(None, "--metric", help="repeatable" + METRICS_DEFAULT),
         json_out: Optional[Path] = typer.Option(None, "--json", help="write the JSON verdict"
                                                 + default("none")),
         force: bool = typer.Option(False, help="compare across environments (fingerprints differ)"),
         deterministic_only: bool = typer.Option(False, help="timing informational only (CPU CI)")):
    """Run a suite and compare it with a baseline run, an A/B of two configs, or a git revision."""
    from harness.analyse import compare as cmp_mod
    from harness.run import gate as gate_mod

    t = parse_threshold(threshold)
    metrics = tuple(metric or cmp_mod.DEFAULT_METRICS)
    n_rounds = parse_rounds(rounds)
    if sum((baseline is not None, bool(ab), rev is not None)) != 1:
        raise fail("give exactly one of --baseline FILE_OR_RUN, --ab BASE --ab CANDIDATE, --rev REV")
    if ab and len(ab) != 2:
        raise fail(f"--ab: got {len(ab)} value(s), allowed: exactly two (BASE then CANDIDATE)")
    with user_errors():
        if rev is not None:
            cmp = gate_mod.rev_gate(suite, rev, out, list(set_ or []), rounds=n_rounds, threshold=t,
                                    metrics=metrics, timing_informational=deterministic_only)
        elif ab:
            cmp = gate_mod.ab_gate(suite, gate_mod.parse_spec(ab[0]), gate_mod.parse_spec(ab[1]),
                                   out, list(set_ or []), rounds=n_rounds, threshold=t,
                                   metrics=metrics, timing_informational=deterministic_only)
        else:
            cmp = gate_mod.gate(suite, baseline, out, list(set_ or []), threshold=t,
                                metrics=metrics, force=force,
                                timing_informational=deterministic_only)
    _emit(cmp, json_out)


@app.command()
def export(run_dir: Path = typer.Argument(..., help="run folder"),
           format: str = typer.Option(..., "--format",
                                      help="pytest-benchmark | github-action-benchmark | csv | parquet"),
           out: Optional[Path] = typer.Option(None, help="output file (folder for github-action-benchmark)"
                                              + default("RUN_DIR/export/"))):
    """Export a run to other tools' formats."""
    from harness.analyse.export import export as do_export

    with user_errors():
        paths = do_export(run_dir, format, out)
    for p in paths:
        typer.echo(str(p))

