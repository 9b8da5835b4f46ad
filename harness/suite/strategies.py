"""Strategy specs -> strategy objects, for the suite models: the only place where a strategy
name from a YAML file becomes an object (through ``implementations.registry.create``).

    build_strategy(axis, "local" | {"name": "local", "window": 64} | object | None) -> object
    strategy_spec(object) -> {"name": ..., **params}        (registry.to_spec)

Errors are ``FieldError``s whose sub-path names the bad parameter, with the near match.
An axis with no registered strategy yet yields ``None`` by default (``default_strategy``);
naming it in a suite is an error that says none is registered.
"""
from __future__ import annotations

import re
import typing
from typing import Any

from pydantic import TypeAdapter, ValidationError

from harness.suite.errors import FieldError, describe_type, suggest
from implementations import registry

DEFAULTS = {"attention": "dense", "padding": "fixed", "precision": "fp32", "parallel": "none",
            "ops": "fused"}


def default_strategy(axis: str):
    """The axis's default strategy, or None while the axis has no registered strategy."""
    if not registry.names(axis):
        return None
    return registry.create(axis, DEFAULTS[axis])


def strategy_spec(strategy) -> dict[str, Any] | None:
    return None if strategy is None else registry.to_spec(strategy)


def _allowed_text(axis: str) -> str:
    names = registry.names(axis)
    return ", ".join(names) if names else f"none (no {axis} strategy is registered yet)"


def build_strategy(axis: str, value):
    """A validated strategy object from a name, a spec mapping or an object of that axis."""
    names = registry.names(axis)
    if value is None:
        if names:
            raise FieldError(f"got null, allowed: a strategy name ({_allowed_text(axis)}) or a "
                             "mapping with 'name' and parameters")
        return None
    if getattr(value, "axis", None) == axis and not isinstance(value, (str, dict)):
        return value
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise FieldError(f"got {value!r}, allowed: a strategy name ({_allowed_text(axis)}) or a "
                         "mapping with 'name' and parameters")
    if "name" not in value:
        raise FieldError(f"required, missing; allowed: {_allowed_text(axis)}", subpath=("name",))
    name = value["name"]
    if name not in names:
        raise FieldError(f"got {name!r}, allowed: {_allowed_text(axis)}{suggest(name, names)}",
                         subpath=("name",))
    cls = registry.get_class(axis, name)
    hints = typing.get_type_hints(cls)
    params = [f.name for f in registry.fields_of(cls)]
    value = dict(value)
    for key, given in value.items():
        if key == "name":
            continue
        if key not in params:
            raise FieldError(f"unknown key {key!r}{suggest(key, params)}; allowed for {name!r}: "
                             f"name{''.join(', ' + p for p in params)}", subpath=(key,))
        hint = hints.get(key, Any)
        if isinstance(given, list) and (hint is tuple or typing.get_origin(hint) is tuple):
            value[key] = given = tuple(given)  # YAML and JSON have lists; frozen strategies tuples
        _check_type(hint, given, key)
    try:
        return registry.create(axis, value)
    except registry.StrategyError as exc:
        message = str(exc).split(": ", 1)[-1]  # drop "attention strategy 'local': "
        bad = [p for p in params if re.search(rf"\b{re.escape(p)}\b", message)]
        raise FieldError(message, subpath=tuple(bad[:1])) from None


def _check_type(tp, given, key: str) -> None:
    try:
        adapter = TypeAdapter(tp)
    except Exception:  # a type pydantic cannot check (e.g. a torch type): the strategy checks it
        return
    try:
        adapter.validate_python(given, strict=True)
    except ValidationError:
        raise FieldError(f"got {given!r}, allowed: {describe_type(tp)}", subpath=(key,)) from None


def union_of_params(axis: str) -> list[str]:
    """Every parameter name of every strategy of ``axis`` (for checking sweep paths)."""
    out = ["name"]
    for name in registry.names(axis):
        for f in registry.fields_of(registry.get_class(axis, name)):
            if f.name not in out:
                out.append(f.name)
    return out
