"""Parallel axis: how a training step is spread over processes (``none``, DeepSpeed ``zero``,
PyTorch ``fsdp``)."""
from . import fsdp, none, zero  # noqa: F401  (each file registers its strategy)
