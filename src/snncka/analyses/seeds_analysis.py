"""``seeds``: cross-layer CKA for every pairing of models trained from different seeds (App. C)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..recipes import Recipe
from ..registry import register_analysis
from ..results import curve_ylim, finite_mean
from ..runtime import environment, resolve_device
from .compare_analysis import compare_checkpoints
from .subjects import RecipeMeasured, check_same_images, resolve_recipe, subjects

__all__ = ["SeedsResult", "seeds"]


@dataclass
class SeedsResult(RecipeMeasured):
    """Cross-layer CKA for every pairing of the given models (App. C): ``pairs[k] = (i, j)`` -> ``pair_k``."""

    analysis: ClassVar[str] = "seeds"
    arrays: ClassVar[tuple[str, ...]] = ("matrices", "batch_hsic")

    matrices: np.ndarray  # [P, L, L] (all models share one topology)
    pairs: list[list[int]]
    labels: list[str]
    spiking: list[bool]
    layers: list[str]
    n_images: int
    sources: list[str | None] = field(default_factory=list)
    # per pairing, the per-batch HSIC sums of its corresponding layers ``[P, 3 (ab, aa, bb), batches, L]``
    # (``CKAResult.batch_samples``): intervals over test images; empty where not kept
    batch_hsic: np.ndarray = field(default_factory=lambda: np.zeros((0, 3, 0, 0)))

    def inconsistency(self) -> str | None:
        if np.size(self.batch_hsic) and (np.ndim(self.batch_hsic) != 4 or len(self.batch_hsic) != len(self.pairs)):
            return f"batch_hsic has shape {np.shape(self.batch_hsic)}, expected [{len(self.pairs)}, 3, batches, L]"
        return None

    def _panel(self, k: int):
        i, j = self.pairs[k]
        m = np.asarray(self.matrices[k])
        if self.spiking[i] and not self.spiking[j]:  # SNN on x, ANN on y
            return (
                m.T,
                self.layers,
                self.layers,
                f"{self.labels[j]}\nvs {self.labels[i]}",
                self.labels[i],
                self.labels[j],
            )
        return (
            m,
            self.layers,
            self.layers,
            f"{self.labels[i]}\nvs {self.labels[j]}",
            self.labels[j],
            self.labels[i],
        )

    def plot(self, out: str | Path, name: str | None = None) -> list[Path]:
        from .. import plots

        name = name or self.analysis
        panels = [self._panel(k) for k in range(len(self.pairs))]
        paths = plots.heatmap_grid(
            panels, Path(out) / f"{name}_heatmaps", title="CKA across seeds and pairings"
        )
        series = {
            f"{self.labels[i]} vs {self.labels[j]}": np.diagonal(self.matrices[k])
            for k, (i, j) in enumerate(self.pairs)
            if i != j
        }
        if series:
            paths += plots.curves(
                series,
                self.layers,
                Path(out) / f"{name}_curves",
                title="CKA curves per pairing",
                ylim=curve_ylim(np.concatenate(list(series.values()))),
            )
        return paths

    def summary(self) -> list[dict[str, Any]]:
        return [
            {
                "model a": self.labels[i],
                "model b": self.labels[j],
                # a model against itself: its diagonal is 1 by construction, not a measurement
                "mean CKA (diagonal)": finite_mean(np.diagonal(self.matrices[k])) if i != j else None,
                "mean CKA (matrix)": finite_mean(self.matrices[k]),
            }
            for k, (i, j) in enumerate(self.pairs)
        ]


def seeds(sources: Sequence[Any], *, include_self: bool = True, recipe: str | Recipe | None = None,
          **compare_kwargs: Any) -> SeedsResult:
    """CKA heatmaps for every pair of the given checkpoints (e.g. ANN and SNN, two seeds each: App. C).

    ``include_self`` adds each model against itself (Fig. C.1's first columns). ``recipe`` (default: the
    first model's) and ``compare_kwargs`` go to every ``compare_checkpoints``.
    """
    t0 = time.perf_counter()
    dev = resolve_device(compare_kwargs.pop("device", None))
    data_root = compare_kwargs.pop("data_root", None)
    subs = subjects(list(sources), data_root, dev, recipe=recipe)
    rec, recorded = resolve_recipe(recipe, subs)
    if len(subs) < 2:
        raise ValueError(f"seeds needs at least two checkpoints, got {len(subs)}")
    for s in subs[1:]:
        check_same_images(subs[0], s)
    topo = [s.model.config["name"] for s in subs]
    if len(set(topo)) != 1:
        raise ValueError(f"seeds compares models of one topology; got {sorted(set(topo))}")
    pairs = [[i, j] for i in range(len(subs)) for j in range(i if include_self else i + 1, len(subs))]
    mats, layers, n = [], None, 0
    sums: list[Any] = []
    for i, j in pairs:
        with warnings.catch_warnings():  # a mixed pair: warned once above, for the whole analysis
            warnings.simplefilter("ignore", UserWarning)
            r = compare_checkpoints(subs[i], subs[j] if j != i else None, device=dev, recipe=rec, with_accuracy=False,
                        **compare_kwargs)
        if layers is not None and (r.layers_a != layers or r.layers_b != layers):
            raise ValueError("the models record different layers; seeds needs identical topologies")
        layers, n = r.layers_a, r.n_images
        mats.append(r.matrix)
        sums.append(r.cka.batch_samples())
    return SeedsResult(
        matrices=np.stack(mats),
        batch_hsic=np.stack([np.stack(b) for b in sums]) if all(b is not None for b in sums) else
        np.zeros((0, 3, 0, 0)),
        pairs=pairs,
        labels=[s.label for s in subs],
        spiking=[s.spiking for s in subs],
        layers=layers,
        n_images=n,
        sources=[s.source for s in subs],
        seconds=time.perf_counter() - t0,
        environment=environment(),
        **recorded,
    )




@register_analysis("seeds", needs="all", on_checkpoints=True)
def seeds_of_models(run: Any, *, models: list[str] | None = None, name: str | None = None) -> None:
    """App. C: CKA between every pairing of the ANNs and SNNs of several seeds."""
    chosen = [run.ckpt(s, k) for k in ("ann", "snn") for s in run.models(models, ("ann", "snn"))]
    run.cached("seeds" + (f"-{name}" if name else ""), seeds, chosen, **run.analysis_options())
