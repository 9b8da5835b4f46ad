"""The ``tune:`` section of a suite (``tbench tune``, ``harness.run.tune``): objective,
constraints, time budget and the search's own settings."""
from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from harness.suite.errors import FieldError, shown
from harness.suite.schema import _Strict
from harness.suite.sizes import SIZE_HELP, parse_size

OBJECTIVES = ("latency", "tokens_per_s", "peak_memory")


class TuneSpec(_Strict):
    """``tbench tune``: what the search optimises, under which constraints, within which time
    (``harness.run.tune``). The suite's ``sweep`` is the search space."""

    # latency (median step time), tokens_per_s (the same order within one workload),
    # peak_memory, or a weighted pair {time: a, memory: b}: minimise time^a x peak^b
    objective: Any = "latency"
    memory_budget: int | None = None  # bytes ("2GiB" allowed): the measured peak a winner may have
    correctness: bool = True  # finalists checked against their reference twin; one failing is never named
    parity_steps: int = Field(4, ge=1, le=1000)  # a finalist of another precision: loss vs fp32 after N steps
    max_compile_s: float | None = Field(None, gt=0)  # a configuration compiling longer is refused
    budget_s: float = Field(600.0, gt=0)  # wall time of the whole search (one point's timeout over at most)
    eta: int = Field(3, ge=2, le=8)  # successive halving: each rung keeps the best 1/eta
    finalists: int = Field(3, ge=2, le=8)  # compared in pairs at the end
    final_max_rounds: int = Field(12, ge=2, le=100)  # the final's pairs at most (rounds: auto)
    first_window_s: float = Field(0.1, ge=0, le=60)  # rung 0's sampling window; x eta per rung
    final_share: float = Field(0.35, gt=0, lt=1)  # of budget_s kept for the paired final and the checks

    @field_validator("memory_budget", mode="before")
    @classmethod
    def _size(cls, value):
        if value is None:
            return None
        size = parse_size(value)
        if size is None:
            raise FieldError(f"got {shown(str(value))}, allowed: {SIZE_HELP}")
        return size

    @field_validator("objective", mode="before")
    @classmethod
    def _objective(cls, value):
        allowed = f"one of {', '.join(OBJECTIVES)}, or {{time: a, memory: b}} with a, b >= 0, not both 0"
        if isinstance(value, str) and value in OBJECTIVES:
            return value
        if isinstance(value, dict) and value and set(value) <= {"time", "memory"} and all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0
                for w in value.values()) and sum(value.values()) > 0:
            return {k: float(w) for k, w in value.items()}
        raise FieldError(f"got {shown(str(value))}, allowed: {allowed}")
