"""User errors of suites and points, as lines that name the file, the field path, what was
given and what is allowed:

    suites/x.yaml: workload.seq_len: got 0, allowed: integer >= 1
    suites/x.yaml: workload.seq_lne: unknown key 'seq_lne' (did you mean 'seq_len'?); allowed: ...

``format_validation_error`` turns a pydantic ``ValidationError`` into such lines by walking the
model classes along each error's location (for the allowed keys and the field's constraints).
"""
from __future__ import annotations

import reprlib
import types
import typing
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel, ValidationError

from implementations.registry import suggest  # noqa: F401  (the one near-match helper)


class SuiteError(Exception):
    """A suite, a sweep or an override that cannot run; ``lines`` says why, one problem a line."""

    def __init__(self, lines: list[str]):
        self.lines = list(dict.fromkeys(lines))  # drop repeats, keep order
        super().__init__("\n".join(self.lines))


class FieldError(ValueError):
    """Raised inside validators: ``subpath`` extends the failing field's location."""

    def __init__(self, message: str, subpath: tuple = ()):
        super().__init__(message)
        self.subpath = tuple(subpath)


def dotted(loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unwrap(tp):
    """``X | None`` -> X and ``Annotated[X, ...]`` -> X."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def field_at(root: type[BaseModel], loc) -> tuple[Any, Any]:
    """(FieldInfo or None, annotation) of the field at ``loc`` under model ``root``; (None, None)
    where the location is not a model field."""
    info, tp = None, root
    for part in loc:
        tp = _unwrap(tp)
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if part not in tp.model_fields:
                return None, None
            info = tp.model_fields[part]
            tp = info.annotation
        elif origin is dict:
            info, tp = None, typing.get_args(tp)[1]
        elif origin is list:
            info, tp = None, typing.get_args(tp)[0]
        else:
            return None, None
    return info, tp


def describe_type(tp) -> str:
    names = {int: "integer", float: "number", str: "text", bool: "true or false",
             dict: "a mapping", list: "a list"}
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return describe_type(typing.get_args(tp)[0])
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        parts = [describe_type(a) for a in args if a is not type(None)]
        return " or ".join(parts + (["null"] if type(None) in args else []))
    if origin in names:
        return names[origin]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "a mapping with keys " + ", ".join(tp.model_fields)
    return names.get(tp, getattr(tp, "__name__", "anything"))


def describe_field(info, tp) -> str:
    """``an integer >= 1 and <= 1048576``: the type and every bound of a field."""
    text = describe_type(tp)
    bounds = []
    for meta in getattr(info, "metadata", []):
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if isinstance(meta, getattr(annotated_types, attr.capitalize())):
                bounds.append(f"{sign} {getattr(meta, attr):g}" if isinstance(getattr(meta, attr), float)
                              else f"{sign} {getattr(meta, attr)}")
        if getattr(meta, "pattern", None):
            text += f" matching {meta.pattern}"
    return text + (" " + " and ".join(bounds) if bounds else "")


def _bounded_repr() -> reprlib.Repr:
    shown = reprlib.Repr()
    shown.maxlevel, shown.maxstring, shown.maxother, shown.maxlong = 3, 60, 60, 40
    shown.maxlist = shown.maxtuple = shown.maxdict = shown.maxset = shown.maxfrozenset = 6
    return shown


_SHOWN = _bounded_repr()


def shown(value) -> str:
    """A user value as it appears in an error line: ``repr`` for a short one, bounded in length,
    time and memory for any other (reprlib looks at a few items of a few levels, so a huge or
    alias-expanded value is never walked or printed whole)."""
    return clip(_SHOWN.repr(value))


def clip(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters, ``...`` marking the cut."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def error_line(err: dict, root: type[BaseModel]) -> tuple[tuple, str]:
    """(location, message) of one pydantic error dict."""
    loc, kind = tuple(err["loc"]), err["type"]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        return loc + cause.subpath, str(cause)
    if isinstance(cause, Exception):
        return loc, str(cause)
    if kind == "extra_forbidden":
        info, tp = field_at(root, loc[:-1])
        allowed = list(getattr(_unwrap(tp), "model_fields", {}))
        return loc, (f"unknown key {shown(loc[-1])}{suggest(loc[-1], allowed)}; "
                     f"allowed: {', '.join(allowed)}")
    if kind == "missing":
        return loc, "required, missing"
    if loc and loc[-1] == "[key]":  # a mapping key of the wrong kind (profiles: gpu)
        loc = loc[:-1]
        key_type = _key_type(root, loc[:-1])
        if typing.get_origin(key_type) is Literal:
            allowed = [str(a) for a in typing.get_args(key_type)]
            return loc, (f"unknown key {shown(loc[-1])}{suggest(loc[-1], allowed)}; allowed: "
                         f"{', '.join(allowed)}")
        pattern = next((m.pattern for m in typing.get_args(key_type)[1:]
                        if getattr(m, "pattern", None)), None)
        return loc, (f"got key {shown(loc[-1])}, allowed: a name matching {pattern} (lower case "
                     "letters, digits, '_' and '-', a letter first)" if pattern else
                     f"got key {shown(loc[-1])}, allowed: {describe_type(key_type)}")
    info, tp = field_at(root, loc)
    given = err.get("input")
    if tp is None:
        return loc, f"got {shown(given)}: {err['msg']}"
    literal = kind == "literal_error" and isinstance(given, str)
    hint = suggest(given, typing.get_args(_unwrap(tp))) if literal else ""
    return loc, f"got {shown(given)}, allowed: {describe_field(info, tp)}{hint}"


def _key_type(root, loc):
    _, tp = field_at(root, loc)
    args = typing.get_args(_unwrap(tp))
    return args[0] if args else None


def format_validation_error(exc: ValidationError, source: str, root: type[BaseModel],
                            prefix: tuple = (), origin=None) -> list[str]:
    """Lines ``source: path: message``; ``origin(loc)`` may rename where a value came from."""
    lines = []
    for err in exc.errors(include_url=False):
        loc, message = error_line(err, root)
        where = origin(loc) if origin else None
        lines.append(f"{source}: {where or dotted(prefix + loc)}: {message}")
    return lines
