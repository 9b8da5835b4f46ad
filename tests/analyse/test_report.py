"""Markdown and HTML reports from hand-built run folders."""
from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from results_factory import attention_sweep, log_t, profile, record, write_run
from typer.testing import CliRunner

from harness.analyse.report import build_tables, render_html, render_markdown, write_reports
from harness.cli import app as tbench_app
from harness.records import BadInput, read_run_folder

ROOT = Path(__file__).parents[2]
FAILS = {("dense", 1024): ("oom", "CUDA out of memory"),
         ("local_w128", 1024): ("timeout", "timed out after 600 s"),
         ("block_b64", 256): ("not_supported", "needs seq_len % 64 == 0 <b>bold</b>"),
         ("block_b64", 512): ("error", "ValueError: bad"),
         ("block_b64", 1024): ("crashed", "worker died: signal 9")}


def named(recs: list[dict]) -> list[dict]:
    """Records as the runner writes them: a strategy axis ``X`` comes with ``X.name``."""
    for r in recs:
        r["params"]["attention.name"] = r["params"]["attention"].split("_")[0]
    return recs


def sweep_run(tmp_path, **kw) -> Path:
    recs = named(attention_sweep(("dense", "local_w128", "block_b64"), (256, 512, 1024), fail=FAILS))
    return write_run(tmp_path / "run", recs, **kw)


def table_rows(md: str) -> list[list[str]]:
    """The rows of the detail tables (after the Answers and the environment)."""
    tail = md.split("\n## Environment\n", 1)[1]
    return [[c.strip() for c in line.strip("|").split(" | ")]
            for line in tail.splitlines() if line.startswith("| ") and "---" not in line]


def answers_part(md: str) -> str:
    return md.split("\n## Answers\n", 1)[1].split("\n## ", 1)[0]


def test_markdown_table_cells_hand_computed(tmp_path):
    md = render_markdown(read_run_folder(sweep_run(tmp_path)))
    rows = table_rows(md)
    assert rows[0] == ["strategy", "seq_len 256", "seq_len 512", "seq_len 1024"]
    # dense at 256: 11 samples 10 ms x pattern; median 10; CI ranks (2, 10) of 11 -> 9.9, 10.1
    assert rows[1] == ["dense", "10 ms [9.9, 10.1]<br>25.6k tok/s<br>256.00 MiB<br>MFU 1.0%",
                       "20 ms [19.8, 20.2]<br>25.6k tok/s<br>512.00 MiB<br>MFU 1.0%", "OOM"]
    # local_w128 at 256 takes 2x the memory of dense (the time ratios are the Answers')
    assert rows[2][1] == ("20 ms [19.8, 20.2]<br>12.8k tok/s<br>512.00 MiB<br>MFU 2.0%"
                          "<br>mem ×2.00")
    assert rows[2][3] == "timeout"
    assert rows[3][1:] == ["not supported", "error", "crashed"]
    assert "- block_b64-256: not supported — needs seq_len % 64 == 0 &lt;b&gt;bold&lt;/b&gt;" in md
    assert "- points: 9 (crashed: 1, error: 1, not_supported: 1, ok: 4, oom: 1, timeout: 1)" in md
    assert "Baseline: **dense**" in md


def test_baseline_option_and_unknown_baseline(tmp_path):
    run = read_run_folder(sweep_run(tmp_path))
    rows = table_rows(render_markdown(run, baseline="local_w128"))
    assert rows[1][1].endswith("MFU 1.0%<br>mem ×0.50")  # dense vs local_w128 at 256
    assert "speed-up" not in render_markdown(run, baseline="local_w128")
    with pytest.raises(BadInput, match="baseline strategy 'flash' not found"):
        render_markdown(run, baseline="flash")


def test_one_table_per_question(tmp_path):
    recs = []
    for bs in (1, 8):
        for r in named(attention_sweep(("dense", "local_w128"), (256, 512))):
            r = dict(r, point_id=f"{r['point_id']}-b{bs}", params=dict(r["params"], batch_size=bs))
            recs.append(r)
    tables = build_tables(recs)
    assert [t.title for t in tables] == ["batch_size = 1", "batch_size = 8"]
    assert all([lbl for lbl, _ in t.rows] == ["dense", "local_w128"] for t in tables)
    assert all(t.columns == ["256", "512"] for t in tables)


