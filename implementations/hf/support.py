"""What each strategy axis can run on a ``transformers`` model, said before anything is built.

    reasons(cfg, point) -> ["<axis> <label>: why", ...]   (empty: everything applies)

Read from the config and the meta-device structure (``implementations.hf.structure``):

  * attention: the model must compute attention through transformers' AttentionInterface
    (tbench's patterns are registered there), without a score bias (T5's relative attention
    bias), without a sliding window of its own shorter than the point's sequence, without
    attention dropout in training; a pattern that owns weights (linformer's projections) has
    no place in a foreign model;
  * memory: checkpointing wraps the model's blocks; ``selective`` needs the part as a module of
    its own (BART's FFN is two Linears of the block, not a module);
  * compression: quantizes ``nn.Linear`` layers; a model whose projections are something else
    (GPT-2's ``Conv1D``) has nothing to compress;
  * padding: packed rows need a decoder-only model (``harness.measure.workload`` says so for
    every source). Precision, ops (compile, SDPA backend, optimizer) and parallel apply as they
    do to tbench's model; their own reasons are the strategies'.
"""
from __future__ import annotations

DROPOUT_FIELDS = ("attn_pdrop", "attention_dropout", "attention_probs_dropout_prob")


def _longest(point) -> int:
    w = point.workload
    return max(w.seq_len + {"generate": w.new_tokens, "prefill": 1}.get(w.kind, 0),
               (w.context_len or 0) + 1)


def attention_reasons(cfg, point) -> list[str]:
    st, a = cfg.structure, point.strategies.attention
    if not st.routes_attention:
        return [f"{st.class_name} computes attention without transformers' AttentionInterface, "
                "where tbench's patterns are registered"]
    out = []
    if st.score_bias:
        out.append(f"{st.class_name} adds a position bias to its attention scores (T5's relative "
                   "attention bias); tbench's attention kernels add no bias")
    if a.make_weights(8) is not None:
        out.append(f"{a.pattern_label} owns projection weights in each attention layer; a "
                   "transformers model has no place for them")
    window = cfg.fields.get("sliding_window")
    if window and cfg.fields.get("use_sliding_window", True) and _longest(point) > window:
        out.append(f"the model attends within a sliding window of {window} of its own; a tbench "
                   "pattern would replace it (use attention local, or a shorter sequence)")
    dropout = max((float(cfg.fields.get(k) or 0) for k in DROPOUT_FIELDS), default=0.0)
    if dropout and point.workload.kind == "train":
        out.append(f"attention dropout {dropout} while training: tbench's kernels apply none "
                   "(set it to 0 in model.hf)")
    return out


def memory_reasons(cfg, point) -> list[str]:
    memory, blocks = point.strategies.memory, [b for s in cfg.structure.stacks.values() for b in s]
    if not memory.recomputes:
        return []
    if not blocks:
        return [f"no blocks found in {cfg.structure.class_name} to checkpoint"]
    part = getattr(memory, "part", None)
    if part == "ffn" and any(b.ffn is None for b in blocks):
        return [f"{cfg.structure.class_name}'s FFN is not a module of its own (no mlp / ffn "
                "child in its blocks): checkpoint whole blocks (full, every_n)"]
    if part == "attention" and any(b.self_attn is None for b in blocks):
        return [f"an attention layer of {cfg.structure.class_name} is not a module of its own"]
    return []


def compression_reasons(cfg, point) -> list[str]:
    if point.strategies.compression.identity or cfg.structure.linear_layers:
        return []
    return [f"{cfg.structure.class_name} has no nn.Linear outside its LM head (GPT-2's projections "
            "are transformers' Conv1D): nothing to compress"]


def reasons(cfg, point) -> list[str]:
    s = point.strategies
    out = [f"attention {s.attention.label}: {r}" for r in attention_reasons(cfg, point)]
    out += [f"memory {s.memory.label}: {r}" for r in memory_reasons(cfg, point)]
    out += [f"compression {s.compression.label}: {r}" for r in compression_reasons(cfg, point)]
    return out
