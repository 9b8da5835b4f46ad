"""One small registry per strategy axis.

A strategy is a frozen dataclass that is its own config. It registers itself with
``@register(axis, name)``; the loader turns the plain dict of a suite into an object with
:func:`create`, which is the only place where a strategy name is a string.

Every strategy offers:
  * ``label``: a readable name carrying its parameters (``local_w128``);
  * ``not_supported_reasons(ctx)``: why it cannot run in a context (empty list = it can).
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import typing
from dataclasses import dataclass, field
from typing import Any

AXES = ("attention", "padding", "precision", "parallel", "ops")

_REGISTRY: dict[str, dict[str, type]] = {axis: {} for axis in AXES}
_LOADED = False


@dataclass(frozen=True)
class Context:
    """Where a strategy is asked to run: enough to say whether it can."""

    device: str = "cpu"  # "cpu" or "cuda"
    dtype: str = "fp32"  # precision label of the point
    nproc: int = 1  # ranks of the point
    max_nproc: int = 1  # ranks this machine can host
    workload: str = "forward"  # train | forward | generate
    extra: dict = field(default_factory=dict)


class StrategyError(ValueError):
    """A strategy name or parameter that is not allowed; the message says what is."""


def register(axis: str, name: str):
    """Class decorator: record ``cls`` as strategy ``name`` of ``axis``."""
    if axis not in _REGISTRY:
        raise KeyError(f"unknown axis {axis!r}; axes are {AXES}")

    def deco(cls):
        cls.name = name
        cls.axis = axis
        _REGISTRY[axis][name] = cls
        return cls

    return deco


def _load_all() -> None:
    """Import every axis package so each strategy file runs its ``@register``."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for axis in AXES:
        try:
            importlib.import_module(f"implementations.{axis}")
        except ModuleNotFoundError as exc:  # an axis not built yet
            if exc.name != f"implementations.{axis}":
                raise


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
        allowed = sorted(_REGISTRY[axis])
        near = difflib.get_close_matches(str(name), allowed, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise StrategyError(
            f"unknown {axis} strategy {name!r}{hint}; allowed: {', '.join(allowed)}"
        ) from None


def fields_of(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def create(axis: str, spec: dict[str, Any] | str):
    """Build a strategy from ``{"name": ..., **params}`` (or a bare name)."""
    if isinstance(spec, str):
        spec = {"name": spec}
    spec = dict(spec)
    if "name" not in spec:
        raise StrategyError(f"{axis}: missing 'name'; allowed: {', '.join(names(axis))}")
    name = spec.pop("name")
    cls = get_class(axis, name)
    allowed = {f.name for f in fields_of(cls)}
    for key in spec:
        if key not in allowed:
            near = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise StrategyError(
                f"{axis} strategy {name!r} has no parameter {key!r}{hint}; "
                f"allowed: {', '.join(sorted(allowed)) or 'none'}"
            )
    try:
        return cls(**spec)
    except (TypeError, ValueError) as exc:
        raise StrategyError(f"{axis} strategy {name!r}: {exc}") from None


def to_spec(strategy) -> dict[str, Any]:
    """The plain dict a strategy was (or could have been) created from."""
    out = {"name": strategy.name}
    out.update({f.name: getattr(strategy, f.name) for f in fields_of(type(strategy))})
    return out


def describe(axis: str) -> list[dict[str, Any]]:
    """Name, summary and documented parameters of each strategy of ``axis`` (for ``tbench list``)."""
    rows = []
    for name in names(axis):
        cls = _REGISTRY[axis][name]
        hints = typing.get_type_hints(cls)
        params = []
        for f in fields_of(cls):
            default = f.default if f.default is not dataclasses.MISSING else None
            params.append(
                {
                    "name": f.name,
                    "type": getattr(hints.get(f.name), "__name__", str(hints.get(f.name))),
                    "default": default,
                    "doc": f.metadata.get("doc", ""),
                }
            )
        doc = (cls.__doc__ or "").strip().splitlines()
        rows.append({"name": name, "summary": doc[0] if doc else "", "params": params})
    return rows


def param(default, doc: str):
    """A documented dataclass field: ``block_size: int = param(128, "keys per block")``."""
    return field(default=default, metadata={"doc": doc})