def test_single_point_run_has_one_cell(tmp_path):
    run = write_run(tmp_path / "one", [record("a", samples_ms=[1.0] * 10, params={"seq_len": 8})])
    rows = table_rows(render_markdown(read_run_folder(run)))
    assert rows == [["strategy", "result"], ["demo", "1 ms [1, 1]"]]


def test_axis_metrics_appear_in_the_cell(tmp_path):
    metrics = {"padding_efficiency": 0.25, "real_tokens_per_s": 1500.0,
               "model_state_bytes_max": 3 * 2**20, "loss_parity_rel_diff": 0.2,
               "loss_parity_ok": False, "amp_skipped_steps": 2, "compile_s": 12.34}
    run = write_run(tmp_path / "one", [record("a", samples_ms=[1.0] * 10, params={"seq_len": 8},
                                              metrics=metrics)])
    cell = table_rows(render_markdown(read_run_folder(run)))[1][1].split("<br>")
    assert cell == ["1 ms [1, 1]", "25.0% real tokens", "1.5k real tok/s",
                    "model states 3.00 MiB/rank", "loss vs fp32 2.0e-01 (beyond tolerance)",
                    "2 skipped steps", "compile 12.3 s"]


def test_reports_are_byte_identical_for_same_input(tmp_path):
    run = sweep_run(tmp_path)
    first = [p.read_bytes() for p in write_reports(run)]
    second = [p.read_bytes() for p in write_reports(run)]
    assert first == second and len(first) == 2


def test_html_is_self_contained_escaped_and_embeds_data(tmp_path):
    evil = "<script>alert('x')</script><!--"
    recs = attention_sweep(("dense", "local_w128"), (256, 512),
                           fail={("dense", 512): ("oom", evil)})
    recs[0]["ranks"] = [{"rank": i, "mem_peak_bytes": 2**30, "param_bytes": 2**28,
                         "grad_bytes": 2**28, "optim_bytes": 2**29, "model_state_bytes": 2**30}
                        for i in range(2)]
    recs[0]["label"] = evil
    run = write_run(tmp_path / "run", recs, suite="x<img src=y>")
    (path,) = write_reports(run, ["html"])
    text = path.read_text()
    assert "<script>alert" not in text and "<img src=y>" not in text
    assert html.escape("x<img src=y>", quote=False) in text
    assert not re.search(r"(src|href)=\"(?!data:)", text), "only data: URIs allowed"
    assert "http://" not in text and "https://" not in text
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", text, flags=re.S)
    assert len(scripts) == 1 and "<" not in scripts[0]
    data = json.loads(scripts[0])
    assert [r["point_id"] for r in data["records"]] == [r["point_id"] for r in recs]
    assert data["records"][1]["error"] == evil
    titles = re.findall(r"<figcaption>(.*?)</figcaption>", text)
    assert titles[:3] == ["Throughput (tokens/s): attention × seq_len",
                          "Latency p50 (ms): attention × seq_len",
                          "Peak memory (log-log): attention × seq_len"]
    assert not any(t.startswith("Speed-up") for t in titles)  # the forest plots say it
    assert "Latency distributions (per-sample step times)" in titles
    assert any(t.startswith("Per-rank memory: ") for t in titles)
    # one forest plot per group of two points that ran: seq_len 256 (at 512 dense failed)
    forests = re.findall(r'<figure class="forest"><img alt="(.*?)"', text)
    assert forests == ["256 tokens, fp32"]
    assert text.count("<img ") == len(titles) + len(forests)
    results = text.split('<table class="results"', 1)[1]
    assert results.count('<tr class="baseline">') == 1


def test_padding_points_get_a_padding_plot(tmp_path):
    recs = [record(f"p{i}", index=i, samples_ms=[1.0 + i] * 10,
                   params={"padding": pad, "seq_len": 128},
                   metrics={"padding_efficiency": eff})
            for i, (pad, eff) in enumerate([("fixed", 0.5), ("dynamic", 0.8), ("packed", 0.98)])]
    (path,) = write_reports(write_run(tmp_path / "run", recs), ["html"])
    assert "<figcaption>Padding efficiency</figcaption>" in path.read_text()


