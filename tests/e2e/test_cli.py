"""The tbench CLI: bad input -> clear message + exit 2 + nothing runs; dry-run; run flow with a
stand-in runner (the real end-to-end run is the runner's test); list; env."""
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from harness import cli, records

GOOD = {"name": "t", "model": {"preset": "tiny"}, "workload": {"seq_len": 32, "batch_size": 2},
        "strategies": {"attention": {"name": "local", "window": 8}},
        "measure": {"min_time_s": 0.0, "max_samples": 10, "rounds": 1},
        "sweep": {"grid": {"workload.seq_len": [16, 32]}}}


def invoke(*args):
    return CliRunner().invoke(cli.app, [str(a) for a in args])


def write(tmp_path, data, name="s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def edit(**changes):
    data = json.loads(json.dumps(GOOD))
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return data


BAD = [  # (suite content, extra args, expected message)
    (edit(nmae="t"), [], "s.yaml: nmae: unknown key 'nmae' (did you mean 'name'?)"),
    (edit(workload__seq_lne=3), [], "s.yaml: workload.seq_lne: unknown key 'seq_lne' (did you mean 'seq_len'?)"),
    (edit(measure__min_sample=10), [], "measure.min_sample: unknown key 'min_sample' (did you mean 'min_samples'?)"),
    (edit(model__presett="tiny"), [], "model.presett: unknown key 'presett' (did you mean 'preset'?)"),
    (edit(sweep__grdi={}), [], "sweep.grdi: unknown key 'grdi' (did you mean 'grid'?)"),
    (edit(workload__lengths={"distribution": "uniform", "lo": 3}), [],
     "workload.lengths.lo: unknown key 'lo' (did you mean 'low'?)"),
    (edit(strategies__attention={"name": "local", "windw": 8}), [],
     "strategies.attention.windw: unknown key 'windw' (did you mean 'window'?)"),
    (edit(profiles={"cpu": {"workload.seq_lne": 3}}), [], "profiles.cpu.workload.seq_lne: unknown key 'seq_lne'"),
    (edit(workload__batch_size="eight"), [], "workload.batch_size: got 'eight', allowed: integer >= 1"),
    (edit(strategies__attention={"name": "local", "window": -2}), [],
     "strategies.attention.window: got -2, allowed: integer >= 0"),
    (edit(workload__seq_len=0), [], "workload.seq_len: got 0, allowed: integer >= 1"),
    (edit(sweep__grid={"workload.seq_len": [16, -4]}), [], "sweep.grid.workload.seq_len: got -4, allowed: integer >= 1"),
    (edit(strategies__attention="lcoal"), [], "strategies.attention.name: got 'lcoal', allowed: atrous, bigbird, block, dense, linformer, local, longformer, topk (did you mean 'local'?)"),
    (edit(model__preset="gpt-12m"), [], "model.preset: got 'gpt-12m', allowed: "),
    (edit(sweep__grid={"workload.seqlen": [1]}), [], "sweep.grid.workload.seqlen: unknown key 'seqlen' (did you mean 'seq_len'?)"),
    (GOOD, ["--set", "workload.batchsize=4"], "--set workload.batchsize: unknown key 'batchsize' (did you mean 'batch_size'?)"),
    (GOOD, ["--set", "workload.seq_len"], "--set 'workload.seq_len': allowed: PATH=VALUE"),
    (GOOD, ["--set", "workload.seq_len=[0,8]"], "sweep.grid.workload.seq_len: got 0, allowed: integer >= 1"),
    (GOOD, ["--set", "strategies.attention.window=-1"], "--set strategies.attention.window: got -1, allowed: integer >= 0"),
    ("name: !!python/object/apply:os.system ['echo pwned']\n", [], "YAML tag refused"),
    ("name: t\nworkload: {seq_len: [1,\n", [], "invalid YAML"),
    (GOOD, ["--device", "gpu"], "'gpu' is not one of"),
    (GOOD, ["--resume"], "suite.resolved.json not found; --out must name the folder of the run to finish"),
    ("name: t\nworkload: {seq_len: 8}\nworkload: {seq_len: 16}\n", [],
     "s.yaml: line 3, column 1: duplicate key 'workload' (first at line 2, again at line 3)"),
    (GOOD, ["--set", "workload.lengths={distribution: fixed, distribution: uniform}"],
     "--set workload.lengths: value '{distribution: fixed, distribution: uniform}': line 1, column 23: "
     "duplicate key 'distribution'"),
    ("name: t\n" + "".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}" if i else "1"] * 9) + "]\n"
                           for i in range(9)), [], "values once anchors and aliases are expanded"),
    (edit(workload__lengths={"distribution": "file", "path": "nope.txt"}), [],
     "s.yaml: workload.lengths.path: got 'nope.txt': file not found: "),
    (GOOD, ["--set", "workload.lengths={distribution: file, path: nope.txt}"],
     "--set workload.lengths: got 'nope.txt': file not found: "),
]


