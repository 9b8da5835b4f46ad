"""harness.run.env: the recorded environment and the fingerprint that --resume and compare rely on."""
from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from harness.measure import telemetry
from harness.run import env
from tests.fake_nvml import GIB, FakeGPU, FakeNVML

KEYS = {"python", "platform", "hostname", "torch", "cuda", "cudnn", "nccl", "driver", "gpu_count",
        "gpu", "cpu", "memory_total_bytes", "packages", "git"}


@pytest.fixture(scope="module")
def real_env():
    return env.collect_env()


def test_collect_env_has_the_keys_and_is_json(real_env):
    assert KEYS <= set(real_env)
    json.dumps(real_env)
    import torch
    assert real_env["torch"] == torch.__version__
    assert real_env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert real_env["cpu"]["cores_logical"] >= 1 and real_env["cpu"]["model"]
    assert real_env["memory_total_bytes"] > 0
    assert set(env.PACKAGES) == set(real_env["packages"])
    assert real_env["packages"]["pydantic"] and real_env["packages"]["nvidia-ml-py"]


def test_no_driver_means_no_gpu_and_no_driver(real_env):
    if telemetry.nvml_available():
        pytest.skip("an NVIDIA driver is present on this machine")
    assert real_env["gpu"] == {} and real_env["driver"] is None and real_env["gpu_count"] == 0


def test_git_commit_and_dirty_flag_in_the_project_repo(real_env):
    git = real_env["git"]
    if git["commit"] == "unknown":
        pytest.skip("the project is not a git checkout here")
    assert len(git["commit"]) == 40 and isinstance(git["dirty"], bool)


def test_git_outside_a_repo_is_unknown(monkeypatch, tmp_path):
    monkeypatch.setattr(env, "PROJECT_ROOT", tmp_path)
    assert env._git_state() == {"commit": "unknown", "dirty": "unknown"}


def test_gpu_facts_come_from_nvml(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(telemetry, "pynvml", FakeNVML([FakeGPU(name="NVIDIA H100 80GB HBM3")] * 2))
    monkeypatch.setattr(telemetry, "_init_state", {"pid": None, "error": None})
    found = env.collect_env()
    assert found["gpu"]["name"] == "NVIDIA H100 80GB HBM3"
    assert found["gpu"]["memory_total_bytes"] == 80 * GIB
    assert found["driver"] == "550.54.15" and found["gpu_count"] == 2


def test_fingerprint_is_stable_and_tracks_what_must_match(real_env):
    fp = env.fingerprint(real_env)
    assert len(fp) == 16 and fp == env.fingerprint(copy.deepcopy(real_env))
    same = copy.deepcopy(real_env)
    same["git"] = {"commit": "0" * 40, "dirty": True}
    same["hostname"] = "elsewhere"
    assert env.fingerprint(same) == fp
    for path, value in [(("torch",), "9.9.9"), (("cuda",), "12.4"), (("python",), "3.12.0"),
                        (("gpu", "name"), "NVIDIA H200"), (("cpu", "cores_usable"), 999),
                        (("cpu", "model"), "another CPU")]:
        changed = copy.deepcopy(real_env)
        target = changed
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value
        assert env.fingerprint(changed) != fp, path


def test_importing_env_does_not_import_torch():
    code = "import sys, harness.run.env; sys.exit('torch' in sys.modules)"
    root = str(env.PROJECT_ROOT)
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0
