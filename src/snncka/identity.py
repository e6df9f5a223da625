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
        return cls.make(cfg.model, cfg.width, cfg.T, cfg.residual, cfg.spiking, cfg.recipe, cfg.data, cfg.seed)

    @classmethod
    def of_model(cls, config: dict[str, Any], data: str, seed: int = 0) -> ModelIdentity:
        """The identity of a built model (its ``config``) trained on ``data`` with ``seed``."""
        return cls.make(config["name"], config.get("width", 1), config.get("T", 1), config.get("residual", (True,)),
                        config["spiking"], config.get("recipe", "paper"), data, seed)

    @classmethod
    def make(cls, arch: str, width: float, T: int, residual: Any, spiking: bool, recipe: str, data: str,
             seed: int) -> ModelIdentity:
        """The identity with ``depth`` read from a zoo name (``resnet20`` -> 20) and ``T = 1`` for an ANN."""
        m = re.fullmatch(r"[a-z]+(\d+)", str(arch))
        return cls(arch=str(arch), depth=int(m.group(1)) if m else None, width=float(width),
                   T=int(T) if spiking else 1, residual=tuple(bool(r) for r in residual), spiking=bool(spiking),
                   recipe=str(recipe), data=str(data), seed=int(seed))

    @property
    def family(self) -> str:
        """The architecture without its depth (``resnet20`` -> ``resnet``)."""
        return self.arch[: len(self.arch) - len(str(self.depth))] if self.depth is not None else self.arch

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelIdentity:
        return cls(**{**d, "residual": tuple(d["residual"])})

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "residual": list(self.residual)}
