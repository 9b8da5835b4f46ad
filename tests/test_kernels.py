"""harness.measure.kernels: the SDPA backend a step ran, from the operators it dispatched."""
import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from harness.measure.kernels import RecordKernels, record_backends
from implementations import registry


def test_cpu_flash_and_math_paths_are_told_apart():
    q = torch.randn(1, 2, 16, 8, requires_grad=True)
    with RecordKernels() as rec:
        F.scaled_dot_product_attention(q, q, q).sum().backward()  # fp32, no mask: CPU flash
    assert rec.counts() == {"flash_cpu": 1}  # the backward operator is not counted again
    with sdpa_kernel(SDPBackend.MATH):
        with RecordKernels() as rec:
            F.scaled_dot_product_attention(q, q, q)
    assert rec.counts() == {"math": 1}


@pytest.mark.parametrize("ops, expected", [("eager", []), ("fused", ["flash_cpu"])])
def test_attention_strategies_report_their_kernel(ops, expected):
    q = torch.randn(1, 2, 32, 8)
    for spec in ("dense", {"name": "block", "block_size": 8}):
        s = registry.create("attention", spec)
        found, out = record_backends(lambda: s.attend(q, q, q, causal=False, ops=ops))
        assert found == expected and out.shape == q.shape
