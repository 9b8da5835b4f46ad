"""Compression strategies: ``none``, torchao quantization (``int8_weight_only``, ``int8_dynamic``,
``int4_weight_only``, ``float8``) and pruning (``semi_structured`` 2:4, ``magnitude``).

Importing this package registers every strategy. The worker calls ``compress(model, device,
precision)`` on the built model in eval mode (inference workloads only) and records the
quality cost with :func:`.quality.quality_cost` and the weight bytes with
:func:`.quality.weight_bytes`.
"""
from . import (  # noqa: F401  (register)
    float8,
    int4_weight_only,
    int8_dynamic,
    int8_weight_only,
    magnitude,
    none,
    semi_structured,
)
from .quality import quality_cost, weight_bytes  # noqa: F401
