"""One small registry per strategy axis, and the one way a strategy is validated.

A strategy is a frozen pydantic dataclass that is its own config: ``@register(axis, name)``
turns the class into one (strict types, no unknown keys, frozen) and records it. Each field is a
``Field(default, description=..., ge=...)``: the constraints validate it, the description is what
``tbench list`` prints. Rules across fields stay in ``__post_init__`` (raise ``ValueError``
naming the field). :func:`create` builds a strategy from the plain dict of a suite; it is the only
place where a strategy name is a string. Invalid parameters raise ``pydantic.ValidationError``
from the class, which :func:`create` turns into one ``StrategyError`` line.

Every strategy derives from its axis's base class (``AttentionStrategy``, ``PaddingStrategy``,
``PrecisionStrategy``, ``ParallelStrategy``, ``OpsStrategy``, all from :class:`Strategy`) and offers:
  * ``label``: a readable name carrying its parameters (``local_w128``);
  * ``not_supported_reasons(ctx)``: why it cannot run in a context (empty list = it can).
Class names follow one rule: the strategy's name, then the axis (``LocalAttention``,
``FixedPadding``, ``AmpBF16Precision``, ``ZeroParallel``, ``EagerOps``).
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import typing
from dataclasses import dataclass, field
from typing import Any

import pydantic
from pydantic import ConfigDict, ValidationError

AXES = ("attention", "padding", "precision", "parallel", "ops", "memory", "compression")
# Upper bounds of strategy parameters that have no natural one: every numeric parameter has one,
# so 10**20 is refused when the suite loads (``tests/implementations/test_attention_registry.py`` checks each).
# A length in tokens is also held to the model's max_seq_len (``AttentionStrategy.length_params``).
LENGTH_CAP = 1 << 20  # tokens: no model here has a million positions
COUNT_CAP = 1 << 20  # steps, batches, layers, blocks
RANKS_CAP = 1024  # processes of one point
TIMEOUT_CAP_S = 86_400.0  # a day
SEED_CAP = 2**32 - 1  # what numpy seeds take
STRICT = ConfigDict(strict=True, extra="forbid", arbitrary_types_allowed=True)

_REGISTRY: dict[str, dict[str, type]] = {axis: {} for axis in AXES}
_LOADED = False


def suggest(word: Any, choices) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or ``""``: the one near-match
    helper of the project."""
    near = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else ""


@dataclass(frozen=True)
class Context:
    """Where a strategy is asked to run: enough to say whether it can."""

    device: str = "cpu"  # "cpu" or "cuda"
    precision: str = "fp32"  # the point's precision strategy label
    nproc: int = 1  # ranks of the point
    max_nproc: int = 1  # ranks this machine can host
    workload: str = "forward"  # train | forward | generate
    gpu_capability: tuple[int, int] | None = None  # CUDA compute capability (from NVML); None: unknown
    decoder_only: bool = False  # the model has no encoder: every self-attention is causal
    extra: dict = field(default_factory=dict)


class Strategy:
    """What every strategy of every axis has; ``name`` and ``axis`` are set by :func:`register`."""

    name: typing.ClassVar[str] = "?"
    axis: typing.ClassVar[str] = "?"

    @property
    def label(self) -> str:
        """Readable name carrying the parameters that differ from the defaults."""
        return self.name

    def not_supported_reasons(self, ctx: Context) -> list[str]:
        """Why this strategy cannot run in ``ctx`` (empty: it can)."""
        return []


class StrategyError(ValueError):
    """A strategy name or parameter that is not allowed; the message says what is."""


def register(axis: str, name: str):
    """Class decorator: make ``cls`` a frozen, strict pydantic dataclass and record it as
    strategy ``name`` of ``axis``."""
    if axis not in _REGISTRY:
        raise KeyError(f"unknown axis {axis!r}; axes are {AXES}")

    def deco(cls):
        cls = pydantic.dataclasses.dataclass(frozen=True, config=STRICT)(cls)
        cls.name = name
        cls.axis = axis
        _REGISTRY[axis][name] = cls
        return cls

    return deco


