"""Suites and points: the pydantic v2 models of a benchmark suite, and its strict loader.

    load_suite(path) -> Suite          YAML (yaml.safe_load) validated at every level
    Point.build(...) / Point.to_json() / Point.from_json(dict)   one resolved experiment

Every model forbids unknown keys and is strict about types (no "128" for 128). Strategies are
created once, here, through ``implementations.registry.create`` and held as objects; they
serialise back with ``registry.to_spec``. An axis whose registry is still empty (a strategy
package not written yet) holds ``None``, and only when the suite does not name that axis.

Every user error is a :class:`SuiteError` whose lines read
``suites/x.yaml: workload.seq_len: got 0, allowed: integer >= 1``
(:mod:`harness.errors` turns pydantic errors into those lines).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, TypeAdapter,
                      ValidationError, field_validator, model_validator)

from harness.errors import FieldError, SuiteError, describe_type, format_validation_error, suggest
from harness.strategies import build_strategy, default_strategy, strategy_spec
from implementations import registry
from implementations.model import ModelConfig
from implementations.padding.lengths import PARAMS as LENGTH_PARAMS
from implementations.presets import PRESETS

MODEL_FIELDS_FROM_STRATEGIES = ("attention", "ops")  # ModelConfig fields set by strategies


def model_config_fields() -> dict[str, Any]:
    """ModelConfig's user-settable fields (``model.overrides`` keys) and their types."""
    hints = typing.get_type_hints(ModelConfig)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(ModelConfig)
            if f.init and f.name not in MODEL_FIELDS_FROM_STRATEGIES}


def preset_names() -> list[str]:
    return sorted(PRESETS)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ModelSpec(_Strict):
    """The model: a preset of implementations.presets plus ModelConfig field overrides."""

    preset: str = "tiny"
    overrides: dict[str, Any] = Field(default_factory=dict)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise FieldError(f"got {value!r}, allowed: {', '.join(preset_names())}"
                             f"{suggest(value, PRESETS)}")
        return value

    @field_validator("overrides")
    @classmethod
    def _known_fields(cls, value: dict) -> dict:
        fields = model_config_fields()
        for key, given in value.items():
            if key not in fields:
                raise FieldError(f"unknown key {key!r}{suggest(key, fields)}; allowed: "
                                 f"{', '.join(fields)}", subpath=(key,))
            try:
                TypeAdapter(fields[key]).validate_python(given, strict=True)
            except ValidationError:
                raise FieldError(f"got {given!r}, allowed: {describe_type(fields[key])}",
                                 subpath=(key,)) from None
        return value

    @model_validator(mode="after")
    def _buildable(self):
        """Cross-field rules of ModelConfig (d_model divisible by n_heads, ...)."""
        try:
            ModelConfig.from_preset(self.preset, **self.overrides)
        except (TypeError, ValueError) as exc:
            field = re.search(r"ModelConfig\.(\w+)", str(exc))
            raise FieldError(str(exc), subpath=("overrides", field.group(1)) if field else ()) from None
        return self

    def resolved(self) -> dict[str, Any]:
        """The preset's fields with the overrides applied."""
        return {**PRESETS[self.preset], **self.overrides}


class LengthsSpec(_Strict):
    """Distribution of sequence lengths (sampled by implementations.padding.lengths.sample_lengths)."""

    distribution: Literal["fixed", "uniform", "normal", "lognormal", "zipf", "file"]
    length: int | None = Field(None, ge=1)
    low: int | None = Field(None, ge=1)
    high: int | None = Field(None, ge=1)
    mean: float | None = None
    median: float | None = Field(None, gt=0)
    std: float | None = Field(None, ge=0)
    sigma: float | None = Field(None, ge=0)
    alpha: float | None = Field(None, gt=0)
    path: str | None = None
    format: Literal["auto", "lengths", "text"] | None = None

    @model_validator(mode="after")
    def _params_of_distribution(self):
        required, optional = LENGTH_PARAMS[self.distribution]
        given = {k for k in type(self).model_fields if k != "distribution" and getattr(self, k) is not None}
        for key in sorted(given - set(required) - set(optional)):
            raise FieldError(f"not used by distribution {self.distribution!r}; allowed: "
                             f"{', '.join(required + optional) or 'nothing'}", subpath=(key,))
        for key in required:
            if key not in given:
                raise FieldError(f"required for distribution {self.distribution!r}", subpath=(key,))
        if self.distribution == "lognormal" and not given & {"mean", "median"}:
            raise FieldError("lognormal needs 'mean' (of log-length) or 'median' (tokens)",
                             subpath=("median",))
        if self.low is not None and self.high is not None and self.low > self.high:
            raise FieldError(f"got {self.low} > high {self.high}, allowed: low <= high", subpath=("low",))
        return self