@pytest.mark.parametrize("content, args, expected", BAD, ids=[b[2][:40] for b in BAD])
def test_bad_input_exits_2_with_a_clear_message_and_runs_nothing(tmp_path, monkeypatch, content, args, expected):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("harness.run.lifecycle.sweep", lambda *a, **k: pytest.fail("a point ran"))
    result = invoke("run", write(tmp_path, content), "--out", tmp_path / "run", *args)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_missing_suite_file_and_resume_without_out(tmp_path):
    result = invoke("run", tmp_path / "nope.yaml", "--dry-run")
    assert result.exit_code == 2 and "nope.yaml: file not found" in result.output
    result = invoke("run", write(tmp_path, GOOD), "--resume")
    assert result.exit_code == 2 and "--resume needs --out RUN_DIR" in result.output


def test_dry_run_lists_points_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("run", write(tmp_path, GOOD), "--device", "cpu", "--dry-run",
                    "--set", "strategies.attention=[dense,{name: local, window: 4}]")
    assert result.exit_code == 0, result.output
    assert "t on cpu: 4 point(s) (dry run: nothing runs)" in result.output
    for label in ("dense/fused/S16/forward", "local_w4/fused/S32/forward"):
        assert label in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


class FakeRounds:
    """Stands in for harness.run.rounds.run_round: checks what the CLI wrote first, then gives
    each point the status of its index."""

    def __init__(self, statuses):
        self.statuses, self.calls = statuses, []

    def __call__(self, point, run_dir, grace_s, round_no, where=None):
        resolved = json.loads((Path(run_dir) / records.RESOLVED_FILE).read_text())  # written before
        assert point.id in [p["id"] for p in resolved["points"]]
        self.calls.append(point.id)
        status = self.statuses[point.index]
        return {"status": status, "error": "boom" if status == "error" else None,
                "samples_ms": [1.0] * 10 if status == "ok" else [], "metrics": {}, "warnings": [],
                "contention": {"contended": False, "reasons": []}, "round": round_no,
                "started_at": "t", "duration_s": 0.1}


@pytest.mark.parametrize("statuses, code", [(["ok", "not_supported"], 0), (["ok", "error"], 3)])
def test_run_writes_resolved_suite_first_and_prints_results_path_last(tmp_path, monkeypatch, statuses, code):
    monkeypatch.setattr("harness.run.rounds.run_round", FakeRounds(statuses))
    monkeypatch.setattr("harness.analyse.report.write_reports", lambda run_dir: [])
    run_dir = tmp_path / "run"
    result = invoke("run", write(tmp_path, GOOD), "--out", run_dir, "--device", "cpu")
    assert result.exit_code == code, result.output
    assert result.stdout.strip().splitlines()[-1] == str((run_dir / "results.jsonl").resolve())
    assert f"[2/2] {statuses[1]}: local_w8/fused/S32/forward" in result.stderr
    resolved = json.loads((run_dir / records.RESOLVED_FILE).read_text())
    assert resolved["device"] == "cpu" and resolved["suite"]["profiles"] == {} and len(resolved["points"]) == 2
    if code == 3:
        assert "failed: local_w8/fused/S32/forward: error: boom" in result.stderr


