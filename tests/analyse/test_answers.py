"""Answers from hand-built records: per group, the strategies ranked by their time against the
baseline, each ratio with its interval and its verdict against the resolution -- paired by
block where the run measured blocks, Welch on the round medians for a run without blocks, the
headline alone (undecided) for records with neither."""
from __future__ import annotations

import math

import pytest
from results_factory import log_t, record, t_quantile, timed

from harness.analyse.answers import GroupAnswer, answer_lines, answers
from harness.analyse.layout import point_flags
from harness.analyse.report import build_tables
from harness.analyse.units import fmt_bytes, fmt_ms, fmt_num
from harness.records import BadInput

MiB = 2**20
ALPHA = 0.05


def params(att: str, ops: str, *, B=1, S=256, kind="forward") -> dict:
    return {"device": "cpu", "preset": "tiny", "kind": kind, "batch_size": B, "seq_len": S,
            "attention": att, "attention.name": att.split("_")[0], "ops": ops,
            "ops.name": ops, "precision": "fp32", "precision.name": "fp32"}


def label(att: str, ops: str, *, B=1, S=256, kind="forward") -> str:
    """The CLI's label form."""
    return f"{att}/{ops}/fixed/fp32/none · {kind} B={B} S={S}"


def pid(att: str, ops: str) -> str:
    return f"{att}-{ops}"


def pt(att: str, ops: str, p50, ci=None, mem=None, *, B=1, S=256, kind="forward", index=0,
       **kw) -> dict:
    """A point whose latency is given outright (no rounds: a record of an older run)."""
    return timed(f"{att}-{ops}-{kind}-{B}-{S}", p50, ci, mem, params=params(att, ops, B=B, S=S, kind=kind),
                 index=index, label=label(att, ops, B=B, S=S, kind=kind), **kw)


def measured(att: str, ops: str, medians, mem=None, *, index=0, design=None, blocks=True,
             status="ok") -> dict:
    """A point measured in rounds, one sample each (a round's median is that sample); with
    ``design``, round i is block i + 1 of a paired design."""
    ok = status == "ok"
    return record(pid(att, ops), params=params(att, ops), label=label(att, ops), index=index,
                  status=status, rounds_ms=[[m] for m in medians] if ok else None,
                  blocks=list(range(1, len(medians) + 1)) if ok and blocks else None,
                  metrics={"mem_peak_allocated_bytes": mem} if ok else None, design=design,
                  error=None if ok else "Traceback ...\nCUDA out of memory")


def design(**over) -> dict:
    """What a paired run records of a group: interleaved, 3 fixed blocks, dense the baseline."""
    return {"group": 0, "kind": "interleaved", "baseline": pid("dense", "eager"),
            "pairs": "baseline", "blocks": 3, "looks": None, "stopped": "fixed", "spent_s": 3.0,
            "resolution": 0.05, "confidence": 0.95, **over}


BASE = [10.0, 11.0, 12.0]  # the baseline drifts 20% over the three blocks
RATIOS = {  # per block: the candidate's median / the baseline's of the same block
    ("local_w128", "fused"): [0.4, 0.404, 0.396],     # 2.5x faster, pairs within 1%
    ("block_b64", "fused"): [1.02, 1.03, 1.01],       # 2% slower: inside the 5% band
    ("atrous_k2", "fused"): [1.0, 1.1, 1.2],          # too spread to decide
    ("linformer_k64", "fused"): [1.5, 1.52, 1.48],    # 1.5x slower
}
MEM = {("local_w128", "fused"): 40 * MiB, ("block_b64", "fused"): 50 * MiB,
       ("atrous_k2", "fused"): 60 * MiB, ("linformer_k64", "fused"): 30 * MiB}


def paired_group(**over) -> list[dict]:
    d = design(**over)
    recs = [measured("dense", "eager", BASE, 100 * MiB, design=d)]
    for i, (key, ratios) in enumerate(RATIOS.items(), start=1):
        recs.append(measured(*key, [b * r for b, r in zip(BASE, ratios)], MEM[key], index=i,
                             design=d))
    recs.append(measured("flex_local", "fused", [], index=5, design=d, status="oom"))
    return recs


