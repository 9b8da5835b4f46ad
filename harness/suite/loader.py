"""A suite file: the ``Suite`` model (the base point, its sweep and per-device profiles) and the
strict loader that reads one.

    load_suite(path) -> Suite          YAML validated at every level
    parse_suite(data, source) -> Suite the same for data already read

Every user error is a :class:`SuiteError` whose lines read
``suites/x.yaml: workload.seq_len: got 0, allowed: integer >= 1``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from harness.suite.errors import FieldError, SuiteError, format_validation_error
from harness.suite.paths import check_override, check_path
from harness.suite.schema import MeasureSpec, ModelSpec, StrategiesSpec, SweepSpec, WorkloadSpec, _Strict


class Suite(_Strict):
    """A suite file: the base point, the sweep over it, and per-device profiles."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    model: ModelSpec = Field(default_factory=ModelSpec)
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec)
    strategies: StrategiesSpec = Field(default_factory=StrategiesSpec)
    measure: MeasureSpec = Field(default_factory=MeasureSpec)
    sweep: SweepSpec = Field(default_factory=SweepSpec)
    # device -> {dotted.path: value}; a list value makes or replaces a sweep axis (harness.suite.sweep)
    profiles: dict[Literal["cpu", "cuda"], dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _paths_exist(self):
        for key, values in self.sweep.grid.items():
            check_path(key, prefix=("sweep", "grid"))
            if not values:
                raise FieldError("got [], allowed: a non-empty list", subpath=("sweep", "grid", key))
        for i, group in enumerate(self.sweep.zip):
            sizes = {len(v) for v in group.values()}
            for key in group:
                check_path(key, prefix=("sweep", "zip", i))
            if not group or 0 in sizes:
                raise FieldError("got an empty group or list, allowed: non-empty lists",
                                 subpath=("sweep", "zip", i))
            if len(sizes) > 1:
                raise FieldError(f"lists of different lengths {sorted(sizes)}; allowed: equal lengths",
                                 subpath=("sweep", "zip", i))
        for i, rule in enumerate(self.sweep.exclude):
            for key in rule:
                check_path(key, prefix=("sweep", "exclude", i))
        for device, entries in self.profiles.items():
            for key, value in entries.items():
                check_override(key, value, prefix=("profiles", device))
        return self


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; raise SuiteError with every problem found."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError([f"{path}: file not found" + ("" if not path.exists() else " (a folder)")])
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SuiteError([f"{path}: {yaml_problem(exc)}"]) from None
    except UnicodeDecodeError:
        raise SuiteError([f"{path}: not a text file"]) from None
    return parse_suite(data, str(path))


def parse_suite(data: Any, source: str) -> Suite:
    if not isinstance(data, dict):
        raise SuiteError([f"{source}: got {type(data).__name__}, allowed: a mapping with 'name', "
                          "'model', 'workload', 'strategies', 'measure', 'sweep', 'profiles'"])
    try:
        return Suite.model_validate(data)
    except ValidationError as exc:
        raise SuiteError(format_validation_error(exc, source, Suite)) from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML error, saying where; a python tag says it is refused."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if "constructor for the tag" in problem:
        return (f"{where}YAML tag refused ({problem.split('tag', 1)[1].strip()}); allowed: plain "
                "mappings, lists, strings, numbers, booleans, null")
    return f"{where}invalid YAML: {problem}"