def test_memory_column_prefers_gpu_then_rss_above_baseline_then_rss(tmp_path):
    def cpu_run(name, **mem):
        recs = [record(f"{name}{i}", index=i, samples_ms=[1.0] * 10,
                       params={"attention": att, "seq_len": 64},
                       metrics={k: v * (i + 1) for k, v in mem.items()})
                for i, att in enumerate(("dense", "local_w8"))]
        return render_markdown(read_run_folder(write_run(tmp_path / name, recs)))

    md = cpu_run("cpu", mem_peak_rss_bytes=300 * 2**20, mem_rss_baseline_bytes=250 * 2**20,
                 mem_peak_rss_above_baseline_bytes=50 * 2**20)
    assert "peak memory (mem_peak_rss_above_baseline_bytes)" in md
    assert table_rows(md)[2][1] == "1 ms [1, 1]<br>100.00 MiB<br>mem ×2.00"
    md = cpu_run("old", mem_peak_rss_bytes=300 * 2**20)  # a run from before the metric existed
    assert "peak memory (mem_peak_rss_bytes)" in md and "600.00 MiB" in md
    md = render_markdown(read_run_folder(sweep_run(tmp_path)))
    assert "peak memory (mem_peak_allocated_bytes)" in md


def test_nan_metrics_become_null(tmp_path):
    r = record("a", samples_ms=[1.0] * 10, params={"seq_len": 8})
    run = write_run(tmp_path / "run", [r])
    text = (run / "results.jsonl").read_text().replace('"mfu": null', "").replace(
        '"n_samples": 10', '"n_samples": 10, "mfu": NaN')
    (run / "results.jsonl").write_text(text)
    assert read_run_folder(run).records[0]["metrics"]["mfu"] is None
    write_reports(run)


def test_cli_report(tmp_path):
    app = tbench_app
    run = sweep_run(tmp_path)
    r = CliRunner().invoke(app, ["report", str(run), "--format", "md"])
    assert r.exit_code == 0 and (run / "report.md").exists() and not (run / "report.html").exists()
    r = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "not a run folder" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["report", str(run), "--format", "pdf"])
    assert r.exit_code == 2 and "unknown report format" in r.output
    r = CliRunner().invoke(app, ["report", str(run), "--baseline", "flash"])
    assert r.exit_code == 2 and "not found" in r.output


def lengths_sweep(sigmas=(0.5, 1.0, 1.5), seq_lens=(128,), attention=("dense",)) -> list[dict]:
    """Points as the runner flattens them: ``lengths`` is the distribution, ``lengths.sigma`` its
    parameter; point i of a sigma takes (i + 1) ms per step."""
    recs = []
    for att in attention:
        for i, sigma in enumerate(sigmas):
            for L in seq_lens:
                params = {"attention": att, "attention.name": att, "seq_len": L,
                          "lengths": "lognormal", "lengths.median": 32, "lengths.sigma": sigma}
                recs.append(record(f"{att}-{sigma}-{L}", index=len(recs), params=params,
                                   samples_ms=[float(i + 1)] * 10))
    return recs


def test_a_sweep_of_a_sub_parameter_gives_each_point_its_own_row(tmp_path):
    run = read_run_folder(write_run(tmp_path / "run", lengths_sweep()))
    assert table_rows(render_markdown(run)) == [
        ["lengths.sigma", "result"], ["0.5", "1 ms [1, 1]"], ["1.0", "2 ms [2, 2]"],
        ["1.5", "3 ms [3, 3]"]]
    text = render_html(run)
    body = text.split('<table class="results"')[1].split("<tbody>")[1]
    assert re.findall(r"<tr(?: class=\"baseline\")?><th>(.*?)</th>", body) == ["0.5", "1.0", "1.5"]
    assert "<thead><tr><th>lengths.sigma</th><th> result</th></tr></thead>" in text


def test_a_sub_parameter_next_to_seq_len_and_strategies():
    (table,) = build_tables(lengths_sweep(seq_lens=(128, 256)))
    assert table.title == "lengths.sigma × seq_len" and table.columns == ["128", "256"]
    assert [lbl for lbl, _ in table.rows] == ["0.5", "1.0", "1.5"]
    tables = build_tables(lengths_sweep(attention=("dense", "local")))
    assert [t.title for t in tables] == ["lengths.sigma = 0.5", "lengths.sigma = 1.0", "lengths.sigma = 1.5"]
    assert all([lbl for lbl, _ in t.rows] == ["dense", "local"] and t.row_axis == "strategy"
               for t in tables)


