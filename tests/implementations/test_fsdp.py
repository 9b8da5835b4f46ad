"""FSDP (PyTorch FSDP2, ``fully_shard``) beside ZeRO: strategy validation, and a real 2-rank
torchrun launch on gloo (``implementations.parallel.fsdp_probe``) checking that it trains to the
single-process model's loss and holds the bytes the sharding formula says."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from implementations import registry
from implementations.parallel.fsdp import FsdpParallel
from implementations.parallel.state_bytes import fsdp_paper_bytes, paper_bytes

ROOT = Path(__file__).resolve().parents[2]
N = 2


def test_labels_and_not_supported_reasons():
    assert FsdpParallel().label == "fsdp_n2"
    assert FsdpParallel(reshard_after_forward=False, nproc=4).label == "fsdp_noreshard_n4"
    assert FsdpParallel(cpu_offload=True).label == "fsdp_offload_n2"
    cpu = registry.Context(device="cpu", precision="amp_fp16", nproc=8, max_nproc=2, workload="forward")
    reasons = " | ".join(FsdpParallel(nproc=8, cpu_offload=True, backend="nccl").not_supported_reasons(cpu))
    for part in ("needs 8 ranks", "not train", "fp16", "cpu_offload", "nccl"):
        assert part in reasons
    ok = registry.Context(device="cpu", precision="amp_bf16", nproc=2, max_nproc=2, workload="train")
    assert FsdpParallel().not_supported_reasons(ok) == []
    assert FsdpParallel().mixed_precision("fp32") is None
    assert str(FsdpParallel().mixed_precision("amp_bf16").param_dtype) == "torch.bfloat16"
    with pytest.raises(registry.StrategyError, match="nproc: got 0"):
        registry.create("parallel", {"name": "fsdp", "nproc": 0})


def test_sharding_formula_by_hand():
    """A (5, 3) weight and a (4,) bias on 2 ranks: torch.chunk gives rows 3 + 2 and 2 + 2."""
    shapes = [(5, 3), (4,)]
    assert fsdp_paper_bytes(shapes, 2, 0) == 16 * (3 * 3 + 2) + 2 * 4
    assert fsdp_paper_bytes(shapes, 2, 1) == 16 * (2 * 3 + 2) + 2 * 4
    assert fsdp_paper_bytes(shapes, 1, 0) == 16 * 19 + 2 * 4


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("fsdp") / "probe.json"
    cmd = FsdpParallel(nproc=N).launch_command(["implementations.parallel.fsdp_probe", "--out", str(out)])
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "terminate called" not in proc.stderr, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_fsdp_trains_to_the_single_process_loss(probe):
    """Gradients averaged over ranks = one process on the ranks' batches concatenated."""
    ref = probe["reference"]
    assert ref[-1] < ref[0]  # it trains
    for reshard in (True, False):
        rows = [r for r in probe["rows"] if r["reshard"] is reshard]
        assert len(rows) == N
        mean = [sum(r["losses"][i] for r in rows) / N for i in range(len(ref))]
        assert mean == pytest.approx(ref, rel=1e-5, abs=1e-6), reshard


@pytest.mark.slow
def test_per_rank_bytes_fall_as_the_sharding_formula_says(probe):
    """Each rank holds exactly its torch.chunk of every parameter, gradient, m and v (fp32:
    16 B per element) plus Adam's step per tensor: 16 psi / N up to the chunks' rounding, the
    same as ZeRO-3 in fp32 without DeepSpeed's extra fp32 master."""
    psi, shapes = probe["psi"], [tuple(s) for s in probe["shapes"]]
    whole = fsdp_paper_bytes(shapes, 1, 0)
    for row in probe["rows"]:
        assert row["model_state_bytes"] == fsdp_paper_bytes(shapes, N, row["rank"]), row
        assert row["param_bytes"] == row["grad_bytes"]
        assert abs(row["model_state_bytes"] - whole / N) <= 16 * sum(
            max(1, len(s) and (s[1] if len(s) > 1 else 1)) for s in shapes), row
    total = sum(r["model_state_bytes"] for r in probe["rows"] if r["reshard"])
    assert total == 16 * psi + N * 4 * len(shapes)  # the shards partition every tensor
    assert paper_bytes(3, psi, N, mixed=False) == 16 * psi / N  # ZeRO-3's formula, same bytes
