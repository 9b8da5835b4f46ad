"""A point's predicted peak memory, before it runs: analytic, per rank, never imports torch.

Input: a resolved ``Point`` (its model shape, workload, and the strategies of every axis).
Output: ``predict(point) -> Prediction`` (bytes by part and ``peak_bytes``) and
``predicted_metrics(point)`` -> ``{"mem_predicted_bytes", "mem_predicted_states_bytes",
"mem_predicted_activations_bytes"}`` for the record. The worker records them beside the measured
peak (``mem_peak_allocated_bytes`` on GPU, ``mem_peak_rss_above_baseline_bytes`` on CPU: the same
quantity ``harness.records.memory_metric`` reports); ``tbench frontier`` starts its search
from the largest value predicted to fit. ``TOLERANCE`` is how far apart prediction and
measurement may be before a report calls it a finding (``disagreement``).

What is counted (B sequences of S tokens per rank, C = d_model, F = d_ff, H heads, V vocab, L
layers per stack, e = 4 bytes fp32 or 2 under autocast for activations):
  * model states: parameters 4P, gradients 4P, AdamW m and v 8P (fp32), partitioned over the
    ranks as the parallel strategy says (ZeRO stage 0-3: DeepSpeed keeps an fp32 master too;
    FSDP: all three sharded, plus the gathered parameters of the layers being computed);
  * saved activations per layer and token: ``ACT_C`` x C + ``ACT_F`` x F elements (inputs of the
    linears, q k v, the attention output, the norms' inputs), more for the eager path; cross-
    attention adds its own; per (sequence, head) the attention probabilities the eager path
    keeps -- S^2 for dense, the groups' ``G x Lq x Lk`` for sparse patterns (O(S w) for local),
    none for fused kernels (flash-style: O(S) statistics);
  * checkpointing (``strategies.memory``): a checkpointed layer keeps only its input (C per
    token), a checkpointed sub-layer drops its share; one layer's activations are live again
    while it is recomputed;
  * the LM head: logits, their log-softmax and gradient, 3 x T x V x 4 bytes in training;
  * the peak is the larger of "forward done" (parameters, optimizer states, all saved
    activations, the head, the transient of the largest attention) and "step done" (every
    model state at once, and the tied embedding's second gradient before the two are summed);
  * on CPU, ``RUNTIME_CPU_BYTES``: what the first training step of any model adds to a fresh
    worker's resident set (libtorch code paged in, thread stacks, allocator arenas), measured
    on the smallest point (tiny, B=1, S=8); rechecked under both launchers: measured /
    predicted for tests/measure/test_memory_model.py's points was 1.08-1.18 forked from the fork
    server (the default) and 1.09-1.16 in fresh workers (``warm=False``), so one constant
    serves both. A forward pass without autograd adds far less: ``RUNTIME_CPU_INFERENCE_BYTES``
    (tiny forward at S = 8: 32.1 MiB measured for 0.7 MiB of model; fused and eager at S = 256:
    measured / predicted 1.05 and 0.98; the train constant had predicted 3x the measured peak).
    GPU peaks come from the allocator, which holds none of that.
Not counted: fragmentation of the allocator, gradient-bucket and communication buffers, padding
variation between batches (the point's nominal ``batch_size x seq_len`` is used).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from harness.records.metrics import MEM_MODEL_TOLERANCE
from implementations import flops

# elements per token and layer that a training forward keeps for the backward, by ops path
ATTN_C = {"fused": 8, "eager": 11}  # self-attention sub-layer, x C (input, q k v, output, norm)
FFN_C = {"fused": 2, "eager": 5}  # FFN sub-layer, x C (fc1 input, norm input)
FFN_F = {"fused": 1, "eager": 2}  # FFN sub-layer, x F (the hidden; ReLU in place when fused)
# GELU keeps its input and output (2 F), SwiGLU gate, up, silu(gate) and their product (4 F)
FFN_F_BY_ACTIVATION = {"gelu": 2, "swiglu": 4}
CROSS_C = 7  # cross-attention sub-layer, x C (q side), + 2 x C of the memory's k, v
# eager attention: probabilities kept per layer (softmax output, plus what the allocator holds of
# the scores freed around it: 1.5 measured on CPU), and at once in the backward (grad of the
# probabilities and of the scores beside the probabilities)
SCORES_SAVED = 1.5
SCORES_TRANSIENT = 3
RUNTIME_CPU_BYTES = {"fused": 116 * 2**20, "eager": 132 * 2**20}  # a training step
RUNTIME_CPU_INFERENCE_BYTES = {"fused": 32 * 2**20, "eager": 34 * 2**20}  # no autograd
TOLERANCE = MEM_MODEL_TOLERANCE  # |measured / predicted - 1| beyond this is a finding (see the tests)


@dataclass(frozen=True)
class Prediction:
    params_bytes: int
    grads_bytes: int
    optim_bytes: int
    activations_bytes: int
    head_bytes: int
    transient_bytes: int
    runtime_bytes: int
    peak_bytes: int

    def as_dict(self) -> dict:
        return asdict(self)


def kv_width(m: dict) -> int:
    """Width of the K and V projections: ``n_kv_heads`` heads (GQA), ``n_heads`` when unset."""
    return m["d_model"] // m["n_heads"] * (m.get("n_kv_heads") or m["n_heads"])


def param_count(m: dict, attention=None) -> int:
    """Parameters of tbench's Transformer with fields ``m`` (``implementations.flops.param_count``:
    the LM head tied to the embedding, the pattern's own projections counted)."""
    return flops.param_count(m, attention)


