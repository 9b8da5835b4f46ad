"""No compression: the model's own weights (the reference every other strategy is compared to)."""
from __future__ import annotations

from implementations.registry import register

from .base import CompressionStrategy


@register("compression", "none")
class NoneCompression(CompressionStrategy):
    """Uncompressed weights, in the precision strategy's dtype."""

    identity = True