def test_paired_blocks_rank_the_strategies_and_decide_against_the_resolution():
    (a,) = answers(paired_group())
    assert isinstance(a, GroupAnswer)
    assert a.group == "forward pass, batch 1 × 256 tokens, tiny model, fp32 on cpu"
    assert a.baseline == "dense · eager" and a.memory_metric == "mem_peak_allocated_bytes"
    assert a.notes == ("interleaved, 3 block(s), fixed rounds",) and a.resolution == 0.05
    rows = {r.label: r for r in a.rows}
    # ranked by ratio (the baseline at 1), the point that did not run last
    assert [r.label for r in a.rows] == ["local_w128 · fused", "dense · eager", "block_b64 · fused",
                                         "atrous_k2 · fused", "linformer_k64 · fused",
                                         "flex_local · fused"]
    # the pair ratios are those of RATIOS whatever the baseline's drift: t (2 df) on their logs,
    # the band [1/1.05, 1.05]
    for (att, ops), ratios in RATIOS.items():
        r = rows[f"{att} · {ops}"].ratio
        est, low, high = log_t(ratios)
        assert (r.estimate, r.low, r.high) == pytest.approx((est, low, high), rel=1e-9)
        assert (r.n, r.look, r.method, r.confidence) == (3, None, "paired", 0.95)
        half = math.log(high / est)
        assert r.resolvable == pytest.approx(1.05 * math.exp(half) - 1, rel=1e-9)
    verdicts = {lbl: r.ratio.verdict for lbl, r in rows.items() if r.ratio}
    assert verdicts == {"local_w128 · fused": "faster",     # [0.390, 0.410] < 1/1.05
                        "block_b64 · fused": "equal",       # [0.995, 1.045] inside the band
                        "atrous_k2 · fused": "undecided",   # [0.875, 1.376] crosses 1.05
                        "linformer_k64 · fused": "slower"}  # [1.451, 1.550] > 1.05
    # the atrous interval: could decide differences of (1.05 e^h - 1) = 32% or more
    assert rows["atrous_k2 · fused"].ratio.verdict_text() == "undecided (resolves differences ≥ 32%)"
    assert rows["block_b64 · fused"].ratio.verdict_text() == "equal within 5%"
    base = rows["dense · eager"]
    assert base.ratio is None and base.status == "ok" and base.memory == 100 * MiB
    # the point's own time: the geometric mean of 10, 11, 12 = 10.9696, its t interval
    geo, low, high = log_t(BASE)
    assert geo == pytest.approx(10.969613104865)
    assert base.p50 == pytest.approx(geo) and base.ci == pytest.approx((low, high))
    failed = rows["flex_local · fused"]
    assert (failed.status, failed.ratio, failed.p50, failed.error) == (
        "oom", None, None, "CUDA out of memory")  # the error's last line
    assert a.fastest.label == "local_w128 · fused"
    assert a.leanest.label == "linformer_k64 · fused"  # 30 MiB; the failed point has none
    assert [r.label for r in a.decided] == ["local_w128 · fused", "block_b64 · fused",
                                            "linformer_k64 · fused"]


