"""The report's head: suite, device, counts of statuses, times, fingerprint, environment."""
from __future__ import annotations

from harness.analyse.layout import point_flags
from harness.records import RunFolder

ENV_HIGHLIGHTS = ("hostname", "python", "torch", "cuda", "cudnn", "nccl", "driver", "gpu",
                  "gpu_name", "gpu_count", "cpu", "cpu_count", "deepspeed", "git_commit", "git")


def status_counts(records: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        out[r.get("status", "?")] = out.get(r.get("status", "?"), 0) + 1
    return dict(sorted(out.items()))


def env_highlights(env: dict) -> list[tuple[str, str]]:
    flat: dict[str, object] = {}
    for k, v in env.items():
        if isinstance(v, dict):
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items() if not isinstance(vv, (dict, list))})
        elif not isinstance(v, list):
            flat[k] = v
    picked = [k for k in sorted(flat) if k.split(".")[0] in ENV_HIGHLIGHTS
              or k.split(".")[-1] in ENV_HIGHLIGHTS]
    return [(k, str(flat[k])) for k in (picked or sorted(flat)[:10]) if flat[k] is not None]


def summary(run: RunFolder) -> dict:
    return {"suite": str(run.run.get("suite") or run.suite.get("name") or
                         (run.records[0].get("suite") if run.records else "?")),
            "device": str(run.run.get("device", "?")),
            "fingerprint": str(run.run.get("fingerprint", "")),
            "started": str(run.run.get("started_at", run.run.get("started", ""))),
            "finished": str(run.run.get("finished_at", run.run.get("finished", ""))),
            "points": len(run.records), "counts": status_counts(run.records),
            "flags": flag_counts(run.records), "env": env_highlights(run.env)}


def flag_counts(records: list[dict]) -> dict[str, int]:
    """Points per badge, in ``answers.FLAGS`` order: ``{"contended": 3, "noisy": 5}``."""
    out: dict[str, int] = {}
    for r in records:
        for f in point_flags(r):
            out[f] = out.get(f, 0) + 1
    return out


