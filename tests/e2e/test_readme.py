"""Every command and code block of the README and of the docs pages is exercised, so neither can
drift from the code.

In ``README.md`` and every ``docs/*.md`` page:

* each ``tbench ...`` line of an indented code block is parsed by the real command line (every
  option and argument must exist; alternatives written ``a|b|c`` are each parsed), without
  running it;
* each ``tbench run`` and ``tbench tune`` line is dry-run and must validate (exit 0): a value the
  suite refuses, such as a seq_len above the model's max_seq_len, fails here;
* each ``list``, ``env``, ``report``, ``compare`` and ``export`` line really runs, on copies of a
  committed run;
* each ``python benchmarks/...`` script exists and accepts the flags shown (``--help`` with them);
* together they show every command of the CLI, and the README's tour shows run, report, compare
  and gate;
* every relative link resolves, to a file and to a heading, and the README links every page.

In the README only:

* the example suite is a valid suite: a dry run expands it to its 6 points;
* the error example is run and must print exactly the line the README shows, and exit 2;
* the Python block runs against a committed run folder, and on a missing folder says so;
* the two set-up commands are what ``.ci/run`` runs (CI runs them on a fresh machine).
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from harness.cli import app
from harness.records import BadInput

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = {"README.md": README} | {f"docs/{p.name}": p.read_text() for p in DOCS}


def code_lines(text: str) -> list[str]:
    """Lines of a page's indented code blocks (an indented line after a blank line starts one:
    a list item's continuation is not code), comments cut, ``\\``-continued lines joined."""
    out, pending, in_block, previous = [], "", False, ""
    for line in text.splitlines():
        if line.startswith("    ") and line.strip() and (in_block or not previous.strip()):
            in_block = True
            line = pending + re.sub(r"\s+#\s.*$", "", line.strip())
            pending = line[:-1] if line.endswith("\\") else ""
            if not pending:
                out.append(line)
        elif line.strip():
            in_block = False
        previous = line
    return out


def split_alternatives(argv: list[str]) -> list[list[str]]:
    """``--format a|b|c``: one command per choice."""
    for i, arg in enumerate(argv):
        if "|" in arg:
            return [argv[:i] + [choice] + argv[i + 1:] for choice in arg.split("|")]
    return [argv]


def shown(prefix: str) -> dict[tuple[str, ...], str]:
    """Every command line starting with ``prefix`` (its words after it), once, with the first
    page that shows it."""
    found: dict[tuple[str, ...], str] = {}
    for page, text in PAGES.items():
        for line in code_lines(text):
            line = line.split("&&")[-1].strip()
            if line.startswith(prefix):
                for argv in split_alternatives(shlex.split(line.replace('"$OUT"', "OUT"))[1:]):
                    found.setdefault(tuple(argv), page)
    return found


COMMANDS = shown("tbench ")


def cases(argvs) -> list:
    return [pytest.param(list(a), id=f"{COMMANDS[a]}: {' '.join(a)}"[:80]) for a in argvs]


def test_the_readme_and_docs_show_every_command():
    cli = {name for name, cmd in typer.main.get_command(app).commands.items() if not cmd.hidden}
    assert {argv[0] for argv in COMMANDS} == cli
    tour = {argv[0] for argv, page in COMMANDS.items() if page == "README.md"}
    assert {"run", "report", "compare", "gate"} <= tour


@pytest.mark.parametrize("argv", cases(COMMANDS))
def test_each_tbench_command_parses(argv):
    group = typer.main.get_command(app)  # click's, or the copy typer >= 0.29 carries: no import
    context = group.context_class  # of click of our own, which the project does not declare
    name, sub, rest = group.resolve_command(context(group), argv)
    try:
        sub.make_context(name, list(rest), parent=context(group))
    except Exception as exc:  # noqa: BLE001 -- a UsageError of whichever click typer uses
        if not hasattr(exc, "format_message"):
            raise
        pytest.fail(f"{COMMANDS[tuple(argv)]}: tbench {' '.join(argv)}: {exc.format_message()}")


RUNS = [argv for argv in COMMANDS if argv[0] in ("run", "tune")]


