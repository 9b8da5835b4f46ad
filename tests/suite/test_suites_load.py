"""Every suite shipped in suites/ loads and expands for both devices, so a broken one cannot ship."""
from pathlib import Path

import pytest

from harness.suite.sweep import load_points

SUITES = sorted((Path(__file__).resolve().parents[2] / "suites").glob("*.yaml"))


def test_the_shipped_suites_are_there():
    assert {"attention.yaml", "smoke.yaml"} <= {p.name for p in SUITES}


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
def test_suite_loads_and_expands(path, device):
    resolved, points = load_points(path, device)
    assert points and {p.device for p in points} == {device}
    assert len({p.id for p in points}) == len(points)
    assert [p.index for p in points] == list(range(len(points)))
    assert all(p.suite == resolved.name == path.stem for p in points)


@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
def test_quick_variant_is_a_subset_sized_for_a_short_gpu_run(path):
    """Every suite has a quick variant on cuda: fewer (or as many) points, short sampling."""
    _, full = load_points(path, "cuda")
    _, quick = load_points(path, "cuda", variants=["quick"])
    assert 0 < len(quick) <= min(len(full), 20)
    assert all(p.measure.max_samples <= 64 and p.measure.timeout_s <= 600 for p in quick)


def test_variant_errors_name_what_is_allowed(tmp_path):
    from harness.suite.errors import SuiteError

    attention = SUITES[0].parent / "attention.yaml"
    with pytest.raises(SuiteError, match="--variant 'quik': not a variant of .*; allowed: quick "
                                         r"\(did you mean 'quick'\?\)"):
        load_points(attention, "cuda", variants=["quik"])
    with pytest.raises(SuiteError, match="sizes it for cuda only, not cpu"):
        load_points(attention, "cpu", variants=["quick"])


def test_attention_suite_covers_every_attention_strategy_both_ops_and_kinds():
    """Every pattern on the grouped kernel and FlexAttention (plus flash_attn and GQA on CUDA);
    eager and fused ops on CPU, fused on CUDA."""
    from implementations import registry

    causal = {n for n in registry.names("attention")  # linformer has no causal form: encoder.yaml
              if registry.create("attention", n).supports_causal}
    for device, ops, kernels in (("cpu", {"eager", "fused"}, {"auto", "flex"}),
                                 ("cuda", {"fused"}, {"auto", "flex", "flash_attn"})):
        _, points = load_points(SUITES[0].parent / "attention.yaml", device)
        assert {p.strategies.attention.name for p in points} == causal
        assert {p.strategies.ops.label for p in points} == ops
        assert {p.strategies.attention.kernel for p in points} == kernels
        assert {p.model.overrides.get("n_kv_heads") for p in points} == (
            {None} if device == "cpu" else {12, 4})
        assert {p.workload.kind for p in points} == {"forward", "train"}
        assert any(getattr(p.strategies.attention, "window", None) for p in points
                   if p.strategies.attention.name == "atrous")  # atrous with a window too
        assert len({p.workload.seq_len for p in points}) >= 2


def test_smoke_suite_touches_every_registered_strategy_axis():
    from implementations import registry

    _, points = load_points(SUITES[0].parent / "smoke.yaml", "cpu")
    for axis in registry.AXES:
        if registry.names(axis):
            assert len({getattr(p.strategies, axis).label for p in points}) >= 2, axis


def test_encoder_suite_runs_every_pattern_without_a_causal_form_in_an_encoder():
    """A pattern with no causal form (linformer) is swept in encoder.yaml, whose model has an
    encoder: none of its points is refused for being causal, on either device."""
    from harness.measure.workload import unsupported_reasons
    from implementations import registry

    bidirectional = {n for n in registry.names("attention")
                     if not registry.create("attention", n).supports_causal}
    assert bidirectional == {"linformer"}
    for device in ("cpu", "cuda"):
        _, points = load_points(SUITES[0].parent / "encoder.yaml", device)
        assert bidirectional < {p.strategies.attention.name for p in points}
        assert all(p.model.resolved()["n_encoder_layers"] > 0 for p in points)
        if device == "cpu":
            assert not any(unsupported_reasons(p) for p in points)
