"""The report's attention-kernel answers: per pattern and setting, the fastest kernel that ran,
its speed-up over dense SDPA in the same setting, and the ideal from the attention pairs."""
from results_factory import record, write_run

from harness.analyse.kernel_answers import kernel_answers
from harness.analyse.report import render_markdown
from harness.records import read_run_folder


def point(pid, name, kernel, ops, ms, pairs, S=1024, kind="forward", status="ok", **pattern):
    label = "_".join([name, *(f"{k[0]}{v}" for k, v in pattern.items())])
    params = {"seq_len": S, "kind": kind, "batch_size": 1,
              "attention": label + ("" if kernel == "auto" else f"_{kernel}"),
              "attention.name": name, "attention.kernel": kernel, "ops": ops, "ops.name": ops,
              **{f"attention.{k}": v for k, v in pattern.items()}}
    return record(pid, status=status, samples_ms=[ms] * 10 if status == "ok" else None,
                  params=params, metrics={"attention_products": pairs} if status == "ok" else None)


def test_fastest_kernel_per_pattern_against_dense_sdpa_and_the_ideal(tmp_path):
    records = [
        point("d", "dense", "auto", "fused", 100.0, 1000),
        point("d_e", "dense", "auto", "eager", 300.0, 1000),
        point("l_e", "local", "auto", "eager", 40.0, 100, window=16),
        point("l_f", "local", "auto", "fused", 25.0, 100, window=16),
        point("l_x", "local", "flex", "fused", 20.0, 100, window=16),
        point("l_t", "local", "flex", "fused", None, None, kind="train", status="not_supported",
              window=16),
        point("l_t2", "local", "auto", "fused", 60.0, 100, kind="train", window=16),
        point("d_t", "dense", "auto", "fused", 240.0, 1000, kind="train"),
        point("b", "block", "auto", "fused", 50.0, 200, S=2048, block_size=64),  # no dense at 2K
        point("b2", "block", "flex", "fused", 45.0, 200, S=2048, block_size=64),
    ]
    lines = kernel_answers(records)
    assert ("local_w16 · S=1024 · forward: fastest kernel flex · fused (20 ms, of 3); 5.00× "
            "dense SDPA (ideal 10.0×: 0.50 of it)") in lines
    assert "dense · S=1024 · forward: fastest kernel auto · fused (100 ms, of 2)" in lines
    assert not any("train" in line and "local" in line for line in lines)  # one ok train point
    assert any(line.startswith("block_b64 · S=2048") and "dense SDPA" not in line for line in lines)
    write_run(tmp_path / "run", records)
    md = render_markdown(read_run_folder(tmp_path / "run"))
    assert "## Attention kernels" in md and "fastest kernel flex · fused" in md


def test_one_kernel_everywhere_gives_no_kernel_answers():
    records = [point("d", "dense", "auto", "fused", 100.0, 1000),
               point("l", "local", "auto", "fused", 25.0, 100, window=16)]
    assert kernel_answers(records) == []


def test_the_worker_records_attention_products_scored_plus_attended():
    """Dense: 2 x S(S+1)/2 per causal layer; local: 2 x its pairs; topk scores every pair (as
    dense) and attends k per query, so its ideal speed-up stays below 2."""
    from harness.measure.point_metrics import attention_products
    from harness.suite.loader import parse_suite
    from harness.suite.sweep import expand

    S = 256

    def products(attention):
        point = expand(parse_suite({
            "name": "p", "model": {"preset": "tiny", "overrides": {"n_encoder_layers": 0}},
            "workload": {"kind": "forward", "batch_size": 1, "seq_len": S},
            "strategies": {"attention": attention}}, "t"), "cpu")[0]
        return attention_products(point)

    layers = 2  # tiny's decoder
    dense, local = products("dense"), products({"name": "local", "window": 16})
    topk = products({"name": "topk", "k": 16})
    assert dense == layers * 2 * (S * (S + 1) // 2)
    assert local == layers * 2 * sum(min(i, 16) + 1 for i in range(S))
    assert dense / topk < 2 < dense / local
