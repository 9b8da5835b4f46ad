"""pytest-benchmark suite: attention strategies and one model training step.

    pytest benchmarks/pytest_bench --benchmark-enable --benchmark-only
    pytest benchmarks/pytest_bench --benchmark-enable --benchmark-only --benchmark-autosave
    pytest-benchmark compare 0001 0002            # two saved runs side by side

(``--benchmark-enable`` because the project's pytest addopts disable benchmarks for the
unit tests.)
For users who live in pytest; the tbench harness (``tbench run``) is the fuller tool (worker
isolation, memory, FLOPs, reports). Not collected by the default ``pytest`` run (testpaths =
tests). Sizes are small so it runs on a CPU; on a GPU set TBENCH_BENCH_DEVICE=cuda (CUDA work
is synchronised inside the timed call).
"""
from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")

from implementations import registry  # noqa: E402
from implementations.model import ModelConfig, build_model  # noqa: E402
from implementations.presets import PRESETS  # noqa: E402

DEVICE = os.environ.get("TBENCH_BENCH_DEVICE", "cpu")
ATTENTION = [{"name": "dense"}, {"name": "local", "window": 64}, {"name": "block", "block_size": 64}]
SEQ_LENS = [256, 512]
B, H, D = 2, 4, 32


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("seq_len", SEQ_LENS)
@pytest.mark.parametrize("spec", ATTENTION, ids=lambda s: "-".join(f"{v}" for v in s.values()))
def test_attention_forward(benchmark, spec, seq_len):
    strategy = registry.create("attention", dict(spec))
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, seq_len, D, generator=g).to(DEVICE) for _ in range(3))  # (B, H, S, D)
    benchmark.group = f"attention forward S={seq_len}"
    benchmark.extra_info.update(strategy=strategy.label, seq_len=seq_len)

    def run():
        with torch.no_grad():
            out = strategy.attend(q, k, v, causal=True)
        _sync()
        return out

    out = benchmark(run)
    assert out.shape == (B, H, seq_len, D)


@pytest.mark.parametrize("spec", ATTENTION[:2], ids=lambda s: "-".join(f"{v}" for v in s.values()))
def test_train_step(benchmark, spec):
    torch.manual_seed(0)
    cfg = ModelConfig(**dict(PRESETS["tiny"], n_encoder_layers=0),
                      attention=registry.create("attention", dict(spec)))
    model = build_model(cfg).to(DEVICE)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.randint(3, cfg.vocab_size, (4, 128), device=DEVICE)
    benchmark.group = "train step (tiny decoder-only, B=4, S=128)"

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(tokens[:, :-1])
        loss = model.loss(logits, tokens[:, 1:])
        loss.backward()
        opt.step()
        _sync()
        return loss.item()

    loss = benchmark.pedantic(step, rounds=10, warmup_rounds=2)
    assert loss == loss  # not NaN
