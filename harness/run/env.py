"""The environment a run was measured in, and a fingerprint of what must match to compare runs.

Contract
    collect_env() -> dict (JSON-serialisable; written to RUN_DIR/env.json):
        python, platform, hostname
        torch, cuda (torch.version.cuda), cudnn, nccl   version strings, None where absent
        driver                                           NVIDIA driver version, None without one
        gpu_count, gpu: {name, uuid, memory_total_bytes, power_limit_w, sm_clock_max_mhz,
                         mem_clock_max_mhz, driver_version, cuda_driver_version}  ({} without a GPU)
        cpu: {model, cores_logical, cores_usable (this process's affinity)}, memory_total_bytes
        packages: {distribution name: version or None}  torch, deepspeed, numpy, pandas, pydantic,
                  nvidia-ml-py, triton, tbench ("<version> (source tree)" when not installed)
        git: {commit: sha | "unknown", dirty: bool | "unknown"}  of the project root
        executable                                       the Python interpreter's path
    fingerprint(env) -> str   16 hex chars: sha1 over torch, cuda, gpu name, cpu model,
        cores_usable, python -- what must match for --resume and for comparing runs.
        Not the git commit or dirty flag (code changes are what runs compare), not the hostname.

GPU facts come from NVML (harness.measure.telemetry), never from torch.cuda: collecting the environment
must not create a CUDA context in the runner process. torch is imported inside collect_env()
only, so `import harness.run.env` stays cheap and torch-free.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import psutil

from harness.measure import telemetry

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("torch", "deepspeed", "numpy", "pandas", "pydantic", "nvidia-ml-py", "triton", "tbench")
FINGERPRINT_FIELDS = ("torch", "cuda", "gpu.name", "cpu.model", "cpu.cores_usable", "python")


def _package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    if versions["tbench"] is None:  # running from a source tree that was never pip-installed
        versions["tbench"] = _source_tree_version()
    return versions


def _source_tree_version() -> str | None:
    try:
        text = (PROJECT_ROOT / "pyproject.toml").read_text()
    except OSError:
        return None
    found = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    return f"{found.group(1)} (source tree)" if found else None


def _torch_versions() -> dict[str, str | None]:
    out = {"torch": None, "cuda": None, "cudnn": None, "nccl": None}
    try:
        import torch
    except Exception:
        return out
    out["torch"] = torch.__version__
    out["cuda"] = torch.version.cuda
    try:
        cudnn = torch.backends.cudnn.version()  # loads the library only; no CUDA context
        out["cudnn"] = None if cudnn is None else str(cudnn)
    except Exception:
        pass
    try:
        nccl = torch.cuda.nccl.version()
        out["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl)
    except Exception:
        pass
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _memory_total_bytes() -> int:
    return psutil.virtual_memory().total


def _usable_cores() -> int | None:
    """Cores this process may run on (its affinity: a container or taskset may allow fewer)."""
    try:
        return len(psutil.Process().cpu_affinity())
    except (AttributeError, psutil.Error):  # no affinity API on this platform
        return psutil.cpu_count()


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _git_state() -> dict:
    top = _git("rev-parse", "--show-toplevel")
    # An installed copy inside some unrelated repository must not report that repository's commit.
    if top is None or Path(top.strip()).resolve() != PROJECT_ROOT:
        return {"commit": "unknown", "dirty": "unknown"}
    commit, status = _git("rev-parse", "HEAD"), _git("status", "--porcelain")
    return {"commit": commit.strip() if commit else "unknown",
            "dirty": "unknown" if status is None else bool(status.strip())}


def _gpu_count() -> int:
    if not telemetry.nvml_available():
        return 0
    try:
        return int(telemetry.pynvml.nvmlDeviceGetCount())
    except Exception:
        return 0


def collect_env() -> dict:
    """Everything a reader needs to know about where a run was measured (see module docstring)."""
    versions = _torch_versions()
    gpu = telemetry.device_info(0)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        **versions,
        "driver": gpu.get("driver_version"),
        "gpu_count": _gpu_count(),
        "gpu": gpu,
        "cpu": {"model": _cpu_model(), "cores_logical": os.cpu_count(), "cores_usable": _usable_cores()},
        "memory_total_bytes": _memory_total_bytes(),
        "packages": _package_versions(),
        "git": _git_state(),
        "executable": sys.executable,
    }


def _field(env: dict, dotted: str):
    value = env
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def fingerprint(env: dict) -> str:
    """Short stable hash of FINGERPRINT_FIELDS of an env dict (missing fields hash as null)."""
    picked = {name: _field(env, name) for name in FINGERPRINT_FIELDS}
    canonical = json.dumps(picked, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(canonical.encode()).hexdigest()[:16]
