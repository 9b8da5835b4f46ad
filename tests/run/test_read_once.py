"""A run reads its results once: ``results.jsonl`` and ``rounds.jsonl`` are read when a resumed
run opens its folder, never again for the reports, the answers or the end-of-run lines (they come
from the records in memory). Counted by wrapping every way the code reads a file."""
from __future__ import annotations

import builtins
import io
import pathlib
from collections import Counter

import pytest

from harness.run import lifecycle
from harness.run.plan import points_plan
from harness.suite.loader import parse_suite
from harness.suite.sweep import expand

WATCHED = ("results.jsonl", "rounds.jsonl")


def points():
    data = {"name": "once", "model": {"preset": "tiny", "overrides": {"n_encoder_layers": 0}},
            "workload": {"kind": "forward", "batch_size": 1, "seq_len": 16},
            "measure": {"rounds": 2},
            "sweep": {"grid": {"strategies.attention": ["dense", {"name": "local", "window": 4}]}}}
    return expand(parse_suite(data, "test"), "cpu")


def round_of(point, run_dir, grace_s, round_no, where=None):
    """A stand-in round: no worker, a fixed step time per pattern."""
    ms = 2.0 if point.strategies.attention.label == "dense" else 1.0
    return {"status": "ok", "samples_ms": [ms] * 10, "metrics": {}, "warnings": [],
            "contention": {"contended": False, "reasons": []}, "round": round_no,
            "started_at": "t", "duration_s": 0.01}


@pytest.fixture
def reads(monkeypatch):
    """Counter of reads per watched file name: every open() and io.open (Path.open, read_bytes and
    read_text go through io.open, so each read is counted once)."""
    seen: Counter = Counter()

    def note(path, mode="r"):
        name = pathlib.Path(str(path)).name
        if name in WATCHED and not any(c in mode for c in "wax+"):
            seen[name] += 1

    def wrap_open(real):
        def opened(file, mode="r", *args, **kwargs):
            note(file, mode)
            return real(file, mode, *args, **kwargs)
        return opened

    monkeypatch.setattr(builtins, "open", wrap_open(builtins.open))
    monkeypatch.setattr(io, "open", wrap_open(io.open))
    probe = pathlib.Path(__file__).with_name("results.jsonl")  # the counter sees a Path read
    try:
        probe.read_bytes()
    except FileNotFoundError:
        pass
    assert seen.pop("results.jsonl") == 1
    return seen


def test_a_fresh_run_with_its_reports_never_reads_its_results_back(tmp_path, reads):
    result = lifecycle.run(points_plan(points(), tmp_path / "run"), measure_round=round_of)
    assert (tmp_path / "run" / "report.md").is_file() and result.answers  # reports and answers made
    assert (tmp_path / "run" / "results.jsonl").is_file()
    assert reads == Counter()


def test_a_resumed_run_reads_each_file_once(tmp_path, reads):
    pts = points()
    out = tmp_path / "run"
    lifecycle.run(points_plan(pts[:1], out), measure_round=round_of, reports=False)
    reads.clear()
    result = lifecycle.run(points_plan(pts, out, resume=True), measure_round=round_of)
    assert {r["point_id"] for r in result.records} == {p.id for p in pts}
    assert reads == Counter({"results.jsonl": 1, "rounds.jsonl": 1})
