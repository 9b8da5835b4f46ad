"""Padding / batching strategies: how variable-length sequences become (B, S) batches.

Importing this package registers every strategy (``fixed``, ``dynamic``, ``bucketed``,
``packed``). The worker calls ``strategy.make_batches(lengths, batch_size, max_length,
vocab_size, seed, pad_id) -> list[Batch]`` with lengths from :func:`lengths.sample_lengths`.
"""
from . import bucketed, dynamic, fixed, packed  # noqa: F401  (register)
from .base import IGNORE_INDEX, Batch  # noqa: F401
from .lengths import sample_lengths  # noqa: F401