@pytest.mark.parametrize("argv", cases(RUNS))
def test_each_tbench_run_command_validates(argv, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(app, argv + ["--dry-run"] * ("--dry-run" not in argv))
    where = f"{COMMANDS[tuple(argv)]}: tbench {' '.join(argv)}"
    assert result.exit_code == 0, f"{where}: {result.output[-2000:]}"
    if argv[0] == "run":
        assert "point(s) (dry run: nothing runs)" in result.stdout
    else:  # tune: the space, what is skipped before measuring, the rungs
        assert result.stdout.startswith("space: ") and "\nrungs: " in result.stdout


def test_the_readme_suite_example_validates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("example.yaml").write_text(README.split("```yaml\n", 1)[1].split("```", 1)[0])
    result = CliRunner().invoke(app, ["run", "example.yaml", "--device", "cpu", "--dry-run"])
    assert result.exit_code == 0, result.output[-2000:]
    assert "6 point(s) (dry run: nothing runs)" in result.stdout


def test_the_error_example_prints_what_the_readme_shows(tmp_path, monkeypatch):
    block = README[README.index("$ tbench run bad.yaml"):].splitlines()
    shown_error, shown_code = block[1].strip(), block[2].strip()
    monkeypatch.chdir(tmp_path)
    Path("bad.yaml").write_text("name: bad\nstrategies:\n  attention: {name: local, windw: 8}\n")
    result = CliRunner().invoke(app, ["run", "bad.yaml"])
    assert str(result.exit_code) == shown_code
    assert result.stderr.strip() == shown_error


SCRIPTS = shown("python benchmarks/")


@pytest.mark.parametrize("argv", [pytest.param(list(a), id=f"{page}: {' '.join(a)}"[:80])
                                  for a, page in SCRIPTS.items()])
def test_each_benchmark_script_accepts_the_flags_shown(argv):
    script = ROOT / argv[0]
    assert script.is_file()
    proc = subprocess.run([sys.executable, str(script), *argv[1:], "--help"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]


def python_block() -> str:
    return README.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_python_block_runs_on_a_committed_run():
    run = ROOT / "reports" / "cpu" / "attention"
    scope: dict = {}
    exec(python_block().replace('"runs/a"', repr(str(run))), scope)  # noqa: S102 - the README's own code
    df = scope["df"]
    assert len(df) > 0 and df["latency_ms_p50"].notna().any()


@pytest.mark.parametrize("make, says", [
    (lambda tmp: tmp / "nope", "nope: not a run folder (no such directory)"),
    (lambda tmp: tmp, "not a run folder (it has no results.jsonl)"),
])
def test_the_python_block_on_a_folder_that_is_not_a_run_says_so(tmp_path, make, says):
    with pytest.raises(BadInput, match=re.escape(says)):
        exec(python_block().replace('"runs/a"', repr(str(make(tmp_path)))), {})  # noqa: S102


def test_the_setup_commands_are_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash install.sh --test && python3 -m pytest -q" in README
    assert "bash install.sh --test && python3 -m pytest -q" in ci
    assert "bash install.sh && tbench run suites/attention.yaml" in README
    assert (ROOT / "benchmarks" / "pytest_bench").is_dir()  # pytest benchmarks/pytest_bench


RUN_ALIASES = ("runs/a", "runs/base", "runs/head")  # the run folders the pages use
EXECUTED = [argv for argv in COMMANDS if argv[0] in ("list", "env", "report", "compare", "export")]


@pytest.mark.parametrize("argv", cases(EXECUTED))
def test_each_analysis_command_runs_as_written(argv, tmp_path, monkeypatch):
    """``list``, ``env``, ``report``, ``compare`` and ``export`` lines really run, each run
    folder the pages name being a copy of the committed CPU attention run (``runs/head`` =
    ``runs/base``: an A/A comparison. Its timing ratios are exactly 1, so no interval can lie
    wholly outside the threshold's band: never a regression, exit 0. The committed run measured
    each point in 3 or more rounds (``rounds: auto``); Welch on them fits some intervals inside
    the 5% band (equal: ok) and not others (undecided, with the difference they could resolve),
    so the verdict is INCONCLUSIVE)."""
    monkeypatch.chdir(tmp_path)
    for alias in RUN_ALIASES:
        shutil.copytree(ROOT / "reports" / "cpu" / "attention", tmp_path / alias)
    result = CliRunner().invoke(app, argv)
    where = f"{COMMANDS[tuple(argv)]}: tbench {' '.join(argv)}"
    assert result.exit_code == 0, f"{where}: {result.output[-2000:]}"
    if argv[0] == "report":
        assert (tmp_path / "runs/a/report.md").read_text().count("## Answers") == 1
    if argv[0] == "compare":
        assert "## tbench compare: **INCONCLUSIVE**" in result.stdout
        timing = [line for line in result.stdout.splitlines() if "| latency_ms_p50 |" in line]
        assert timing and all("| 1.000 [" in line for line in timing)
        said = [re.search(r"\| (ok|inconclusive): \d+ rounds a side", line) for line in timing]
        assert all(said) and {m.group(1) for m in said} == {"ok", "inconclusive"}
        assert all("could resolve differences ≥ " in line for line in timing if "| inconclusive" in line)
        verdicts = {line.rsplit(" | ", 1)[1].split(":")[0].strip(" |")
                    for line in result.stdout.splitlines() if "(`" in line}
        assert verdicts == {"ok", "inconclusive"}  # deterministic metrics equal, timing partly undecided
    if argv[0] == "export":
        assert list((tmp_path / "runs/a/export").iterdir())


def anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


LINKS = [(page, target) for page, text in PAGES.items()
         for target in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("page, target", LINKS, ids=[f"{p}: {t}" for p, t in LINKS])
def test_each_relative_link_resolves(page, target):
    path, _, fragment = target.partition("#")
    file = (ROOT / page).parent / path if path else ROOT / page
    assert file.exists(), f"{page}: link to {target}: no such file"
    if fragment:
        headings = re.findall(r"^#+ (.*)$", file.read_text(), flags=re.M)
        assert fragment in {anchor(h) for h in headings}, f"{page}: link to {target}: no such heading"


def test_the_readme_links_every_docs_page():
    linked = {target.partition("#")[0] for page, target in LINKS if page == "README.md"}
    assert {f"docs/{p.name}" for p in DOCS} <= linked
