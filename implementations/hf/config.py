"""A suite's ``model.hf`` mapping -> the config fields of one ``transformers`` model, checked.

    resolve(spec, folder) -> Resolved(fields, checkpoint, name)     raises HfSpecError
    shape(fields) -> {d_model, n_heads, n_kv_heads, d_ff, n_*_layers, max_seq_len, ...}

``spec`` is one of
  * ``{config: path/to/config.json, ...fields}``: the file's fields, then the given ones on top;
  * ``{config: path/to/checkpoint_folder}``: its ``config.json``, and its weights (safetensors or
    ``pytorch_model.bin``) when the folder has them: ``checkpoint`` is then the folder, and no
    field may be changed (the weights are of that config);
  * ``{model_type: llama, ...fields}``: transformers' defaults for that type, with the fields;
  * ``{config: gpt2}``, a name that is no local path: a hub name. Nothing is ever downloaded
    (``HF_HUB_OFFLINE=1`` is set wherever a model is built): the local Hugging Face cache is
    read (``huggingface_hub.try_to_load_from_cache``), else refused in one line.
A relative path is read from ``folder`` (the suite file's). ``name`` (optional) labels the model
in records; by default the config file's stem, the hub name or the model type.

What is checked (an ``HfSpecError`` naming the key, what was given and what is allowed): the
keys (a field the model type's config class does not have is refused with the nearest one,
since transformers itself would keep a typo silently), the model type (one transformers knows
with a causal-LM or seq2seq-LM head), and that the model builds: it is built on the meta device
(no memory, no weights), which also gives ``implementations.hf.model`` its layer structure.

``fields`` always holds ``model_type``; it is what a point stores (so a point's id follows the
content of a config file, not where the file lies), with ``name`` and ``checkpoint`` beside it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from implementations.registry import suggest

RESERVED = ("config", "model_type", "name", "checkpoint")  # spec keys that are not config fields
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no download, ever (before transformers is imported)


class HfSpecError(ValueError):
    """A ``model.hf`` problem; ``subpath`` is the key under ``model.hf`` it is about."""

    def __init__(self, message: str, subpath: tuple = ()):
        super().__init__(message)
        self.subpath = tuple(subpath)


@dataclass(frozen=True)
class Resolved:
    fields: dict  # config fields, model_type included
    checkpoint: str | None  # a folder whose weights are loaded; None: random weights
    name: str


def _json_object(path: Path, key: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HfSpecError(f"{path}: not a readable JSON config ({exc}); allowed: a transformers "
                          "config.json", (key,)) from None
    if not isinstance(data, dict):
        raise HfSpecError(f"{path}: got a JSON {type(data).__name__}, allowed: a JSON object of "
                          "config fields", (key,))
    return data


def _from_hub_cache(name: str) -> Path | None:
    """The cached snapshot folder of hub model ``name`` (its config.json cached), or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 -- a name the hub would refuse is simply not cached
        return None
    return Path(found).parent if isinstance(found, str) else None


def _config_file(given: str, folder: Path | None) -> tuple[dict, str | None, str]:
    """(fields of the config, checkpoint folder or None, default name) for ``config: given``."""
    path = Path(os.path.abspath(Path(folder or Path.cwd()) / given))
    if path.is_file():
        return _json_object(path, "config"), None, path.stem
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise HfSpecError(f"got {given!r}: the folder {path} has no config.json; allowed: a "
                              "config.json or a checkpoint folder holding one", ("config",))
        weights = any((path / w).is_file() for w in WEIGHT_FILES)
        return _json_object(path / "config.json", "config"), str(path) if weights else None, path.name
    looks_local = given.startswith((".", "/", "~")) or given.endswith(".json") or given.count("/") > 1
    if not looks_local:
        cached = _from_hub_cache(given)
        if cached is not None:
            weights = any((cached / w).is_file() for w in WEIGHT_FILES)
            return (_json_object(cached / "config.json", "config"), str(cached) if weights else None,
                    given.rsplit("/", 1)[-1])
        raise HfSpecError(f"got {given!r}: not a local file or folder, and a hub name is not "
                          "downloaded (this machine is offline; tbench never downloads): not in "
                          "the local Hugging Face cache either; allowed: a config.json, a "
                          "checkpoint folder, or {model_type: ..., fields}", ("config",))
    raise HfSpecError(f"got {given!r}: file not found: {path}; a relative path is read from the "
                      "suite file's folder; allowed: a config.json or a checkpoint folder", ("config",))