def test_answer_lines_hand_computed():
    (a,) = answers(paired_group())
    # local: ×0.4 [0.390, 0.410]; its time 4 x 10.97 ms = 4.388 ms [3.54, 5.44]
    assert answer_lines([a]) == [
        ("forward pass, batch 1 × 256 tokens, tiny model, fp32 on cpu: baseline dense · eager — "
         "interleaved, 3 block(s), fixed rounds"),
        ("  1. local_w128 · fused: faster, ×0.4 [0.39, 0.41] the baseline's time; "
         "4.39 ms [3.54, 5.44], 40.00 MiB"),
        "  2. dense · eager (the baseline): 11 ms [8.75, 13.8], 100.00 MiB",
        ("  3. block_b64 · fused: equal within 5%, ×1.02 [0.995, 1.05] the baseline's time; "
         "11.2 ms [9.02, 13.9], 50.00 MiB"),
        ("  4. atrous_k2 · fused: undecided (resolves differences ≥ 32%), ×1.1 [0.875, 1.38] the "
         "baseline's time; 12 ms [7.65, 18.9], 60.00 MiB"),
        ("  5. linformer_k64 · fused: slower, ×1.5 [1.45, 1.55] the baseline's time; "
         "16.5 ms [13.3, 20.4], 30.00 MiB"),
        "  –. flex_local · fused: oom (CUDA out of memory)"]


def test_a_sequential_look_spends_alpha_over_j_times_j_plus_one():
    """Stopped at look 2 of ``measure.rounds: auto``: the interval is at 1 - 0.05 / (2 x 3)."""
    (a,) = answers(paired_group(stopped="decided", looks=2))
    r = next(row.ratio for row in a.rows if row.label == "block_b64 · fused")
    est, low, high = log_t(RATIOS[("block_b64", "fused")], p=1 - ALPHA / 12)
    assert (r.look, r.confidence) == (2, pytest.approx(1 - ALPHA / 6))
    assert (r.estimate, r.low, r.high) == pytest.approx((est, low, high), rel=1e-9)
    assert r.verdict == "undecided"  # t(1 - 1/240, 2) = 10.89: [0.959, 1.085] crosses 1.05
    assert a.notes == ("interleaved, 3 block(s), every comparison decided",)


def test_without_blocks_the_same_medians_are_compared_independently():
    """An older run (no design): Welch on the log round medians. The baseline's 20% drift is
    now noise against which a 2% difference cannot be decided, nor equality."""
    recs = [dict(r) for r in paired_group()]
    for r in recs:
        del r["design"]
        for x in r.get("rounds") or []:
            x["block"] = None
    (a,) = answers(recs)
    rows = {r.label: r.ratio for r in a.rows if r.ratio}
    assert {r.method for r in rows.values()} == {"independent"} and a.notes == ()
    assert {lbl: r.verdict for lbl, r in rows.items()} == {
        "local_w128 · fused": "faster", "block_b64 · fused": "undecided",
        "atrous_k2 · fused": "undecided", "linformer_k64 · fused": "slower"}
    # the estimate is the ratio of the geometric means, as paired (same rounds, same logs)
    for (att, ops), ratios in RATIOS.items():
        assert rows[f"{att} · {ops}"].estimate == pytest.approx(log_t(ratios)[0], rel=1e-9)


def test_welch_on_two_rounds_a_side_hand_computed():
    """Two rounds a side with the same log spread d = log 1.05: Welch's df = 2 (n - 1) = 2,
    se = sqrt(2 (d^2 / 2) / 2) = d / sqrt 2."""
    recs = [measured("dense", "eager", [10.0, 10.5], 100 * MiB, blocks=False),
            measured("local_w128", "fused", [4.0, 4.2], 40 * MiB, index=1, blocks=False),
            measured("block_b64", "fused", [10.2, 10.71], 50 * MiB, index=2, blocks=False)]
    (a,) = answers(recs)
    rows = {r.label: r.ratio for r in a.rows if r.ratio}
    half = t_quantile(0.975, 2) * math.log(1.05) / math.sqrt(2)  # 0.1484
    local, block = rows["local_w128 · fused"], rows["block_b64 · fused"]
    assert (local.estimate, local.low, local.high) == pytest.approx(
        (0.4, 0.4 * math.exp(-half), 0.4 * math.exp(half)), rel=1e-9)  # [0.345, 0.464]
    assert (local.verdict, local.n, local.method) == ("faster", 2, "independent")
    assert (block.estimate, block.low, block.high) == pytest.approx(
        (1.02, 1.02 * math.exp(-half), 1.02 * math.exp(half)), rel=1e-9)  # [0.879, 1.183]
    assert block.verdict == "undecided"
    assert block.resolvable == pytest.approx(1.05 * math.exp(half) - 1, rel=1e-9)  # 21.8%


