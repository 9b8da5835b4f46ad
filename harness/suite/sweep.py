"""Sweep expansion: a validated Suite + a device (+ command-line overrides) -> list[Point].

    resolve(suite, device, overrides, variants=()) -> Suite   profile of the device, the named
                                                 variants, then ``--set``s, applied
    expand(resolved_suite, device)    -> [Point] every point built (and so validated) up front
    parse_sets(["workload.seq_len=[128,256]"]) -> [(path, value)]   values read as YAML, by the
                                                                   suite loader (same limits)

Profiles, variants and overrides are ``{dotted.path: value}``: a scalar pins the field (and removes any
sweep axis on it or under it); a list makes the path a sweep axis or replaces that axis's values
(in ``grid`` or in its ``zip`` group); ``sweep.grid`` / ``sweep.zip`` / ``sweep.exclude`` replace
that part of the sweep. Order: suite file, then ``profiles.<device>``, then each
``variants.<name>`` asked for (``--variant quick``: the same experiment sized for a short run), then
``--set`` in order.

Expansion: the cartesian product of the grid axes (in file order, the first varying slowest)
and the zip groups (each group's lists move together), minus points matching an ``exclude``
rule (every path of the rule equal; a strategy axis matches its name, its label or a sub-mapping
of its spec). A sweep of more than ``MAX_POINTS`` points is refused before any is built. Point ids
hash the resolved config (``PointConfig.point_id``); seeds derive from ids. Relative file paths
(``workload.lengths.path``), from the file, a profile or ``--set``, are read from the suite
file's folder (``Suite.context()``).
"""
from __future__ import annotations

import copy
import itertools
import math
from typing import Any

import yaml
from pydantic import ValidationError

from harness.suite.errors import FieldError, SuiteError, clip, dotted, format_validation_error, shown, suggest
from harness.suite.loader import Suite, load_suite, read_yaml, yaml_problem
from harness.suite.paths import SWEEP_PARTS, TOP_LEVEL, check_override, get_at, normalize, set_at
from harness.suite.point import Point, PointConfig
from harness.suite.strategies import build_strategy, default_strategy