def known_model_types() -> dict[str, str]:
    """model_type -> "causal" | "seq2seq": the types transformers builds an LM head for."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    )

    out = {t: "causal" for t in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES}
    out.update({t: "seq2seq" for t in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES})
    return out


def _check_fields(model_type: str, fields: dict) -> None:
    import inspect

    from transformers import AutoConfig

    cls = type(AutoConfig.for_model(model_type))
    allowed = set(cls().to_dict()) | set(getattr(cls, "attribute_map", {}))
    allowed |= {p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")}
    for key in fields:
        if key not in allowed and key != "model_type":
            raise HfSpecError(f"unknown key {key!r}{suggest(key, sorted(allowed))}; allowed: the "
                              f"fields of {cls.__name__} (or {', '.join(RESERVED)})", (key,))


def resolve(spec: Any, folder: Path | None) -> Resolved:
    """The checked fields, checkpoint and name of a ``model.hf`` mapping (module docstring)."""
    if not isinstance(spec, dict):
        raise HfSpecError(f"got {spec!r:.60}, allowed: a mapping {{config: path}} or {{model_type: "
                          "..., config fields}}")
    given = dict(spec)
    name = given.pop("name", None)
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise HfSpecError(f"got {name!r}, allowed: a non-empty string", ("name",))
    checkpoint = given.pop("checkpoint", None)
    base, default_name = {}, None
    if "config" in given:
        path = given.pop("config")
        if not isinstance(path, str) or not path:
            raise HfSpecError(f"got {path!r}, allowed: a path to a config.json or a checkpoint folder",
                              ("config",))
        base, checkpoint, default_name = _config_file(path, folder)
    elif checkpoint is not None:  # a stored point: the checkpoint folder is its config
        base, checkpoint, default_name = _config_file(str(checkpoint), None)
    if checkpoint is not None and any(k != "model_type" for k in given):
        key = next(k for k in given if k != "model_type")
        raise HfSpecError("a checkpoint's fields are those of its weights; allowed: no field "
                          "beside config", (key,))
    fields = {**base, **given}
    model_type = fields.get("model_type")
    if model_type is None:
        raise HfSpecError("required: 'config' (a config.json or checkpoint folder) or "
                          "'model_type' (with config fields)", ("model_type",))
    known = known_model_types()
    if model_type not in known:
        raise HfSpecError(f"got {model_type!r}, allowed: a model type transformers builds a causal "
                          f"or seq2seq LM for{suggest(model_type, known)}", ("model_type",))
    fields.pop("transformers_version", None)  # the writer's version, no field of the model
    _check_fields(model_type, fields)
    from implementations.hf.structure import structure_of

    try:
        structure_of(json.dumps(fields, sort_keys=True))
    except Exception as exc:  # noqa: BLE001 -- transformers' config and model checks raise many kinds
        while exc.__cause__ is not None:  # a validator's own message, not its wrapper's
            exc = exc.__cause__
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HfSpecError(f"transformers cannot build this {model_type} config: {first[:300]}; "
                          "allowed: a config transformers builds") from None
    return Resolved(fields, checkpoint, name or default_name or model_type)


def _first(fields: dict, cfg, *names, default=None):
    for n in names:
        value = getattr(cfg, n, None)
        if value is not None:
            return value
    return default


def shape(fields: dict) -> dict[str, Any]:
    """tbench's names for the model's shape (ModelConfig's fields), read through the config class
    (its ``attribute_map`` gives GPT-2's ``n_embd`` as ``hidden_size``); None where the family
    has no such field."""
    from transformers import AutoConfig

    cfg = AutoConfig.for_model(**fields)
    d_model = _first(fields, cfg, "hidden_size", "d_model", "n_embd")
    n_heads = _first(fields, cfg, "num_attention_heads", "decoder_attention_heads", "n_head")
    enc_dec = bool(getattr(cfg, "is_encoder_decoder", False))
    dec_layers = (_first(fields, cfg, "decoder_layers", "num_decoder_layers", "num_hidden_layers")
                  if enc_dec else _first(fields, cfg, "num_hidden_layers", "n_layer"))
    d_ff = _first(fields, cfg, "intermediate_size", "n_inner", "decoder_ffn_dim", "d_ff",
                  "ffn_dim", default=4 * d_model if d_model else None)
    vocab = cfg.vocab_size

    def token(name: str, default: int) -> int:  # an id outside the vocabulary (a shrunk test config) is none
        value = getattr(cfg, name, None)
        return value if isinstance(value, int) and 0 <= value < vocab else default

    eos = token("eos_token_id", 0)
    return {
        "vocab_size": vocab, "d_model": d_model, "n_heads": n_heads,
        "n_kv_heads": getattr(cfg, "num_key_value_heads", None), "d_ff": d_ff,
        "n_encoder_layers": _first(fields, cfg, "encoder_layers", "num_layers") if enc_dec else 0,
        "n_decoder_layers": dec_layers,
        "max_seq_len": _first(fields, cfg, "max_position_embeddings", "n_positions", default=1 << 20),
        "dropout": float(_first(fields, cfg, "resid_pdrop", "dropout", "hidden_dropout", default=0.0)),
        "norm": "post" if cfg.model_type in ("bart",) else "pre",
        "pad_id": token("pad_token_id", eos),
        "bos_id": token("decoder_start_token_id", token("bos_token_id", eos)),
        "eos_id": eos,
        "head_dim": getattr(cfg, "head_dim", None) or (d_model // n_heads if d_model and n_heads else None),
        "tie_embeddings": bool(getattr(cfg, "tie_word_embeddings", True)),
        # the FFN's activation, for the memory model's saved activations: a gated silu (SwiGLU:
        # Llama, Mistral, Qwen) or not; transformers names it hidden_act or activation_function
        "ffn": "swiglu" if getattr(cfg, "hidden_act", None) in ("silu", "swish") else "gelu",
    }
