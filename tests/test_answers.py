"""Answers from hand-built records: who is fastest and leanest per group, by how much, and when
it is a tie."""
from __future__ import annotations

import pytest
from results_factory import timed

from harness.analyse.answers import Answer, answer_lines, answers
from harness.analyse.layout import point_flags
from harness.analyse.report import build_tables
from harness.analyse.units import fmt_bytes, fmt_ms, fmt_num
from harness.records import BadInput

MiB = 2**20


def pt(att: str, ops: str, p50, ci=None, mem=None, *, B=1, S=256, kind="forward", index=0,
       **kw) -> dict:
    """A point as the runner records it, with the CLI's label form."""
    params = {"device": "cpu", "preset": "tiny", "kind": kind, "batch_size": B, "seq_len": S,
              "attention": att, "attention.name": att.split("_")[0], "ops": ops,
              "ops.name": ops, "precision": "fp32", "precision.name": "fp32"}
    label = f"{att}/{ops}/fixed/fp32/none · {kind} B={B} S={S}"
    return timed(f"{att}-{ops}-{kind}-{B}-{S}", p50, ci, mem, params=params, index=index,
                 label=label, **kw)


def group(**over) -> list[dict]:
    """dense · eager 10 ms [9.5, 10.5], 100 MiB (the baseline); local_w128 · fused 4 ms
    [3.8, 4.2], 40 MiB; block_b64 · fused 5 ms [4.5, 5.5], 50 MiB. ``over`` replaces a point:
    ``block=dict(p50=4.1, ci=(3.9, 4.6))``."""
    spec = {"dense": ("dense", "eager", 10.0, (9.5, 10.5), 100 * MiB),
            "local": ("local_w128", "fused", 4.0, (3.8, 4.2), 40 * MiB),
            "block": ("block_b64", "fused", 5.0, (4.5, 5.5), 50 * MiB)}
    out = []
    for i, (key, (att, ops, p50, ci, mem)) in enumerate(spec.items()):
        kw = {"p50": p50, "ci": ci, "mem": mem, **over.get(key, {})}
        out.append(pt(att, ops, index=i, **kw))
    return out


def test_clear_winner_named_with_its_speed_up_and_conservative_ci():
    (a,) = answers(group())
    assert a.group == "forward pass, batch 1 × 256 tokens, tiny model, fp32 on cpu"
    assert a.baseline == "dense · eager" and a.points == 3
    assert a.memory_metric == "mem_peak_allocated_bytes"
    f = a.fastest
    assert (f.label, f.value, f.ci, f.tied) == ("local_w128 · fused", 4.0, (3.8, 4.2), ())
    assert f.ratio == pytest.approx(10 / 4)
    assert f.ratio_ci == pytest.approx((9.5 / 4.2, 10.5 / 3.8))  # [2.26, 2.76]
    lean = a.leanest
    assert (lean.label, lean.value, lean.tied) == ("local_w128 · fused", 40 * MiB, ())
    assert lean.ratio == pytest.approx(0.4)
    assert answer_lines([a]) == [(
        "forward pass, batch 1 × 256 tokens, tiny model, fp32 on cpu: fastest local_w128 · fused "
        "4 ms, ×2.50 [2.26, 2.76] vs dense · eager; leanest local_w128 · fused 40.00 MiB, "
        "×0.40 of dense · eager")]


def test_overlapping_cis_are_a_tie_and_memory_within_two_percent_too():
    (a,) = answers(group(block={"p50": 4.1, "ci": (3.9, 4.6), "mem": 40.5 * MiB}))
    assert a.fastest.label == "local_w128 · fused"
    assert [p.label for p in a.fastest.tied] == ["block_b64 · fused"]
    assert a.fastest.tied[0].ratio == pytest.approx(10 / 4.1)
    assert [p.label for p in a.leanest.tied] == ["block_b64 · fused"]  # 40.5 <= 40 * 1.02
    (line,) = answer_lines([a])
    assert line.endswith(
        "fastest: tie between local_w128 · fused 4 ms, block_b64 · fused 4.1 ms (CIs overlap); "
        "best ×2.50 [2.26, 2.76] vs dense · eager; leanest: tie between local_w128 · fused "
        "40.00 MiB, block_b64 · fused 40.50 MiB (within 2%); best ×0.40 of dense · eager")
    (a,) = answers(group(block={"p50": 4.1, "ci": (4.21, 4.6), "mem": 40.9 * MiB}))
    assert a.fastest.tied == () and a.leanest.tied == ()  # 4.21 > 4.2; 40.9 > 40.8