MAX_ERROR_LINES = 20
MAX_POINTS = 2_000  # each is built and validated up front (~2 ms) and runs for seconds or more


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``."""
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_sets(items: list[str]) -> list[tuple[str, Any]]:
    """``PATH=VALUE`` strings -> (path, value); the path is checked, the value read as YAML."""
    out = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SuiteError([f"--set {shown(item)}: allowed: PATH=VALUE, e.g. workload.seq_len=256 "
                              "or workload.seq_len=[128,256]"])
        try:
            value = read_yaml(text)
        except yaml.YAMLError as exc:
            raise SuiteError([f"--set {clip(key)}: value {shown(text)}: {yaml_problem(exc)}"]) from None
        try:
            check_override(key, value)
        except FieldError as exc:
            raise SuiteError([f"--set {clip(key)}: {exc}"]) from None
        out.append((key, value))
    return out


def _apply(data: dict, key: str, value: Any) -> str:
    """Apply one override to the plain-dict suite; returns the normalised path."""
    sweep = data["sweep"]
    if key in SWEEP_PARTS:
        sweep[key.split(".")[1]] = copy.deepcopy(value)
        return key
    if key in TOP_LEVEL:
        data[key] = value
        return key
    if key.startswith("compare."):  # how the run compares, not a field of any point
        set_at(data, key, value)
        return key
    path = normalize(key)
    if isinstance(value, list):
        for group in sweep["zip"]:
            if path in group:
                group[path] = value
                return path
        sweep["grid"][path] = value
        return path
    pinned = lambda p: p == path or p.startswith(path + ".")  # noqa: E731
    sweep["grid"] = {p: v for p, v in sweep["grid"].items() if not pinned(p)}
    groups = [{p: v for p, v in g.items() if not pinned(p)} for g in sweep["zip"]]
    sweep["zip"] = [g for g in groups if g]
    set_at(data, path, value)
    return path


def _origin_finder(origins: dict[str, str]):
    def origin(loc) -> str | None:
        at = dotted(loc)
        if at in origins:
            return origins[at]
        above = [p for p in origins if at.startswith(p + ".")]  # the value came with a parent
        below = [p for p in origins if p.startswith(at + ".")]  # a swept parameter of this field
        best = max(above, key=len) if above else (min(below, key=len) if below else None)
        return origins[best] if best else None

    return origin


def resolve(suite: Suite, device: str, overrides: list[tuple[str, Any]] = (),
            source: str = "suite", variants: list[str] = ()) -> Suite:
    """The suite for ``device``: its profile, the named ``variants`` and the overrides applied,
    profiles and variants dropped."""
    for name in variants:
        if name not in suite.variants:
            allowed = ", ".join(suite.variants) or "none (the suite defines no variants)"
            raise SuiteError([f"--variant {shown(name)}: not a variant of {source}; allowed: "
                              f"{allowed}{suggest(name, suite.variants)}"])
        if device not in suite.variants[name]:
            raise SuiteError([f"--variant {name}: {source} sizes it for "
                              f"{', '.join(suite.variants[name])} only, not {device}"])
    data = suite.model_dump(mode="json")
    data.update(device=device, profiles={}, variants={})
    sweep = data["sweep"]
    sweep["grid"] = {normalize(p): v for p, v in sweep["grid"].items()}
    sweep["zip"] = [{normalize(p): v for p, v in g.items()} for g in sweep["zip"]]
    origins = {}
    entries = [(k, v, f"profiles.{device}.{k}") for k, v in suite.profiles.get(device, {}).items()]
    entries += [(k, v, f"variants.{name}.{device}.{k}") for name in variants
                for k, v in suite.variants[name][device].items()]
    entries += [(k, v, f"--set {k}") for k, v in overrides]
    for key, value, label in entries:
        origins[_apply(data, key, value)] = label
    try:
        return Suite.model_validate(data, context=suite.context())
    except ValidationError as exc:
        raise SuiteError(format_validation_error(exc, source, Suite, origin=_origin_finder(origins))) from None


def _axes(suite: Suite) -> list[tuple[list[str], list[tuple], str]]:
    """(paths, value tuples, where) per axis: one per grid path, one per zip group."""
    axes = [([p], [(v,) for v in values], f"sweep.grid.{p}") for p, values in suite.sweep.grid.items()]
    for i, group in enumerate(suite.sweep.zip):
        axes.append((list(group), list(zip(*group.values())), f"sweep.zip[{i}]"))
    return axes


def matches(rule: dict, data: dict) -> bool:
    """Whether the plain-dict point ``data`` matches an exclude (or baseline) rule."""
    for path, want in rule.items():
        have = get_at(data, normalize(path))
        if have == want:
            continue
        parts = normalize(path).split(".")
        if parts[0] == "strategies" and len(parts) == 2 and have is not None:
            spec = {"name": have} if isinstance(have, str) else have
            if isinstance(want, dict) and all(spec.get(k) == v for k, v in want.items()):
                continue
            if isinstance(want, str) and want in (spec.get("name"), _label(parts[1], spec)):
                continue
        return False
    return True


def _label(axis: str, spec) -> str | None:
    try:
        strategy = build_strategy(axis, spec)
    except (FieldError, ValueError):
        return None
    return getattr(strategy, "label", None)


def _compact(value: Any) -> str:
    """A short readable form of a swept value: ``lognormal(median=32,sigma=1.0)``."""
    if isinstance(value, dict):
        head = value.get("name") or value.get("distribution") or ""
        args = ",".join(f"{k}={_compact(v)}" for k, v in sorted(value.items())
                        if k not in ("name", "distribution") and v is not None)
        return f"{head}({args})" if head and args else head or args
    if isinstance(value, list):
        return "[" + ",".join(_compact(v) for v in value) + "]"
    return str(value)


def label_of(cfg: PointConfig, assignment: dict[str, Any]) -> str:
    """``local_w128/fused/S4096/forward``: attention, ops, other non-default or swept strategies,
    sequence length, workload kind, then any other swept field as ``field=value``."""
    s = cfg.strategies
    parts = [s.attention.label, s.ops.label]
    for axis in ("padding", "precision", "parallel", "memory", "compression"):
        obj = getattr(s, axis)
        swept = any(p.startswith(f"strategies.{axis}") for p in assignment)
        if swept or obj != default_strategy(axis):
            parts.append(obj.label)
    parts += [f"S{cfg.workload.seq_len}", cfg.workload.kind]
    for path, value in assignment.items():
        if not path.startswith("strategies.") and path not in ("workload.seq_len", "workload.kind") \
                and value is not None:  # a field unset at this point (decode's context_len on prefill)
            parts.append(f"{path.split('.')[-1]}={_compact(value)}")
    return "/".join(str(p) for p in parts)


def expand(suite: Suite, device: str, source: str = "suite") -> list[Point]:
    """Every point of a resolved suite, in a deterministic order, each one validated."""
    base = suite.model_dump(mode="json", include={"model", "workload", "strategies", "measure"})
    axes = _axes(suite)
    total = math.prod(len(values) for _, values, _ in axes)
    if total > MAX_POINTS:
        sizes = " x ".join(f"{len(values)} ({at})" for _, values, at in axes if len(values) > 1)
        raise SuiteError([f"{source}: sweep: {total:,} points ({sizes}); allowed: at most "
                          f"{MAX_POINTS:,} (split the suite)"])
    built, errors = [], {}  # error line -> the points it appears in
    for combo in itertools.product(*[values for _, values, _ in axes]):
        assignment, where = {}, {}
        for (paths, _, at), values in zip(axes, combo):
            for path, value in zip(paths, values):
                assignment[path], where[path] = value, at if at.startswith("sweep.grid") else f"{at}.{path}"
        data = copy.deepcopy(base)
        for path in sorted(assignment, key=lambda p: p.count(".")):  # whole strategy before its params
            set_at(data, path, assignment[path])
        if any(matches(rule, data) for rule in suite.sweep.exclude):
            continue
        try:
            built.append((PointConfig.model_validate({**data, "device": device},
                                                     context=suite.context()), assignment))
        except ValidationError as exc:
            context = ", ".join(f"{p}={shown(v)}" for p, v in assignment.items())
            for line in format_validation_error(exc, source, PointConfig, origin=_origin_finder(where)):
                errors.setdefault(line, []).append(context)
    if errors:
        raise SuiteError(_error_lines(errors))
    if not built:
        raise SuiteError([f"{source}: sweep.exclude: every point is excluded; nothing to run"])
    return _number(built, suite.name, source)


def _error_lines(errors: dict[str, list[str]]) -> list[str]:
    lines = []
    for line, contexts in errors.items():
        if contexts[0]:
            more = f" and {len(contexts) - 1} more point(s)" if len(contexts) > 1 else ""
            line += f" (in the point {contexts[0]}{more})"
        lines.append(line)
    extra = len(lines) - MAX_ERROR_LINES
    return lines[:MAX_ERROR_LINES] + ([f"... and {extra} more"] if extra > 0 else [])


def _number(built: list, suite_name: str, source: str) -> list[Point]:
    points, seen = [], {}
    for index, (cfg, assignment) in enumerate(built):
        point = Point.build(cfg, suite=suite_name, index=index, label=label_of(cfg, assignment))
        if point.id in seen:
            raise SuiteError([f"{source}: sweep: points {seen[point.id]} and {index} are the same "
                              f"experiment ({point.label}); remove the repeated value"])
        seen[point.id] = index
        points.append(point)
    return points


def points_for(suite: Suite, device: str, overrides: list[tuple[str, Any]] = (),
               source: str = "suite", variants: list[str] = ()) -> tuple[Suite, list[Point]]:
    """Resolve for ``device`` (``auto`` allowed) and expand: (resolved suite, points)."""
    device = resolve_device(device)
    resolved = resolve(suite, device, overrides, source, variants)
    return resolved, expand(resolved, device, source)


def load_points(path, device: str | None = None, sets: list[str] = (),
                variants: list[str] = ()) -> tuple[Suite, list[Point]]:
    """Load a suite file, apply its profile for ``device`` (None: the suite's own ``device``
    field; ``auto``: a GPU if torch sees one), the named variants and the ``--set`` strings;
    every point built."""
    suite = load_suite(path)
    overrides = parse_sets(list(sets))
    return points_for(suite, device or suite.device, overrides, source=str(path), variants=variants)