def score_elements(attention, S: int, causal: bool, ops: str) -> int:
    """Attention probabilities one (sequence, head) materialises in one layer: 0 for fused
    kernels, S^2 for eager dense, the groups' scores for eager sparse patterns."""
    if ops == "fused":
        return 0
    return attention.in_self_attention(causal).score_elements(S, causal)


def state_bytes(parallel, P: int, mixed: bool) -> tuple[int, int, int]:
    """(params, grads, optimizer) bytes one rank holds, by parallel strategy."""
    name, n = parallel.name, max(1, int(getattr(parallel, "nproc", 1) or 1))
    if name == "zero":
        p, g = (2, 2) if mixed else (4, 4)
        k = 12 if (mixed or parallel.stage >= 1) else 8  # DeepSpeed: fp32 master (+ m, v)
        stage = parallel.stage
        return (int(P * p / (n if stage >= 3 else 1)), int(P * g / (n if stage >= 2 else 1)),
                int(P * k / (n if stage >= 1 else 1)))
    if name == "fsdp":
        return int(4 * P / n), int(4 * P / n), int(8 * P / n)
    return 4 * P, 4 * P, 8 * P


def _layer_parts(memory, i: int, n: int) -> frozenset:
    return memory.parts(i, n) if memory is not None else frozenset()


