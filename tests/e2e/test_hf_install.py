"""``transformers`` installs beside the pinned torch and never replaces it.

pip replaces torch only if a package requires a torch the installed one does not satisfy:
transformers 5.x requires torch only behind extras (``transformers[torch]``), which tbench does
not ask for, so ``pip install -e .`` keeps the torch install.sh put there. Checked here from the
installed metadata, and that the torch imported is that distribution: on a CPU build, the
version install.sh pins (``TORCH_PIN``, 2.13.0).
"""
from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

import torch
import transformers
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[2]


def test_transformers_requires_no_torch_outside_its_extras():
    for line in md.requires("transformers") or []:
        req = Requirement(line)
        if req.name == "torch":
            assert req.marker is not None and "extra" in str(req.marker), line


def test_the_pyproject_range_holds_the_installed_transformers_and_asks_no_torch_extra():
    text = (ROOT / "pyproject.toml").read_text()
    (spec,) = re.findall(r'"transformers([^"\[]*)"', text)
    assert SpecifierSet(spec).contains(md.version("transformers"))
    assert "transformers[" not in text
    assert transformers.__version__ == md.version("transformers")


def test_torch_is_the_installed_distribution_and_the_pinned_cpu_build():
    assert torch.__version__ == md.version("torch")  # one torch, not a second one beside it
    pin = re.search(r"TORCH_PIN=\$\{TBENCH_TORCH_VERSION:-([\d.]+)\}", (ROOT / "install.sh").read_text())
    if torch.version.cuda is None and pin:  # a GPU machine keeps its own CUDA build (install.sh)
        assert torch.__version__.split("+")[0] == pin.group(1)