def test_without_cis_only_equal_latencies_tie_and_the_speed_up_has_no_ci():
    (a,) = answers(group(dense={"ci": None}, block={"p50": 4.0, "ci": None}))
    assert a.fastest.ratio == pytest.approx(2.5) and a.fastest.ratio_ci is None
    # same p50, no CI on one side: a tie (the first by label leads)
    assert [a.fastest.label] + [p.label for p in a.fastest.tied] == ["block_b64 · fused",
                                                                     "local_w128 · fused"]
    (a,) = answers(group(block={"ci": None}))
    assert a.fastest.tied == ()


def test_groups_split_by_batch_and_seq_len_in_report_order():
    recs = []
    for B in (8, 1):
        for S in (1024, 256):
            # local wins at 1024, block at 256; dense is always the slowest
            recs += [pt("dense", "eager", 10.0 * S / 256, (9.0 * S / 256, 11.0 * S / 256), B=B, S=S,
                        index=len(recs), mem=S * MiB),
                     pt("local_w128", "fused", 4.0 if S == 1024 else 6.0, (3.9, 4.1) if S == 1024
                        else (5.9, 6.1), B=B, S=S, index=len(recs) + 1, mem=S * MiB // 2),
                     pt("block_b64", "fused", 5.0, (4.9, 5.1), B=B, S=S, index=len(recs) + 2,
                        mem=S * MiB // 4)]
    found = answers(recs)
    assert [(a.params["batch_size"], a.params["seq_len"]) for a in found] == [
        (1, 256), (1, 1024), (8, 256), (8, 1024)]
    assert [a.fastest.label for a in found] == ["block_b64 · fused", "local_w128 · fused"] * 2
    assert [a.points for a in found] == [3] * 4
    assert found[1].group == "forward pass, batch 1 × 1024 tokens, tiny model, fp32 on cpu"
    assert found[1].fastest.ratio == pytest.approx(40 / 4)
    assert found[1].leanest.label == "block_b64 · fused" and found[1].leanest.ratio == 0.25


def test_failed_points_are_left_out_and_a_lone_ok_point_gives_no_answer():
    recs = group()
    recs[1] = pt("local_w128", "fused", None, index=1, status="oom")
    (a,) = answers(recs)
    assert a.points == 2 and a.fastest.label == "block_b64 · fused"
    assert a.fastest.ratio == pytest.approx(2.0)
    recs[2] = pt("block_b64", "fused", None, index=2, status="timeout")
    assert answers(recs) == []
    recs[0] = pt("dense", "eager", None, index=0, status="error")
    recs[1] = pt("local_w128", "fused", 4.0, (3.8, 4.2), 40 * MiB, index=1)
    recs[2] = pt("block_b64", "fused", 5.0, (4.5, 5.5), 50 * MiB, index=2)
    (a,) = answers(recs)  # the baseline failed: winners named, no ratio
    assert a.baseline is None and a.fastest.ratio is None and a.leanest.ratio is None
    assert answer_lines([a])[0].endswith(
        "fastest local_w128 · fused 4 ms; leanest local_w128 · fused 40.00 MiB")


@pytest.mark.parametrize("wanted", ["block_b64 · fused", "block_b64",
                                    "block_b64/fused/fixed/fp32/none"])
def test_baseline_by_row_label_row_part_or_cli_label_prefix(wanted):
    (a,) = answers(group(), baseline=wanted)
    assert a.baseline == "block_b64 · fused"
    assert a.fastest.ratio == pytest.approx(5 / 4)
    assert a.fastest.ratio_ci == pytest.approx((4.5 / 4.2, 5.5 / 3.8))
    assert "vs block_b64 · fused" in answer_lines([a])[0]
    (table,) = build_tables(group(), baseline=wanted)
    assert table.baseline == "block_b64 · fused"


def test_baseline_by_a_unique_slash_part_of_the_cli_label():
    recs = group()
    recs[2]["label"] = "block_b64/fused/bucketed/fp32/none · forward B=1 S=256"
    (a,) = answers(recs, baseline="bucketed")  # not a row part; in one label only
    assert a.baseline == "block_b64 · fused"


@pytest.mark.parametrize("wanted", ["flash", "fixed"])  # fixed: a part of every label
def test_unknown_or_ambiguous_baseline_lists_the_allowed_labels(wanted):
    with pytest.raises(BadInput) as err:
        answers(group(), baseline=wanted)
    text = str(err.value)
    assert text.startswith(f"baseline strategy {wanted!r} not found; allowed: a row label "
                           "(dense · eager, local_w128 · fused, block_b64 · fused), a point "
                           "label's strategy part (dense/eager/fixed/fp32/none, "
                           "local_w128/fused/fixed/fp32/none, block_b64/fused/fixed/fp32/none)")


def test_flags_of_winners_and_baseline_are_shown():
    recs = group(local={"flags": ["contended", "single_round"]},
                 dense={"warnings": ["noisy measurement: IQR/median = 20.6% (>= 10%)"]})
    (a,) = answers(recs)
    assert a.fastest.flags == ("contended", "single_round")
    assert a.baseline_flags == ("noisy",)
    assert a.flags == {"dense · eager": ("noisy",), "local_w128 · fused": ("contended", "single_round")}
    (line,) = answer_lines([a])
    assert ("fastest local_w128 · fused ⚠ contended ⚠ single_round 4 ms, ×2.50 [2.26, 2.76] "
            "vs dense · eager ⚠ noisy") in line


def test_point_flags_old_records_and_noisy_warnings():
    assert point_flags({}) == ()
    assert point_flags({"flags": ["noisy", "drift"], "warnings": ["noisy measurement: x"]}) == (
        "noisy", "drift")
    assert point_flags({"warnings": ["a noisy measurement"]}) == ()


def test_answer_lines_cap_the_groups():
    recs = []
    for S in range(1, 15):
        recs += [pt("dense", "eager", 2.0, S=S, index=len(recs)),
                 pt("local_w128", "fused", 1.0, S=S, index=len(recs) + 1)]
    found = answers(recs)
    assert len(found) == 14
    lines = answer_lines(found)
    assert len(lines) == 13 and lines[-1] == "… and 2 more groups, see report.md"
    assert lines[0] == ("forward pass, batch 1 × 1 tokens, tiny model, fp32 on cpu: fastest "
                        "local_w128 · fused 1 ms, ×2.00 vs dense · eager")
    assert len(answer_lines(found, limit=None)) == 14


def test_group_words_for_other_workloads_and_params():
    recs = [timed(f"p{i}", 1.0 + i, params={"kind": "generate", "new_tokens": 16, "seq_len": 32,
                                              "lengths": lengths, "padding": pad,
                                              "padding.name": pad}, index=i)
            for i, (lengths, pad) in enumerate([("uniform", "fixed"), ("uniform", "packed"),
                                                 ("lognormal", "fixed"), ("lognormal", "packed")])]
    found = answers(recs)
    assert [a.group for a in found] == ["generation of 16 tokens, 32 tokens, lengths=lognormal",
                                        "generation of 16 tokens, 32 tokens, lengths=uniform"]
    assert all(isinstance(a, Answer) and a.fastest.label == "fixed" for a in found)
    assert found[0].fastest.label == "fixed" and found[0].fastest.ratio is None  # it is the baseline
    assert answer_lines(found)[0].endswith("fastest fixed 3 ms (the baseline)")


def test_human_units():
    assert fmt_ms(0.8412) == "0.841 ms"
    assert fmt_ms(312.4) == "312 ms"
    assert fmt_ms(1523.0, 1500.0, 1610.0) == "1.52 s [1.5, 1.61]"
    assert fmt_ms(10.0, 9.9, 10.1) == "10 ms [9.9, 10.1]"
    assert fmt_ms(2_345_678.0) == "2346 s"
    assert fmt_bytes(12 * MiB) == "12.00 MiB" and fmt_bytes(3 * 2**30) == "3.00 GiB"
    assert fmt_bytes(512) == "512 B" and fmt_bytes(1536) == "1.50 KiB"
    assert fmt_num(25_600) == "25.6k" and fmt_num(1_250_000) == "1.25M" and fmt_num(12) == "12"
