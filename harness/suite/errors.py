"""User errors of suites and points, as lines that name the file, the field path, what was
given and what is allowed:

    suites/x.yaml: workload.seq_len: got 0, allowed: integer >= 1
    suites/x.yaml: workload.seq_lne: unknown key 'seq_lne' (did you mean 'seq_len'?); allowed: ...

``format_validation_error`` turns a pydantic ``ValidationError`` into such lines by walking the
model classes along each error's location (for the allowed keys and the field's constraints).
"""
from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel, ValidationError


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


def suggest(word: Any, choices) -> str:
    near = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else ""


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
    text = describe_type(tp)
    for meta in getattr(info, "metadata", []):
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if isinstance(meta, getattr(annotated_types, attr.capitalize())):
                text += f" {sign} {getattr(meta, attr)}"
        if getattr(meta, "pattern", None):
            text += f" matching {meta.pattern}"
    return text


def _given(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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
        return loc, (f"unknown key {loc[-1]!r}{suggest(loc[-1], allowed)}; "
                     f"allowed: {', '.join(allowed)}")
    if kind == "missing":
        return loc, "required, missing"
    if loc and loc[-1] == "[key]":  # a mapping key of the wrong kind (profiles: gpu)
        loc = loc[:-1]
        allowed = [str(a) for a in typing.get_args(_key_type(root, loc[:-1]))]
        return loc, f"unknown key {loc[-1]!r}{suggest(loc[-1], allowed)}; allowed: {', '.join(allowed)}"
    info, tp = field_at(root, loc)
    if tp is None:
        return loc, f"got {_given(err.get('input'))}: {err['msg']}"
    hint = suggest(err.get("input"), typing.get_args(_unwrap(tp))) if kind == "literal_error" else ""
    return loc, f"got {_given(err.get('input'))}, allowed: {describe_field(info, tp)}{hint}"


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
