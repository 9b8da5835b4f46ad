"""Ops strategies: ``eager`` (textbook modules, for-loop optimizer) vs ``fused`` (fused kernels,
fused optimizer, optional torch.compile). Importing this package registers both.

The worker reads ``strategy.model_ops`` into ``ModelConfig.ops``, builds the optimizer with
``strategy.make_optimizer(params, lr)`` and wraps the model with ``strategy.prepare(model)``.
"""
from . import eager, fused  # noqa: F401  (register)
