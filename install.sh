#!/usr/bin/env bash
# Install tbench and what it needs on a fresh machine (no virtualenv needed).
#   bash install.sh          # torch (reused if present), deepspeed, tbench
#   bash install.sh --test   # the same, plus the test extras, Debian's chromium and a Slurm
#                            # (slurmctld slurmd munge slurmdbd mariadb-server) for tests/run/test_slurm.py
# TBENCH_TORCH_VERSION overrides the torch pin used when no torch is installed.
# TBENCH_SKIP_EXTENSIONS=1 skips building DeepSpeed's C++ extensions
# (otherwise built once, into this environment).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
TORCH_PIN=${TBENCH_TORCH_VERSION:-2.13.0}
export PIP_DISABLE_PIP_VERSION_CHECK=1

if "$PY" -c "import torch" 2>/dev/null; then
    echo "install.sh: reusing installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
    # A pinned version: an unpinned 'torch' would pull the newest CUDA build (several GB).
    echo "install.sh: installing torch==$TORCH_PIN"
    "$PY" -m pip install -q "torch==$TORCH_PIN"
fi

if ! "$PY" -c "import deepspeed" 2>/dev/null; then
    # DeepSpeed's sdist imports torch at build time: build against the torch just installed.
    echo "install.sh: installing deepspeed"
    DS_BUILD_OPS=0 "$PY" -m pip install -q --no-build-isolation "deepspeed>=0.15"
fi

extras=""
if [ "${1:-}" = "--test" ]; then
    extras="[test]"
    if ! command -v chromium >/dev/null 2>&1; then
        echo "install.sh: installing Debian's chromium for the browser test"
        if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
        $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq chromium >/dev/null \
            || echo "install.sh: chromium not installed; the browser test will be skipped"
    fi
    if ! command -v slurmctld >/dev/null 2>&1 || ! command -v mariadbd >/dev/null 2>&1; then
        # tests/run/test_slurm.py starts a real single-node cluster (the package scripts start nothing)
        echo "install.sh: installing Debian's Slurm, munge and MariaDB for the Slurm tests"
        if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
        $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install \
            -y -qq slurmctld slurmd slurm-client munge slurmdbd mariadb-server >/dev/null \
            || echo "install.sh: Slurm not installed; the Slurm tests will be skipped"
    fi
fi
"$PY" -m pip install -q -e ".$extras"
# pyenv exposes new console scripts through shims only after a rehash.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi

# DeepSpeed JIT-compiles its C++ extensions (its "ops") on first use; build the ones a CPU ZeRO
# point needs now, once, into this environment's own folder (harness.run.extensions),
# not inside a point's timeout.
if [ "${TBENCH_SKIP_EXTENSIONS:-0}" != 1 ]; then
    echo "install.sh: building DeepSpeed's CPU extensions (a few minutes the first time)"
    "$PY" -m harness.run.extensions --device cpu \
        || echo "install.sh: DeepSpeed extensions not built;" \
                "tbench run will build them before the first ZeRO point"
fi
echo "install.sh: done ($(command -v tbench))"
