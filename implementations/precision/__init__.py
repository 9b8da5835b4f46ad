"""Precision strategies: fp32, tf32, amp_fp16 (autocast + GradScaler), amp_bf16 (autocast).

Importing this package registers every strategy. The worker calls ``setup(device)`` /
``teardown()``, ``autocast(device)``, ``make_scaler(device)`` and
``backward_step(loss, optimizer, scaler) -> skipped``; :mod:`.parity` measures loss parity.
"""
from . import amp_bf16, amp_fp16, fp32, tf32  # noqa: F401  (register)
from .parity import loss_parity  # noqa: F401
