"""``temporal``: the ``T x T`` CKA between the time steps of every layer of an SNN (Fig. 6, A.3, A.8, A.11,
A.12)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..cka import temporal as cka_temporal
from ..recipes import Recipe
from ..registry import register_analysis
from ..results import TemporalResult
from ..runtime import environment, resolve_device
from .subjects import RecipeMeasured, cka_settings, first_batches, n_images_of, resolve_recipe, subject

__all__ = ["TemporalAnalysis", "temporal_checkpoint"]


@dataclass
class TemporalAnalysis(RecipeMeasured):
    """The engine's ``TemporalResult`` (``cka.matrices[l]``: the ``T x T`` CKA between the time steps of layer
    ``l``) together with the model's label and checkpoint."""

    analysis: ClassVar[str] = "temporal"

    cka: TemporalResult
    label: str
    source: str | None = None

    @classmethod
    def from_matrices(cls, matrices: Any, layers: list[str], kinds: list[str], T: int, label: str, *,
                      n_images: int = 0, **kw: Any) -> TemporalAnalysis:
        """A result from ``[L, T, T]`` matrices computed elsewhere, e.g. to plot or report them."""
        m = np.asarray(matrices, dtype=float)
        cka = TemporalResult(layers=list(layers), kinds=list(kinds), matrices=m, T=int(T), n_images=n_images,
                             steps=[int(T)] * len(layers))
        return cls(cka=cka, label=label, **kw)

    @property
    def matrices(self) -> np.ndarray:
        return self.cka.matrices

    @property
    def layers(self) -> list[str]:
        return self.cka.layers

    @property
    def kinds(self) -> list[str]:
        return self.cka.kinds

    @property
    def T(self) -> int:
        return self.cka.T

    @property
    def n_images(self) -> int:
        return self.cka.n_images

    def off_diagonal_mean(self) -> np.ndarray:
        """Mean CKA between different time steps, per layer (``TemporalResult.off_diagonal_mean``)."""
        return self.cka.off_diagonal_mean()

    def plot(self, out: str | Path, name: str | None = None) -> list[Path]:
        return self.cka.plot(out, name or self.analysis, label=self.label)

    def summary(self) -> list[dict[str, Any]]:
        return self.cka.summary(label=self.label)


def temporal_checkpoint(
    a: Any,
    *,
    n_images: int | None | str = "recipe", batch_size: int | None = None, layers: Any = None,
    unbiased: bool = True, kernel: str = "linear", recipe: str | Recipe | None = None,
    data_root: str | Path | None = None, device: str | torch.device | None = None, progress: bool = True,
) -> TemporalAnalysis:
    """``T x T`` CKA between time steps for every recorded layer of an SNN checkpoint (Fig. 6). ``recipe``
    (default: the model's) gives the images, minibatch size and layers not given (see ``compare_checkpoints``)."""
    t0 = time.perf_counter()
    dev = resolve_device(device)
    s = subject(a, data_root, dev, recipe)
    rec, recorded = resolve_recipe(recipe, [s])
    asked = n_images != "recipe"
    n_images, batch_size, layers = cka_settings(rec, n_images, batch_size, layers)
    if not s.spiking:
        raise ValueError(f"temporal CKA needs a spiking model; {s.label} is an ANN (it has no time steps)")
    if s.model.T < 2 and max(s.model.stage_T) < 2:
        raise ValueError(f"temporal CKA needs T >= 2; {s.label} runs with T = 1")
    n = n_images_of(s, n_images, asked=asked)
    res = cka_temporal(s.model, first_batches(s, n, batch_size, dev), layers=layers, unbiased=unbiased,
                       kernel=kernel, device=dev, progress=progress)
    return TemporalAnalysis(cka=res, label=s.label, source=s.source, seconds=time.perf_counter() - t0,
                            environment=environment(), **recorded)


@register_analysis("temporal", needs="all", on_checkpoints=True)
def temporal_of_snns(run: Any, *, models: list[str] | None = None, layers: Any = None, name: str | None = None,
                     unbiased: bool = True, kernel: str = "linear") -> None:
    """Fig. 6: the ``T x T`` CKA between time steps of every SNN (``name``: a suffix for a second layer set;
    ``unbiased``, ``kernel``: the CKA estimator, as ``compare``'s)."""
    from .compare_analysis import cka_choice, layer_choice

    for s in run.models(models, ("snn",)):
        run.cached("temporal" + (f"-{name}" if name else "") + f"-{s.name}", temporal_checkpoint, run.ckpt(s, "snn"),
                   model=s.name, **layer_choice(layers), **cka_choice(unbiased, kernel),
                   **run.analysis_options())