def test_headline_only_records_give_the_ratio_and_no_verdict():
    """One value a side (records without rounds): the ratio of the p50s, no interval."""
    recs = [pt("dense", "eager", 10.0, (9.5, 10.5), 100 * MiB),
            pt("local_w128", "fused", 4.0, (3.8, 4.2), 40 * MiB, index=1),
            pt("block_b64", "fused", 5.0, (4.5, 5.5), 50 * MiB, index=2)]
    (a,) = answers(recs)
    assert [r.label for r in a.rows] == ["local_w128 · fused", "block_b64 · fused", "dense · eager"]
    local = a.rows[0]
    assert local.ratio.estimate == pytest.approx(0.4) and local.ratio.low is None
    assert (local.ratio.verdict, local.ratio.n, local.ratio.resolvable) == ("undecided", 1, None)
    assert (local.p50, local.ci, local.memory) == (4.0, (3.8, 4.2), 40 * MiB)
    assert a.fastest is None and a.decided == []  # nothing decided faster
    assert a.leanest.label == "local_w128 · fused"
    assert answer_lines([a])[1] == ("  1. local_w128 · fused: undecided (1 round(s) a side: too few "
                                    "for an interval), ×0.4 the baseline's time; 4 ms [3.8, 4.2], "
                                    "40.00 MiB")


def test_disturbed_pairs_are_left_out_while_two_clean_remain_and_the_notes_say_so():
    d = design(blocks=4)
    recs = [measured("dense", "eager", [10.0, 11.0, 12.0, 12.0], design=d),
            measured("local_w128", "fused", [4.0, 11.0, 4.8, 4.8], index=1, design=d)]
    block2 = recs[1]["rounds"][1]
    block2.update(contention={"contended": True, "reasons": ["other processes used 1.00 CPU cores"]},
                  attempts=3)  # re-measured three times, still disturbed: its pair is left out
    recs[1]["metrics"]["latency_ms_rounds_excluded"] = 1
    (a,) = answers(recs)
    r = a.rows[0].ratio
    # pairs of blocks 1, 3, 4: 0.4 each (block 2's 1.0 is out)
    assert (r.n, r.verdict) == (3, "faster") and r.estimate == pytest.approx(0.4)
    assert a.notes == ("interleaved, 4 block(s), fixed rounds",
                       ("1 of 2 points re-measured after contention, 1 disturbed round(s) kept "
                        "out of the headline"))


def test_too_few_pairs_for_an_interval():
    d = design(blocks=1)
    (a,) = answers([measured("dense", "eager", [10.0], design=d),
                    measured("local_w128", "fused", [4.0], index=1, design=d)])
    r = a.rows[0].ratio
    assert (r.estimate, r.low, r.n, r.verdict) == (pytest.approx(0.4), None, 1, "undecided")
    assert r.verdict_text() == "undecided (1 pair(s): too few for an interval)"


@pytest.mark.parametrize("wanted", ["block_b64 · fused", "block_b64",
                                    "block_b64/fused/fixed/fp32/none"])
def test_baseline_by_row_label_row_part_or_cli_label_prefix(wanted):
    (a,) = answers(paired_group(), baseline=wanted)
    assert a.baseline == "block_b64 · fused"
    local = next(r.ratio for r in a.rows if r.label == "local_w128 · fused")
    # interleaved blocks pair any two points directly: local / block per block
    ratios = [x / y for x, y in zip(RATIOS[("local_w128", "fused")], RATIOS[("block_b64", "fused")])]
    assert (local.estimate, local.low, local.high) == pytest.approx(log_t(ratios), rel=1e-9)
    assert local.verdict == "faster"
    assert answer_lines([a])[0].startswith(
        "forward pass, batch 1 × 256 tokens, tiny model, fp32 on cpu: baseline block_b64 · fused")
    (table,) = build_tables(paired_group(), baseline=wanted)
    assert table.baseline == "block_b64 · fused"


