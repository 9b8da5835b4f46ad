"""The model sources of a suite's ``model`` section, for ``harness.suite.schema.ModelSpec``: the
only place where ``model.hf`` and ``model.module`` values become typed model sources
(``implementations.source``), and where those sources turn back into what a point stores.

    hf_source(value, info) -> HfModelConfig      relative paths from the suite's folder; offline
    module_source(value, info) -> ModuleModelConfig   the factory imported
    one_source(data) -> data                     the rules across keys (one source; preset and
                                                 overrides for tbench's model only)
    stored(spec, data) -> dict                   what a point hashes and stores

Errors are ``FieldError``s whose sub-path names the key under ``model``.
"""
from __future__ import annotations

from typing import Any

from harness.suite.errors import FieldError

FOREIGN = ("hf", "module")  # model sources other than tbench's own Transformer
FOLDER_CONTEXT = "suite_folder"  # validation context key: the folder relative paths are read from


def hf_source(value, info):
    """``model.hf`` -> an HfModelConfig (``implementations.hf``): checked strictly, nothing
    downloaded."""
    if value is None or hasattr(value, "fields_json"):
        return value
    from implementations.hf.config import HfSpecError, resolve
    from implementations.hf.model import HfModelConfig

    try:
        return HfModelConfig.from_spec(resolve(value, (info.context or {}).get(FOLDER_CONTEXT)))
    except HfSpecError as exc:
        raise FieldError(str(exc), subpath=exc.subpath) from None


def module_source(value, info):
    """``model.module`` (with ``model.kwargs``, validated before it) -> a ModuleModelConfig."""
    if value is None or hasattr(value, "target"):
        return value
    from implementations.module_source import ModuleModelConfig, ModuleSpecError

    try:
        return ModuleModelConfig.from_spec(value, (info.data or {}).get("kwargs") or {})
    except ModuleSpecError as exc:
        raise FieldError(str(exc)) from None


def spec_of(source) -> Any:
    """A foreign source as its ``model.hf`` mapping or ``model.module`` target (None: none)."""
    return None if source is None else source.spec()


def one_source(data: Any) -> Any:
    """The raw ``model`` mapping with the derived ``architecture`` dropped, or a FieldError for
    two sources, preset or overrides beside a foreign source, or kwargs without a module."""
    if not isinstance(data, dict):
        return data
    data = {k: v for k, v in data.items() if k != "architecture"}
    given = [k for k in FOREIGN if data.get(k) is not None]
    if len(given) > 1:
        raise FieldError("got both 'hf' and 'module', allowed: one model source", subpath=("module",))
    for key in ("preset", "overrides") if given else ():
        if key in data:
            raise FieldError(f"{key} describes tbench's own Transformer; a model.{given[0]} model "
                             f"takes its fields in model.{given[0]}", subpath=(key,))
    if data.get("kwargs") and data.get("module") is None:
        raise FieldError("kwargs are a model.module factory's arguments; allowed: with module",
                         subpath=("kwargs",))
    return data


def stored(spec, data: dict) -> dict:
    """What a point stores of its model: ``{hf}``, ``{module, kwargs}``, or ``{preset, overrides}``
    as before model sources existed (so those ids stay) plus ``architecture`` when the preset
    has published-architecture fields (``implementations.model.architecture``)."""
    from implementations.model import architecture

    if spec.hf is not None:
        return {"hf": data["hf"]}
    if spec.module is not None:
        return {"module": data["module"], "kwargs": data["kwargs"]}
    arch = architecture(spec.resolved())
    out = {"preset": data["preset"], "overrides": data["overrides"]}
    return dict(out, architecture=arch) if arch else out
