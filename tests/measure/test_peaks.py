"""harness.measure.peaks: device-name matching, precision labels, MFU; unknown devices give None."""
from __future__ import annotations

import pytest

from harness.measure import peaks
from implementations import registry


@pytest.mark.parametrize("name, model", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"),
    ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA H200", "H200"),
    ("NVIDIA A100-SXM4-80GB", "A100"),
    ("NVIDIA A100-PCIE-40GB", "A100"),
    ("NVIDIA A100 80GB PCIe", "A100"),
    ("NVIDIA A10", "A10"),
    ("NVIDIA L4", "L4"),
    ("NVIDIA L40", "L40"),
    ("NVIDIA L40S", "L40S"),
    ("NVIDIA GeForce RTX 4090", "RTX 4090"),
    ("Tesla V100-SXM2-16GB", "V100 SXM2"),
    ("Tesla V100-PCIE-32GB", "V100 PCIe"),
    ("Tesla T4", "T4"),
])
def test_device_names_as_torch_and_nvml_report_them(name, model):
    assert peaks.gpu_model(name) == model


@pytest.mark.parametrize("name", [
    "NVIDIA H100 NVL", "NVIDIA H200 NVL", "NVIDIA GH200 480GB", "NVIDIA H800", "NVIDIA A10G",
    "NVIDIA A100X", "Tesla V100S-PCIE-32GB", "NVIDIA GeForce RTX 4090 Laptop GPU", "NVIDIA B200",
    "cpu", "Intel(R) Xeon(R) CPU", "", None,
])
def test_variants_with_other_peaks_and_unknown_devices_give_none(name):
    assert peaks.gpu_model(name) is None
    assert peaks.peak_tflops(name, "bf16") is None


@pytest.mark.parametrize("precision, expected", [
    ("amp_bf16", 989.0), ("amp_fp16", 989.0), ("tf32", 495.0), ("fp32", 67.0),
])
def test_h100_and_h200_peaks_match_anchors(precision, expected):
    """Keyed by each precision strategy's own math_format: no label is parsed."""
    precision = registry.create("precision", precision).math_format
    assert peaks.peak_tflops("NVIDIA H100 80GB HBM3", precision) == expected
    assert peaks.peak_tflops("NVIDIA H200", precision) == expected


def test_other_devices_and_missing_dtypes():
    assert peaks.peak_tflops("NVIDIA A100-SXM4-40GB", "bf16") == 312.0
    assert peaks.peak_tflops("NVIDIA H100 PCIe", "tf32") == 378.0
    assert peaks.peak_tflops("Tesla V100-SXM2-16GB", "fp16") == 125.0
    assert peaks.peak_tflops("Tesla V100-SXM2-16GB", "bf16") is None  # no bf16 tensor cores
    assert peaks.peak_tflops("Tesla T4", "tf32") is None
    assert peaks.peak_tflops("NVIDIA H100 80GB HBM3", "int8") is None
    assert peaks.peak_tflops("NVIDIA H100 80GB HBM3", None) is None


def test_every_table_entry_is_positive_and_16_bit_at_least_fp32():
    for model, row in peaks.PEAK_TFLOPS.items():
        assert all(v > 0 for v in row.values()), model
        assert max(row.get("bf16", 0), row.get("fp16", 0)) >= row["fp32"], model


def test_mfu():
    assert peaks.mfu(494.5e12, 989.0) == pytest.approx(0.5)
    assert peaks.mfu(1e12, None) is None
    assert peaks.mfu(None, 989.0) is None
    assert peaks.mfu(1e12, 0.0) is None
    assert peaks.mfu(float("nan"), 989.0) is None
