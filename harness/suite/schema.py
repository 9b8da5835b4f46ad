"""The sections of a suite as pydantic v2 models: model, workload (and its lengths),
strategies, measure, sweep. ``harness.suite.loader.Suite`` puts them together;
``harness.suite.point.Point`` is one resolved experiment made of them.

Every model forbids unknown keys and is strict about types (no "128" for 128). Strategies are
created once, here, through ``harness.suite.strategies.build_strategy`` and held as objects;
they serialise back with ``registry.to_spec``. Errors raised inside validators are
``FieldError``s, turned into ``file: path: got ..., allowed: ...`` lines by
:mod:`harness.suite.errors`.
"""
from __future__ import annotations

import dataclasses
import os
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from harness.suite import sources
from harness.suite.errors import FieldError, describe_type, shown, suggest
from harness.suite.strategies import build_strategy, default_strategy, strategy_spec
from implementations.model import ModelConfig
from implementations.padding.lengths import PARAMS as LENGTH_PARAMS
from implementations.presets import PRESETS

MODEL_FIELDS_FROM_STRATEGIES = ("attention", "ops")  # ModelConfig fields set by strategies
FOLDER_CONTEXT = sources.FOLDER_CONTEXT  # validation context key: the folder relative paths are read from


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
    """tbench's Transformer (a preset plus ModelConfig overrides), a transformers model (``hf``) or
    an nn.Module factory (``module``, ``kwargs``): ``harness.suite.sources``; ``source`` is typed.
    ``preset`` names the model in records: a foreign source's label (``hf:<name>``), never written."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    preset: str = "tiny"
    overrides: dict[str, Any] = Field(default_factory=dict)
    kwargs: dict[str, Any] = Field(default_factory=dict)  # module: the factory's arguments
    hf: Annotated[Any, BeforeValidator(sources.hf_source), PlainSerializer(sources.spec_of)] = None
    module: Annotated[Any, BeforeValidator(sources.module_source), PlainSerializer(sources.spec_of)] = None

    _one_source = model_validator(mode="before")(sources.one_source)

    @field_validator("overrides")
    @classmethod
    def _known_fields(cls, value: dict) -> dict:
        fields = model_config_fields()
        for key, given in value.items():
            if key not in fields:
                raise FieldError(f"unknown key {shown(key)}{suggest(key, fields)}; allowed: "
                                 f"{', '.join(fields)}", subpath=(key,))
            try:
                TypeAdapter(fields[key]).validate_python(given, strict=True)
            except ValidationError:
                raise FieldError(f"got {shown(given)}, allowed: {describe_type(fields[key])}",
                                 subpath=(key,)) from None
        return value

    @model_validator(mode="after")
    def _buildable(self):
        """A known preset, and ModelConfig's cross-field rules (d_model divisible by n_heads, ...)."""
        if (foreign := self.hf or self.module) is not None:
            object.__setattr__(self, "preset", foreign.label)  # the model's name in records
            return self
        if self.preset not in PRESETS:
            raise FieldError(f"got {shown(self.preset)}, allowed: {', '.join(preset_names())}"
                             f"{suggest(self.preset, PRESETS)}", subpath=("preset",))
        try:
            ModelConfig.from_preset(self.preset, **self.overrides)
        except (TypeError, ValueError) as exc:
            field = re.search(r"ModelConfig\.(\w+)", str(exc))
            raise FieldError(str(exc), subpath=("overrides", field.group(1)) if field else ()) from None
        return self

    @model_serializer(mode="wrap")
    def _stored(self, handler):
        return sources.stored(self, handler(self))

    @property
    def source(self):
        """A ModelConfig (dense, fused until a point's strategies apply), HfModelConfig or ModuleModelConfig."""
        return self.hf or self.module or ModelConfig.from_preset(self.preset, **self.overrides)

    def resolved(self) -> dict[str, Any]:
        """The shape by ModelConfig's names: the preset with its overrides, or ``source.shape()``."""
        if self.hf is not None or self.module is not None:
            return self.source.shape()
        return {**PRESETS[self.preset], **self.overrides}


class LengthsSpec(_Strict):
    """Distribution of sequence lengths (sampled by implementations.padding.lengths.sample_lengths).

    ``path`` (distribution ``file``): a relative path is read from the suite file's folder (the
    validation context's ``FOLDER_CONTEXT``; the current folder without one) and stored absolute,
    so a point names the same file in the worker, which runs in its own folder. The file must
    exist and be readable when the suite is loaded and when each point is built.
    """

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

    @field_validator("path")
    @classmethod
    def _readable_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or info.data.get("distribution") != "file":
            return value  # a path the distribution does not use: refused below
        return readable_file(value, (info.context or {}).get(FOLDER_CONTEXT))

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


