"""What a trained model is, as one small typed record: the model identity the runner stores with its results."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ModelIdentity"]


@dataclass(frozen=True)
class ModelIdentity:
    """A trained model: architecture (``depth``: the number in a zoo name like ``resnet20``, else None), width,
    time steps, residual connections per stage, SNN or ANN, recipe, dataset and seed."""

    arch: str
    depth: int | None
    width: float
    T: int
    residual: tuple[bool, ...]
    spiking: bool
    recipe: str
    data: str
    seed: int

    @classmethod
    def of(cls, cfg: Any) -> ModelIdentity:
        """The identity of the model a ``TrainConfig`` trains."""
        m = re.fullmatch(r"[a-z]+(\d+)", str(cfg.model))
        return cls(arch=str(cfg.model), depth=int(m.group(1)) if m else None, width=float(cfg.width),
                   T=int(cfg.T) if cfg.spiking else 1, residual=tuple(bool(r) for r in cfg.residual),
                   spiking=bool(cfg.spiking), recipe=str(cfg.recipe), data=str(cfg.data), seed=int(cfg.seed))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelIdentity:
        return cls(**{**d, "residual": tuple(d["residual"])})

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "residual": list(self.residual)}
