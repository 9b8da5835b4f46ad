"""Correctness contracts of tbench's attention inside real ``transformers`` models, generated
from the attention registry (a new pattern gets them for free).

On small random configs of GPT-2 (MHA, learned positions), Llama (GQA 4:2, RoPE, SwiGLU) and
BART (encoder-decoder, cross-attention), in float64:

* ``dense`` registered into the model equals the model's own ``sdpa`` and ``eager``: logits
  and every parameter's gradient, with right padding;
* every positional pattern equals the model's own ``sdpa`` run with the pattern's explicit
  mask (``dense_mask`` & causal & key padding, handed over as a 4D mask): logits and gradients;
  on the decoder-only models also with packed rows (segments and restarting positions);
* cached decoding with the model's own cache equals recomputing the whole sequence each step;
* what the source cannot run is said up front (T5's position bias, linformer's own weights).

topk picks its keys by score (no mask to hand over: its contract is ``test_attention_registry``'s)
and linformer projects K and V with weights a foreign model has no place for.
"""
from __future__ import annotations

import pytest
import torch

from implementations import registry
from implementations.hf.config import resolve
from implementations.hf.model import HfModelConfig
from implementations.hf.serving import HfServing
from tests.implementations.test_attention_registry import BY_SCORE, PROJECTED, SMALL

MODELS = {
    "gpt2": dict(model_type="gpt2", n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=64,
                 attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0),
    "llama": dict(model_type="llama", num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=64, vocab_size=64,
                  max_position_embeddings=64),
    "bart": dict(model_type="bart", encoder_layers=2, decoder_layers=2, d_model=32,
                 encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                 decoder_ffn_dim=64, vocab_size=64, max_position_embeddings=64, dropout=0.0,
                 attention_dropout=0.0, activation_dropout=0.0),
}
PATTERNS = [registry.create("attention", {"name": n, **SMALL.get(n, [{}])[0]})
            for n in registry.names("attention") if n not in BY_SCORE | PROJECTED]
S, B = 12, 2


@pytest.fixture(scope="module")
def sources():
    return {name: HfModelConfig.from_spec(resolve(spec, None)) for name, spec in MODELS.items()}


def build(cfg, pattern, ops="eager"):
    torch.manual_seed(0)
    return cfg.with_strategies(pattern, ops).build().double().eval()


def inputs():
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 64, (B, S), generator=gen)
    mask = torch.ones(B, S, dtype=torch.bool)
    mask[1, S - 2:] = False  # right padding: no query of any pattern is left without a key
    return ids, mask


def explicit(pattern, mask, causal: bool):
    """The pattern's rule, causal or not, and key padding: (B, 1, S, S) bool, True = attend."""
    return pattern.dense_mask(S, S, causal)[None, None] & mask[:, None, None, :]


def ours(model, cfg, ids, mask, segments=None, positions=None):
    if cfg.is_encoder_decoder:
        return model(ids, ids, src_key_padding_mask=mask, tgt_key_padding_mask=mask)
    return model(ids, key_padding_mask=mask, segment_ids=segments, position_ids=positions)


def theirs(model, cfg, ids, mask, pattern=None, impl="sdpa", positions=None, allowed=None):
    """The model's own attention implementation ``impl``: the 2D mask for dense, else the
    pattern's explicit 4D mask (``allowed`` overrides the decoder-only one: packed rows)."""
    hf = model.hf
    hf.config._attn_implementation = impl  # own_impl_after puts tbench's back
    if not cfg.is_encoder_decoder:
        given = mask if pattern is None else (explicit(pattern, mask, True) if allowed is None
                                              else allowed)
        return hf(input_ids=ids, attention_mask=given, position_ids=positions, use_cache=False).logits
    enc_mask = mask if pattern is None else explicit(pattern, mask, False)
    dec_mask = mask if pattern is None else explicit(pattern, mask, True)
    memory = hf.get_encoder()(input_ids=ids, attention_mask=enc_mask)
    return hf(encoder_outputs=memory, attention_mask=mask, decoder_input_ids=ids,
              decoder_attention_mask=dec_mask, use_cache=False).logits


def logits_and_grads(model, run, mask):
    """Logits at real positions and every parameter's gradient of a fixed weighting of them."""
    model.zero_grad(set_to_none=True)
    logits = run()
    weight = torch.linspace(-1, 1, logits.shape[-1], dtype=logits.dtype)
    (logits[mask] * weight).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits[mask].detach(), grads


def assert_same(a, b, loose: bool = False):
    """Equal in float64; ``loose``: against transformers' eager attention, whose softmax runs in
    float32 whatever the model's dtype (differences ~1e-8)."""
    (la, ga), (lb, gb) = a, b
    rtol, atol = (1e-5, 1e-6) if loose else (1e-9, 1e-10)
    torch.testing.assert_close(la, lb, rtol=rtol, atol=atol)
    assert ga.keys() == gb.keys() and ga
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], rtol=10 * rtol, atol=atol, msg=name)


def own_impl_after(model, run):
    name = model.hf.config._attn_implementation
    try:
        return run()
    finally:
        model.hf.config._attn_implementation = name


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("which", sorted(MODELS))
def test_dense_equals_the_models_own_attention(sources, which, impl):
    cfg = sources[which]
    dense = registry.create("attention", "dense")
    for ops in ("eager", "fused"):
        model = build(cfg, dense, ops)
        ids, mask = inputs()
        got = logits_and_grads(model, lambda: ours(model, cfg, ids, mask), mask)
        want = own_impl_after(model, lambda: logits_and_grads(
            model, lambda: theirs(model, cfg, ids, mask, impl=impl), mask))
        assert_same(got, want, loose=impl == "eager")


