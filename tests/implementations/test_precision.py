"""Precision strategies: flags set and restored, a real GradScaler whose skipped steps are counted,
autocast really lowering precision, and loss parity against fp32 on the tiny model."""
from __future__ import annotations

import pytest
import torch

from implementations import registry
from implementations.precision.base import autocast_probe
from implementations.precision.parity import loss_parity

CPU = registry.Context(device="cpu")


def create(name, **params):
    return registry.create("precision", {"name": name, **params})


def test_registry_and_labels():
    assert registry.names("precision") == ["amp_bf16", "amp_fp16", "fp32", "tf32"]
    for name in registry.names("precision"):
        strategy = create(name)
        assert strategy.label == name
        assert registry.create("precision", registry.to_spec(strategy)) == strategy
    assert create("amp_fp16", init_scale=1024.0, growth_interval=100).label == "amp_fp16_s1024_g100"


@pytest.mark.parametrize("name, params, field", [
    ("amp_bf16", {"parity_rtol": 0}, "parity_rtol"),
    ("amp_fp16", {"init_scale": -1.0}, "init_scale"),
    ("amp_fp16", {"growth_interval": 0}, "growth_interval"),
])
def test_bad_parameters_name_the_field(name, params, field):
    with pytest.raises(ValueError, match=f"{field}: got"):
        create(name, **params)


def test_tf32_is_not_supported_on_cpu_and_teardown_restores_flags():
    assert create("tf32").not_supported_reasons(CPU) == ["TF32 needs an NVIDIA Ampere+ GPU (device is cpu)"]
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
              torch.get_float32_matmul_precision())
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("medium")  # also reads back as matmul.allow_tf32 = True
    found = (torch.backends.cuda.matmul.allow_tf32, False, "medium")
    try:
        tf32 = create("tf32")
        tf32.setup("cuda")
        tf32.setup("cuda")  # twice: the values found first are the ones restored
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert torch.get_float32_matmul_precision() == "high"
        tf32.teardown()
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                torch.get_float32_matmul_precision()) == found
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before[:2]
        torch.set_float32_matmul_precision(before[2])


def test_support_on_cpu():
    assert create("fp32").not_supported_reasons(CPU) == []
    assert create("amp_bf16").not_supported_reasons(CPU) == []  # bf16 autocast runs on any recent CPU torch



@pytest.mark.parametrize("capability, refused", [((9, 0), []), ((8, 0), []), ((7, 5), ["tf32", "amp_bf16"]),
                                                 (None, [])])
def test_gpu_support_is_answered_from_the_compute_capability(capability, refused):
    """No CUDA call: the context carries what NVML said; an unknown capability refuses nothing."""
    ctx = registry.Context(device="cuda", gpu_capability=capability)
    for name in ("fp32", "tf32", "amp_fp16", "amp_bf16"):
        reasons = create(name).not_supported_reasons(ctx)
        assert bool(reasons) == (name in refused), (name, reasons)
        assert all("compute capability >= 8.0; this GPU has 7.5" in r for r in reasons)


@pytest.mark.parametrize("name, dtype", [("amp_bf16", torch.bfloat16), ("amp_fp16", torch.float16)])
def test_autocast_really_lowers_matmuls(name, dtype):
    if autocast_probe("cpu", dtype):
        pytest.skip(autocast_probe("cpu", dtype))
    with create(name).autocast("cpu"):
        assert (torch.ones(2, 3) @ torch.ones(3, 2)).dtype == dtype
    with create("fp32").autocast("cpu"):
        assert (torch.ones(2, 3) @ torch.ones(3, 2)).dtype == torch.float32


def test_fp16_scaler_skips_and_counts_overflow_steps():
    fp16 = create("amp_fp16", init_scale=1024.0)
    scaler = fp16.make_scaler("cpu")
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
    assert create("amp_bf16").make_scaler("cpu") is None and create("fp32").make_scaler("cpu") is None
    w = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.SGD([w], lr=0.1)
    skipped = []
    for poison in [False, True, False, True, True]:
        loss = (w * torch.arange(4.0)).sum()
        if poison:  # an overflowing gradient, as a too-large loss scale would produce
            loss = loss * torch.tensor(float("inf"))
        before = w.detach().clone()
        skipped.append(fp16.backward_step(loss, opt, scaler))
        assert torch.equal(w.detach(), before) == poison  # a skipped step leaves the weights alone
        assert w.grad is None  # gradients cleared after every step
    assert skipped == [False, True, False, True, True] and sum(skipped) == 3
    assert scaler.get_scale() == 1024.0 / 8  # halved on each overflow (backoff 0.5)
    with pytest.raises(ValueError, match="scaler"):
        fp16.backward_step(w.sum(), opt, None)