def test_strategy_axes_come_from_the_records():
    """``mixer`` is no axis the report knows by name: ``mixer.name`` makes it one; a param of it
    that its label does not carry (``mixer.depth``) joins the rows."""
    recs = [record(f"p{i}", index=i, samples_ms=[1.0] * 10,
                   params={"mixer": m, "mixer.name": m.split("_")[0], "mixer.depth": d, "batch_size": b})
            for i, (m, d, b) in enumerate([("conv_k3", 1, 1), ("conv_k3", 2, 1), ("ssm", 1, 1),
                                           ("conv_k3", 1, 8), ("conv_k3", 2, 8), ("ssm", 1, 8)])]
    tables = build_tables(recs)
    assert [t.title for t in tables] == ["batch_size = 1", "batch_size = 8"]
    assert all([lbl for lbl, _ in t.rows] == ["conv_k3 · 1", "conv_k3 · 2", "ssm · 1"] for t in tables)
    for r in recs:  # without X.name, mixer is an ordinary param: one row per combination
        del r["params"]["mixer.name"]
    (table,) = build_tables(recs)
    assert table.row_axis == "batch_size · mixer · mixer.depth" and len(table.rows) == 6


def test_points_no_param_tells_apart_get_a_row_each():
    recs = [record(f"p{i}", index=i, label=f"dense/S8/min_samples={n}", samples_ms=[1.0 + i] * 10,
                   params={"attention": "dense", "attention.name": "dense", "seq_len": 8})
            for i, n in enumerate((10, 20))]
    (table,) = build_tables(recs)
    assert table.row_axis == "point" and [lbl for lbl, _ in table.rows] == [
        "dense/S8/min_samples=10", "dense/S8/min_samples=20"]


def test_labels_with_dollars_and_braces_are_plotted_as_plain_text(tmp_path):
    recs = attention_sweep(("a$b{c$", "x_$^{2}$", "_hidden"), (256, 512))
    for r in recs:
        r["label"] = "$" + r["label"] + "{"
    run = write_run(tmp_path / "run", recs)
    (path,) = write_reports(run, ["html"])
    assert "Throughput (tokens/s): attention × seq_len" in path.read_text()
    r = CliRunner().invoke(tbench_app, ["report", str(run)])
    assert r.exit_code == 0, r.output


def test_html_paragraphs_are_closed(tmp_path):
    text = write_reports(sweep_run(tmp_path), ["html"])[0].read_text()
    assert "./p>" not in text and text.count("<p>") == text.count("</p>") > 0


def headings(md: str) -> list[str]:
    return [line[3:] for line in md.splitlines() if line.startswith("## ")]


ROUNDS = {"dense": (1.0, 1.01, 0.99), "local_w128": (1.0, 1.03, 0.98)}  # each round's factor


def paired_sweep() -> list[dict]:
    """``sweep_run``'s points measured in three blocks of a paired design, one group per seq_len
    with dense its baseline; round r of each point is block r."""
    recs = named(attention_sweep(("dense", "local_w128", "block_b64"), (256, 512, 1024),
                                 fail=FAILS, rounds=ROUNDS))
    for r in recs:
        L = r["params"]["seq_len"]
        r["design"] = {"group": L, "kind": "interleaved", "baseline": f"dense-{L}",
                       "pairs": "baseline", "blocks": 3, "looks": None, "stopped": "fixed",
                       "spent_s": 9.0, "resolution": 0.05, "confidence": 0.95}
        for block, x in enumerate(r.get("rounds") or [], start=1):
            x["block"] = block
    return recs


