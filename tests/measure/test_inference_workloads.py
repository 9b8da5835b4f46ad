"""prefill, decode, generate and a compressed forward, end to end through real worker processes
(``python -m harness.measure.worker``), on the tiny model with one round: what lands in each
result file, units in the names, and the figures that must agree (measured and analytic KV
bytes, the local cache's constant size, FLOPs, TTFT and inter-token latencies)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.suite.loader import parse_suite
from harness.suite.sweep import expand
from implementations import registry
from implementations.flops import decode_step_flops, prefill_flops
from implementations.model import ModelConfig

FAST = {"warmup_iters": 1, "warmup_s": 0.0, "min_samples": 10, "min_time_s": 0.0, "max_samples": 10,
        "rounds": 1, "threads": 1}
MODEL = {"preset": "tiny", "overrides": {"n_encoder_layers": 0, "norm": "pre", "positions": "rope",
                                         "max_seq_len": 512}}
LOCAL = {"name": "local", "window": 16}


def points(workload, strategies=None, grid=None):
    data = {"name": "inference-test", "model": MODEL, "workload": workload, "measure": FAST,
            "strategies": strategies or {}, "sweep": {"grid": grid or {}}}
    return expand(parse_suite(data, "test"), "cpu")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every point's worker result, the workers run side by side (one thread each)."""
    tmp = tmp_path_factory.mktemp("workers")
    pts = (points({"kind": "decode", "batch_size": 2, "context_len": 100},
                  grid={"strategies.attention": [LOCAL], "workload.context_len": [100, 400]})
           + points({"kind": "decode", "batch_size": 2, "context_len": 400})
           + points({"kind": "prefill", "batch_size": 2, "seq_len": 64, "num_batches": 2})
           + points({"kind": "generate", "batch_size": 2, "seq_len": 8, "new_tokens": 6,
                     "num_batches": 1}, strategies={"attention": LOCAL})
           + points({"kind": "forward", "batch_size": 2, "seq_len": 32, "num_batches": 1},
                    strategies={"compression": "int8_weight_only"}))
    procs = []
    for p in pts:
        (tmp / f"{p.id}.point.json").write_text(json.dumps(p.to_json()))
        procs.append(subprocess.Popen([sys.executable, "-m", "harness.measure.worker",
                                       str(tmp / f"{p.id}.point.json"), str(tmp / f"{p.id}.json")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
    return {p.label: (p, json.loads((tmp / f"{p.id}.json").read_text())) for p in pts}


def config(strategy):
    if isinstance(strategy, dict):
        strategy = registry.create("attention", strategy)
    return ModelConfig.from_preset("tiny", **MODEL["overrides"], attention=strategy)


@pytest.mark.slow
def test_decode_points_report_latency_throughput_bandwidth_and_kv_bytes(results):
    got = {}
    for label, (point, rec) in results.items():
        if point.workload.kind != "decode":
            continue
        assert rec["status"] == "ok", rec["error"]
        m, c = rec["metrics"], point.workload.context_len
        assert m["kv_cache_bytes"] > 0  # measured (held by the filled caches) vs by hand below
        assert m["per_token_latency_ms"] == m["latency_ms_p50"] > 0
        assert m["decode_tokens_per_s"] == pytest.approx(2 / (sum(rec["samples_ms"]) / 10 / 1e3))
        assert m["flops_per_step"] == decode_step_flops(config(point.strategies.attention), 2, c)
        assert m["decode_step_read_bytes"] == m["weight_bytes"] + m["kv_read_step_bytes"]
        assert m["mem_bw_gbs"] > 0 and m["mem_bw_util"] is None and m["peak_bandwidth_gbs"] is None
        got[point.strategies.attention.name, c] = m
    # by hand, measured and analytic: dense (c + 1) positions of 2 layers x K, V x B=2 x H=4 x
    # D=16 fp32 = 2048 bytes per position; local(16): 17 positions, whatever c
    for key, slots in {("dense", 400): 401, ("local", 100): 17, ("local", 400): 17}.items():
        assert got[key]["kv_cache_bytes"] == got[key]["kv_cache_analytic_bytes"] == slots * 2048, key
    assert got["local", 400]["kv_read_step_bytes"] == 17 * 2048


@pytest.mark.slow
def test_prefill_reports_ttft_and_prefill_tokens_per_s(results):
    (point, rec), = [v for v in results.values() if v[0].workload.kind == "prefill"]
    m = rec["metrics"]
    assert rec["status"] == "ok" and m["ttft_ms_p50"] == m["latency_ms_p50"] > 0
    assert m["prefill_tokens_per_s"] == pytest.approx(m["tokens_per_s"]) and m["tokens_per_s"] > 0
    assert m["flops_per_step"] == prefill_flops(config({"name": "dense"}), 2, 64)


@pytest.mark.slow
def test_generate_reports_ttft_and_inter_token_latencies(results):
    (point, rec), = [v for v in results.values() if v[0].workload.kind == "generate"]
    m = rec["metrics"]
    assert rec["status"] == "ok"
    # structure only (timings on a shared machine are not compared): 6 new tokens per row, so
    # 5 gaps per step, every gap and the first token take time, the percentiles are ordered
    assert m["generated_tokens_per_step"] == 2 * 6 and m["itl_gaps_per_step"] == 6 - 1
    assert 0 < m["itl_ms_min"] <= m["itl_ms_p50"] <= m["itl_ms_p90"] <= m["itl_ms_p99"]
    assert 0 < m["ttft_ms_p50"] and 0 < m["latency_ms_p50"]


@pytest.mark.slow
def test_compressed_forward_records_quality_and_weight_bytes(results):
    (point, rec), = [v for v in results.values() if v[0].strategies.compression.name != "none"]
    m = rec["metrics"]
    assert rec["status"] == "ok" and "int8_weight_only" in point.label
    assert 0 < m["compression_logits_rel_diff"] < 0.02 and m["compression_loss_rel_diff"] < 1e-3
    assert m["weight_bytes"] < m["weight_uncompressed_bytes"] / 2


def test_decode_figures_plot_kv_bytes_against_the_context_only_with_two_contexts():
    from harness.analyse.report import plots_serving

    def rec(attention, c, kv):
        return {"status": "ok", "params": {"kind": "decode", "attention": attention, "context_len": c,
                                           "batch_size": 2},
                "metrics": {"kv_cache_bytes": kv, "per_token_latency_ms": 1.0 + c / 1000}}

    records = [rec("dense", c, 1000 * (c + 1)) for c in (128, 512)] + [rec("local_w16", c, 17000)
                                                                         for c in (128, 512)]
    lines = plots_serving._lines(records + [{"status": "error", "params": {"kind": "decode"}}])
    assert lines == {"dense · B=2": [(128, records[0]["metrics"]), (512, records[1]["metrics"])],
                     "local_w16 · B=2": [(128, records[2]["metrics"]), (512, records[3]["metrics"])]}
    figs = plots_serving.figures(records)
    assert [f.title for f in figs] == ["Decode: KV-cache bytes against context (measured)",
                                       "Decode: per-token latency p50 against context"]
    assert all(len(f.png_base64) > 1000 for f in figs)
    assert plots_serving.figures(records[:1] + records[2:3]) == []  # one context: nothing to plot


def test_decode_answers_name_the_leanest_kv_cache_and_compression_falls_back_to_peak_memory():
    from harness.analyse.answers import answer_lines, answers
    from tests.results_factory import record

    def rec(pid, attention, kv, rss, compression="none"):
        params = {"kind": "decode", "attention": attention, "attention.name": attention,
                  "compression": compression, "compression.name": compression, "context_len": 4096,
                  "batch_size": 1, "seq_len": 128}
        return record(pid, samples_ms=[2.0] * 10, params=params,
                      metrics={"kv_cache_bytes": kv, "mem_peak_rss_above_baseline_bytes": rss})

    patterns = [rec("a", "dense", 8 * 2**20, 50 * 2**20), rec("b", "local_w256", 2**19, 60 * 2**20)]
    (a,) = answers(patterns)
    assert a.memory_metric == "kv_cache_bytes" and a.leanest.label == "local_w256"
    assert "leanest KV cache local_w256 512.00 KiB" in answer_lines([a])[0]
    same_cache = [rec("c", "dense", 2**20, 50 * 2**20), rec("d", "dense", 2**20, 40 * 2**20, "int8")]
    (b,) = answers(same_cache)
    assert b.memory_metric == "mem_peak_rss_above_baseline_bytes" and "leanest KV" not in answer_lines([b])[0]