def test_existing_results_need_resume_and_resume_needs_the_same_points(tmp_path, monkeypatch):
    monkeypatch.setattr("harness.run.rounds.run_round", FakeRounds(["ok", "ok"]))
    monkeypatch.setattr("harness.analyse.report.write_reports", lambda run_dir: [])
    suite, run_dir = write(tmp_path, GOOD), tmp_path / "run"
    assert invoke("run", suite, "--out", run_dir, "--device", "cpu").exit_code == 0
    again = invoke("run", suite, "--out", run_dir, "--device", "cpu")
    assert again.exit_code == 2 and "already holds results; choose another --out folder" in again.output
    changed = invoke("run", suite, "--out", run_dir, "--device", "cpu", "--resume", "--set", "workload.batch_size=3")
    assert changed.exit_code == 2 and "resolves to different points" in changed.output
    assert invoke("run", suite, "--out", run_dir, "--device", "cpu", "--resume").exit_code == 0


def test_a_failing_report_is_a_warning_not_lost_results(tmp_path, monkeypatch):
    monkeypatch.setattr("harness.run.rounds.run_round", FakeRounds(["ok", "ok"]))

    def broken(run_dir):
        raise RuntimeError("template missing")

    monkeypatch.setattr("harness.analyse.report.write_reports", broken)
    result = invoke("run", write(tmp_path, GOOD), "--out", tmp_path / "run", "--device", "cpu")
    assert result.exit_code == 0
    assert "warning: the report could not be written (RuntimeError: template missing)" in result.stderr
    assert result.stdout.strip().endswith("results.jsonl")


def test_list_shows_strategies_parameters_presets_and_metric_units():
    result = invoke("list")
    assert result.exit_code == 0, result.output
    for text in ("attention strategies", "local", "window: int = 128", "padding strategies",
                 "gpt-125m", "latency_ms_p50", "mem_peak_allocated_bytes", "tokens/s"):
        assert text in result.output


def test_list_says_what_each_attention_pattern_cannot_run():
    """The attention table has a "not supported" column; the axes that state nothing have none."""
    from harness.cli.catalog import strategy_tables

    tables = {t.title: t for t in strategy_tables()}
    attention = tables["attention strategies"]
    assert [c.header for c in attention.columns] == ["name", "summary", "parameters", "not supported"]
    rules = dict(zip(attention.columns[0]._cells, attention.columns[3]._cells))
    assert rules["linformer"].startswith("causal self-attention: a decoder-only model")
    assert rules["topk"].startswith("any kernel but auto") and rules["local"] == "-"
    assert len(tables["padding strategies"].columns) == 3


def test_env_prints_the_environment_as_json():
    result = invoke("env")
    assert result.exit_code == 0, result.output
    body, fingerprint = result.stdout.rsplit("fingerprint: ", 1)
    assert "python" in json.loads(body) and fingerprint.strip()


HELP_DEFAULTS = {  # command -> texts its --help must show (typer renders help through rich)
    "run": ["run folder [default: runs/<suite>-<time>]",
            ("where the points run: auto (cuda if available, else cpu), cpu or cuda "
             "[default: the suite's device, auto]"),
            "[default: none]", "[default: off]", "[default: refuse]"],
    "compare": ["[default: 5%]", "[default: latency_ms_p50, flops_per_step", "[default: none]",
                "[default: no-force]"],
    "gate": ["[default: runs/gate-<time>, runs/ab-<time> with --ab]", "[default: auto]",
             "[default: 5%]", "[default: none]"],
    "report": ["[default: md,html]", "[default: the dense row, else the first row]"],
    "export": ["[default: RUN_DIR/export/]"],
}


