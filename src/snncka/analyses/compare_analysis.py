"""``compare``: cross-layer CKA of two models (or one with itself): the heatmap and CKA curve of Fig. 2.

``compare_checkpoints`` runs it on checkpoints or subjects; the engine it drives is ``snncka.compare``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..cka import compare as cka_compare
from ..recipes import Recipe
from ..registry import register_analysis
from ..results import CKAResult, Result
from ..runtime import environment, resolve_device
from .subjects import (
    RecipeMeasured,
    accuracy,
    check_same_images,
    cka_settings,
    first_batches,
    n_images_of,
    resolve_recipe,
    subject,
    subjects,
)

__all__ = ["CompareAnalysis", "Overview", "cka_choice", "compare_checkpoints", "compared_pairs", "layer_choice",
           "overview"]


def _forward(name: str) -> property:
    return property(lambda self: getattr(self.cka, name), doc=f"``cka.{name}`` of the engine result.")


@dataclass
class CompareAnalysis(RecipeMeasured):
    """The engine's ``CKAResult`` (``matrix[i, j]`` = CKA(layer i of model a, layer j of model b)) together
    with what the analysis knows of the two models: labels, SNN or ANN, test accuracy (%) and checkpoint."""

    analysis: ClassVar[str] = "compare"

    cka: CKAResult
    label_a: str
    label_b: str
    spiking_a: bool
    spiking_b: bool
    accuracy_a: float | None = None
    accuracy_b: float | None = None
    source_a: str | None = None
    source_b: str | None = None

    matrix = _forward("matrix")
    ci_low = _forward("ci_low")
    ci_high = _forward("ci_high")
    layers_a = _forward("layers_a")
    layers_b = _forward("layers_b")
    kinds_a = _forward("kinds_a")
    kinds_b = _forward("kinds_b")
    n_images = _forward("n_images")
    batch_size = _forward("batch_size")
    estimator = _forward("estimator")
    kernel = _forward("kernel")

    @classmethod
    def from_matrix(cls, matrix: Any, layers_a: list[str], layers_b: list[str], kinds_a: list[str],
                    kinds_b: list[str], label_a: str, label_b: str, spiking_a: bool, spiking_b: bool, *,
                    n_images: int = 0, **kw: Any) -> CompareAnalysis:
        """A result from a matrix computed elsewhere (no confidence interval), e.g. to plot or report it."""
        m = np.asarray(matrix, dtype=float)
        nan = np.full_like(m, np.nan)
        cka = CKAResult(matrix=m, layers_a=list(layers_a), layers_b=list(layers_b), kinds_a=list(kinds_a),
                        kinds_b=list(kinds_b), n_images=n_images, batch_size=n_images, estimator="unbiased",
                        kernel="linear", ci_low=nan, ci_high=nan.copy())
        return cls(cka=cka, label_a=label_a, label_b=label_b, spiking_a=spiking_a, spiking_b=spiking_b, **kw)

    def corresponding(self) -> tuple[list[str], np.ndarray]:
        """The CKA curve of same-named layers (``CKAResult.corresponding``)."""
        return self.cka.corresponding()

    def diagonal(self) -> np.ndarray:
        """The matrix's diagonal (``CKAResult.diagonal``)."""
        return self.cka.diagonal()

    def oriented(self) -> tuple[np.ndarray, list[str], list[str], str, str]:
        """(matrix [y, x], x layers, y layers, x label, y label) with the SNN on x and the ANN on y."""
        if self.spiking_a and not self.spiking_b:
            return self.matrix.T, self.layers_a, self.layers_b, self.label_a, self.label_b
        return self.matrix, self.layers_b, self.layers_a, self.label_b, self.label_a

    def plot(self, out: str | Path, name: str | None = None) -> list[Path]:
        return self.cka.plot(out, name or self.analysis, label_a=self.label_a, label_b=self.label_b,
                             snn_on_x=self.spiking_a and not self.spiking_b)

    def accuracies(self) -> list[tuple[str, float, str | None]]:
        pairs = [(self.label_a, self.accuracy_a, self.source_a), (self.label_b, self.accuracy_b, self.source_b)]
        return [p for p in pairs if p[1] is not None]

    def summary(self) -> list[dict[str, Any]]:
        same = (self.source_a, self.label_a) == (self.source_b, self.label_b)  # a model against itself
        return [{"model a": self.label_a, "model b": self.label_b, **row} for row in self.cka.summary(same)]


