"""One resolved experiment: ``PointConfig`` (what defines it, hashed into its id) and ``Point``
(the config plus suite, index, id, label and seed), as the runner hands it to a worker.

    Point.build(config, suite=, index=, label=) / Point.to_json() / Point.from_json(dict)
    point.derive(measure={...}, workload={...}) -> a point of its own with those fields

``to_json`` / ``from_json`` round-trip exactly; the worker re-validates what it reads.
"""
from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from harness.suite.errors import FieldError
from harness.suite.schema import MeasureSpec, ModelSpec, StrategiesSpec, WorkloadSpec, _Strict


class PointConfig(_Strict):
    """Everything that defines one experiment; its canonical JSON gives the point id."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    device: Literal["cpu", "cuda"]
    model: ModelSpec
    workload: WorkloadSpec
    strategies: StrategiesSpec
    measure: MeasureSpec

    def positions_needed(self) -> tuple[int, str, str]:
        """The one rule for how many positions the workload needs of the model: (positions,
        what they are, the workload field that sets them). A point needing more than the model's
        ``max_seq_len`` is refused here; nothing later raises it."""
        cfg, w = self.model.resolved(), self.workload
        if w.kind == "generate":
            return w.seq_len + w.new_tokens, "seq_len + new_tokens", "seq_len"
        if w.kind == "prefill":
            return w.seq_len + 1, "seq_len + 1", "seq_len"  # the first token's position
        if w.kind == "decode":  # decoder-only: the context is the prompt; enc-dec: the target
            if cfg["n_encoder_layers"] > 0 and w.seq_len > max(cfg["max_seq_len"], w.context_len + 1):
                return w.seq_len, "seq_len", "seq_len"
            return w.context_len + 1, "context_len + 1", "context_len"
        return w.seq_len, "seq_len", "seq_len"

    @model_validator(mode="after")
    def _fits_model(self):
        cfg = self.model.resolved()
        longest, what, field = self.positions_needed()
        if longest > cfg["max_seq_len"]:
            raise FieldError(f"got {longest} ({what}), allowed: <= the model's max_seq_len "
                             f"{cfg['max_seq_len']} (raise model.overrides.max_seq_len)",
                             subpath=("workload", field))
        self._lengths_fit(cfg["max_seq_len"])
        return self

    def _lengths_fit(self, max_len: int) -> None:
        """Every attention parameter in tokens is at most the model's max_seq_len."""
        attention = self.strategies.attention
        for name in attention.length_params:
            value = getattr(attention, name)
            top = max(value, default=None) if isinstance(value, tuple) else value
            if top is not None and top > max_len:
                raise FieldError(f"got {top}, allowed: <= the model's max_seq_len {max_len} "
                                 "(a length in tokens)", subpath=("strategies", "attention", name))

    def point_id(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json", include=set(PointConfig.model_fields)),
                               sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(canonical.encode()).hexdigest()[:12]


class Point(PointConfig):
    """One fully resolved experiment, as the runner hands it to a worker."""

    suite: str
    index: int = Field(ge=0)
    id: str = Field(pattern=r"^[0-9a-f]{12}$")
    label: str
    seed: int = Field(ge=0)

    @model_validator(mode="after")
    def _id_matches_config(self):
        if self.id != self.point_id():
            raise FieldError(f"got {self.id!r}, allowed: {self.point_id()!r} (the hash of the config)",
                             subpath=("id",))
        return self

    @classmethod
    def build(cls, config: PointConfig, *, suite: str, index: int, label: str) -> "Point":
        pid = config.point_id()
        return cls(**dict(config), suite=suite, index=index, id=pid, label=label, seed=seed_of(pid))

    def config(self) -> PointConfig:
        return PointConfig(**{k: getattr(self, k) for k in PointConfig.model_fields})

    def derive(self, label: str | None = None, **sections: dict) -> "Point":
        """This point with fields of its sections replaced (``measure={"rounds": 1}``): a
        point of its own (its own id), of the same suite and index."""
        data = self.config().model_dump(mode="json")
        for section, updates in sections.items():
            data[section].update(updates)
        cfg = PointConfig.model_validate(data)
        return Point.build(cfg, suite=self.suite, index=self.index, label=label or self.label)

    def to_json(self) -> dict:
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: dict) -> "Point":
        return cls.model_validate(data)


def seed_of(point_id: str) -> int:
    """Per-point seed: the first 32 bits of the id (fits numpy and torch seeds)."""
    return int(point_id[:8], 16)
