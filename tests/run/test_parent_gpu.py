"""The runner process never initialises CUDA: planning a CUDA sweep, deciding what each point
supports and opening the run folder must leave torch.cuda uninitialised (on a GPU in
exclusive-process mode a context in the parent would lock every worker out).

This machine has no GPU, so the boundary is faked: torch says one CUDA device is visible, NVML
is the scripted fake, and every path into a CUDA context (``torch.cuda._lazy_init``, which CUDA
tensors, ``get_device_capability``, ``is_bf16_supported`` ... all go through) fails the test.
"""
from __future__ import annotations

import pytest
import torch

from harness.measure import telemetry, workload
from harness.run import rounds, rundir
from harness.suite.loader import parse_suite
from harness.suite.sweep import expand, resolve
from tests.fake_nvml import FakeGPU, FakeNVML

SUITE = {
    "name": "parent", "device": "cuda",
    "workload": {"kind": "train", "seq_len": 16, "batch_size": 2},
    "sweep": {"grid": {"strategies.precision": ["fp32", "tf32", "amp_fp16", "amp_bf16"],
                       "strategies.parallel": ["none", {"name": "zero", "stage": 1, "nproc": 2}]}},
}


def no_context(*args, **kwargs):
    raise AssertionError("the runner process initialised CUDA")


@pytest.fixture
def one_fake_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "_lazy_init", no_context)
    monkeypatch.setattr(torch.cuda, "init", no_context)
    monkeypatch.setattr(torch.cuda, "set_device", no_context)

    def use(capability):
        monkeypatch.setattr(telemetry, "pynvml", FakeNVML([FakeGPU(capability=capability)]))
        monkeypatch.setattr(telemetry, "_init_state", {"pid": None, "error": None})

    return use


@pytest.mark.parametrize("capability, refused", [
    ((9, 0), set()),  # H100/H200: everything runs (ZeRO 2 ranks needs 2 GPUs: refused below)
    ((7, 0), {"tf32", "amp_bf16"}),  # V100: no TF32, no bfloat16
])
def test_planning_a_cuda_sweep_creates_no_cuda_context(one_fake_gpu, tmp_path, capability, refused):
    one_fake_gpu(capability)
    suite = parse_suite(SUITE, "s.yaml")
    points = expand(resolve(suite, "cuda"), "cuda")
    assert len(points) == 8
    reasons = {p.label: workload.unsupported_reasons(p) for p in points}
    for point in points:
        why = " ".join(reasons[point.label])
        precision = point.strategies.precision.label
        assert (f"precision {precision}:" in why) == (precision in refused), (point.label, why)
        if point.strategies.parallel.nproc == 2:
            assert "needs 2 ranks, this machine hosts 1" in why
    assert rounds.contention_warnings(points[0]) == []
    rundir.open_run(tmp_path / "run", points, doc=None)
    assert not torch.cuda.is_initialized()
