"""benchmarks/gpu_check.py --dry-run: the prepared GPU script runs end to end on the CPU, so the
first GPU minutes are not lost to a typo, a suite that does not expand or a missing command."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_dry_run_validates_every_step(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600,
                          cwd=ROOT, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    for name in ("parity_fp32", "parity_bf16"):
        rows = report[name]["result"]
        assert len(rows) == 5 * 2 * 2 and all(r["ok"] for r in rows), rows  # patterns x causal x pad
        assert all(r["fused_backends"] for r in rows)  # every fused run reached SDPA
    assert report["timing"]["result"]["tbench_ms"] > 0
    assert report["flash_varlen"]["result"] == {"skipped": "the flash-attn package is not installed"}
    kernels = report["kernels"]["result"]
    for part in ("dense", "sparse"):
        assert kernels[part]["rc"] == 0, kernels[part]["stderr_tail"]
    ran = {(r["pattern"], r["kernel"]): r for r in kernels["rows"] if "latency_ms_p50" in r}
    assert ran[("local:window=256", "auto:fused")]["tflops_per_s"] > 0
    assert ran[("dense", "auto:fused:flash")]["tflops_per_s"] > 0
    efficient = [r for r in kernels["rows"] if r["kernel"] == "auto:fused:efficient"]
    assert efficient and all("CUDA only" in r["error"] for r in efficient)
    assert all(r["correct"] for r in ran.values())
    refused = [r for r in kernels["rows"] if r["kernel"] == "flash_attn:fused"]
    assert refused and all("CUDA only" in r["error"] for r in refused)
    planned = {r["suite"]: r for r in report["suites"]["result"]}
    assert set(planned) == {"smoke", "attention", "precision", "zero", "kernels"}
    for name, row in planned.items():
        assert row["rc"] == 0 and f"{name} on cuda:" in row["planned"], row


def test_without_a_gpu_only_the_dry_run_is_allowed(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and "allowed without one: --dry-run" in proc.stderr


def test_the_flash_varlen_step_compares_at_the_real_positions(monkeypatch):
    """Step 1b on the CPU against the stand-in package (tests/fake_flash_attn.py): every row is
    within tolerance and has zeros at the padded positions; on the GPU it runs the real one."""
    import fake_flash_attn
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check

    monkeypatch.setitem(sys.modules, "flash_attn", fake_flash_attn.module())
    rows = gpu_check.flash_varlen("cpu", 256, torch.float32)
    assert [(r["pattern"], r["causal"], r["layout"]) for r in rows] == [
        (p, c, layout) for p in ("dense", "local_w128") for c in (True, False)
        for layout in ("right", "left", "packed")]
    assert all(r["ok"] and r["err_out"] < 1e-5 for r in rows), rows
