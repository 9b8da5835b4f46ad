"""One point in one fresh process: ``python -m harness.measure.worker POINT_JSON RESULT_JSON``.

Input: ``POINT_JSON``, a file holding ``Point.to_json()`` (re-validated here).
Output: ``RESULT_JSON`` written atomically (temporary file, fsync, rename) with the worker's part
of a DESIGN.md result record: ``status`` (ok | oom | error | not_supported), ``error`` (text or
None), ``samples_ms`` (ms), ``metrics`` (units in the names), ``warnings``, ``rank``. The runner
adds the provenance fields (id, label, times, params, stderr tail) and the statuses a worker
cannot report about itself (crashed, timeout, interrupted).
Under torchrun (``WORLD_SIZE`` set, one rank too) each rank writes ``RESULT.rank<N>.json``
instead; the runner merges them (``harness.run.launcher.merge_rank_results``) because only it
still sees every rank when one has died. Failures are classified by ``harness.measure.faults``
(which also injects faults for tests). ``main`` first arms ``harness.measure.lifeline.guard``:
a worker never outlives its sweep.
"""
from __future__ import annotations

import json
import os
import random
import sys
import traceback
from pathlib import Path
from typing import Any

from harness.measure.faults import classify, injected_fault
from harness.measure.lifeline import guard
from harness.records import write_json_atomic

PINNED_WARNING = ("CPU memory budget: glibc returns every freed large block (mmap threshold "
                  "pinned), so step times include page faults; compare with budgeted points only")


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rank_result_path(result_path: str | os.PathLike, rank: int) -> Path:
    path = Path(result_path)
    return path.with_name(f"{path.stem}.rank{rank}{path.suffix or '.json'}")


def failure(status: str, error: str) -> dict[str, Any]:
    return {"status": status, "error": error, "samples_ms": [], "metrics": {}, "warnings": []}


def run(point_path: str, result_path: str) -> int:
    """Measure the point of ``point_path``; always leaves a result file unless the process dies."""
    rank = int(os.environ.get("RANK", "0"))
    under_torchrun = "WORLD_SIZE" in os.environ  # a distributed point, one rank included
    out = rank_result_path(result_path, rank) if under_torchrun else result_path
    try:
        from harness.measure import measurement
        from harness.measure.budget import apply_budget
        from harness.suite.point import Point

        point = Point.from_json(json.loads(Path(point_path).read_text()))
        budget = apply_budget(point)  # before anything of the point is allocated
        seed_everything(point.seed)
        with point.strategies.ops.kernel_context():  # e.g. one SDPA backend for the whole point
            record = measurement.measure_point(point, fault=injected_fault(point.id))
        if budget and budget.get("malloc_thresholds_pinned"):
            record.setdefault("warnings", []).append(PINNED_WARNING)
    except BaseException as exc:  # noqa: BLE001 -- every failure becomes a result
        if isinstance(exc, KeyboardInterrupt):
            raise
        traceback.print_exc()
        record = failure(classify(exc), f"{type(exc).__name__}: {exc}")
    record["rank"] = rank
    write_json_atomic(out, record)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m harness.measure.worker POINT_JSON RESULT_JSON", file=sys.stderr)
        return 2
    guard(args[0])
    return run(*args)


if __name__ == "__main__":
    code = main()
    # The result is fsync'ed: skip interpreter shutdown (~0.3 s of torch's teardown per point).
    # Under torchrun too, on purpose: atexit hooks (``destroy_distributed``) do not run, and
    # os._exit ends gloo's threads with the process, without the finalization they would abort.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
