"""The OOM frontier: the search against a hand-made threshold, budgets and axes refused with one
line, and a real CPU frontier (kernel-enforced RLIMIT_DATA on every probe's worker) that finds
the same value as a brute-force linear scan of the same budget, every probe recorded, resumable."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from typer.testing import CliRunner

from harness import records
from harness.analyse.frontier_report import read_frontiers, render_markdown
from harness.cli import app
from harness.run import frontier as fr
from harness.run import lifecycle, rounds
from harness.run.plan import points_plan
from harness.suite.loader import parse_suite
from harness.suite.sweep import expand

FAST = {"warmup_iters": 1, "warmup_s": 0.0, "min_samples": 10, "min_time_s": 0.0, "max_samples": 10,
        "rounds": 1, "threads": 1}
SUITE = {"name": "frontier-test", "model": {"preset": "tiny", "overrides": {
             "n_encoder_layers": 0, "n_decoder_layers": 6, "max_seq_len": 512}},
         "workload": {"kind": "train", "seq_len": 512, "num_batches": 1},
         "strategies": {"ops": "eager"}, "measure": FAST}


@pytest.mark.parametrize("text, expected", [("2GiB", 2 * 2**30), ("512MiB", 512 * 2**20),
                                            ("1.5GB", 1_500_000_000), ("1000", 1000), ("40 gb", 40 * 10**9)])
def test_budgets_parse(text, expected):
    assert fr.parse_budget(text) == expected


@pytest.mark.parametrize("text", ["", "2XB", "-1GiB", "0", "GiB", "1e9", "0.1B"])
def test_bad_budgets_are_refused(text):
    with pytest.raises(fr.FrontierError, match="--memory-budget: got"):
        fr.parse_budget(text)


@pytest.mark.parametrize("threshold", [1, 2, 3, 7, 8, 9, 33, 100])
@pytest.mark.parametrize("start", [1, 5, 8, 64])
def test_search_finds_the_threshold(threshold, start):
    """Values up to ``threshold`` run, larger ones fail: every start finds it, each value probed
    at most once, and the probes stay few (grow or shrink, then bisect)."""
    probed = []

    def run(v):
        probed.append(v)
        return fr.Probe(v, "ok" if v <= threshold else "oom", "x", None, None, None)

    value, why = fr.search(run, start, cap=1000)
    assert (value, why) == (threshold, "oom")
    assert len(probed) == len(set(probed)) and len(probed) <= 2 * 10 + 2


def test_search_edges():
    ok_until = lambda t: lambda v: fr.Probe(v, "ok" if v <= t else "oom", "x", None, None, None)  # noqa: E731
    assert fr.search(ok_until(0), 4, cap=64) == (None, "nothing_fits")
    assert fr.search(ok_until(10**6), 4, cap=64) == (64, "cap")
    assert fr.search(ok_until(10), 4, cap=64, resolution=4)[0] in range(7, 11)
    timeouts = lambda v: fr.Probe(v, "ok" if v <= 5 else "timeout", "x", None, None, None)  # noqa: E731
    assert fr.search(timeouts, 2, cap=64) == (5, "timeout")
    ns = lambda v: fr.Probe(v, "not_supported", "x", None, None, None)  # noqa: E731
    assert fr.search(ns, 2, cap=64) == (None, "not_supported")


def test_crash_by_allocation_failure_or_sigkill_is_an_oom():
    assert fr.probe_status({"status": "crashed", "error": "worker killed by signal SIGKILL"}) == "oom"
    assert fr.probe_status({"status": "crashed", "stderr_tail": "std::bad_alloc"}) == "oom"
    assert fr.probe_status({"status": "crashed", "error": "killed by signal SIGSEGV"}) == "crashed"
    assert fr.probe_status({"status": "error", "error": "x"}) == "error"


def measured_budget(base, tmp_path) -> int:
    """A budget between what 2 and 3 sequences need, from this machine's own peaks: the two
    probe points run under a budget far above their need and the budget is halfway between their
    measured peaks (RSS above the worker's baseline). No calibrated constant, so another torch
    or glibc build moves the budget with its own peaks. Why halfway is safe: under any budget
    the worker pins glibc's mmap threshold (``harness.measure.budget``), so a probe's need is
    the same in every run -- measured here, 4 sequences of 512 need between 281 and 282 MiB in
    12 probes at 279-287 MiB -- a sequence adds ~48 MiB, and the peak RSS sits ~10 MiB above the
    need (code pages the limit does not count): halfway is ~34 MiB above 2's need and ~14 MiB
    below 3's. Unpinned (and unbudgeted) the same need moved by 13 MiB between runs and the
    peaks of 3 and 4 sequences could even come out in the wrong order."""
    points = [fr.probe_point(base, "workload.batch_size", v, 2**31) for v in (2, 3)]
    lifecycle.run(points_plan(points, tmp_path / "calibrate"), reports=False)
    peaks = {r["point_id"]: r["metrics"]["mem_peak_rss_above_baseline_bytes"]
             for r in records.read_records(tmp_path / "calibrate")}
    two, three = (peaks[p.id] for p in points)
    assert three > two  # one more sequence needs more memory
    return (two + three) // 2


@pytest.mark.slow
def test_cpu_frontier_equals_a_linear_scan(tmp_path):
    (base,) = expand(parse_suite(SUITE, "t"), "cpu")
    BUDGET = measured_budget(base, tmp_path)
    out = tmp_path / "frontier"
    (found,) = fr.run_frontier([base], "workload.batch_size", BUDGET, out, cap=16)
    assert found.limited_by == "oom" and found.value is not None, found
    top = found.value + 1

    def scan(v):  # the same probe point, run again in a fresh worker of a separate folder
        point = fr.probe_point(base, "workload.batch_size", v, BUDGET)
        return v, fr.probe_status(rounds.measured_round(point, tmp_path / f"scan{v}", 5.0, 1))

    with ThreadPoolExecutor(2) as pool:  # status only: two probes at once change no allocation
        statuses = dict(pool.map(scan, range(1, top + 1)))
    assert statuses[top] == "oom" and statuses[found.value] == "ok"
    assert max(v for v, s in statuses.items() if s == "ok") == found.value, statuses

    recorded = records.read_records(out)  # every probe, durable, as a point record of its own
    assert sorted(r["frontier"]["value"] for r in recorded) == sorted(p.value for p in found.probes)
    assert all(r["frontier"]["budget_bytes"] == BUDGET for r in recorded)
    oom = [r for r in recorded if r["status"] == "oom"]
    assert oom and all("can't allocate memory" in r["error"] for r in oom)
    ok = [r for r in recorded if r["status"] == "ok"]
    assert ok and all(r["metrics"]["mem_peak_rss_above_baseline_bytes"] for r in ok)
    assert all(any("mmap threshold pinned" in w for w in r["warnings"]) for r in ok)
    (line,) = read_frontiers(out)
    assert line["value"] == found.value and len(line["probes"]) == len(found.probes)
    assert f"| {found.value} | oom |" in render_markdown([line])

    again = fr.run_frontier([base], "workload.batch_size", BUDGET, out, cap=16, resume=True)
    assert again[0].value == found.value
    assert len(records.read_records(out)) == len(recorded)  # replayed: no probe ran again
    assert [f["value"] for f in read_frontiers(out)] == [found.value]  # the latest line per point
    assert json.loads((out / "run.json").read_text())["state"] == "finished"


BAD = [
    (["--axis", "workload.seq_length"], "--axis: got 'workload.seq_length', allowed: workload.batch_size"),
    (["--memory-budget", "lots"], "--memory-budget: got 'lots'"),
    (["--max", "0"], "--max: got 0, allowed: an integer >= 1"),
    (["--resolution", "0"], "--resolution: got 0"),
    (["--resume"], "--resume needs --out"),
    (["--set", "workload.batch_size=[1,2]"], "--axis workload.batch_size: the suite sweeps it"),
]


@pytest.mark.parametrize("extra, message", BAD, ids=[b[1][:24] for b in BAD])
def test_bad_cli_input_is_one_line_and_exit_2(tmp_path, extra, message):
    suite = tmp_path / "s.yaml"
    suite.write_text(json.dumps({k: v for k, v in SUITE.items()}))
    args = ["frontier", str(suite), "--axis", "workload.batch_size", "--memory-budget", "1GiB"]
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    if extra == ["--resume"]:
        args.append("--resume")
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 2, out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out.output


def test_interrupted_frontier_prints_a_resume_command_with_every_option(tmp_path, monkeypatch):
    """The hint rebuilds the same points (every --set, --variant, --device) and the same search
    (--max, --resolution): run again, it reaches run_frontier with the same point ids."""
    import shlex

    suite = tmp_path / "my suite.yaml"  # a space: the hint is shell-quoted
    suite.write_text(json.dumps({**SUITE, "variants": {"short": {"cpu": {"workload.seq_len": 64}}}}))
    calls = []

    def interrupted(points, axis, budget, run_dir, **kw):
        calls.append(([p.id for p in points], axis, budget, str(run_dir), kw["cap"], kw["resolution"],
                      kw["resume"]))
        raise KeyboardInterrupt

    monkeypatch.setattr(fr, "run_frontier", interrupted)
    args = ["frontier", str(suite), "--axis", "workload.batch_size", "--memory-budget", "300MiB",
            "--out", str(tmp_path / "out"), "--device", "cpu", "--set", "model.overrides.d_model=32",
            "--set", "strategies.ops=fused", "--variant", "short", "--max", "12", "--resolution", "2"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 130, first.output
    (hint,) = [line.split("finish with: ", 1)[1] for line in first.output.splitlines()
               if "finish with" in line]
    again = shlex.split(hint)
    assert again[:2] == ["tbench", "frontier"] and again[-1] == "--resume"
    second = CliRunner().invoke(app, again[1:])
    assert second.exit_code == 130, second.output
    (ids, *rest, resumed), (ids2, *rest2, resumed2) = calls
    assert ids2 == ids and rest2 == rest and (resumed, resumed2) == (False, True)
    assert rest[-2:] == [12, 2]


def test_the_frontier_report_writes_its_table_and_chart(tmp_path):
    """What ``tbench frontier`` writes last: frontier.md and frontier.png from frontier.jsonl
    (this chart's import was broken once, and only the command's last step reached it)."""
    from harness.analyse.frontier_report import write_frontier_report

    probes = [fr.Probe(v, "ok" if v <= 4 else "oom", "x", v * 2**20, v * 2**20, 100.0 * v) for v in (2, 4, 8)]
    found = fr.Frontier("b" * 12, "dense/eager/S512/train", "workload.batch_size", 2**30, 4, "oom", 3,
                        {"attention": "dense"}, probes)
    records.append_record(tmp_path / fr.FRONTIER_FILE, fr.frontier_json(found))
    md, png = write_frontier_report(tmp_path)
    assert "| dense/eager/S512/train | 4 | oom |" in md.read_text()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
