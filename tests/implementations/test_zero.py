"""ZeRO strategy: config generation and validation, and real 2-rank DeepSpeed runs on gloo.

The distributed tests launch ``implementations.parallel.zero_probe`` through torchrun with two
CPU ranks (one launch for stages 0-3, one for optimizer offload) and check what each rank held.
Every launch uses this environment's DeepSpeed extensions folder, the op built there first, outside any
launch's timeout (``extensions_env``). A rank exits cleanly (``destroy_distributed``) even with
collectives in flight that touch Python when they complete.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.run import extensions, lifecycle
from harness.run.plan import points_plan
from implementations import registry
from implementations.parallel.state_bytes import _Ledger, aggregate_ranks, paper_bytes
from implementations.parallel.zero import ZeroParallel

ROOT = Path(__file__).resolve().parents[2]
N = 2


def test_config_generated_from_strategy():
    z = registry.create("parallel", {"name": "zero", "stage": 2, "offload_optimizer": True})
    assert z.label == "zero2_offopt_n2"
    cfg = z.deepspeed_config("amp_bf16", micro_batch=4)
    assert cfg["train_micro_batch_size_per_gpu"] == 4 and cfg["gradient_accumulation_steps"] == 1
    assert cfg["zero_optimization"] == {
        "stage": 2, "offload_optimizer": {"device": "cpu", "pin_memory": True}}  # DeepSpeed's advice
    assert cfg["bf16"] == {"enabled": True} and "fp16" not in cfg
    assert cfg["zero_force_ds_cpu_optimizer"] is False and cfg["wall_clock_breakdown"] is False
    fp32 = ZeroParallel(stage=3, offload_params=True, nproc=4).deepspeed_config("fp32", 2)
    assert "bf16" not in fp32 and "fp16" not in fp32
    assert fp32["zero_optimization"]["offload_param"] == {"device": "cpu", "pin_memory": True}
    pageable = ZeroParallel(stage=3, offload_params=True, pin_memory=False)
    assert pageable.label == "zero3_offpar_pageable_n2"
    assert pageable.deepspeed_config("fp32", 2)["zero_optimization"]["offload_param"]["pin_memory"] is False
    assert fp32["zero_optimization"]["stage3_param_persistence_threshold"] == 0
    assert ZeroParallel(stage=3, offload_params=True, nproc=4).label == "zero3_offpar_n4"
    assert ZeroParallel().deepspeed_config("amp_fp16", 1)["fp16"] == {"enabled": True}
    with pytest.raises(ValueError, match="no DeepSpeed mapping"):
        ZeroParallel().deepspeed_config("int8", 1)


@pytest.mark.parametrize("params, match", [
    ({"stage": 4}, "stage: got 4, allowed: less than or equal to 3"),
    ({"stage": 2, "offload_params": True}, "offload_params: offload_params=True needs stage 3"),
    ({"nproc": 0}, "nproc: got 0, allowed: greater than or equal to 1"),
    ({"backend": "mpi"}, "backend: got 'mpi', allowed: 'auto', 'gloo' or 'nccl'"),
    ({"timeout_s": 0}, "timeout_s: got 0, allowed: greater than 0"),
    ({"launcher_args": "--nnodes 2"}, "launcher_args: got '--nnodes 2', allowed: a valid tuple"),
])
def test_invalid_parameters_are_refused(params, match):
    with pytest.raises(ValueError, match=match):
        registry.create("parallel", {"name": "zero", **params})


def test_not_supported_reasons_and_launcher():
    z = ZeroParallel(stage=1, nproc=8, launcher_args=("--nnodes", "2", "--node_rank", "1"))
    ctx = registry.Context(device="cpu", precision="amp_fp16", nproc=8, max_nproc=2, workload="forward")
    reasons = " | ".join(z.not_supported_reasons(ctx))
    assert "needs 8 ranks, this machine hosts 2" in reasons
    assert "fp16" in reasons and "not train" in reasons
    ok = registry.Context(device="cpu", precision="amp_bf16", nproc=2, max_nproc=2, workload="train")
    assert ZeroParallel().not_supported_reasons(ok) == []
    cmd = z.launch_command(["pkg.mod", "--x"])
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--nproc_per_node", "8"]
    assert cmd[5:9] == ["--nnodes", "2", "--node_rank", "1"] and cmd[-3:] == ["-m", "pkg.mod", "--x"]
    assert "--master_port" in ZeroParallel().launch_command(["m"], master_port=1234)


def test_none_strategy_leaves_model_untouched():
    none = registry.create("parallel", "none")
    model = torch.nn.Linear(2, 2)
    assert none.nproc == 1 and none.label == "none"
    assert none.wrap(model, torch.optim.SGD(model.parameters(), lr=0.1)) is model


def test_paper_formulas_and_aggregation():
    psi = 1000
    assert [paper_bytes(s, psi, 4, mixed=True) for s in range(4)] == [16000, 7000, 5500, 4000]
    assert [paper_bytes(s, psi, 2, mixed=False) for s in range(4)] == [16000, 12000, 10000, 8000]
    assert [paper_bytes(s, psi, 2, False, fp32_master=True) for s in range(4)] == [
        16000, 14000, 12000, 10000]
    agg = aggregate_ranks([{"model_state_bytes": 300, "mem_peak_bytes": 5},
                           {"model_state_bytes": 100, "mem_peak_bytes": 7}])
    assert agg == {"model_state_bytes_max": 300, "model_state_imbalance": 0.5,
                   "mem_peak_bytes_max": 7}


def test_ledger_counts_views_and_aliases_once():
    flat = torch.zeros(100)
    ledger = _Ledger()
    assert ledger.add([flat[:60], flat[40:]]) == 400  # overlapping views: the union
    assert ledger.add([flat, flat.view(10, 10)]) == 0  # already covered
    assert ledger.add([torch.zeros(10, dtype=torch.bfloat16)]) == 20


@pytest.fixture(scope="module")
def extensions_env() -> dict[str, str]:
    """The launches' environment, with this environment's DeepSpeed extensions folder; the op is built
    there first, as install.sh does (minutes on a fresh machine, outside every launch's timeout)."""
    env = extensions.extensions_env("cpu", dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"))
    build = subprocess.run([sys.executable, "-m", "harness.run.extensions", "--device", "cpu"],
                           cwd=ROOT, env=env, capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr[-3000:]
    return env


def _launch(tmp_path: Path, env: dict[str, str], *args: str) -> dict:
    out = tmp_path / "probe.json"
    cmd = ZeroParallel(nproc=N).launch_command(
        ["implementations.parallel.zero_probe", "--out", str(out), *args])
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "terminate called" not in proc.stderr, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def stages(tmp_path_factory, extensions_env) -> dict:
    return _launch(tmp_path_factory.mktemp("zero"), extensions_env, "--stages", "0", "1", "2", "3")


def _rows(result: dict, rank: int) -> dict[int, dict]:
    return {r["stage"]: r for r in result["rows"] if r["rank"] == rank}


@pytest.mark.slow
def test_losses_agree_across_stages(stages):
    for rank in range(N):
        rows = _rows(stages, rank)
        ref = rows[0]["losses"]
        assert ref[-1] < ref[0]  # it trains
        for stage in (1, 2, 3):
            assert rows[stage]["losses"] == pytest.approx(ref, rel=1e-4), stage


@pytest.mark.slow
def test_model_state_bytes_fall_as_zero_predicts(stages):
    """Stage 1 partitions optimizer states, stage 2 adds gradients, stage 3 adds parameters.

    Measured bytes match the paper's fp32 formula plus DeepSpeed's fp32 master partition
    (4 psi / N, stages 1-3) up to padding: DeepSpeed pads each rank's share to equal sizes
    (stage 3: every tensor to ceil(numel / N)), at most N - 1 elements per tensor and per copy
    (<= 5 copies of 4 B), plus Adam's 4-byte step counter per tensor."""
    psi = stages["psi"]
    for rank in range(N):
        rows = _rows(stages, rank)
        held = [rows[s]["model_state_bytes"] for s in range(4)]
        assert held[0] > held[1] > held[2] > held[3], held
        assert rows[1]["optim_bytes"] < rows[0]["optim_bytes"]
        assert rows[2]["grad_bytes"] < rows[1]["grad_bytes"]
        assert rows[3]["param_bytes"] < rows[2]["param_bytes"]
        for s in range(4):
            tol = rows[s]["tensors"] * ((N - 1) * 5 * 4 + 4)
            expected = paper_bytes(s, psi, N, mixed=False, fp32_master=True)
            assert abs(held[s] - expected) <= tol, (s, held[s], expected, tol)
            master = 4 * psi / N if s else 0  # the only departure from the paper's fp32 formula
            assert abs(held[s] - master - paper_bytes(s, psi, N, mixed=False)) <= tol
    agg = aggregate_ranks([_rows(stages, r)[3] for r in range(N)])
    assert 0 <= agg["model_state_imbalance"] < 0.01


@pytest.mark.slow
def test_offload_optimizer_stage2_runs(stages, tmp_path, extensions_env):
    off = _launch(tmp_path, extensions_env, "--stages", "2", "--offload-optimizer")
    for rank in range(N):
        row = _rows(off, rank)[2]
        assert row["losses"] == pytest.approx(_rows(stages, rank)[2]["losses"], rel=1e-4)
        assert row["model_state_bytes"] == _rows(stages, rank)[2]["model_state_bytes"]


HANG = """
import time
import torch.distributed as dist
from implementations.parallel.zero import init_distributed
init_distributed("gloo", timeout_s=3)
if dist.get_rank() == 0:
    start = time.time()
    try:
        dist.barrier()
        print("NO_ERROR")
    except Exception as exc:
        print(f"COLLECTIVE_ERROR after {time.time() - start:.1f} s: {type(exc).__name__}")
else:
    time.sleep(6)  # joins the barrier only after the 3 s timeout
"""


@pytest.mark.slow
def test_hung_collective_becomes_an_error(tmp_path, extensions_env):
    script = tmp_path / "hang.py"
    script.write_text(HANG)
    cmd = ZeroParallel(nproc=N).launch_command(["m"])[:-2] + [str(script)]
    proc = subprocess.run(cmd, cwd=ROOT, env=extensions_env, capture_output=True, text=True, timeout=120)
    assert "COLLECTIVE_ERROR" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    waited = float(proc.stdout.split("COLLECTIVE_ERROR after ")[1].split(" s")[0])
    assert 2.5 <= waited < 5.5, waited  # the 3 s timeout fired; rank 1 would come at ~6 s


IN_FLIGHT = """
import torch
import torch.distributed as dist
from implementations.parallel.zero import init_distributed
init_distributed("gloo", timeout_s=60)
works = [dist.all_reduce(torch.ones(1 << 16), async_op=True) for _ in range(200)]
for work in works:
    work.get_future().then(lambda f: f.value())  # gloo's thread runs (and frees) it: needs the GIL
torch.optim.Adam([torch.nn.Parameter(torch.ones(1))])  # imports torch._dynamo after the group
print("EXITING", flush=True)
"""


@pytest.mark.slow
def test_rank_exits_cleanly_with_collectives_in_flight(tmp_path, extensions_env):
    """The teardown abort, made certain: gloo threads still completing works whose callbacks
    take the GIL when the interpreter exits. Without ``destroy_distributed`` (or with
    torch._dynamo imported after the group, which then cannot be freed) every launch aborted:
    "terminate called without an active exception", the ranks killed by SIGABRT."""
    script = tmp_path / "in_flight.py"
    script.write_text(IN_FLIGHT)
    cmd = ZeroParallel(nproc=N).launch_command(["m"])[:-2] + [str(script)]
    proc = subprocess.run(cmd, cwd=ROOT, env=extensions_env, capture_output=True, text=True, timeout=120)
    assert proc.stdout.count("EXITING") == N, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.returncode == 0 and "terminate called" not in proc.stderr, proc.stderr[-3000:]


@pytest.mark.slow
def test_zero_point_on_an_encoder_decoder_runs_under_deepspeed_bf16(tmp_path, extensions_env):
    """The worker feeds the engine through the same forward helper as a single-process point
    (encoder-decoder: src/tgt keywords) and leaves bf16 to DeepSpeed (no autocast on top)."""
    from harness import records
    from harness.suite.loader import parse_suite
    from harness.suite.sweep import expand

    (pt,) = expand(parse_suite({
        "name": "zero-encdec", "model": {"preset": "tiny", "overrides": {"n_encoder_layers": 2}},
        "workload": {"kind": "train", "batch_size": 2, "seq_len": 16, "num_batches": 2},
        "strategies": {"parallel": {"name": "zero", "stage": 2, "nproc": N},
                       "precision": "amp_bf16"},
        "measure": {"warmup_iters": 1, "warmup_s": 0.0, "min_time_s": 0.0, "max_samples": 10,
                    "rounds": 1}},
        "t"), "cpu")
    lifecycle.run(points_plan([pt], tmp_path), reports=False)
    (rec,) = records.read_records(tmp_path)
    assert rec["status"] == "ok", (rec["error"], rec["stderr_tail"])
    assert rec["params"]["n_encoder_layers"] == 2 and len(rec["ranks"]) == N
    assert rec["metrics"]["loss_final"] > 0 and rec["metrics"]["amp_skipped_steps"] == 0  # bf16: none


@pytest.mark.slow
def test_one_rank_zero_points_run_every_stage(tmp_path, extensions_env):
    """nproc 1 (the one-GPU shape of the cuda profile): launched through torchrun like any
    distributed point, so DeepSpeed finds RANK / WORLD_SIZE / MASTER_* instead of trying MPI."""
    from harness import records
    from harness.suite.loader import parse_suite
    from harness.suite.sweep import expand

    points = expand(parse_suite({
        "name": "zero-one-rank", "model": {"preset": "tiny", "overrides": {"n_encoder_layers": 0}},
        "workload": {"kind": "train", "batch_size": 2, "seq_len": 16, "num_batches": 2},
        "strategies": {"parallel": {"name": "zero", "nproc": 1}},
        "sweep": {"grid": {"strategies.parallel.stage": [0, 1, 2, 3]}},
        "measure": {"warmup_iters": 1, "warmup_s": 0.0, "min_time_s": 0.0, "max_samples": 10,
                    "rounds": 1}},
        "t"), "cpu")
    lifecycle.run(points_plan(points, tmp_path), reports=False)
    records = records.read_records(tmp_path)
    assert [r["params"]["parallel"] for r in records] == [f"zero{s}_n1" for s in range(4)]
    for rec in records:
        assert rec["status"] == "ok", (rec["error"], rec["stderr_tail"])
        assert len(rec["ranks"]) == 1 and rec["metrics"]["model_state_bytes_max"] > 0
