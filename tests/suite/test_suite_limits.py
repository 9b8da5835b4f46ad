"""Suite files the loader refuses before anything runs: a repeated key, an alias bomb, a file too
large, a file the suite names that is not there. Each through the CLI: exit 2, one ``error:``
line saying what is wrong and what is allowed, no traceback, nothing run."""
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from harness.cli import app
from harness.suite.errors import shown
from harness.suite.limits import MAX_YAML_BYTES, MAX_YAML_DEPTH, MAX_YAML_VALUES
from harness.suite.loader import load_suite
from harness.suite.sweep import load_points

# 9 levels of 9 aliases: 9**9 (387 million) strings once expanded, 90 nodes as written
LAUGHS = "\n".join(
    ['lol: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)])
FLOW_LAUGHS = ("[&a [1,1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], "
               "&c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], "
               "&e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d], [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]]")
SUITE = "name: t\nmodel: {preset: tiny}\nworkload: {seq_len: 16, batch_size: 2}\n"


def run_cli(tmp_path, monkeypatch, text: str, *args):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("harness.run.lifecycle.sweep", lambda *a, **k: pytest.fail("a point ran"))
    suite = tmp_path / "s.yaml"
    suite.write_text(text)
    return CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path / "run"), "--device", "cpu",
                                    *args])


def the_one_line(result, tmp_path) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert len(lines[0]) < 400, lines[0]
    assert not (tmp_path / "run").exists()
    return lines[0]


@pytest.mark.parametrize("text, expected", [
    (SUITE + "workload: {seq_len: 8}\n",
     "s.yaml: line 4, column 1: duplicate key 'workload' (first at line 3, again at line 4); "
     "allowed: each key once in a mapping"),
    ("name: t\nworkload:\n  seq_len: 16\n  batch_size: 2\n  seq_len: 32\n",
     "line 5, column 3: duplicate key 'seq_len' (first at line 3, again at line 5)"),
    ("name: t\nstrategies:\n  attention: {name: local, window: 8, window: 16}\n",
     "line 3, column 39: duplicate key 'window' (first at line 3, again at line 3)"),
], ids=["top-level", "nested", "flow"])
def test_duplicate_keys_are_refused_with_both_lines(tmp_path, monkeypatch, text, expected):
    assert expected in the_one_line(run_cli(tmp_path, monkeypatch, text), tmp_path)


def test_a_merge_key_may_override_what_it_merges(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: t\nworkload: {<<: {seq_len: 16, batch_size: 2}, seq_len: 32}\n")
    assert load_suite(path).workload.seq_len == 32


def test_alias_bomb_is_refused_before_it_is_built(tmp_path, monkeypatch):
    line = the_one_line(run_cli(tmp_path, monkeypatch, "name: t\n" + LAUGHS + "\n"), tmp_path)
    assert f"more than {MAX_YAML_VALUES:,} values once anchors and aliases are expanded; " \
           f"allowed: at most {MAX_YAML_VALUES:,}" in line


def test_alias_bomb_in_a_set_value_is_refused(tmp_path, monkeypatch):
    result = run_cli(tmp_path, monkeypatch, SUITE, "--set", f"workload.seq_len={FLOW_LAUGHS}")
    line = the_one_line(result, tmp_path)
    assert line.startswith("error: --set workload.seq_len: value '[&a [1,1,1,1,")
    assert f"more than {MAX_YAML_VALUES:,} values" in line


@pytest.mark.parametrize("text, expected", [
    ("name: t\nloop: &a [1, *a]\n", "an alias inside its own anchor (a recursive value)"),
    ("name: t\ndeep: " + "[" * 200 + "]" * 200 + "\n",
     f"nested more than {MAX_YAML_DEPTH} levels deep; allowed: at most {MAX_YAML_DEPTH}"),
    ("name: t\nworkload: {seq_len: " + "9" * 5000 + "}\n",
     "line 2, column 21: integer of 5000 characters; allowed: at most 4300 digits"),
], ids=["recursive", "deep", "huge-int"])
def test_recursive_deep_or_huge_values_are_refused(tmp_path, monkeypatch, text, expected):
    assert expected in the_one_line(run_cli(tmp_path, monkeypatch, text), tmp_path)


def test_oversized_suite_is_refused_before_parsing(tmp_path, monkeypatch):
    text = SUITE + "description: '" + "x" * MAX_YAML_BYTES + "'\n"
    line = the_one_line(run_cli(tmp_path, monkeypatch, text), tmp_path)
    assert f"s.yaml: too large ({len(text.encode()):,} bytes); allowed: at most {MAX_YAML_BYTES:,} " \
           "bytes (1 MiB)" in line


def test_missing_lengths_file_names_the_field_and_the_path(tmp_path, monkeypatch):
    (tmp_path / "suites").mkdir()
    text = "name: t\nworkload:\n  lengths: {distribution: file, path: data/lengths.txt}\n"
    (tmp_path / "suites" / "s.yaml").write_text(text)
    monkeypatch.setattr("harness.run.lifecycle.sweep", lambda *a, **k: pytest.fail("a point ran"))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "suites/s.yaml", "--out", "run", "--device", "cpu"])
    line = the_one_line(result, tmp_path)
    where = tmp_path.resolve() / "suites" / "data" / "lengths.txt"  # the suite's folder, not the cwd
    assert line == (f"error: suites/s.yaml: workload.lengths.path: got 'data/lengths.txt': file not "
                    f"found: {where}; a relative path is read from the suite file's folder; allowed: "
                    "a readable file")


