"""Memory axis: activation checkpointing policies (``none``, ``full``, ``every_n``, ``selective``).

Importing this package registers every policy. A policy names, per layer of each stack, which
parts are checkpointed (``parts(layer, n_layers)``: ``block`` / ``attention`` / ``ffn``);
``apply(model)`` makes those modules run under ``torch.utils.checkpoint`` (non-reentrant), and
``recompute_flops`` / the memory model (``harness.measure.memory_model``) read the same policy.
"""
from . import every_n, full, none, selective  # noqa: F401  (register)
from .base import MemoryStrategy  # noqa: F401