def readable_file(given: str, folder: Path | None) -> str:
    """The absolute path of ``given`` (a relative one joined to ``folder``, else to the current
    folder), or a FieldError naming the path and why it cannot be read."""
    path = Path(os.path.abspath(Path(folder or Path.cwd()) / given))  # an absolute given wins
    try:
        if path.is_dir():
            problem = "a folder, not a file"
        else:
            with open(path, "rb"):
                return str(path)
    except FileNotFoundError:
        problem = "file not found"
    except (OSError, ValueError) as exc:  # no permission, a name too long, a NUL byte
        problem = f"cannot be read ({getattr(exc, 'strerror', None) or exc})"
    where = str(path) if len(str(path)) <= 1000 else shown(str(path))
    relative = "" if os.path.isabs(given) else "; a relative path is read from the suite file's folder"
    raise FieldError(f"got {shown(given)}: {problem}: {where}{relative}; allowed: a readable file")


class WorkloadSpec(_Strict):
    """What one step does and on which data."""

    # prefill: the prompt (seq_len) fills the KV cache and gives the first token; decode: one
    # token at position context_len with the cache filled (harness.measure.steps_inference)
    kind: Literal["train", "forward", "generate", "prefill", "decode"] = "forward"
    batch_size: int = Field(8, ge=1)
    seq_len: int = Field(128, ge=1)  # max length; encoder-decoder uses it for src and tgt
    new_tokens: int = Field(16, ge=1)  # generate only
    lengths: LengthsSpec | None = None  # None: every sequence is seq_len long
    num_batches: int = Field(4, ge=1)  # distinct batches, cycled
    parity_steps: int = Field(0, ge=0)  # train: loss after N steps vs fp32 from the same seed
    # decode only (required there): cached positions before the measured step; serialised only
    # when set, so the ids of other points do not move
    context_len: int | None = Field(None, ge=1)

    @model_serializer(mode="wrap")
    def _context_when_set(self, handler):
        data = handler(self)
        if self.context_len is None:
            data.pop("context_len", None)
        return data

    @model_validator(mode="after")
    def _context_for_decode(self):
        if self.kind == "decode" and self.context_len is None:
            raise FieldError("required for kind 'decode' (cached positions before the step)",
                             subpath=("context_len",))
        if self.kind != "decode" and self.context_len is not None:
            raise FieldError(f"got {self.context_len}, allowed: only with kind 'decode' "
                             f"(kind is {self.kind!r})", subpath=("context_len",))
        return self


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
    # activation checkpointing (implementations.memory); default none
    memory: _strategy_field("memory") = Field(default_factory=lambda: default_strategy("memory"))
    # weights quantized or pruned for inference (implementations.compression); default none
    compression: _strategy_field("compression") = Field(
        default_factory=lambda: default_strategy("compression"))


AUTO_ONLY = ("min_rounds", "max_rounds", "budget_s")  # MeasureSpec fields only rounds: auto reads


