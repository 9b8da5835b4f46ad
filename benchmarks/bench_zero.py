"""Model-state bytes per rank under DeepSpeed ZeRO stages 0-3, next to the ZeRO paper's formulas.

    python benchmarks/bench_zero.py [--nproc 2] [--precisions fp32 amp_bf16] [--preset tiny]

Each (precision, stage) is its own torchrun launch of ``implementations.parallel.zero_probe``
on ``--nproc`` CPU ranks (gloo), so the peak RSS column belongs to that stage alone. Bytes are
read from the real tensors each rank holds after a measured training step (see
``implementations/parallel/state_bytes.py``); the table shows rank 0 (and the imbalance across
ranks), in bytes and in multiples of psi (the parameter count).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from implementations.parallel.state_bytes import aggregate_ranks, paper_bytes  # noqa: E402
from implementations.parallel.zero import ZeroParallel  # noqa: E402

PAPER_TEXT = {False: ["16psi", "8psi+8psi/N", "4psi+12psi/N", "16psi/N"],
              True: ["16psi", "4psi+12psi/N", "2psi+14psi/N", "16psi/N"]}


def launch(nproc: int, stage: int, precision: str, preset: str, out: Path) -> dict:
    cmd = ZeroParallel(stage=stage, nproc=nproc).launch_command(
        ["implementations.parallel.zero_probe", "--stages", str(stage), "--precision", precision,
         "--preset", preset, "--out", str(out)])
    env = dict(os.environ, PYTHONPATH=str(ROOT), DS_ACCELERATOR="cpu")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"stage {stage} {precision} failed:\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text())


def table(results: dict[int, dict], nproc: int, mixed: bool) -> list[str]:
    psi = results[0]["psi"]
    lines = [
        "| stage | params B | grads B | optim B | model states B/rank | x psi | paper formula "
        "| paper x psi | DeepSpeed layout x psi | imbalance | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for stage, res in sorted(results.items()):
        rows = [r for r in res["rows"] if r["stage"] == stage]
        r0 = next(r for r in rows if r["rank"] == 0)
        agg = aggregate_ranks(rows)
        paper = paper_bytes(stage, psi, nproc, mixed) / psi
        layout = paper_bytes(stage, psi, nproc, mixed, fp32_master=True) / psi
        lines.append(
            f"| {stage} | {r0['param_bytes']:,} | {r0['grad_bytes']:,} | {r0['optim_bytes']:,} "
            f"| {r0['model_state_bytes']:,} | {r0['model_state_bytes'] / psi:.2f} "
            f"| {PAPER_TEXT[mixed][stage]} | {paper:.2f} | {layout:.2f} "
            f"| {agg['model_state_imbalance']:.4f} | {agg['mem_peak_bytes_max'] / 2**20:.0f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--precisions", nargs="+", default=["fp32", "amp_bf16"])
    ap.add_argument("--preset", default="tiny")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for precision in args.precisions:
            results = {s: launch(args.nproc, s, precision, args.preset, Path(tmp) / f"{precision}{s}.json")
                       for s in range(4)}
            psi = results[0]["psi"]
            print(f"\n### {precision}: {args.preset} decoder-only, psi = {psi:,} parameters, "
                  f"N = {args.nproc} CPU ranks (gloo), Adam; rank 0 shown")
            print("\n".join(table(results, args.nproc, mixed=precision != "fp32")))


if __name__ == "__main__":
    main()