def _load_all() -> None:
    """Import every axis package so each strategy file runs its ``@register``."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for axis in AXES:
            importlib.import_module(f"implementations.{axis}")


def names(axis: str) -> list[str]:
    _load_all()
    return sorted(_REGISTRY[axis])


def get_class(axis: str, name: str) -> type:
    _load_all()
    if axis not in _REGISTRY:
        raise StrategyError(f"unknown axis {axis!r}; allowed: {', '.join(AXES)}")
    try:
        return _REGISTRY[axis][name]
    except KeyError:
        raise StrategyError(f"unknown {axis} strategy {name!r}{suggest(name, _REGISTRY[axis])}; "
                            f"allowed: {', '.join(sorted(_REGISTRY[axis]))}") from None


def fields_of(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def field_info(cls: type, name: str):
    """The pydantic ``FieldInfo`` of a strategy parameter (annotation, constraints, description)."""
    return cls.__pydantic_fields__[name]


def create(axis: str, spec: dict[str, Any] | str):
    """Build a strategy from ``{"name": ..., **params}`` (or a bare name); ``StrategyError``
    naming the first bad parameter otherwise."""
    if isinstance(spec, str):
        spec = {"name": spec}
    spec = dict(spec)
    if "name" not in spec:
        raise StrategyError(f"{axis}: missing 'name'; allowed: {', '.join(names(axis))}")
    name = spec.pop("name")
    cls = get_class(axis, name)
    try:
        return cls(**spec)
    except ValidationError as exc:
        key, message = first_error(cls, exc)
        raise StrategyError(f"{axis} strategy {name!r}: {key + ': ' if key else ''}{message}") from None


def first_error(cls: type, exc: ValidationError) -> tuple[str | None, str]:
    """(parameter, message) of the first problem pydantic found building ``cls``."""
    err = exc.errors(include_url=False)[0]
    key = str(err["loc"][0]) if err["loc"] else None
    params = [f.name for f in fields_of(cls)]
    if err["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        return key, (f"unknown key {key!r}{suggest(key, params)}; allowed for {cls.name!r}: "
                     f"name{''.join(', ' + p for p in params)}")
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, Exception):  # a cross-field rule of __post_init__
        message = str(cause)
        words = message.replace("=", " ").replace(":", " ").split()
        named = sorted((words.index(p), p) for p in params if p in words)  # first mentioned
        return (named[0][1] if named else key), message
    given = repr(err.get("input"))
    given = given if len(given) <= 60 else given[:57] + "..."
    return key, f"got {given}, {err['msg'].replace('Input should be', 'allowed:')}"


ADDED_LATER = {"added_later": True}  # ``json_schema_extra`` of a parameter added to a strategy
# after points were recorded with it: ``to_spec`` leaves it out at its default, so those points
# keep their ids (a point id hashes its spec) and their runs resume and gate as before


def to_spec(strategy) -> dict[str, Any]:
    """The plain dict a strategy was (or could have been) created from."""
    cls, out = type(strategy), {"name": strategy.name}
    for f in fields_of(cls):
        value, info = getattr(strategy, f.name), field_info(cls, f.name)
        if not (value == info.default and (info.json_schema_extra or {}).get("added_later")):
            out[f.name] = value
    return out


def describe(axis: str) -> list[dict[str, Any]]:
    """Name, summary, documented parameters and (where the axis states it: ``refuses``) what it
    cannot run, of each strategy of ``axis`` (for ``tbench list``)."""
    rows = []
    for name in names(axis):
        cls = _REGISTRY[axis][name]
        params = []
        for f in fields_of(cls):
            info = field_info(cls, f.name)
            tp = info.annotation
            params.append({"name": f.name, "type": getattr(tp, "__name__", str(tp)),
                           "default": info.get_default(call_default_factory=True),
                           "doc": info.description or ""})
        doc = (cls.__doc__ or "").strip().splitlines()
        rows.append({"name": name, "summary": doc[0] if doc else "", "params": params,
                     "refuses": getattr(cls, "refuses", None)})
    return rows
