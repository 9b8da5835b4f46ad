"""How far a measured peak may be from the memory model's prediction before it is a finding.

One constant, shared by the measuring stage (``harness.measure.memory_model.disagreement``) and
the analysis stage (``harness.analyse.report``, ``harness.analyse.frontier_report``); torch-free,
so the analysis stage may import it. ``tests/test_memory_model.py`` says how it was chosen.
"""
from __future__ import annotations

MEM_MODEL_TOLERANCE = 0.3  # |measured / predicted - 1| beyond this is a finding, not noise