def compare_checkpoints(
    a: Any,
    b: Any | None = None,
    *,
    n_images: int | None | str = "recipe", batch_size: int | None = None, layers: Any = None,
    unbiased: bool = True, kernel: str = "linear", time_reduce: str = "concat", recipe: str | Recipe | None = None,
    data_root: str | Path | None = None, device: str | torch.device | None = None, progress: bool = True,
    with_accuracy: bool = True,
) -> CompareAnalysis:
    """Cross-layer CKA between the models of checkpoints ``a`` and ``b`` (``b=None``: ``a`` with itself),
    on the first ``n_images`` test images (Sec. 3.3: minibatch CKA, every layer pair).

    ``recipe`` (default: the one ``a`` was built under) gives what is not given: the images
    (``n_images="recipe"``; None = the whole test split), the minibatch size, the layer set and which
    checkpoint of a run folder is read. ``unbiased``, ``kernel`` and ``time_reduce`` choose the CKA estimator
    and how an SNN layer's T steps become one feature (``snncka.cka.compare``). ``with_accuracy=False`` skips
    the models' test-set accuracy passes (for callers that do not keep them)."""
    t0 = time.perf_counter()
    dev = resolve_device(device)
    if b is None:
        sa = sb = subject(a, data_root, dev, recipe)
    else:
        sa, sb = subjects([a, b], data_root, dev, recipe=recipe)
    rec, recorded = resolve_recipe(recipe, [sa] if sb is sa else [sa, sb])
    asked = n_images != "recipe"
    n_images, batch_size, layers = cka_settings(rec, n_images, batch_size, layers)
    check_same_images(sa, sb)
    n = n_images_of(sa, n_images, asked=asked)
    da = first_batches(sa, n, batch_size, dev)
    db = None if sb is sa else first_batches(sb, n, batch_size, dev)
    res = cka_compare(sa.model, sb.model, da, data_b=db, layers_a=layers, layers_b=layers, unbiased=unbiased,
                      kernel=kernel, time_reduce=time_reduce, device=dev, progress=progress)
    return CompareAnalysis(
        cka=res,
        label_a=sa.label,
        label_b=sb.label,
        spiking_a=sa.spiking,
        spiking_b=sb.spiking,
        accuracy_a=accuracy(sa, device=dev) if with_accuracy else None,
        accuracy_b=accuracy(sb, device=dev) if with_accuracy and sb is not sa else None,
        source_a=sa.source,
        source_b=sb.source,
        seconds=time.perf_counter() - t0,
        environment=environment(),
        **recorded,
    )


@dataclass
class Overview(Result):
    """The CKA curves (heatmap diagonals) of every ANN/SNN pair of an experiment, on one figure (``identities``:
    each curve's models, as its compare result records them)."""

    analysis: ClassVar[str] = "overview"
    arrays: ClassVar[tuple[str, ...]] = ("curves",)

    curves: np.ndarray  # [models, max layers], NaN-padded
    labels: list[str]
    layers: list[list[str]]
    title: str = ""
    seconds: float = 0.0
    identities: list[list[dict]] = field(default_factory=list)

    def plot(self, out: str | Path, name: str | None = None) -> list[Path]:
        from .. import plots

        longest = max(range(len(self.labels)), key=lambda i: len(self.layers[i]))
        n = len(self.layers[longest])
        series = {lab: np.asarray(self.curves[i][:n], dtype=float) for i, lab in enumerate(self.labels)}
        return plots.curves(series, self.layers[longest], Path(out) / f"{name or self.analysis}_curves",
                            title=self.title, ylim=(min(0.0, float(np.nanmin(self.curves)) - 0.05), 1.05))

    def summary(self) -> list[dict[str, Any]]:
        return [{"model": lab, "layers": len(ls), "mean diagonal CKA": float(np.nanmean(self.curves[i]))}
                for i, (lab, ls) in enumerate(zip(self.labels, self.layers, strict=True))]