@pytest.mark.parametrize("command", HELP_DEFAULTS)
def test_help_shows_every_default(command):
    result = CliRunner().invoke(cli.app, [command, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    for text in HELP_DEFAULTS[command]:
        assert text in result.output, text
    for line in result.output.splitlines():  # every option but --help names its default
        if line.startswith("│") and " --" in line and "--help" not in line:
            assert "[default: " in line or "[required]" in line, line


def test_help_names_the_default_metrics_compare_uses():
    from harness.analyse.compare import DEFAULT_METRICS

    assert cli.analyse.METRICS_DEFAULT == f" \\[default: {', '.join(DEFAULT_METRICS)}]"


NO_CUDA = "no CUDA device is visible (torch.cuda.is_available() is False); use --device cpu or auto"


@pytest.mark.parametrize("suite_device, args, where", [
    ("auto", ["--device", "cuda"], "--device cuda"),
    ("cuda", [], "s.yaml: device: cuda"),
])
def test_cuda_without_a_cuda_device_exits_2_before_anything_runs(tmp_path, monkeypatch, suite_device,
                                                                  args, where):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr("harness.run.lifecycle.sweep", lambda *a, **k: pytest.fail("a point ran"))
    suite = write(tmp_path, edit(device=suite_device))
    where = where.replace("s.yaml", str(suite))
    result = invoke("run", suite, "--out", tmp_path / "run", *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"error: {where}: {NO_CUDA}"
    assert not (tmp_path / "run").exists()
    dry = invoke("run", suite, "--dry-run", *args)  # a dry run still lists what a GPU would run
    assert dry.exit_code == 0, dry.output
    assert "t on cuda: 2 point(s)" in dry.stdout
    assert dry.stderr.strip() == f"warning: {where}: {NO_CUDA}: a real run would stop here"


def _point_ids(suite):
    from harness.suite.sweep import load_points

    return [p.id for p in load_points(suite, "cpu")[1]]


def test_dry_run_estimates_the_duration_from_previous_runs(tmp_path, monkeypatch):
    import os

    from tests.results_factory import record, write_run

    monkeypatch.chdir(tmp_path)
    suite = write(tmp_path, GOOD)
    a, b = _point_ids(suite)
    result = invoke("run", suite, "--device", "cpu", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "estimated duration: unknown (no previous run of these points under runs)" in result.stdout

    def run_with(name, durations, mtime, extra=""):
        recs = [dict(record(pid), duration_s=d) for pid, d in durations.items()]
        folder = write_run(tmp_path / "runs" / name, recs)
        with open(folder / "results.jsonl", "a") as f:
            f.write(extra)
        os.utime(folder / "results.jsonl", (mtime, mtime))

    # the newer run measured only point a (plus an interrupted b, a corrupt line and another point)
    run_with("t-new", {a: 150.0}, 2000, extra=json.dumps(dict(record(b, status="interrupted"),
                                                               duration_s=1.0)) + "\nnot json\n[1]\n"
             + json.dumps(dict(record("0123456789ab"), duration_s=999.0)) + "\n")
    result = invoke("run", suite, "--device", "cpu", "--dry-run")
    assert ("estimated duration: ~5 min 0 s (from 1 of 2 points measured in runs/t-new; "
            "1 unknown, counted at the mean)") in result.stdout, result.stdout
    run_with("t-old", {a: 10.0, b: 50.0}, 1000)  # older: its a is superseded, its b counts
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "results.jsonl").write_bytes(b"\xff\xfe{")
    result = invoke("run", suite, "--device", "cpu", "--dry-run")
    assert ("estimated duration: ~3 min 20 s (from 2 of 2 points measured in 2 runs under runs)"
            in result.stdout), result.stdout
