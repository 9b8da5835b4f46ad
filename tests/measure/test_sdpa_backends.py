"""harness.measure.sdpa_backends: the SDPA backend a step ran, from the operators it dispatched."""
import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from harness.measure.sdpa_backends import RecordKernels, record_backends
from harness.run import lifecycle
from harness.run.plan import points_plan
from implementations import registry


def test_cpu_flash_and_math_paths_are_told_apart():
    q = torch.randn(1, 2, 16, 8, requires_grad=True)
    with RecordKernels() as rec:
        F.scaled_dot_product_attention(q, q, q).sum().backward()  # fp32, no mask: CPU flash
    assert rec.counts() == {"flash_cpu": 1}  # the backward operator is not counted again
    with sdpa_kernel(SDPBackend.MATH):
        with RecordKernels() as rec:
            F.scaled_dot_product_attention(q, q, q)
    assert rec.counts() == {"math": 1}


@pytest.mark.parametrize("ops, expected", [("eager", []), ("fused", ["flash_cpu"])])
def test_attention_strategies_report_their_kernel(ops, expected):
    q = torch.randn(1, 2, 32, 8)
    for spec in ("dense", {"name": "block", "block_size": 8}):
        s = registry.create("attention", spec)
        found, out = record_backends(lambda: s.attend(q, q, q, causal=False, ops=ops))
        assert found == expected and out.shape == q.shape


@pytest.mark.slow
def test_a_points_sdpa_backend_is_the_one_that_runs(tmp_path):
    """``ops: {name: fused, sdpa_backend: ...}`` through real workers: math and flash run and
    record exactly that backend (``auto`` picks CPU flash here); efficient is CUDA-only, known
    before a worker starts; a backend SDPA cannot use for a call is ``not_supported``."""
    from harness import records
    from harness.measure.faults import classify
    from harness.suite.loader import parse_suite
    from harness.suite.sweep import expand

    backends = ["auto", "math", "flash", "efficient"]
    points = expand(parse_suite({
        "name": "sdpa", "model": {"preset": "tiny", "overrides": {"n_encoder_layers": 0}},
        "workload": {"kind": "forward", "batch_size": 2, "seq_len": 16, "num_batches": 1},
        "measure": {"warmup_iters": 1, "warmup_s": 0.0, "min_samples": 10, "min_time_s": 0.0,
                    "max_samples": 10, "rounds": 1},
        "sweep": {"grid": {"strategies.ops": [{"name": "fused", "sdpa_backend": b} for b in backends]}},
    }, "t"), "cpu")
    assert [p.strategies.ops.label for p in points] == ["fused", "fused_sdpa_math", "fused_sdpa_flash",
                                                         "fused_sdpa_efficient"]
    lifecycle.run(points_plan(points, tmp_path / "run"), reports=False)
    got = {r["params"]["ops"]: r for r in records.read_records(tmp_path / "run")}
    assert got["fused"]["metrics"]["sdpa_backends"] == ["flash_cpu"]
    assert got["fused_sdpa_math"]["metrics"]["sdpa_backends"] == ["math"]
    assert got["fused_sdpa_flash"]["metrics"]["sdpa_backends"] == ["flash_cpu"]
    refused = got["fused_sdpa_efficient"]
    assert refused["status"] == "not_supported" and "runs on CUDA only" in refused["error"]
    q = torch.randn(1, 2, 8, 4)
    for backend, kwargs in ((SDPBackend.FLASH_ATTENTION, {"dropout_p": 0.5}),  # CPU flash: no dropout
                            (SDPBackend.EFFICIENT_ATTENTION, {})):  # not in a CPU build
        with pytest.raises(RuntimeError) as refused, sdpa_kernel(backend):
            F.scaled_dot_product_attention(q, q, q, **kwargs)
        assert classify(refused.value) == "not_supported"  # torch's own refusal, each wording
    assert classify(RuntimeError("shape mismatch")) == "error"


def test_a_parameter_added_later_keeps_every_recorded_point_id():
    """``sdpa_backend`` came after the smoke baseline was recorded: at its default it is not in
    a point's spec, so the smoke suite's ids are still the baseline's (the CI gate and
    ``--resume`` match points by id); set, it is, and the id changes."""
    import json
    from pathlib import Path

    from harness.suite.sweep import load_points

    root = Path(__file__).resolve().parents[2]
    baseline = [json.loads(line)["point_id"]
                for line in (root / "reports/baseline/smoke/results.jsonl").read_text().splitlines()]
    points = load_points(root / "suites/smoke.yaml", "cpu", [])[1]
    assert [p.id for p in points] == baseline
    assert registry.to_spec(registry.create("ops", "fused")) == {"name": "fused", "compile": False}
    fused = [p for p in points if p.strategies.ops.label == "fused"][0]
    forced = fused.model_copy(update={"strategies": fused.strategies.model_copy(
        update={"ops": registry.create("ops", {"name": "fused", "sdpa_backend": "math"})})})
    assert forced.point_id() != fused.point_id() == fused.id