class WorkloadSpec(_Strict):
    """What one step does and on which data."""

    kind: Literal["train", "forward", "generate"] = "forward"
    batch_size: int = Field(8, ge=1)
    seq_len: int = Field(128, ge=1)  # max length; encoder-decoder uses it for src and tgt
    new_tokens: int = Field(16, ge=1)  # generate only
    lengths: LengthsSpec | None = None  # None: every sequence is seq_len long
    num_batches: int = Field(4, ge=1)  # distinct batches, cycled
    parity_steps: int = Field(0, ge=0)  # train: loss after N steps vs fp32 from the same seed


def _strategy_field(axis: str):
    return Annotated[Any, BeforeValidator(lambda v: build_strategy(axis, v)),
                     PlainSerializer(strategy_spec)]


class StrategiesSpec(_Strict):
    """One strategy object per axis (defaults: dense / fixed / fp32 / none / fused)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    attention: _strategy_field("attention") = Field(default_factory=lambda: default_strategy("attention"))
    padding: _strategy_field("padding") = Field(default_factory=lambda: default_strategy("padding"))
    precision: _strategy_field("precision") = Field(default_factory=lambda: default_strategy("precision"))
    parallel: _strategy_field("parallel") = Field(default_factory=lambda: default_strategy("parallel"))
    ops: _strategy_field("ops") = Field(default_factory=lambda: default_strategy("ops"))


class MeasureSpec(_Strict):
    """Warm-up, sampling and timeout of one point."""

    warmup_iters: int = Field(3, ge=0)
    warmup_s: float = Field(0.2, ge=0)
    min_samples: int = Field(10, ge=10)
    min_time_s: float = Field(0.5, ge=0)
    max_samples: int = Field(200, ge=10)
    timeout_s: float = Field(600, gt=0)

    @model_validator(mode="after")
    def _cap_above_floor(self):
        if self.max_samples < self.min_samples:
            raise FieldError(f"got {self.max_samples}, allowed: >= min_samples ({self.min_samples})",
                             subpath=("max_samples",))
        return self


class SweepSpec(_Strict):
    """Axes of a sweep; paths are dotted field paths (``workload.seq_len``), checked on load."""

    grid: dict[str, list[Any]] = Field(default_factory=dict)  # cartesian product
    zip: list[dict[str, list[Any]]] = Field(default_factory=list)  # each group moves together
    exclude: list[dict[str, Any]] = Field(default_factory=list)  # drop points matching all pairs


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
    # device -> {dotted.path: value}; a list value makes or replaces a sweep axis (harness.sweep)
    profiles: dict[Literal["cpu", "cuda"], dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _paths_exist(self):
        from harness.paths import check_override, check_path

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


class PointConfig(_Strict):
    """Everything that defines one experiment; its canonical JSON gives the point id."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    device: Literal["cpu", "cuda"]
    model: ModelSpec
    workload: WorkloadSpec
    strategies: StrategiesSpec
    measure: MeasureSpec

    @model_validator(mode="after")
    def _fits_model(self):
        cfg = self.model.resolved()
        longest = self.workload.seq_len + (self.workload.new_tokens if self.workload.kind == "generate" else 0)
        if longest > cfg["max_seq_len"]:
            what = "seq_len + new_tokens" if self.workload.kind == "generate" else "seq_len"
            raise FieldError(f"got {longest} ({what}), allowed: <= the model's max_seq_len "
                             f"{cfg['max_seq_len']} (raise model.overrides.max_seq_len)",
                             subpath=("workload", "seq_len"))
        return self

    def point_id(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json", include=set(PointConfig.model_fields)),
                               sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(canonical.encode()).hexdigest()[:12]


class Point(PointConfig):
    """One fully resolved experiment, as the runner hands it to a worker."""

    suite: str
    index: int = Field(ge=0)
    id: str = Field(pattern=r"^[0-9a-f]{12}$")
    label: str
    seed: int = Field(ge=0)

    @model_validator(mode="after")
    def _id_matches_config(self):
        if self.id != self.point_id():
            raise FieldError(f"got {self.id!r}, allowed: {self.point_id()!r} (the hash of the config)",
                             subpath=("id",))
        return self

    @classmethod
    def build(cls, config: PointConfig, *, suite: str, index: int, label: str) -> "Point":
        pid = config.point_id()
        return cls(**dict(config), suite=suite, index=index, id=pid, label=label, seed=seed_of(pid))

    def config(self) -> PointConfig:
        return PointConfig(**{k: getattr(self, k) for k in PointConfig.model_fields})

    def to_json(self) -> dict:
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: dict) -> "Point":
        return cls.model_validate(data)


def seed_of(point_id: str) -> int:
    """Per-point seed: the first 32 bits of the id (fits numpy and torch seeds)."""
    return int(point_id[:8], 16)


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


__all__ = ["LengthsSpec", "MeasureSpec", "ModelSpec", "Point", "PointConfig", "StrategiesSpec",
           "Suite", "SuiteError", "SweepSpec", "WorkloadSpec", "load_suite", "parse_suite",
           "registry", "seed_of"]
