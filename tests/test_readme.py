"""Every command and code block of the README is exercised, so the README cannot drift from the code.

* each ``tbench ...`` line is parsed by the real command line (every option and argument must
  exist; alternatives written ``a|b|c`` are each parsed), without running it;
* each ``tbench run`` line is dry-run and must validate (exit 0): a value the suite refuses, such
  as a seq_len above the model's max_seq_len, fails here;
* the error example is run and must print exactly the line the README shows, and exit 2;
* each ``python benchmarks/...`` script exists and accepts the flags shown (``--help`` with them);
* the Python block runs against a committed run folder, and on a missing folder says so;
* the two set-up commands are what ``.ci/run`` runs (CI runs them on a fresh machine).
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer.main
from typer.testing import CliRunner

from harness.analyse.results import BadInput
from harness.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_lines() -> list[str]:
    """Lines of the indented code blocks, comments cut, ``\\``-continued lines joined."""
    out, pending = [], ""
    for line in README.splitlines():
        if line.startswith("    ") and line.strip():
            line = pending + re.sub(r"\s+#\s.*$", "", line.strip())
            pending = line[:-1] if line.endswith("\\") else ""
            if not pending:
                out.append(line)
    return out


def tbench_commands() -> list[list[str]]:
    commands = []
    for line in code_lines():
        line = line.split("&&")[-1].strip()
        if not line.startswith("tbench "):
            continue
        argv = shlex.split(line)[1:]
        alternatives = [i for i, a in enumerate(argv) if "|" in a]
        for i in alternatives:  # --format a|b|c: one command per choice
            for choice in argv[i].split("|"):
                commands.append(argv[:i] + [choice] + argv[i + 1:])
        if not alternatives:
            commands.append(argv)
    return commands


COMMANDS = tbench_commands()


def test_the_readme_shows_every_command():
    assert {argv[0] for argv in COMMANDS} == {"run", "list", "env", "report", "compare", "gate",
                                              "export", "profile", "frontier"}


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a)[:60] for a in COMMANDS])
def test_each_tbench_command_parses(argv):
    group = typer.main.get_command(app)
    name, sub, rest = group.resolve_command(click.Context(group), argv)
    try:
        sub.make_context(name, list(rest), parent=click.Context(group))
    except click.exceptions.UsageError as exc:
        pytest.fail(f"README: tbench {' '.join(argv)}: {exc.format_message()}")


RUNS = [argv for argv in COMMANDS if argv[0] == "run"]


@pytest.mark.parametrize("argv", RUNS, ids=[" ".join(a)[:60] for a in RUNS])
def test_each_tbench_run_command_validates(argv, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(app, argv + ["--dry-run"])
    assert result.exit_code == 0, f"README: tbench {' '.join(argv)}: {result.output[-2000:]}"
    assert "point(s) (dry run: nothing runs)" in result.stdout


def test_the_error_example_prints_what_the_readme_shows(tmp_path, monkeypatch):
    block = README[README.index("$ tbench run bad.yaml"):].splitlines()
    shown_error, shown_code = block[1].strip(), block[2].strip()
    monkeypatch.chdir(tmp_path)
    Path("bad.yaml").write_text("name: bad\nstrategies:\n  attention: {name: local, windw: 8}\n")
    result = CliRunner().invoke(app, ["run", "bad.yaml"])
    assert str(result.exit_code) == shown_code
    assert result.stderr.strip() == shown_error


def script_commands() -> list[list[str]]:
    return [shlex.split(line.replace('"$OUT"', "OUT"))[1:] for line in code_lines()
            if line.startswith("python benchmarks/")]


@pytest.mark.parametrize("argv", script_commands(), ids=lambda a: a[0])
def test_each_benchmark_script_accepts_the_flags_shown(argv):
    script = ROOT / argv[0]
    assert script.is_file()
    proc = subprocess.run([sys.executable, str(script), *argv[1:], "--help"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_python_block_runs_on_a_committed_run():
    code = README.split("```python\n", 1)[1].split("```", 1)[0]
    run = ROOT / "reports" / "cpu" / "attention"
    scope: dict = {}
    exec(code.replace('"runs/a"', repr(str(run))), scope)  # noqa: S102 - the README's own code
    df = scope["df"]
    assert len(df) > 0 and df["latency_ms_p50"].notna().any()


@pytest.mark.parametrize("make, says", [
    (lambda tmp: tmp / "nope", "nope: not a run folder (no such directory)"),
    (lambda tmp: tmp, "not a run folder (it has no results.jsonl)"),
])
def test_the_python_block_on_a_folder_that_is_not_a_run_says_so(tmp_path, make, says):
    code = README.split("```python\n", 1)[1].split("```", 1)[0]
    with pytest.raises(BadInput, match=re.escape(says)):
        exec(code.replace('"runs/a"', repr(str(make(tmp_path)))), {})  # noqa: S102


def test_the_setup_commands_are_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash install.sh --test && python3 -m pytest -q" in README
    assert "bash install.sh --test && python3 -m pytest -q" in ci
    assert "bash install.sh && tbench run suites/attention.yaml" in README
    assert (ROOT / "benchmarks" / "pytest_bench").is_dir()  # pytest benchmarks/pytest_bench


RUN_ALIASES = ("runs/a", "runs/base", "runs/head")  # the README's run folders
EXECUTED = [argv for argv in COMMANDS if argv[0] in ("list", "env", "report", "compare", "export")]


@pytest.mark.parametrize("argv", EXECUTED, ids=[" ".join(a)[:60] for a in EXECUTED])
def test_each_analysis_command_runs_as_written(argv, tmp_path, monkeypatch):
    """``list``, ``env``, ``report``, ``compare`` and ``export`` lines really run, each README
    run folder being a copy of the committed CPU attention run (``runs/head`` = ``runs/base``:
    an A/A comparison, so ``compare`` must say ok and exit 0)."""
    import shutil

    monkeypatch.chdir(tmp_path)
    for alias in RUN_ALIASES:
        shutil.copytree(ROOT / "reports" / "cpu" / "attention", tmp_path / alias)
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, f"README: tbench {' '.join(argv)}: {result.output[-2000:]}"
    if argv[0] == "report":
        assert (tmp_path / "runs/a/report.md").read_text().count("## Answers") == 1
    if argv[0] == "compare":
        assert "**OK**" in result.stdout
    if argv[0] == "export":
        assert list((tmp_path / "runs/a/export").iterdir())