def test_plain_backward_step_steps():
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.5)
    assert create("amp_bf16").backward_step((w * w).sum(), opt, None) is False
    torch.testing.assert_close(w.detach(), torch.zeros(3))  # 1 - 0.5 * 2


@pytest.fixture(scope="module")
def tiny_lm():
    from implementations.model import ModelConfig, build_model
    from implementations.padding.lengths import sample_lengths

    cfg = ModelConfig.from_preset("tiny", n_encoder_layers=0, ops="eager")
    lengths = sample_lengths({"distribution": "uniform", "low": 8, "high": 48}, 16, 0, 48)
    batches = registry.create("padding", "dynamic").make_batches(lengths, 4, 48, cfg.vocab_size, 0, cfg.pad_id)

    def build():
        model = build_model(cfg)
        return model, torch.optim.AdamW(model.parameters(), lr=3e-3)

    return build, batches


def test_fp32_parity_is_exact(tiny_lm):
    build, batches = tiny_lm
    out = loss_parity(build, batches, create("fp32"), steps=2, device="cpu", seed=0)
    assert out["loss_parity_rel_diff"] == 0.0 and out["loss_parity_ok"] and out["amp_skipped_steps"] == 0


def test_bf16_parity_on_cpu_within_tolerance_and_divergence_flagged(tiny_lm):
    build, batches = tiny_lm
    out = loss_parity(build, batches, create("amp_bf16"), steps=4, device="cpu", seed=0)
    assert set(out) == {"loss_final", "loss_ref_fp32", "loss_parity_rel_diff", "loss_parity_ok", "amp_skipped_steps"}
    assert 0 < out["loss_parity_rel_diff"] <= 5e-2 and out["loss_parity_ok"]  # really bf16, close to fp32
    ref = loss_parity(build, batches, create("fp32"), steps=0, device="cpu", seed=0)["loss_ref_fp32"]
    assert out["loss_ref_fp32"] < ref  # the 4 steps trained
    strict = loss_parity(build, batches, create("amp_bf16", parity_rtol=1e-9), steps=4, device="cpu", seed=0)
    assert strict["loss_parity_rel_diff"] == out["loss_parity_rel_diff"] and strict["loss_parity_ok"] is False


def test_fp16_parity_on_cpu(tiny_lm):
    if autocast_probe("cpu", torch.float16):
        pytest.skip(autocast_probe("cpu", torch.float16))
    build, batches = tiny_lm
    out = loss_parity(build, batches, create("amp_fp16"), steps=4, device="cpu", seed=0)
    assert out["loss_parity_ok"], out
    assert out["amp_skipped_steps"] == 0  # 2**16 scale on a tiny model: no overflow expected


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["tf32", "amp_fp16", "amp_bf16"])
def test_parity_on_gpu(tiny_lm, name):
    ctx = registry.Context(device="cuda")
    strategy = create(name)
    if strategy.not_supported_reasons(ctx):
        pytest.skip("; ".join(strategy.not_supported_reasons(ctx)))
    build, batches = tiny_lm
    out = loss_parity(build, batches, strategy, steps=4, device="cuda", seed=0)
    assert out["loss_parity_ok"], out


def test_fp32_forces_tf32_off_for_the_point_and_restores_what_it_found():
    """Whatever turned TF32 on in the process, an fp32 point runs at the fp32 rate its peak is
    taken for; afterwards the process has its flags back."""
    import torch

    from implementations import registry

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
              torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    try:
        fp32 = registry.create("precision", "fp32")
        fp32.setup("cpu")
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.get_float32_matmul_precision() == "highest"
        fp32.teardown()
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert torch.get_float32_matmul_precision() == "high"
        assert registry.to_spec(fp32) == {"name": "fp32", "parity_rtol": 1e-4}  # the id stays
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before[:2]
        torch.set_float32_matmul_precision(before[2])