def test_baseline_by_a_unique_slash_part_of_the_cli_label():
    recs = paired_group()
    recs[2]["label"] = "block_b64/fused/bucketed/fp32/none · forward B=1 S=256"
    (a,) = answers(recs, baseline="bucketed")  # not a row part; in one label only
    assert a.baseline == "block_b64 · fused"


@pytest.mark.parametrize("wanted", ["flash", "fixed"])  # fixed: a part of every label
def test_unknown_or_ambiguous_baseline_lists_the_allowed_labels(wanted):
    recs = [pt("dense", "eager", 10.0), pt("local_w128", "fused", 4.0, index=1),
            pt("block_b64", "fused", 5.0, index=2)]
    with pytest.raises(BadInput) as err:
        answers(recs, baseline=wanted)
    text = str(err.value)
    assert text.startswith(f"baseline strategy {wanted!r} not found; allowed: a row label "
                           "(dense · eager, local_w128 · fused, block_b64 · fused), a point "
                           "label's strategy part (dense/eager/fixed/fp32/none, "
                           "local_w128/fused/fixed/fp32/none, block_b64/fused/fixed/fp32/none)")


def duet_rounds(entries) -> list[dict]:
    """Rounds of a duet design: (block, partner, median over the common window)."""
    return [{"round": i + 1, "status": "ok", "block": b, "latency_ms_p50": m, "samples_ms": [m],
             "duet": {"partner": partner, "common_p50_ms": m}, "contention": None}
            for i, (b, partner, m) in enumerate(entries)]


def test_a_duet_compares_two_candidates_through_the_baseline_beside_them():
    """Each candidate ran beside dense (the design's baseline), never beside each other: with
    ``--baseline block_b64``, log(local/block) = log(local/dense) - log(block/dense) per block."""
    d = design(kind="duet")
    dense, local, block = pid("dense", "eager"), pid("local_w128", "fused"), pid("block_b64", "fused")
    recs = [measured("dense", "eager", BASE * 2, design=d),
            measured("local_w128", "fused", BASE, index=1, design=d),
            measured("block_b64", "fused", BASE, index=2, design=d)]
    # dense's common-window median differs beside each partner (the duet's own machine state)
    recs[0]["rounds"] = duet_rounds([(1, local, 10.0), (1, block, 10.5), (2, local, 11.0),
                                     (2, block, 11.5), (3, local, 12.0), (3, block, 12.5)])
    recs[1]["rounds"] = duet_rounds([(1, dense, 4.0), (2, dense, 4.4 * 1.01), (3, dense, 4.8 * 0.99)])
    recs[2]["rounds"] = duet_rounds([(1, dense, 10.5 * 1.02), (2, dense, 11.5 * 1.03),
                                     (3, dense, 12.5 * 1.01)])
    (a,) = answers(recs)  # against dense: its own duets
    rows = {r.label: r.ratio for r in a.rows if r.ratio}
    assert rows["local_w128 · fused"].estimate == pytest.approx(log_t(RATIOS[("local_w128", "fused")])[0])
    assert rows["block_b64 · fused"].estimate == pytest.approx(log_t(RATIOS[("block_b64", "fused")])[0])
    (a,) = answers(recs, baseline="block_b64")
    rows = {r.label: r.ratio for r in a.rows if r.ratio}
    through = [x / y for x, y in zip(RATIOS[("local_w128", "fused")], RATIOS[("block_b64", "fused")])]
    local_r = rows["local_w128 · fused"]
    assert (local_r.estimate, local_r.low, local_r.high) == pytest.approx(log_t(through), rel=1e-9)
    # dense against block: dense's rounds beside block, inverted
    back = [1 / r for r in RATIOS[("block_b64", "fused")]]
    assert rows["dense · eager"].estimate == pytest.approx(log_t(back)[0], rel=1e-9)


