"""The paper's text against its released code: one experiment run under each recipe, side by side.

``snncka reproduce paper-vs-code`` trains and analyses the experiment's models once per recipe
(``snncka.recipes``: ``paper`` and ``code``, each in ``<out>/<recipe>``, each model cached under its own
training config) and then answers how much the disagreements between the paper and its code move the paper's
conclusions (``<out>/results``):

* ``paper-vs-code``: a ``RecipeComparison``: for every model the experiment compares, the ANN-vs-SNN CKA
  diagonal of both recipes overlaid and their heatmaps side by side (Fig. 2), the mean CKA per layer type
  inside residual blocks as bars side by side (Fig. 3), and robust accuracy and clean-vs-adversarial CKA per
  eps, both recipes overlaid (Fig. 8); its table lists every quantity under each recipe and the difference.
* ``findings``: the paper's claims judged once per recipe on that recipe's results (``snncka.paper.findings.verdicts``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..analyses import TYPE_LABELS, BlocksResult, CompareAnalysis, RobustnessResult, load_result
from ..readers import read_json
from ..registry import register_judge
from ..results import Result, finite_mean

__all__ = ["RecipeComparison", "compare_recipes", "judge"]

_ANALYSIS = {CompareAnalysis: "compare", BlocksResult: "blocks", RobustnessResult: "robustness"}  # compared
_TYPES = tuple(TYPE_LABELS.values())  # the layer types of Fig. 3: residual output, LIF/ReLU, conv, BN


@dataclass
class RecipeComparison(Result):
    """The same analyses under several recipes, per model (``<analysis>[model][recipe]``); see the module doc."""

    analysis: ClassVar[str] = "paper-vs-code"

    recipes: list[str]
    experiment: str = ""
    compare: dict = field(default_factory=dict)  # model -> recipe -> diagonal, heatmap, accuracies
    blocks: dict = field(default_factory=dict)  # model -> recipe -> type means, positions, restore fraction
    robustness: dict = field(default_factory=dict)  # model -> recipe -> eps, labels, accuracies, mean CKA

    def summary(self) -> list[dict[str, Any]]:
        """One row per quantity and model: its value under each recipe and the difference (last - first)."""
        rows = []
        for model, quantities in self._quantities().items():
            for (figure, quantity), by_recipe in quantities.items():
                row: dict[str, Any] = {"model": model, "paper figure": figure, "quantity": quantity}
                row.update({f"{r} recipe": by_recipe.get(r) for r in self.recipes})
                a, b = by_recipe.get(self.recipes[0]), by_recipe.get(self.recipes[-1])
                row[f"{self.recipes[-1]} - {self.recipes[0]}"] = None if a is None or b is None else b - a
                rows.append(row)
        return rows

    def _quantities(self) -> dict[str, dict[tuple[str, str], dict[str, float]]]:
        out: dict[str, dict[tuple[str, str], dict[str, float]]] = {}

        def put(model: str, figure: str, quantity: str, recipe: str, value: float | None) -> None:
            if value is not None:
                out.setdefault(model, {}).setdefault((figure, quantity), {})[recipe] = float(value)

        for model, by_recipe in self.compare.items():
            for r, c in by_recipe.items():
                values = np.asarray(c["values"], dtype=float)
                put(model, "Fig. 2", "ANN test accuracy (%)", r, c.get("accuracy_ann"))
                put(model, "Fig. 2", "SNN test accuracy (%)", r, c.get("accuracy_snn"))
                put(model, "Fig. 2", "mean CKA of corresponding layers", r, finite_mean(values))
                fin = values[np.isfinite(values)]
                put(model, "Fig. 2", "fraction of corresponding layers with CKA > 0.5", r,
                    float(np.mean(fin > 0.5)) if fin.size else None)
                put(model, "Fig. 2", "corresponding layers compared", r, len(values))
        for model, by_recipe in self.blocks.items():
            for r, b in by_recipe.items():
                for t in _TYPES:
                    put(model, "Fig. 3", f"mean CKA, {t} inside blocks", r, b["type_means"].get(t))
                put(model, "Fig. 3", "fraction of blocks whose output restores similarity", r,
                    b.get("restore_fraction"))
        for model, by_recipe in self.robustness.items():
            for r, rb in by_recipe.items():
                for m, spiking in enumerate(rb["spiking"]):
                    net = _network(spiking)
                    put(model, "Fig. 8", f"{net} clean accuracy (%)", r, rb["clean"][m])
                    for e, acc, cka in zip(rb["eps"], rb["accuracy"][m], rb["cka_mean"][m], strict=True):
                        put(model, "Fig. 8", f"{net} robust accuracy (%), eps={e:g}", r, acc)
                        put(model, "Fig. 8", f"{net} mean CKA clean vs adversarial, eps={e:g}", r, cka)
        return out

    def plot(self, out: str | Path, name: str | None = None) -> list[Path]:
        from .. import plots

        stem = Path(out) / (name or self.analysis)
        paths: list[Path] = []
        for model, by_recipe in self.compare.items():
            slug = _slug(model)
            names = list(dict.fromkeys(n for c in by_recipe.values() for n in c["layers"]))
            series = {f"{r} recipe": _aligned(c["layers"], c["values"], names) for r, c in by_recipe.items()}
            allv = np.concatenate([v for v in series.values()])
            lo = float(np.nanmin(allv)) if np.isfinite(allv).any() else 0.0
            paths += plots.curves(series, names, f"{stem}_{slug}_diagonal", ylim=(min(0.0, lo - 0.05), 1.05),
                                  title=f"{model}: CKA of corresponding layers, SNN vs ANN (Fig. 2)")
            panels = [(np.asarray(c["matrix"], dtype=float), c["x_layers"], c["y_layers"], f"{r} recipe",
                       c["x_label"], c["y_label"]) for r, c in by_recipe.items()]
            paths += plots.heatmap_grid(panels, f"{stem}_{slug}_heatmaps", ncols=len(panels),
                                        title=f"{model}: SNN vs ANN CKA under each recipe")
        for model, by_recipe in self.blocks.items():
            slug = _slug(model)
            paths += plots.grouped_bars(
                list(_TYPES),
                {f"{r} recipe": [b["type_means"].get(t, np.nan) for t in _TYPES] for r, b in by_recipe.items()},
                f"{stem}_{slug}_block_types", ylabel="mean CKA inside residual blocks", ylim=(0, 1.05),
                fmt="%.2f", title=f"{model}: CKA per layer type in blocks (Fig. 3)")
            positions = list(dict.fromkeys(p for b in by_recipe.values() for p in b["positions"]))
            paths += plots.block_profile(
                positions, {f"{r} recipe": _aligned(b["positions"], b["position_means"], positions)
                            for r, b in by_recipe.items()},
                f"{stem}_{slug}_block_profile", title=f"{model}: mean CKA at each position inside blocks")
        for model, by_recipe in self.robustness.items():
            slug = _slug(model)
            eps = next(iter(by_recipe.values()))["eps"]
            if any(rb["eps"] != eps for rb in by_recipe.values()):
                raise ValueError(f"{model}: the recipes' PGD results use different eps; rerun with the same eps")
            acc: dict[str, dict[str, list[float]]] = {}
            cka: dict[str, dict[str, list[float]]] = {}
            for r, rb in by_recipe.items():
                for m, spiking in enumerate(rb["spiking"]):
                    acc.setdefault(_network(spiking), {})[f"{r} recipe"] = [rb["clean"][m], *rb["accuracy"][m]]
                    cka.setdefault(_network(spiking), {})[f"{r} recipe"] = rb["cka_mean"][m]
            paths += plots.overlay_lines([0.0, *eps], acc, f"{stem}_{slug}_robust_accuracy", xlabel="eps (L-inf)",
                                         ylabel="accuracy (%)", ylim=(0, 105),
                                         title=f"{model}: accuracy under PGD (Fig. 8)")
            paths += plots.overlay_lines(eps, cka, f"{stem}_{slug}_adversarial_cka", xlabel="eps (L-inf)",
                                         ylabel="mean CKA over layers", ylim=(min(0.0, _low(cka)), 1.05),
                                         title=f"{model}: CKA clean vs adversarial (Fig. 8)")
        return paths


def _network(spiking: bool) -> str:
    return "SNN" if spiking else "ANN"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def _aligned(names: list[str], values: list[float], order: list[str]) -> np.ndarray:
    """``values`` (one per name) in ``order``, NaN where a name is missing (e.g. fc, recorded by one recipe)."""
    by_name = dict(zip(names, values, strict=True))
    return np.array([np.nan if by_name.get(n) is None else by_name[n] for n in order], dtype=float)


def _low(series: dict[str, dict[str, list[float]]]) -> float:
    v = np.array([x for by in series.values() for ys in by.values() for x in ys], dtype=float)
    return float(np.nanmin(v)) - 0.05 if np.isfinite(v).any() else 0.0


def _compare_entry(res: Any) -> dict[str, Any]:
    names, values = res.corresponding()
    kinds = dict(zip(res.layers_a, res.kinds_a, strict=True))
    matrix, x_layers, y_layers, x_label, y_label = res.oriented()
    acc = {("snn" if res.spiking_a else "ann"): res.accuracy_a, ("snn" if res.spiking_b else "ann"): res.accuracy_b}
    return {"layers": list(names), "values": np.asarray(values, dtype=float).tolist(),
            "kinds": [kinds.get(n, "") for n in names], "matrix": np.asarray(matrix, dtype=float).tolist(),
            "x_layers": list(x_layers), "y_layers": list(y_layers), "x_label": x_label, "y_label": y_label,
            "accuracy_ann": acc.get("ann"), "accuracy_snn": acc.get("snn")}


def _blocks_entry(res: Any) -> dict[str, Any]:
    return {"type_means": dict(res.type_means), "positions": list(res.positions),
            "position_means": list(res.position_means), "restore_fraction": res.restore_fraction,
            "periodic": bool(res.periodic), "label": res.label}


def _robustness_entry(res: Any) -> dict[str, Any]:
    return {"eps": list(res.eps), "labels": list(res.labels), "spiking": [bool(d["spiking"]) for d in res.identities],
            "clean": list(res.clean_accuracy),
            "accuracy": [list(a) for a in res.accuracy],
            "cka_mean": [[finite_mean(c) for c in per_eps] for per_eps in res.cka]}


_ENTRY = {"compare": _compare_entry, "blocks": _blocks_entry, "robustness": _robustness_entry}


@register_judge("paper-vs-code")
def judge(folders: dict[str, str | Path], scale: str, experiment: str = "") -> RecipeComparison:
    """The judge ``paper-vs-code`` of an experiment file comparing recipes: ``compare_recipes``."""
    return compare_recipes(folders, experiment)


def compare_recipes(folders: dict[str, str | Path], experiment: str = "") -> RecipeComparison:
    """The compare, blocks and robustness results of each recipe's experiment folder (``{recipe: folder}``),
    gathered per model (the experiment's model each is about, as ``experiment.json`` records) for the models
    every recipe analysed."""
    got: dict[str, dict[str, dict[str, dict[str, Any]]]] = {k: {} for k in _ANALYSIS.values()}
    for recipe, folder in folders.items():
        index = read_json(Path(folder) / "experiment.json").get("results", {})
        for name, about in sorted(index.items()):
            if about.get("seed", 0):  # the first seed's: one result per model and recipe
                continue
            res = load_result(Path(folder) / "results" / f"{name}.json")
            analysis = _ANALYSIS.get(type(res))
            if analysis is not None:
                got[analysis].setdefault(about["model"], {})[recipe] = _ENTRY[analysis](res)
    every = {k: {m: by for m, by in models.items() if len(by) == len(folders)} for k, models in got.items()}
    if not any(every.values()):
        where = ", ".join(str(f) for f in folders.values())
        raise ValueError(f"no compare, blocks or robustness result in every one of: {where}")
    return RecipeComparison(recipes=list(folders), experiment=experiment, **every)
