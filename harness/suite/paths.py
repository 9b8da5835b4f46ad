"""Dotted field paths of a suite (``workload.seq_len``, ``strategies.attention.window``,
``model.overrides.d_model``), as used by sweep axes, exclude rules, profiles and ``--set``.

    check_path("workload.seq_lne")  -> FieldError "unknown key 'seq_lne' (did you mean 'seq_len'?)"
    normalize("model.d_model")      -> "model.overrides.d_model"  (shorthand for ModelConfig fields)
    get_at(data, path) / set_at(data, path, value)  on the plain-dict form of a suite

A path must name a real field: the suite models' fields, ModelConfig fields under
``model.overrides``, and under ``strategies.<axis>`` ``name`` or a parameter of some strategy
of that axis (whether it fits the chosen strategy is checked when each point is built).
"""
from __future__ import annotations

import copy
from typing import Any

from harness.suite.errors import FieldError, shown, suggest
from harness.suite.schema import LengthsSpec, MeasureSpec, ModelSpec, WorkloadSpec, model_config_fields
from harness.suite.strategies import union_of_params
from implementations import registry

SECTIONS = ("model", "workload", "strategies", "measure")
SWEEP_PARTS = ("sweep.grid", "sweep.zip", "sweep.exclude")  # whole-part replacements (profiles, --set)
TOP_LEVEL = ("name", "description")  # settable with --set / profiles, never swept


def _fields(model_cls) -> list[str]:
    return list(model_cls.model_fields)


def normalize(path: str) -> str:
    """``model.<ModelConfig field>`` -> ``model.overrides.<field>``; other paths unchanged."""
    parts = path.split(".")
    fields = model_config_fields()
    if len(parts) == 2 and parts[0] == "model" and parts[1] not in ModelSpec.model_fields \
            and parts[1] in fields:
        return f"model.overrides.{parts[1]}"
    return path


def _unknown(key: str, allowed, subpath) -> FieldError:
    allowed = list(allowed)
    return FieldError(f"unknown key {shown(key)}{suggest(key, allowed)}; allowed: {', '.join(allowed)}",
                      subpath=subpath)


def check_path(path: str, prefix: tuple = ()) -> str:
    """The normalised path, or a FieldError located at ``prefix + (path,)``."""
    at = prefix + (path,)
    if not isinstance(path, str) or not path:
        raise FieldError(f"got {shown(path)}, allowed: a dotted field path like workload.seq_len", at)
    path = normalize(path)
    parts = path.split(".")
    if parts[0] not in SECTIONS:
        raise _unknown(parts[0], SECTIONS, at)
    head, rest = parts[0], parts[1:]
    if head == "strategies":
        if rest and rest[0] not in registry.AXES:
            raise _unknown(rest[0], registry.AXES, at)
        if len(rest) > 1 and rest[1] not in union_of_params(rest[0]):
            raise _unknown(rest[1], union_of_params(rest[0]), at)
        limit = 2
    elif head == "model":
        if rest and rest[0] not in ModelSpec.model_fields:
            raise _unknown(rest[0], _fields(ModelSpec) + list(model_config_fields()), at)
        fields = model_config_fields()
        if rest[:1] == ["overrides"] and len(rest) > 1 and rest[1] not in fields:
            raise _unknown(rest[1], fields, at)
        limit = 2 if rest[:1] == ["overrides"] else 1
    elif head == "workload":
        if rest and rest[0] not in WorkloadSpec.model_fields:
            raise _unknown(rest[0], _fields(WorkloadSpec), at)
        if rest[:1] == ["lengths"] and len(rest) > 1 and rest[1] not in LengthsSpec.model_fields:
            raise _unknown(rest[1], _fields(LengthsSpec), at)
        limit = 2 if rest[:1] == ["lengths"] else 1
    else:
        if rest and rest[0] not in MeasureSpec.model_fields:
            raise _unknown(rest[0], _fields(MeasureSpec), at)
        limit = 1
    if len(rest) > limit:
        raise FieldError(f"got {shown(path)}: {'.'.join(parts[:limit + 1])} has no sub-fields", at)
    return path


def check_override(key: str, value: Any, prefix: tuple = ()) -> str:
    """Like check_path, also allowing whole sweep parts, the top-level name/description and a
    ``compare.<field>`` (settable, never swept)."""
    if key in SWEEP_PARTS or key in TOP_LEVEL:
        return key
    if isinstance(key, str) and key.split(".")[0] == "compare":
        from harness.suite.schema import CompareSpec

        field = key.partition(".")[2]
        if field not in CompareSpec.model_fields:
            raise _unknown(field, CompareSpec.model_fields, prefix + (key,))
        return key
    if isinstance(key, str) and key.split(".")[0] == "sweep":
        raise _unknown(key, SWEEP_PARTS, prefix + (key,))
    return check_path(key, prefix)


def get_at(data: dict, path: str, default=None):
    node: Any = data
    for part in path.split("."):
        if isinstance(node, str) and part == "name":  # a strategy given by name alone
            return node
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def set_at(data: dict, path: str, value: Any) -> None:
    """Set ``path`` in the plain-dict suite ``data`` (a strategy given as a name becomes a mapping)."""
    parts = path.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str):  # strategies.attention: local -> {name: local}
            child = {"name": child}
        elif not isinstance(child, dict):
            child = {}
        node[part] = child
        node = child
    node[parts[-1]] = copy.deepcopy(value)