@pytest.mark.parametrize("pattern", PATTERNS, ids=[p.label for p in PATTERNS])
@pytest.mark.parametrize("which", sorted(MODELS))
def test_pattern_equals_the_model_with_its_explicit_mask(sources, which, pattern):
    cfg = sources[which]
    model = build(cfg, pattern, "fused")
    ids, mask = inputs()
    got = logits_and_grads(model, lambda: ours(model, cfg, ids, mask), mask)
    want = own_impl_after(model, lambda: logits_and_grads(
        model, lambda: theirs(model, cfg, ids, mask, pattern), mask))
    assert_same(got, want)


@pytest.mark.parametrize("name", ["dense", "local"])
@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_packed_rows_equal_the_model_with_a_block_diagonal_mask(sources, which, name):
    """Two sequences (7 and 5 tokens) in a row: tbench_segment_ids and positions restarting at 0
    against the model's sdpa with the causal, same-segment mask; the row's padding masked too."""
    cfg, pattern = sources[which], registry.create("attention", {"name": name, **SMALL[name][0]})
    model = build(cfg, pattern)
    ids, mask = inputs()
    segments = torch.tensor([[1] * 7 + [2] * 5, [1] * 6 + [2] * 4 + [0] * 2])
    positions = torch.tensor([list(range(7)) + list(range(5)), list(range(6)) + list(range(4)) + [0, 0]])
    same = segments[:, :, None] == segments[:, None, :]
    allowed = explicit(pattern, mask, True) & same[:, None]
    got = logits_and_grads(model, lambda: ours(model, cfg, ids, mask, segments, positions), mask)
    want = own_impl_after(model, lambda: logits_and_grads(
        model, lambda: theirs(model, cfg, ids, mask, pattern, positions=positions, allowed=allowed),
        mask))
    assert_same(got, want)


@pytest.mark.parametrize("name", ["dense", "local", "bigbird"])
@pytest.mark.parametrize("which", sorted(MODELS))
def test_cached_decoding_equals_recomputation(sources, which, name):
    cfg = sources[which]
    pattern = registry.create("attention", {"name": name, **SMALL[name][0]})
    model = build(cfg, pattern)
    ids, _ = inputs()
    prompt, new = ids[:, :5], 6
    with torch.no_grad():
        cached = HfServing(model).generate(prompt, new)
        seq = prompt if not cfg.is_encoder_decoder else torch.full((B, 1), cfg.bos_id)
        out = []
        for _ in range(cached.shape[1]):  # no cache: the whole sequence again, each step
            logits = (model(prompt, seq) if cfg.is_encoder_decoder else model(seq))[:, -1]
            token = logits.argmax(-1)
            out.append(token)
            seq = torch.cat([seq, token[:, None]], dim=1)
    finished = torch.zeros(B, dtype=torch.bool)
    for t, token in enumerate(out):  # greedy's own rule: a row that emitted eos is padded after
        want = token.masked_fill(finished, cfg.pad_id)
        assert torch.equal(cached[:, t], want), (t, cached, out)
        finished |= want == cfg.eos_id


def test_decode_step_is_the_same_step_each_call(sources):
    cfg = sources["llama"]
    model = build(cfg, registry.create("attention", {"name": "local", "window": 3}))
    ids, _ = inputs()
    with torch.no_grad():
        filled = HfServing(model).decode(ids[:, :8], 8)
        first, second = filled.step(), filled.step()
        full = model(torch.cat([ids[:, :8], model(ids[:, :8])[:, -1].argmax(-1)[:, None]], 1))[:, -1]
    torch.testing.assert_close(first, second)
    torch.testing.assert_close(first, full)
    assert filled.report["kv_cache_slots"] == 9
    assert filled.report["kv_cache_bytes"] == filled.report["kv_cache_analytic_bytes"]


def test_what_a_source_cannot_run_is_said_up_front():
    from harness.suite.loader import parse_suite
    from harness.suite.sweep import expand
    from harness.measure.workload import unsupported_reasons

    t5 = dict(model_type="t5", num_layers=1, d_model=32, num_heads=4, d_kv=8, d_ff=64, vocab_size=64)
    data = {"name": "t", "model": {"hf": t5}, "workload": {"seq_len": 8, "batch_size": 1},
            "sweep": {"grid": {"strategies.attention": ["dense"]}}}
    (point,) = expand(parse_suite(data, "t"), "cpu")
    assert any("position bias" in r for r in unsupported_reasons(point))
    data["model"] = {"hf": MODELS["bart"]}
    data["sweep"]["grid"]["strategies.attention"] = [{"name": "linformer", "k": 4}]
    (point,) = expand(parse_suite(data, "t"), "cpu")
    assert any("owns projection weights" in r for r in unsupported_reasons(point))


@pytest.mark.slow
def test_compiled_model_equals_eager(sources):
    """torch.compile of a transformers model with tbench's local pattern inside: logits and
    gradients equal the eager model's (fp32)."""
    cfg = sources["llama"]
    pattern = registry.create("attention", {"name": "local", "window": 3})
    ids, mask = inputs()
    torch.manual_seed(0)
    model = cfg.with_strategies(pattern, "fused").build().eval()
    want = logits_and_grads(model, lambda: ours(model, cfg, ids, mask), mask)
    compiled = torch.compile(model)
    got = logits_and_grads(model, lambda: ours(compiled, cfg, ids, mask), mask)
    torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-5)
    for name in want[1]:
        torch.testing.assert_close(got[1][name], want[1][name], rtol=1e-3, atol=1e-5, msg=name)
