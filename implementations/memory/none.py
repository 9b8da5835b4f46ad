"""none: no activation checkpointing -- every activation the backward needs is kept."""
from __future__ import annotations

from implementations.memory.base import MemoryStrategy
from implementations.registry import register


@register("memory", "none")
class NoneMemory(MemoryStrategy):
    """Keep every activation (the default): no recomputation, the largest activation memory."""

    recomputes = False
