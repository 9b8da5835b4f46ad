"""Strategy specs -> strategy objects, for the suite models: the only place where a strategy
name from a YAML file becomes an object (through the strategy class, a strict pydantic
dataclass: ``implementations.registry``).

    build_strategy(axis, "local" | {"name": "local", "window": 64} | object) -> object
    strategy_spec(object) -> {"name": ..., **params}        (registry.to_spec)
    default_strategy(axis) -> the axis's default object

Errors are ``FieldError``s whose sub-path names the bad parameter, with what is allowed and the
near match. YAML and JSON have lists where a strategy holds tuples: they are converted here.
"""
from __future__ import annotations

import typing
from typing import Any

from pydantic import ValidationError

from harness.suite.errors import FieldError, describe_field, shown
from implementations import registry
from implementations.registry import suggest

DEFAULTS = {"attention": "dense", "padding": "fixed", "precision": "fp32", "parallel": "none",
            "ops": "fused", "memory": "none", "compression": "none"}


def default_strategy(axis: str):
    return registry.create(axis, DEFAULTS[axis])


def strategy_spec(strategy) -> dict[str, Any]:
    return registry.to_spec(strategy)


def _spec_error(axis: str, value) -> FieldError:
    return FieldError(f"got {shown(value)}, allowed: a strategy name ({', '.join(registry.names(axis))}) "
                      "or a mapping with 'name' and parameters")


def build_strategy(axis: str, value):
    """A validated strategy object from a name, a spec mapping or an object of that axis."""
    if getattr(value, "axis", None) == axis and not isinstance(value, (str, dict)):
        return value
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise _spec_error(axis, value)
    names = registry.names(axis)
    if "name" not in value:
        raise FieldError(f"required, missing; allowed: {', '.join(names)}", subpath=("name",))
    name = value["name"]
    if name not in names:
        raise FieldError(f"got {shown(name)}, allowed: {', '.join(names)}{suggest(name, names)}",
                         subpath=("name",))
    cls = registry.get_class(axis, name)
    params = {k: _tupled(cls, k, v) for k, v in value.items() if k != "name"}
    try:
        return cls(**params)
    except ValidationError as exc:
        key, message = registry.first_error(cls, exc)
        err = exc.errors(include_url=False)[0]
        if key in params and err["type"] not in ("unexpected_keyword_argument", "value_error"):
            info = registry.field_info(cls, key)
            message = f"got {shown(params[key])}, allowed: {describe_field(info, info.annotation)}"
        raise FieldError(message, subpath=(key,) if key else ()) from None


def _tupled(cls, key: str, value):
    """A YAML list for a tuple-typed parameter, as a tuple."""
    if not isinstance(value, list) or key not in cls.__pydantic_fields__:
        return value
    tp = registry.field_info(cls, key).annotation
    return tuple(value) if tp is tuple or typing.get_origin(tp) is tuple else value


def union_of_params(axis: str) -> list[str]:
    """Every parameter name of every strategy of ``axis`` (for checking sweep paths)."""
    out = ["name"]
    for name in registry.names(axis):
        for f in registry.fields_of(registry.get_class(axis, name)):
            if f.name not in out:
                out.append(f.name)
    return out