def activation_bytes(point, m: dict) -> tuple[int, int]:
    """(saved activations of every layer at the end of the forward, the largest transient)."""
    s, w = point.strategies, point.workload
    ops, e = s.ops.model_ops, (2 if s.precision.label in ("amp_fp16", "amp_bf16") else 4)
    B, S, C, F, H = w.batch_size, w.seq_len, m["d_model"], m["d_ff"], m["n_heads"]
    T = B * S
    memory = s.memory
    total, transient = 0, 0
    stacks = [("encoder", m["n_encoder_layers"], False), ("decoder", m["n_decoder_layers"], True)]
    largest_layer = 0
    for stack, L, causal in stacks:
        cross = stack == "decoder" and m["n_encoder_layers"] > 0
        scores = B * H * score_elements(s.attention, S, causal, ops)
        attn = T * ATTN_C[ops] * C + int(SCORES_SAVED * scores)
        if s.attention.in_self_attention(causal).projection_products(S):
            attn += 2 * T * kv_width(m)  # linformer: K and V saved re-laid out for the backward
        if cross:
            cross_scores = B * H * S * S if ops == "eager" else 0  # cross-attention is dense
            attn += T * (CROSS_C + 2) * C + int(SCORES_SAVED * cross_scores)
            scores = max(scores, cross_scores)
        hidden = FFN_F_BY_ACTIVATION.get(m.get("ffn"), FFN_F[ops])
        ffn = T * (FFN_C[ops] * C + hidden * F)
        layer = attn + ffn
        largest_layer = max(largest_layer, layer)
        transient = max(transient, SCORES_TRANSIENT * scores)
        for i in range(L):
            parts = _layer_parts(memory, i, L)
            if "block" in parts:
                total += T * C  # its input only
            else:
                total += (T * C if "attention" in parts else attn) + (T * C if "ffn" in parts else ffn)
    if memory is not None and memory.recomputes:
        transient += largest_layer  # one layer recomputed during the backward
    return total * e, transient * e


def predict(point) -> Prediction:
    """The predicted peak bytes of one rank of ``point`` (see the module docstring)."""
    m = point.model.resolved()
    s, w = point.strategies, point.workload
    P = point.model.source.param_count(s.attention)  # the module's own count for a foreign model
    train = w.kind == "train"
    mixed = s.precision.label in ("amp_fp16", "amp_bf16")
    params, grads, optim = state_bytes(s.parallel, P, mixed and s.parallel.zero_sharded)
    if not train:
        grads = optim = 0
    T = w.batch_size * (w.seq_len + (w.new_tokens if w.kind == "generate" else 0))
    V = m["vocab_size"]
    if train:
        acts, transient = activation_bytes(point, m)
        head = 3 * T * V * 4
    else:  # no_grad: one layer's working set and the logits
        acts, transient = 0, 0
        head = T * V * 4
        transient = SCORES_TRANSIENT * w.batch_size * m["n_heads"] * score_elements(
            s.attention, w.seq_len, True, s.ops.model_ops) * 4
    runtimes = RUNTIME_CPU_BYTES if train else RUNTIME_CPU_INFERENCE_BYTES
    runtime = runtimes[s.ops.model_ops] if point.device == "cpu" else 0
    forward_done = params + optim + acts + head + transient
    # the tied embedding's gradient comes twice (the head's and the lookup's) before they are summed
    step_done = params + grads + optim + (m["vocab_size"] * m["d_model"] * 4 if train else 0)
    peak = max(forward_done, step_done) + runtime
    return Prediction(params, grads, optim, acts, head, transient, runtime, int(peak))


def predicted_metrics(point) -> dict:
    """The record's prediction columns (bytes); a source whose shape the model cannot read (an
    ``nn.Module`` factory: no width, no vocabulary) gets its states predicted and no peak."""
    if point.model.resolved().get("d_model") is None:
        s = point.strategies
        P = point.model.source.param_count(s.attention)
        states = state_bytes(s.parallel, P, False)[: 1 if point.workload.kind != "train" else 3]
        return {"mem_predicted_bytes": None, "mem_predicted_states_bytes": sum(states),
                "mem_predicted_activations_bytes": None}
    p = predict(point)
    return {"mem_predicted_bytes": p.peak_bytes,
            "mem_predicted_states_bytes": p.params_bytes + p.grads_bytes + p.optim_bytes,
            "mem_predicted_activations_bytes": p.activations_bytes + p.head_bytes + p.transient_bytes}


def disagreement(predicted: float | None, measured: float | None,
                 tolerance: float = TOLERANCE) -> float | None:
    """``measured / predicted - 1`` when it is beyond ``tolerance``, else None."""
    if not predicted or measured is None or math.isnan(measured):
        return None
    ratio = measured / predicted - 1
    return ratio if abs(ratio) > tolerance else None
