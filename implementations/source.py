"""What the harness asks of a model, whatever built it: the model-source protocol.

Three sources satisfy it: tbench's own Transformer (``implementations.model.ModelConfig``, a
preset plus overrides), a ``transformers`` model from its config
(``implementations.hf.model.HfModelConfig``) and any ``nn.Module`` factory
(``implementations.module_source.ModuleModelConfig``). A suite's ``model`` section becomes one of
them when it is loaded (``harness.suite.schema.ModelSpec.source``); after that no stage asks which
kind it holds.

    shape() -> dict                  ModelConfig's field names (d_model, n_heads, ...; None where
                                     the source has no such number): the memory model, the checks
                                     of a point against max_seq_len
    with_strategies(attention, ops, max_seq_len=None) -> source  the same model, as a point runs it
    not_supported_reasons(point) -> [str]   per axis, "<axis> <label>: why" for what this model
                                     cannot run (the strategies' own reasons come on top)
    build() -> nn.Module             fresh weights from the seeded RNG (or a checkpoint's)
    make_batches(padding, lengths, batch_size, seq_len, seed) -> [batch]
    run_batch(model, batch) -> output;  batch_loss(model, output, batch) -> scalar
    flops_breakdown(batch, seq_len, tgt_len=None) -> {part: FLOPs}   one forward, by part
    decode_step_flops(batch, context_len, src_len=None) -> int
    flops_method: "analytic" | "flop_counter"   what produced the counts (the record's
                                     ``flops_method``); either way attention is charged its allowed
                                     (query, key) pairs: S(S+1)/2 per head for causal dense
    param_count(attention=None) -> int
    serving(model) -> implementations.serving.Serving   prefill, cached decode, generate
    is_encoder_decoder, vocab_size, pad_id, bos_id, eos_id, max_seq_len, n_heads, kv_heads,
    head_dim, n_encoder_layers, n_decoder_layers, attention, decoder_attention

``implementations.model.TokenModel`` holds what the two token LMs (tbench's and transformers')
share: padding-axis batches, tbench's calling convention (``forward_batch``) and the loss.
"""
from __future__ import annotations

from typing import Any, Protocol


class ModelSource(Protocol):
    flops_method: str
    is_encoder_decoder: bool

    def shape(self) -> dict[str, Any]: ...
    def with_strategies(self, attention, ops: str, max_seq_len: int | None = None) -> "ModelSource": ...
    def not_supported_reasons(self, point) -> list[str]: ...
    def build(self): ...
    def make_batches(self, padding, lengths, batch_size: int, seq_len: int, seed: int) -> list: ...
    def run_batch(self, model, batch): ...
    def batch_loss(self, model, output, batch): ...
    def flops_breakdown(self, batch: int, seq_len: int, tgt_len: int | None = None) -> dict[str, int]: ...
    def decode_step_flops(self, batch: int, context_len: int, src_len: int | None = None) -> int: ...
    def param_count(self, attention=None) -> int: ...
    def serving(self, model): ...

