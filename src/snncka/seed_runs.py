"""Results of several training seeds: their names and their figures.

With ``--seeds N`` every model is trained with N seeds and every analysis runs per seed; the result of seed
k > 0 is saved as ``<name>-s<k>`` (seed 0 keeps ``<name>``). ``seed_of`` reads a name, ``seed_groups`` collects
the results of one analysis over its seeds, and ``seed_figures`` draws such a group as one figure: the seed
mean with a band spanning the seeds' range (CKA curves, overview curves, accuracy bars as error bars), and the
mean heatmap.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["seed_figures", "seed_groups", "seed_of"]

_SEED = re.compile(r"-s(\d+)$")


def seed_of(name: str) -> tuple[str, int]:
    """(name without its seed suffix, seed index) of a result name: ``compare-resnet20-s1`` is seed 1 of
    ``compare-resnet20``; a name without ``-s<k>`` is seed 0."""
    m = _SEED.search(name)
    return (name[:m.start()], int(m.group(1))) if m else (name, 0)


def seed_groups(named: Iterable[tuple[str, Any]]) -> dict[str, list[tuple[int, Any]]]:
    """``{name: [(seed, result), ...]}`` (by seed) of every result name saved for two or more seeds, the results
    of one kind."""
    groups: dict[str, list[tuple[int, Any]]] = {}
    for name, res in named:
        base, k = seed_of(name)
        groups.setdefault(base, []).append((k, res))
    return {b: sorted(g, key=lambda t: t[0]) for b, g in groups.items()
            if len(g) >= 2 and len({getattr(r, "analysis", None) for _, r in g}) == 1}


def _stack(values: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = np.stack([np.asarray(v, dtype=float) for v in values])
    with np.errstate(all="ignore"):
        return np.nanmean(a, 0), np.nanmin(a, 0), np.nanmax(a, 0)


def seed_figures(name: str, results: Sequence[Any], out: str | Path) -> list[Path]:
    """The figures of one analysis over its seeds (``results``, seed order): the mean with a band spanning the
    seeds' range. CKA comparisons: the curve of corresponding layers and the mean heatmap; overviews: every
    pair's curve; accuracy tables: the bars with the seeds' range as error bars. Other kinds: no figure (their
    per-seed figures stand)."""
    from . import plots
    from .analyses import CompareAnalysis, Overview
    from .results import curve_ylim

    out, n = Path(out), len(results)
    note = f"mean of {n} seeds; band: their range"
    first = results[0]
    if isinstance(first, CompareAnalysis):
        curves = [r.corresponding() for r in results]
        if any(c[0] != curves[0][0] for c in curves) or first.cka.curve_missing():
            return []
        mean, lo, hi = _stack([d for _, d in curves])
        names = curves[0][0]
        kinds = dict(zip(first.layers_a, first.kinds_a, strict=False))
        label = f"{first.label_a} vs {first.label_b}"
        paths = plots.curves({label: mean}, names, out / f"{name}_curve", kinds=[kinds[k] for k in names],
                             bands={label: (lo, hi)}, title=f"CKA of corresponding layers ({note})",
                             ylim=curve_ylim(np.concatenate([lo, hi])))
        oriented = [r.oriented() for r in results]
        if all(o[0].shape == oriented[0][0].shape for o in oriented):
            m, xl, yl, xlab, ylab = oriented[0]
            paths += plots.heatmap(_stack([o[0] for o in oriented])[0], xl, yl, out / f"{name}_heatmap",
                                   x_label=xlab, y_label=ylab,
                                   title=f"CKA, mean of {n} seeds ({first.n_images} test images)")
        return paths
    if isinstance(first, Overview):
        if any(r.labels != first.labels or r.curves.shape != first.curves.shape for r in results):
            return []
        mean, lo, hi = _stack([r.curves for r in results])
        longest = max(range(len(first.labels)), key=lambda i: len(first.layers[i]))
        width = len(first.layers[longest])
        series = {lab: mean[i, :width] for i, lab in enumerate(first.labels)}
        bands = {lab: (lo[i, :width], hi[i, :width]) for i, lab in enumerate(first.labels)}
        return plots.curves(series, first.layers[longest], out / f"{name}_curves", bands=bands,
                            title=f"{first.title} ({note})", ylim=curve_ylim(np.concatenate([lo, hi])))
    if getattr(first, "analysis", "") == "paper-table":
        keys = [(r["model"], r["type"]) for r in first.rows if r.get("ours (%)") is not None]
        per = [{(r["model"], r["type"]): r.get("ours (%)") for r in res.rows} for res in results]
        if not keys or any(any(p.get(k) is None for k in keys) for p in per):
            return []
        mean, lo, hi = _stack([[p[k] for k in keys] for p in per])
        return plots.paper_bars([f"{m} {t}" for m, t in keys], mean, [None] * len(keys),
                                out / f"{name}_accuracy", spread=(lo, hi),
                                title=f"Accuracy at {first.scale} scale ({note}; the paper's {first.table} "
                                      "numbers: table)")
    return []