def overview(title: str, results: list[Any], labels: list[str]) -> Overview:
    """The corresponding-layer curves of several ANN-vs-SNN results on one figure."""
    diags = [r.corresponding() for r in results]
    width = max(len(names) for names, _ in diags)
    curves = np.full((len(diags), width), np.nan)
    for i, (_, d) in enumerate(diags):
        curves[i, : len(d)] = d
    return Overview(curves=curves, labels=labels, layers=[list(n) for n, _ in diags], title=title,
                    identities=[list(r.identities) for r in results])


def layer_choice(layers: str | list[str] | None) -> dict[str, Any]:
    """``layers=`` of an experiment entry, if it names one (else the analysis uses the recipe's CKA layers)."""
    return {} if layers is None else {"layers": layers if isinstance(layers, str) else list(layers)}


def cka_choice(unbiased: bool = True, kernel: str = "linear", time_reduce: str = "concat") -> dict[str, Any]:
    """The CKA estimator settings of an experiment entry that differ from the paper's (Sec. 3.3: unbiased linear
    CKA, an SNN layer's T steps concatenated), as keyword arguments; the defaults add nothing, so results computed
    with them keep their saved inputs."""
    chosen = {"unbiased": bool(unbiased), "kernel": str(kernel), "time_reduce": str(time_reduce)}
    return {k: v for k, v in chosen.items() if v != {"unbiased": True, "kernel": "linear", "time_reduce": "concat"}[k]}


def compared_pairs(run: Any, models: list[str] | None = None, layers: Any = None, **cka: Any
                   ) -> list[tuple[Any, Any]]:
    """(spec, SNN-vs-ANN compare result) of every ANN/SNN pair of an experiment run, each computed once
    (``cka``: ``cka_choice``'s settings)."""
    return [(s, run.cached(f"compare-{s.name}", compare_checkpoints, run.ckpt(s, "snn"), run.ckpt(s, "ann"),
                           model=s.name, **layer_choice(layers), **cka_choice(**cka), **run.analysis_options()))
            for s in run.models(models, ("ann", "snn"))]


@register_analysis("compare", needs="all", on_checkpoints=True)
def compare_pairs(run: Any, *, models: list[str] | None = None, layers: Any = None, name: str | None = None,
                  unbiased: bool = True, kernel: str = "linear", time_reduce: str = "concat") -> None:
    """Fig. 2: SNN vs ANN heatmap and curve of every pair; an overview of the curves when there are several.
    ``unbiased``, ``kernel``, ``time_reduce``: the CKA estimator (default the paper's, Sec. 3.3)."""
    pairs = compared_pairs(run, models, layers, unbiased=unbiased, kernel=kernel, time_reduce=time_reduce)
    if len(pairs) > 1:
        title = f"{run.exp.id}: CKA of corresponding layers, SNN vs ANN"
        run.cached("overview" + (f"-{name}" if name else ""), overview, title, [r for _, r in pairs],
                   [s.name for s, _ in pairs])


@register_analysis("self", needs="all", on_checkpoints=True)
def compare_self(run: Any, *, models: list[str] | None = None, layers: Any = None) -> None:
    """Fig. 4: every SNN's layers against its own."""
    for s in run.models(models, ("snn",)):
        run.cached(f"self-{s.name}", compare_checkpoints, run.ckpt(s, "snn"), None, model=s.name,
                   **layer_choice(layers), **run.analysis_options())
