"""Peak dense TFLOP/s per GPU model and dtype, and model FLOPs utilisation (MFU).

Contract
    PEAK_TFLOPS[model][dtype] -> float   dense (no 2:4 sparsity) vendor peak, TFLOP/s;
                                         dtype in {"bf16", "fp16", "tf32", "fp32"}; a dtype the GPU has
                                         no tensor-core path for is absent (V100/T4 have no bf16/tf32)
    gpu_model(device_name) -> str | None     "NVIDIA H100 80GB HBM3" -> "H100 SXM"; None if unknown
    peak_tflops(device_name, math_format) -> float | None
        device_name as torch.cuda.get_device_name or NVML reports it; math_format the precision
        strategy's ``math_format`` (fp32, tf32, fp16, bf16: autocast strategies count at the 16-bit
        tensor peak, as the matmuls dominate). Unknown device, CPU, unknown format -> None, never
        a guess.
    mfu(achieved_flops_per_s, peak_tflops) -> float | None     achieved / (peak * 1e12), a fraction
    PEAK_BANDWIDTH_GBS[model] -> float   device-memory bandwidth, GB/s (1e9 bytes/s), datasheet
    peak_bandwidth_gbs(device_name) -> float | None    None for CPU and unknown devices, and for
        A100 (its 40 GB and 80 GB, SXM and PCIe variants differ: 1555-2039 GB/s), never a guess

fp32 means plain FP32 (CUDA cores, TF32 off); tf32 means FP32 matmuls on TF32 tensor cores.
Sources: NVIDIA datasheets (H100, H200, A100, A10, L4, L40, L40S, V100, T4) and the Ada
architecture whitepaper (RTX 4090, fp16/bf16 with FP32 accumulate, which is what PyTorch uses).
This module never imports torch.
"""
from __future__ import annotations

import math

PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H100 SXM": {"bf16": 989.0, "fp16": 989.0, "tf32": 495.0, "fp32": 67.0},
    "H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.0},
    "H200": {"bf16": 989.0, "fp16": 989.0, "tf32": 495.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},  # SXM4 and PCIe alike
    "A10": {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2},
    "L4": {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3},
    "L40": {"bf16": 181.0, "fp16": 181.0, "tf32": 90.5, "fp32": 90.5},
    "L40S": {"bf16": 362.0, "fp16": 362.0, "tf32": 183.0, "fp32": 91.6},
    "RTX 4090": {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6},
    "V100 SXM2": {"fp16": 125.0, "fp32": 15.7},
    "V100 PCIe": {"fp16": 112.0, "fp32": 14.0},
    "T4": {"fp16": 65.0, "fp32": 8.1},
}

PEAK_BANDWIDTH_GBS: dict[str, float] = {  # HBM / GDDR datasheet bandwidth, GB/s
    "H100 SXM": 3350.0, "H100 PCIe": 2000.0, "H200": 4800.0, "A10": 600.0, "L4": 300.0,
    "L40": 864.0, "L40S": 864.0, "RTX 4090": 1008.0, "V100 SXM2": 900.0, "V100 PCIe": 900.0,
    "T4": 320.0,
}

# (model, substrings that must all appear, substrings that must not) on the upper-cased name.
# Order matters: the first rule that matches wins. Variants with other peaks (H100 NVL, H200 NVL,
# A100X, A10G, A800/H800, GH200) are excluded so that they give None rather than a wrong figure.
_RULES: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("H100 PCIe", ("H100", "PCIE"), ()),
    ("H100 SXM", ("H100",), ("NVL", "PCIE", "GH100", "H100 CNX")),
    ("H200", ("H200",), ("NVL", "GH200")),
    ("A100", ("A100",), ("A100X",)),
    ("L40S", ("L40S",), ()),
    ("L40", ("L40",), ("L40S", "L40G")),
    ("A10", ("A10",), ("A100", "A10G", "A10M")),
    ("L4", ("L4",), ("L40",)),
    ("RTX 4090", ("RTX 4090",), ("LAPTOP", "MOBILE", "4090 D")),
    ("V100 SXM2", ("V100", "SXM2"), ()),
    ("V100 PCIe", ("V100", "PCIE"), ()),
    ("T4", ("TESLA T4",), ()),
]


def _tokens_ok(name: str, needle: str) -> bool:
    """`needle` occurs in `name` as a whole model token (so "L4" does not match "L40" or "GL4")."""
    start = name.find(needle)
    while start != -1:
        before = name[start - 1] if start else " "
        end = start + len(needle)
        after = name[end] if end < len(name) else " "
        if not before.isalnum() and not after.isalnum():
            return True
        start = name.find(needle, start + 1)
    return False


def gpu_model(device_name: str | None) -> str | None:
    """The PEAK_TFLOPS key for a device name, or None when the device is not in the table."""
    if not device_name or not isinstance(device_name, str):
        return None
    name = device_name.upper().replace("_", " ").replace("-", " ")
    for model, needles, excluded in _RULES:
        wanted = [n.replace("-", " ") for n in needles]
        if all(_tokens_ok(name, n) for n in wanted) and not any(x in name for x in excluded):
            return model
    return None


def peak_tflops(device_name: str | None, math_format: str | None) -> float | None:
    """Dense peak TFLOP/s of this device in this math format, or None (unknown: no guess)."""
    model = gpu_model(device_name)
    return None if model is None else PEAK_TFLOPS[model].get(math_format)


def mfu(achieved_flops_per_s: float | None, peak: float | None) -> float | None:
    """Fraction of peak reached: achieved FLOP/s over `peak` TFLOP/s; None if either is missing."""
    if achieved_flops_per_s is None or peak is None:
        return None
    if not (math.isfinite(achieved_flops_per_s) and math.isfinite(peak)) or peak <= 0 or achieved_flops_per_s < 0:
        return None
    return achieved_flops_per_s / (peak * 1e12)


def peak_bandwidth_gbs(device_name: str | None) -> float | None:
    """Datasheet memory bandwidth of this device in GB/s, or None (CPU, unknown: no guess)."""
    return PEAK_BANDWIDTH_GBS.get(gpu_model(device_name))