def test_answers_open_the_report_after_the_summary(tmp_path):
    recs = paired_sweep()
    recs[1]["rounds"][1]["attempts"] = 2  # dense at 512: its second round measured again
    run = read_run_folder(write_run(tmp_path / "run", recs))
    md = render_markdown(run)
    assert headings(md) == ["Answers", "Environment", "attention × seq_len"]
    part = answers_part(md)
    # seq_len 256 and 512: dense (10 / 20 ms) and local_w128 (20 / 40 ms) ran, block_b64 did
    # not; at 1024 nothing ran: no answer. local / dense per block: 2 x (1, 1.03/1.01,
    # 0.98/0.99); t (2 df) on their logs: x2.01 [1.93, 2.08]
    ratio, low, high = log_t([2.0, 2.0 * 1.03 / 1.01, 2.0 * 0.98 / 0.99])
    assert (f"{ratio:.3g}", f"{low:.3g}", f"{high:.3g}") == ("2.01", "1.93", "2.08")
    # the points' own times: geometric means of their round medians, t on their logs
    dense, dense_low, dense_high = log_t([10.0 * f for f in ROUNDS["dense"]])  # 10 [9.75, 10.3]
    local, local_low, local_high = log_t([20.0 * f for f in ROUNDS["local_w128"]])  # 20.1 [18.9, 21.3]
    assert [f"{x:.3g}" for x in (dense, dense_low, dense_high, local, local_low, local_high)] == [
        "10", "9.75", "10.3", "20.1", "18.9", "21.3"]
    assert [line for line in part.splitlines() if line.startswith(("### ", "Baseline", "| "))] == [
        "### 256 tokens, fp32",
        "Baseline: **dense**. interleaved, 3 block(s), fixed rounds.",
        "| # | strategy | verdict | time / baseline's | time | peak memory |",
        "| 1 | **dense** | baseline | ×1 | 10 ms [9.75, 10.3] | 256.00 MiB |",
        "| 2 | local_w128 | slower | ×2.01 [1.93, 2.08] | 20.1 ms [18.9, 21.3] | 512.00 MiB |",
        "| – | block_b64 | not_supported: needs seq_len % 64 == 0 &lt;b&gt;bold&lt;/b&gt; | | | |",
        "### 512 tokens, fp32",
        ("Baseline: **dense**. interleaved, 3 block(s), fixed rounds. 1 of 3 points re-measured "
         "after contention."),
        "| # | strategy | verdict | time / baseline's | time | peak memory |",
        "| 1 | **dense** | baseline | ×1 | 20 ms [19.5, 20.5] | 512.00 MiB |",
        "| 2 | local_w128 | slower | ×2.01 [1.93, 2.08] | 40.1 ms [37.7, 42.7] | 1.00 GiB |",
        "| – | block_b64 | error: ValueError: bad | | | |"]
    assert "memory: mem_peak_allocated_bytes." in part
    text = render_html(run)
    section = re.search(r'<section id="answers">(.*?)</section>', text, flags=re.DOTALL).group(1)
    assert [html.unescape(h) for h in re.findall(r"<h3>(.*?)</h3>", section)] == [
        "256 tokens, fp32", "512 tokens, fp32"]
    ranked = re.findall(r'<tr class="(\w+)"><td>(.*?)</td><th>(.*?)</th><td>(.*?)</td><td>(.*?)</td>',
                        section)
    assert ranked == [("baseline", "1", "dense", "baseline", "×1"),
                      ("slower", "2", "local_w128", "slower", "×2.01 [1.93, 2.08]")] * 2
    assert section.count('<tr class="fail">') == 2 and section.count('class="forest"') == 2
    assert text.index('<ul id="summary">') < text.index('<section id="answers">') < text.index(
        '<table class="results"')


def test_the_baseline_option_turns_the_answers_around(tmp_path):
    run = read_run_folder(write_run(tmp_path / "run", paired_sweep()))
    part = answers_part(render_markdown(run, baseline="local_w128"))
    # dense / local per block: the inverses, paired directly (interleaved blocks)
    ratio, low, high = log_t([0.5, 0.5 * 1.01 / 1.03, 0.5 * 0.99 / 0.98])  # 0.498 [0.48, 0.518]
    assert [f"{x:.3g}" for x in (ratio, low, high)] == ["0.498", "0.48", "0.518"]
    assert part.count("Baseline: **local_w128**.") == 2
    assert "| 1 | dense | faster | ×0.498 [0.48, 0.518] | 10 ms [9.75, 10.3] | 256.00 MiB |" in part
    assert "| 2 | **local_w128** | baseline | ×1 | 20.1 ms [18.9, 21.3] | 512.00 MiB |" in part


