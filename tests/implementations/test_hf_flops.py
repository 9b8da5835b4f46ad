"""FLOPs and parameters of transformers models: the meta-pass count (``implementations.hf.counting``)
against ``torch.utils.flop_counter`` on the model's own SDPA, against the textbook count, and
against tbench's analytic count of the same architecture.

The causal convention: FlopCounterMode charges SDPA the full S x S scores; tbench (both methods)
charges the S(S+1)/2 pairs a causal query may attend. Aligned, the two agree exactly.
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from implementations import registry
from implementations.flops import forward_flops, train_step_flops
from implementations.hf.config import resolve
from implementations.hf.model import HfModelConfig
from implementations.hf.structure import model_class
from implementations.model import ModelConfig

GPT2_SMALL = dict(model_type="gpt2", n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)
S = 1024


def source(spec) -> HfModelConfig:
    return HfModelConfig.from_spec(resolve(spec, None))


def test_gpt2_small_at_1024_equals_flop_counter_and_the_textbook():
    cfg = source(GPT2_SMALL)
    ours = forward_flops(cfg, 1, S)
    config, auto = model_class(GPT2_SMALL)
    with torch.device("meta"):
        model = auto.from_config(config, attn_implementation="sdpa")
    counter = FlopCounterMode(display=False)
    causal = torch.ones(1, 1, S, S, dtype=torch.bool, device="meta")  # 4D: no data-dependent checks
    with torch.no_grad(), counter:
        model(input_ids=torch.zeros(1, S, dtype=torch.long, device="meta"), attention_mask=causal)
    L, H, D, C, V = 12, 12, 64, 768, 50257
    full_scores = 4 * L * H * D * S * S  # q k^T and p v over every pair, as FlopCounterMode counts
    allowed = 4 * L * H * D * S * (S + 1) // 2  # tbench: the pairs a causal query attends
    aligned = counter.get_total_flops() - full_scores + allowed
    assert abs(ours / aligned - 1) < 0.01 and ours == aligned
    N = sum(p.numel() for n, p in model.named_parameters() if ".wte." not in n and ".wpe." not in n)
    textbook = 2 * N * S + 2 * C * V * S + allowed  # Kaplan's 2N per token, the LM head, attention
    assert abs(ours / textbook - 1) < 0.01
    assert train_step_flops(cfg, 1, S) == 3 * ours
    assert cfg.flops_method == "flop_counter"


def test_counted_equals_tbench_analytic_for_the_same_architecture():
    """GPT-2 small against the gpt-125m preset (GPT-2's architecture) at 1,024 positions, and two
    layers of Llama 3.2 1B (SwiGLU, GQA) against llama-1b's: the two methods agree exactly."""
    tbench = ModelConfig.from_preset("gpt-125m", max_seq_len=1024)
    assert forward_flops(tbench, 2, 256) == forward_flops(source(GPT2_SMALL), 2, 256)
    llama = dict(model_type="llama", num_hidden_layers=2, hidden_size=2048, num_attention_heads=32,
                 num_key_value_heads=8, intermediate_size=8192, vocab_size=128256)
    ours = ModelConfig.from_preset("llama-1b", n_decoder_layers=2)
    assert forward_flops(ours, 1, 128) == forward_flops(source(llama), 1, 128)
    local = registry.create("attention", {"name": "local", "window": 16})
    assert forward_flops(ours.with_strategies(local, "fused"), 1, 128) == \
        forward_flops(source(llama).with_strategies(local, "fused"), 1, 128)


def test_sparse_patterns_are_charged_their_allowed_pairs_and_decode_its_keys():
    cfg = source(dict(GPT2_SMALL, n_layer=2))
    local = registry.create("attention", {"name": "local", "window": 32})
    dense_parts, local_parts = cfg.flops_breakdown(1, 512), cfg.with_strategies(local, "fused").flops_breakdown(1, 512)
    per_pair = 4 * 64 * 12 * 2  # q k^T and p v, D x H, two layers
    assert dense_parts["decoder.self_attn.scores"] == per_pair * 512 * 513 // 2
    assert local_parts["decoder.self_attn.scores"] == per_pair * local.allowed_pairs(512, True)
    assert {k: v for k, v in dense_parts.items() if k.endswith("proj") or k.endswith("ffn")} == \
        {k: v for k, v in local_parts.items() if k.endswith("proj") or k.endswith("ffn")}
    tbench = ModelConfig.from_preset("gpt-125m", max_seq_len=1024, n_decoder_layers=2)
    assert cfg.decode_step_flops(2, 100) == tbench.decode_step_flops(2, 100)
    assert cfg.with_strategies(local, "fused").decode_step_flops(2, 100) == \
        tbench.with_strategies(local, "fused").decode_step_flops(2, 100)


def test_parameters_are_the_modules_own():
    assert source(GPT2_SMALL).param_count() == 124_439_808  # GPT-2 small, tied embeddings
    llama = dict(model_type="llama", num_hidden_layers=16, hidden_size=2048, num_attention_heads=32,
                 num_key_value_heads=8, intermediate_size=8192, vocab_size=128256,
                 tie_word_embeddings=True)
    assert source(llama).param_count() == 1_235_814_400  # Llama 3.2 1B
    assert ModelConfig.from_preset("llama-1b").param_count() == 1_235_814_400