def test_groups_split_by_batch_and_seq_len():
    recs = []
    for B in (8, 1):
        for S in (1024, 256):
            recs += [pt("dense", "eager", 10.0 * S / 256, B=B, S=S, index=len(recs), mem=S * MiB),
                     pt("local_w128", "fused", 4.0 if S == 1024 else 6.0, B=B, S=S,
                        index=len(recs) + 1, mem=S * MiB // 2),
                     pt("block_b64", "fused", 5.0, B=B, S=S, index=len(recs) + 2, mem=S * MiB // 4)]
    found = answers(recs)
    assert sorted((a.params["batch_size"], a.params["seq_len"]) for a in found) == [
        (1, 256), (1, 1024), (8, 256), (8, 1024)]
    assert all(len(a.rows) == 3 and a.baseline == "dense · eager" for a in found)
    by_shape = {(a.params["batch_size"], a.params["seq_len"]): a for a in found}
    one_k = by_shape[(1, 1024)]
    assert one_k.group == "forward pass, batch 1 × 1024 tokens, tiny model, fp32 on cpu"
    # local 4 ms vs dense 40 ms first, then block 5 / 40; at 256 block (5 / 10) leads local (6 / 10)
    assert [(r.label, r.ratio and r.ratio.estimate) for r in one_k.rows] == [
        ("local_w128 · fused", pytest.approx(0.1)), ("block_b64 · fused", pytest.approx(0.125)),
        ("dense · eager", None)]
    assert by_shape[(8, 256)].rows[0].label == "block_b64 · fused"
    assert one_k.leanest.label == "block_b64 · fused" and one_k.leanest.memory == 256 * MiB


def test_failed_points_rank_last_and_a_group_needs_two_points_one_ok():
    recs = [pt("dense", "eager", 10.0, index=0), pt("local_w128", "fused", None, index=1, status="oom"),
            pt("block_b64", "fused", 5.0, index=2)]
    (a,) = answers(recs)
    assert [(r.label, r.status) for r in a.rows] == [("block_b64 · fused", "ok"),
                                                     ("dense · eager", "ok"),
                                                     ("local_w128 · fused", "oom")]
    assert answer_lines([a])[-1] == "  –. local_w128 · fused: oom (oom here)"
    every = [pt(att, ops, None, index=i, status="timeout")
             for i, (att, ops) in enumerate([("dense", "eager"), ("local_w128", "fused")])]
    assert answers(every) == []  # nothing ran
    assert answers([pt("dense", "eager", 10.0)]) == []  # nothing to compare with
    (a,) = answers(recs[:2])  # one point ran, one did not: an answer that says so
    assert [(r.label, r.status, r.ratio) for r in a.rows] == [("dense · eager", "ok", None),
                                                              ("local_w128 · fused", "oom", None)]


def test_flags_are_kept_per_row():
    recs = [pt("dense", "eager", 10.0, warnings=["noisy measurement: IQR/median = 20.6% (>= 10%)"]),
            pt("local_w128", "fused", 4.0, index=1, flags=["contended", "single_round"])]
    (a,) = answers(recs)
    assert {r.label: r.flags for r in a.rows} == {"dense · eager": ("noisy",),
                                                  "local_w128 · fused": ("contended", "single_round")}


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
    # 12 groups of a header and two rows, then one line for the rest
    assert len(lines) == 12 * 3 + 1 and lines[-1] == "… and 2 more groups, see report.md"
    assert lines[:3] == [("forward pass, batch 1 × 1 tokens, tiny model, fp32 on cpu: baseline "
                          "dense · eager"),
                         ("  1. local_w128 · fused: undecided (1 round(s) a side: too few "
                          "for an interval), ×0.5 the baseline's time; 1 ms"),
                         "  2. dense · eager (the baseline): 2 ms"]
    assert len(answer_lines(found, limit=None)) == 14 * 3


def test_group_words_for_other_workloads_and_params():
    recs = [timed(f"p{i}", 1.0 + i, params={"kind": "generate", "new_tokens": 16, "seq_len": 32,
                                              "lengths": lengths, "padding": pad,
                                              "padding.name": pad}, index=i)
            for i, (lengths, pad) in enumerate([("uniform", "fixed"), ("uniform", "packed"),
                                                 ("lognormal", "fixed"), ("lognormal", "packed")])]
    found = answers(recs)
    assert sorted(a.group for a in found) == ["generation of 16 tokens, 32 tokens, lengths=lognormal",
                                              "generation of 16 tokens, 32 tokens, lengths=uniform"]
    assert all(a.baseline == "fixed" and [r.label for r in a.rows] == ["fixed", "packed"]
               for a in found)
    lognormal = next(a for a in found if "lognormal" in a.group)
    assert lognormal.rows[1].ratio.estimate == pytest.approx(4 / 3)  # 4 ms vs 3 ms


def test_decoding_across_patterns_is_answered_by_the_kv_cache():
    recs = [timed(f"p{i}", 2.0, params={"kind": "generate", "attention": att, "attention.name": att},
                  index=i) for i, att in enumerate(("dense", "local"))]
    recs[0]["metrics"]["kv_cache_bytes"] = 8 * MiB
    recs[1]["metrics"]["kv_cache_bytes"] = 2 * MiB
    (a,) = answers(recs)
    assert a.memory_metric == "kv_cache_bytes" and a.leanest.label == "local"
    assert answer_lines([a])[0] == "generation: baseline dense; leanest KV cache local 2.00 MiB"


def test_human_units():
    assert fmt_ms(0.8412) == "0.841 ms"
    assert fmt_ms(312.4) == "312 ms"
    assert fmt_ms(1523.0, 1500.0, 1610.0) == "1.52 s [1.5, 1.61]"
    assert fmt_ms(10.0, 9.9, 10.1) == "10 ms [9.9, 10.1]"
    assert fmt_ms(2_345_678.0) == "2346 s"
    assert fmt_bytes(12 * MiB) == "12.00 MiB" and fmt_bytes(3 * 2**30) == "3.00 GiB"
    assert fmt_bytes(512) == "512 B" and fmt_bytes(1536) == "1.50 KiB"
    assert fmt_num(25_600) == "25.6k" and fmt_num(1_250_000) == "1.25M" and fmt_num(12) == "12"


def test_through_the_baseline_only_blocks_both_sides_kept_pair():
    """local's block 2 and block's block 3 were disturbed: log(local/block) takes blocks 1 and 4
    only, each matched by its block (never the n-th kept pair of one with the n-th of the other)."""
    d = design(kind="duet", blocks=4)
    dense, local, block = pid("dense", "eager"), pid("local_w128", "fused"), pid("block_b64", "fused")
    recs = [measured("dense", "eager", [10.0] * 4, design=d),
            measured("local_w128", "fused", [5.0] * 4, index=1, design=d),
            measured("block_b64", "fused", [8.0] * 4, index=2, design=d)]
    recs[0]["rounds"] = duet_rounds([(b, p, 10.0) for b in (1, 2, 3, 4) for p in (local, block)])
    recs[1]["rounds"] = duet_rounds([(1, dense, 5.0), (2, dense, 50.0), (3, dense, 5.5), (4, dense, 6.0)])
    recs[2]["rounds"] = duet_rounds([(1, dense, 8.0), (2, dense, 8.0), (3, dense, 80.0), (4, dense, 9.0)])
    recs[1]["rounds"][1]["contention"] = {"contended": True}
    recs[2]["rounds"][2]["contention"] = {"contended": True}
    (a,) = answers(recs, baseline="block_b64")
    (ratio,) = [r.ratio for r in a.rows if r.label == "local_w128 · fused"]
    assert ratio.n == 2  # blocks 1 and 4
    assert ratio.estimate == pytest.approx(math.sqrt((5.0 / 8.0) * (6.0 / 9.0)))