def test_an_older_run_without_blocks_is_answered_from_its_round_medians(tmp_path):
    """No design, rounds without blocks: Welch on the log round medians (the spreads differ:
    a fractional df), decided the same way."""
    run = read_run_folder(write_run(tmp_path / "run", named(attention_sweep(
        ("dense", "local_w128"), (256,), rounds=ROUNDS))))
    part = answers_part(render_markdown(run))
    (row,) = [line for line in part.splitlines() if line.startswith("| 2 ")]
    assert row.startswith("| 2 | local_w128 | slower | ×2.01 [")
    assert "Baseline: **dense**.\n" in part  # no design: no line of how it was measured


def test_flagged_points_are_counted_once_not_badged_per_cell(tmp_path):
    recs = named(attention_sweep(("dense", "local_w128"), (256, 512)))
    recs[0]["flags"] = ["contended"]
    recs[2]["warnings"] = ["noisy measurement: IQR/median = 20.6% (>= 10%)"]
    recs[3]["flags"] = ["noisy", "single_round"]
    run = read_run_folder(write_run(tmp_path / "run", recs))
    md = render_markdown(run)
    assert "- flagged: 1 contended, 2 noisy, 1 single_round" in md
    rows = table_rows(md)
    assert rows[1][1].endswith("MFU 1.0%") and rows[2][2].endswith("mem ×2.00")
    assert "⚠" not in md
    text = render_html(run)
    # the summary's badge per kind of flag, and none in a cell or an answer
    for flag in ("contended", "noisy", "single_round"):
        assert text.count(f'<span class="badge badge-{flag}">{flag}</span>') == 1
    assert text.count('class="badge') == 3


@pytest.mark.parametrize("committed", sorted(ROOT.glob("reports/*/*/results.jsonl")),
                         ids=lambda p: "/".join(p.parts[-3:-1]))
def test_committed_runs_are_answered_the_way_they_were_measured(committed):
    """A committed run measured before paired designs (no ``design``, no blocks; the headline an
    arithmetic mean) is answered from round medians measured apart, or from the headlines alone
    where it has no rounds; a run measured in pairs (the attention run) from its pairs, each
    group saying how it was measured."""
    from harness.analyse.answers import answers

    run = read_run_folder(committed.parent)
    found = answers(run.records)
    ratios = [r.ratio for a in found for r in a.rows if r.ratio is not None]
    assert found and ratios
    if any(rec.get("design") for rec in run.records):
        assert all(a.notes and a.notes[0].startswith(("duet", "interleaved")) for a in found)
        assert {r.method for r in ratios} == {"paired"}
    else:
        assert all(a.notes == () for a in found)
        assert {r.method for r in ratios} == {"independent"}
        rounds = {len((rec.get("metrics") or {}).get("latency_ms_round_p50s") or []) or 1
                  for rec in run.records if rec.get("status") == "ok"}
        assert {r.n for r in ratios} <= rounds
    assert all(r.estimate > 0 and (r.low is None or 0 < r.low <= r.estimate <= r.high)
               for r in ratios)
    md = render_markdown(run)
    assert md.count("\n### ") - md.count("\n### Top operators") == len(found)


def test_latencies_of_a_second_or_more_read_in_seconds(tmp_path):
    run = write_run(tmp_path / "one", [record("a", samples_ms=[1523.0] * 10, params={"seq_len": 8})])
    assert table_rows(render_markdown(read_run_folder(run)))[1] == ["demo", "1.52 s [1.52, 1.52]"]


def test_baseline_by_the_cli_label_prefix_and_the_error_lists_labels(tmp_path):
    recs = named(attention_sweep(("dense", "local_w128"), (256, 512)))
    for r in recs:
        r["label"] = f"{r['params']['attention']}/fused/fixed/fp32/none · forward B=1 S={r['params']['seq_len']}"
    run = read_run_folder(write_run(tmp_path / "run", recs))
    rows = table_rows(render_markdown(run, baseline="local_w128/fused/fixed/fp32/none"))
    assert rows[1][1].endswith("MFU 1.0%<br>mem ×0.50")
    with pytest.raises(BadInput, match=re.escape(
            "allowed: a row label (dense, local_w128), a point label's strategy part "
            "(dense/fused/fixed/fp32/none, local_w128/fused/fixed/fp32/none)")):
        render_markdown(run, baseline="flash")