@pytest.mark.parametrize("where", ["profile", "set", "sweep"])
def test_missing_lengths_file_from_a_profile_set_or_sweep(tmp_path, monkeypatch, where):
    (tmp_path / "ok.txt").write_text("3\n5\n")
    lengths = "{distribution: file, path: ok.txt}"
    text, args = SUITE.replace("seq_len: 16,", f"seq_len: 16, lengths: {lengths},"), []
    if where == "profile":
        text += "profiles:\n  cpu: {workload.lengths.path: gone.txt}\n"
    elif where == "set":
        args = ["--set", "workload.lengths.path=gone.txt"]
    else:
        text += "sweep:\n  grid: {workload.lengths.path: [ok.txt, gone.txt]}\n"
    line = the_one_line(run_cli(tmp_path, monkeypatch, text, *args), tmp_path)
    assert f"got 'gone.txt': file not found: {tmp_path.resolve() / 'gone.txt'}" in line


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_lengths_file(tmp_path, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_text("3\n")
    secret.chmod(0)
    text = SUITE.replace("seq_len: 16,", "seq_len: 16, lengths: {distribution: file, path: secret.txt},")
    line = the_one_line(run_cli(tmp_path, monkeypatch, text), tmp_path)
    assert f"workload.lengths.path: got 'secret.txt': cannot be read (Permission denied): {secret}" in line


def test_lengths_file_is_read_from_the_suite_folder_and_points_carry_it_absolute(tmp_path, monkeypatch):
    suites = tmp_path / "suites"
    (suites / "data").mkdir(parents=True)
    (suites / "data" / "a.txt").write_text("3\n5\n")
    (suites / "data" / "b.txt").write_text("7\n")
    (suites / "s.yaml").write_text(SUITE.replace(
        "seq_len: 16,", "seq_len: 16, lengths: {distribution: file, path: data/a.txt},")
        + "sweep:\n  grid: {workload.lengths.path: [data/a.txt, data/b.txt]}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    suite, points = load_points(Path("..") / "suites" / "s.yaml", "cpu")
    data = (suites / "data").resolve()
    assert suite.workload.lengths.path == str(data / "a.txt")
    assert [p.workload.lengths.path for p in points] == [str(data / "a.txt"), str(data / "b.txt")]
    assert points[0].label.endswith("/path=data/a.txt") and points[1].label.endswith("/path=data/b.txt")


def test_error_values_are_shown_bounded():
    bomb: list = ["lol"]
    for _ in range(30):  # 2**30 leaves when walked in full; shared, so tiny in memory
        bomb = [bomb, bomb]
    text = shown({"key": bomb, "text": "x" * 10**7})
    assert len(text) <= 80 and text.startswith("{'key': [[[")
    assert shown("eight") == "'eight'" and shown([16, -4]) == "[16, -4]"


def test_values_under_the_limit_reach_the_field_check_and_are_shown_short(tmp_path, monkeypatch):
    levels = ["&a [" + ", ".join(["1"] * 10) + "]"] + [
        f"&{b} [" + ", ".join([f"*{a}"] * 10) + "]" for a, b in zip("abc", "bcd")]
    text = f"name: t\nworkload: {{seq_len: [{', '.join(levels)}, [*d, *d, *d, *d]]}}\n"  # 51,115 values
    line = the_one_line(run_cli(tmp_path, monkeypatch, text), tmp_path)
    assert line.endswith("s.yaml: workload.seq_len: got [[1, 1, 1, 1, 1, 1, ...], [[1, 1, 1, 1, 1, 1, ...], "
                         "[1, 1, 1, 1, 1, 1, ...], ..., allowed: integer >= 1")


def _numeric_fields():
    """(axis, strategy, field) of every numeric parameter of every registered strategy."""
    from implementations import registry

    out = []
    for axis in registry.AXES:
        for name in registry.names(axis):
            cls = registry.get_class(axis, name)
            for f in registry.fields_of(cls):
                tp = registry.field_info(cls, f.name).annotation
                args = getattr(tp, "__args__", ()) or (tp,)
                if any(a in (int, float) for a in args) or tp == tuple[int, ...]:
                    out.append((axis, name, f.name))
    return out


@pytest.mark.parametrize("axis, name, field", _numeric_fields(), ids=lambda x: str(x))
def test_every_numeric_strategy_field_refuses_ten_to_the_twenty_at_load(tmp_path, axis, name, field):
    """An absurd value is one line and exit 2 when the suite loads, naming what is allowed --
    never an OverflowError in a worker, never a silent run as something else."""
    from harness.suite.errors import SuiteError
    from harness.suite.sweep import load_points

    huge = [10**20] if field == "global_tokens" else (1e20 if field in ("init_scale", "timeout_s",
                                                                        "parity_rtol", "sparsity")
                                                     else 10**20)
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({"name": "huge", "strategies": {axis: {"name": name, field: huge}}}))
    with pytest.raises(SuiteError) as err:
        load_points(suite, "cpu", [])
    (line,) = err.value.lines
    assert "allowed:" in line and ("<" in line or "max_seq_len" in line), line
