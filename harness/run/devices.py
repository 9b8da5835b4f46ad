"""``tbench run --devices``: which devices a sweep runs on at once, as slots for the scheduler.

    slots(spec, device, points, gpus=None) -> list of slots   (``harness.run.schedule.Pool``)

``spec``: ``all`` (every GPU this process may see) or GPU indices ``0,1,3`` for a CUDA run,
``cpu:N`` for a CPU run (N points at once: an explicit choice, since concurrent CPU points
disturb each other's timing and are flagged ``contended``; without it CPU points run one at a
time). A CUDA slot is a one-index tuple; a worker is given its slots' indices in
``CUDA_VISIBLE_DEVICES`` (with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, so the indices are NVML's and
``nvidia-smi``'s); a CPU slot is ``None``. A multi-rank point takes ``nproc`` slots at once.
``gpus``: index -> model name; read from NVML (never torch: the runner creates no CUDA
context) unless given. Refused, as a ``SuiteError`` line (exit 2): an index that does not
exist, GPUs of different models in one run (timings would not be comparable; run each model
into its own folder), a point with more ranks than slots, ``cpu:N`` on a CUDA run or GPU
indices on a CPU run.
"""
from __future__ import annotations

import os
import re

from harness.suite.errors import SuiteError

ALLOWED = "allowed: all, GPU indices like 0,1,3 (a CUDA run), or cpu:N (a CPU run)"


def visible_gpus() -> dict[int, str]:
    """index -> model name of the GPUs NVML reports, narrowed to ``CUDA_VISIBLE_DEVICES``:
    indices keep those GPUs, the empty string keeps none (CUDA shows no GPU then), and any other
    form (``GPU-<uuid>``, ``MIG-...``) is refused, as a ``SuiteError``: --devices could not
    tell which NVML indices it means and might use GPUs the environment hid."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None and listed.strip() == "":
        return {}
    if listed is not None and not re.fullmatch(r"\d+(,\d+)*", listed.strip()):
        raise SuiteError([f"--devices: CUDA_VISIBLE_DEVICES={listed!r} is not a list of GPU "
                          "indices (like 0,1,3); unset it or give indices"])
    from harness.measure import telemetry

    found = {i: telemetry.device_info(i).get("name") or "unknown GPU"
             for i in range(telemetry.gpu_count())}
    if listed is not None:
        keep = {int(i) for i in listed.strip().split(",")}
        found = {i: name for i, name in found.items() if i in keep}
    return found


def parse(spec: str) -> str | int | list[int]:
    """``all`` | N (from ``cpu:N``) | [indices]; a ``SuiteError`` otherwise."""
    text = spec.strip()
    if text == "all":
        return "all"
    if m := re.fullmatch(r"cpu:(\d+)", text):
        if int(m.group(1)) < 1:
            raise SuiteError([f"--devices {spec}: cpu:N needs N >= 1"])
        return int(m.group(1))
    if re.fullmatch(r"\d+(\s*,\s*\d+)*", text):
        indices = [int(i) for i in text.split(",")]
        if len(set(indices)) != len(indices):
            raise SuiteError([f"--devices {spec}: an index is listed twice"])
        return indices
    raise SuiteError([f"--devices {spec!r}: not understood; {ALLOWED}"])


def slots(spec: str, device: str, points, gpus: dict[int, str] | None = None) -> list:
    """The slots ``spec`` gives a ``device`` run of ``points`` (see the module docstring)."""
    wanted = parse(spec)
    if device != "cuda":
        if not isinstance(wanted, int):
            raise SuiteError([f"--devices {spec}: this run is on {device}; CPU points run one at a "
                              "time (concurrent points disturb each other's timing); --devices "
                              "cpu:N runs N at once anyway"])
        found: list = [None] * wanted
    else:
        if isinstance(wanted, int):
            raise SuiteError([f"--devices {spec}: this run is on cuda; give GPU indices or all"])
        gpus = visible_gpus() if gpus is None else gpus
        if not gpus:
            why = (" (CUDA_VISIBLE_DEVICES is empty)" if os.environ.get("CUDA_VISIBLE_DEVICES", "x")
                   .strip() == "" else "")
            raise SuiteError([f"--devices {spec}: NVML reports no GPU here{why}"])
        indices = sorted(gpus) if wanted == "all" else wanted
        missing = [i for i in indices if i not in gpus]
        if missing:
            raise SuiteError([f"--devices {spec}: no GPU {missing[0]} here; "
                              f"GPUs: {', '.join(f'{i} ({n})' for i, n in sorted(gpus.items()))}"])
        models = {gpus[i] for i in indices}
        if len(models) > 1:
            listing = ", ".join(f"{i}: {gpus[i]}" for i in indices)
            raise SuiteError([f"--devices {spec}: GPUs of different models ({listing}); their "
                              "timings are not comparable: run one model per run folder"])
        found = [(i,) for i in indices]
    from harness.run.schedule import ranks_of

    for point in points:
        if ranks_of(point) > len(found):
            raise SuiteError([f"--devices {spec}: point {point.label} needs {ranks_of(point)} "
                              f"devices (nproc), the run has {len(found)}"])
    return found