class MeasureSpec(_Strict):
    """Warm-up, sampling and timeout of one point."""

    warmup_iters: int = Field(3, ge=0)
    warmup_s: float = Field(0.2, ge=0)
    min_samples: int = Field(10, ge=10)
    min_time_s: float = Field(0.5, ge=0)
    max_samples: int = Field(200, ge=10)
    steps_per_sample: int = Field(1, ge=1)  # steps timed as one sample (per-step time reported)
    timeout_s: float = Field(600, gt=0)  # per round (one worker process)
    # each round is a fresh worker process; "auto": blocks of rounds are added until every
    # comparison of the point's group is decided (harness.records.pairs), within budget_s
    rounds: int | Literal["auto"] = Field("auto")
    min_rounds: int = Field(3, ge=2, le=100)  # auto: the rounds before the first look
    max_rounds: int = Field(20, ge=2, le=100)  # auto: a comparison still undecided stops here
    budget_s: float = Field(300.0, gt=0)  # auto: measuring time a group may spend, all rounds
    # torch intra-op threads per rank; None (auto): chosen by the run from the cores free when
    # it starts -- a quiet machine gives each side of a duet its own cores, a machine where
    # other work holds cores one thread per point (2 threads beside a busy core ran 3-51x
    # slower, and spread 30x wider, than 1), the same for every point of the run
    threads: int | None = Field(None, ge=1)
    # a round is contended when other processes used more than this many CPU cores beyond
    # what the point left free (cores minus its threads) during its sampling
    contention_cores: float = Field(0.25, gt=0)
    on_contention: Literal["flag", "retry", "fail"] = "retry"
    contention_wait_s: float = Field(10.0, ge=0)  # retry: wait this long at most for a quiet CPU
    # the last round adds a profiled pass after its timed samples (harness.measure.profiling);
    # serialised only when on, so turning it on changes a point's id and leaving it off does not
    profile: bool = False
    # bytes a worker may allocate (harness.measure.budget: RLIMIT_DATA on CPU, the allocator's
    # fraction on GPU); set by ``tbench frontier``, serialised only when set, like ``profile``
    memory_budget_bytes: int | None = Field(None, ge=1)
    check: bool = False  # the model vs its reference twin (implementations.correctness); tbench tune

    @model_serializer(mode="wrap")
    def _profile_when_on(self, handler):
        data = handler(self)
        if self.rounds != "auto":  # the auto-only settings: left out, so fixed-round ids stay
            for key in AUTO_ONLY:
                data.pop(key, None)
        for key in ("profile", "memory_budget_bytes", "check"):  # off: left out, so ids stay
            if getattr(self, key) in (False, None):
                data.pop(key, None)
        return data

    @model_validator(mode="after")
    def _cap_above_floor(self):
        if isinstance(self.rounds, int) and not 1 <= self.rounds <= 100:
            raise FieldError(f"got {self.rounds}, allowed: 1..100 or 'auto'", subpath=("rounds",))
        if self.max_rounds < self.min_rounds:
            raise FieldError(f"got {self.max_rounds}, allowed: >= min_rounds ({self.min_rounds})",
                             subpath=("max_rounds",))
        if self.max_samples < self.min_samples:
            raise FieldError(f"got {self.max_samples}, allowed: >= min_samples ({self.min_samples})",
                             subpath=("max_samples",))
        return self


class LauncherSpec(_Strict):
    """Where the points run (``harness.run.slurm``): ``local`` or ``slurm`` (a job per round)."""

    name: Literal["local", "slurm"] = "local"
    partition: str | None = None  # Slurm partition; None: the cluster's default
    account: str | None = None  # Slurm account to charge
    time_min: int | None = Field(None, ge=1)  # job time limit, minutes; None: from measure.timeout_s
    gpus_per_point: int | None = Field(None, ge=0)  # None: the point's ranks on cuda, 0 on cpu
    cpus_per_point: int | None = Field(None, ge=1)  # None: one per rank
    nodes_per_point: int = Field(1, ge=1)  # a multi-rank point's nodes (nproc / nodes ranks each)
    sbatch_args: list[str] = Field(default_factory=list)  # extra sbatch options, e.g. --qos=high
    array_parallelism: int = Field(256, ge=1)  # at most this many jobs of one array at once

    @field_validator("sbatch_args")
    @classmethod
    def _long_options(cls, args: list[str]) -> list[str]:
        for i, arg in enumerate(args):
            if not re.fullmatch(r"--[a-z][a-z0-9-]*(=.+)?", arg):
                raise FieldError(f"got {arg!r}, allowed: a long sbatch option like --qos=high",
                                 subpath=(i,))
        return args


class SweepSpec(_Strict):
    """Axes of a sweep; paths are dotted field paths (``workload.seq_len``), checked on load."""

    grid: dict[str, list[Any]] = Field(default_factory=dict)  # cartesian product
    zip: list[dict[str, list[Any]]] = Field(default_factory=list)  # each group moves together
    exclude: list[dict[str, Any]] = Field(default_factory=list)  # drop points matching all pairs


class CompareSpec(_Strict):
    """Which comparisons a run decides, and how it measures them (``harness.run.design``).

    A group is the points that differ only in their strategies (same model, workload, measure,
    device). ``baseline``: ``{path: value}`` like an exclude rule (``{strategies.attention:
    dense}``); each group's first point matching it, else the first point whose attention is
    dense, else its first point. Not part of a point: the same points compare either way."""

    baseline: dict[str, Any] = Field(default_factory=dict)
    pairs: Literal["baseline", "all"] = "baseline"  # each point vs the baseline, or every pair
    # auto: duet where the machine has the free cores for two single-process CPU points, else
    # interleaved; independent: rounds interleaved across the whole sweep, no pairs
    design: Literal["auto", "interleaved", "duet", "independent"] = "auto"
    resolution: float = Field(0.05, gt=0, lt=1)  # "equal within" this; smaller differences undecided
    confidence: float = Field(0.95, gt=0.5, lt=1)
    seed: int = Field(0, ge=0)  # the random order inside each block