BROKEN_TAG = re.compile(r"</?[A-Za-z][\w-]*>|\./?p>|<[A-Za-z]")


class VisibleText(HTMLParser):
    """The text a browser shows: every text node outside <head>, <script> and <style>."""

    def __init__(self):
        super().__init__()
        self.hidden, self.parts = 0, []

    def handle_starttag(self, tag, attrs):
        self.hidden += tag in ("head", "script", "style")

    def handle_endtag(self, tag):
        self.hidden -= tag in ("head", "script", "style")

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data)


def stray_tags(text: str) -> list[str]:
    parser = VisibleText()
    parser.feed(text)
    return BROKEN_TAG.findall("".join(parser.parts))


def test_no_broken_tag_shows_as_text(tmp_path):
    assert stray_tags("<p>a</p><figcaption>x</figcaption>./p>") == ["./p>"]
    assert stray_tags("<p>a &lt;b&gt; c</p>") == ["<b>"]
    assert stray_tags("<p>x < 3, 5 > 4</p><script>if (a<b) {}</script>") == []
    recs = named(attention_sweep(("dense", "local_w128"), (256, 512),
                                 fail={("dense", 512): ("oom", "CUDA out of memory")}))
    recs[0]["flags"] = ["contended"]  # data free of '<': any tag-like text is the template's
    (path,) = write_reports(write_run(tmp_path / "run", recs), ["html"])
    assert stray_tags(path.read_text()) == []


@pytest.mark.parametrize("report", sorted(ROOT.glob("reports/*/*/report.html")),
                         ids=lambda p: "/".join(p.parts[-3:-1]))
def test_committed_reports_show_no_broken_tag(report):
    assert stray_tags(report.read_text(encoding="utf-8")) == []


def _profiled_run(tmp_path) -> Path:
    recs = named(attention_sweep(("dense", "local_w128"), (256,)))  # p50: 10 ms and 20 ms
    recs[0]["metrics"].update(profile({"attention": 0.5, "ffn": 0.3, "other": 0.2},
                                      trace="workers/dense-256/trace.json.gz"))
    recs[1]["metrics"].update(profile({"attention": 0.25, "ffn": 0.5, "other": 0.25},
                                      trace="javascript:alert(1)"))
    return write_run(tmp_path / "run", recs)


def test_where_the_time_goes_hand_computed(tmp_path):
    run = read_run_folder(_profiled_run(tmp_path))
    md = render_markdown(run)
    assert "## Where the time goes" in md
    # regions: share x the timed median; profiled step 12 ms beside it; a trace linked
    assert ("| dense-256 | 10 ms | 12 ms (×1.20) | attention 5 ms (50%), ffn 3 ms (30%), "
            "other 2 ms (20%) | [trace](workers/dense-256/trace.json.gz) |") in md
    assert ("| local_w128-256 | 20 ms | 12 ms (×0.60) | ffn 10 ms (50%), attention 5 ms (25%), "
            "other 5 ms (25%) | — |") in md  # a path that is no file of the run: not linked
    assert "### Top operators: dense-256" in md and "| aten::mm | 4 | 40.0% | 12 |" in md
    page = render_html(run)
    assert page == render_html(run)  # deterministic, figures included
    assert page.count('class="trace"') == 1
    assert '<a class="trace" href="workers/dense-256/trace.json.gz">trace</a>' in page
    assert "Where the time goes: " in page and page.count('<details class="top-ops">') == 2
    assert "Where the time goes" not in render_markdown(read_run_folder(sweep_run(tmp_path / "x")))


def test_a_profile_saved_by_tbench_profile_shows_for_its_point(tmp_path):
    run = write_run(tmp_path / "run", named(attention_sweep(("dense",), (256,))))
    saved = run / "profiles" / "dense-256" / "breakdown.json"
    saved.parent.mkdir(parents=True)
    saved.write_text(json.dumps({"point_id": "dense-256", **profile(
        {"ffn": 1.0}, trace="profiles/dense-256/trace.json.gz")}))
    md = render_markdown(read_run_folder(run))
    assert ("| dense-256 | 10 ms | 12 ms (×1.20) | ffn 10 ms (100%) | "
            "[trace](profiles/dense-256/trace.json.gz) |") in md
