"""Results of several training seeds: their names and their figures.

With ``--seeds N`` every model is trained with N seeds and every analysis runs per seed; the result of seed
k > 0 is saved as ``<name>-s<k>`` (seed 0 keeps ``<name>``). ``seed_of`` reads a name, ``seed_names`` the names
of a set of results (checking their models, since a model id may itself end in ``-s<k>``), ``seed_groups`` collects
the results of one analysis over its seeds, and ``seed_figures`` draws such a group as one figure: the seed
mean with a band spanning the seeds' range (CKA curves, overview curves, the mean CKA across time steps, the
blocks' curve, clean-vs-adversarial CKA curves; accuracy bars with the range as error bars), and the mean
heatmap or ``T x T`` grid.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["seed_band", "seed_figures", "seed_groups", "seed_names", "seed_of", "unseeded"]

_SEED = re.compile(r"-s(\d+)$")
_SEED_WORD = re.compile(r" seed\d+\b")


def seed_of(name: str) -> tuple[str, int]:
    """(name without its seed suffix, seed index) of a result name: ``compare-resnet20-s1`` is seed 1 of
    ``compare-resnet20``; a name without ``-s<k>`` is seed 0."""
    m = _SEED.search(name)
    return (name[:m.start()], int(m.group(1))) if m else (name, 0)


def unseeded(label: str) -> str:
    """A model label without its training seed (``SNN resnet20 T4 seed1`` -> ``SNN resnet20 T4``): the label
    of the seed mean."""
    return _SEED_WORD.sub("", label)


def _models(res: Any) -> list[dict[str, Any]] | None:
    """The identities of a result's models without their seeds (None where the result records none)."""
    ids = getattr(res, "identities", None)
    if not ids:
        return None
    def plain(d: Any) -> Any:  # an identity (a dict or a ModelIdentity), or a list of them (an overview's rows)
        if isinstance(d, list):
            return [plain(x) for x in d]
        return {k: v for k, v in (d if isinstance(d, dict) else d.as_dict()).items() if k != "seed"}

    return [plain(d) for d in ids]


def seed_names(named: Iterable[tuple[str, Any]]) -> list[tuple[str, int]]:
    """``(base, seed)`` of each result saved under a name (in the order given; one name may occur once per recipe
    or experiment): ``X-s<k>`` is seed k of ``X`` where ``X`` is one of the results too, of the same models but
    for their training seed; any other name is seed 0 of itself (Fig. 4's model ``resnet56-nores-s1`` is a model
    id, not seed 1 of ``resnet56-nores``)."""
    items = list(named)
    by_name: dict[str, list[Any]] = {}
    for name, res in items:
        by_name.setdefault(name, []).append(res)
    out = []
    for name, res in items:
        base, k = seed_of(name)
        if k and not any(_models(b) == _models(res) for b in by_name.get(base, [])):
            base, k = name, 0
        out.append((base, k))
    return out


def seed_groups(named: Iterable[tuple[str, Any]]) -> dict[str, list[tuple[int, Any]]]:
    """``{name: [(seed, result), ...]}`` (by seed) of every result name saved for two or more seeds
    (``seed_names``) of the same models, the results of one kind. Where one name holds the seeds of other models
    too (e.g. of another recipe), each group's name is followed by its recipe."""
    items = list(named)
    groups: dict[tuple[str, str], list[tuple[int, Any]]] = {}
    for (base, k), (_, res) in zip(seed_names(items), items, strict=True):
        groups.setdefault((base, repr(_models(res))), []).append((k, res))
    keep = {key: sorted(g, key=lambda t: t[0]) for key, g in groups.items()
            if len(g) >= 2 and len({k for k, _ in g}) == len(g)
            and len({getattr(r, "analysis", None) for _, r in g}) == 1}
    bases = [b for b, _ in keep]
    out = {}
    for (base, _), g in keep.items():
        first = (_models(g[0][1]) or [{}])[0]
        first = (first or [{}])[0] if isinstance(first, list) else first
        recipe = getattr(g[0][1], "recipe", None) or first.get("recipe")
        out[base if bases.count(base) == 1 else f"{base}-{recipe}"] = g
    return out


def seed_band(values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high) over the seeds (axis 0) of equally shaped values: the line and band of a seed figure
    (the band spans the seeds' range; NaN where every seed is NaN)."""
    a = np.stack([np.asarray(v, dtype=float) for v in values])
    with np.errstate(all="ignore"):
        return np.nanmean(a, 0), np.nanmin(a, 0), np.nanmax(a, 0)


def _same(values: Iterable[Any]) -> bool:
    vs = list(values)
    return all(v == vs[0] for v in vs[1:])


def _bars(note: str) -> str:
    return note.replace("band:", "error bars:")


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_").lower()


def _compare(name: str, results: Sequence[Any], out: Path, note: str) -> list[Path]:
    from . import plots
    from .results import curve_ylim

    first, n = results[0], len(results)
    curves = [r.corresponding() for r in results]
    if any(c[0] != curves[0][0] for c in curves) or first.cka.curve_missing():
        return []
    mean, lo, hi = seed_band([d for _, d in curves])
    names = curves[0][0]
    kinds = dict(zip(first.layers_a, first.kinds_a, strict=False))
    label = f"{unseeded(first.label_a)} vs {unseeded(first.label_b)}"
    paths = [] if (first.source_a, first.label_a) == (first.source_b, first.label_b) else plots.curves(
        {label: mean}, names, out / f"{name}_curve", kinds=[kinds[k] for k in names], bands={label: (lo, hi)},
        title=f"CKA of corresponding layers ({note})", ylim=curve_ylim(np.concatenate([lo, hi])))
    # (a model against itself: its corresponding layers have CKA 1 by construction, no curve)
    oriented = [r.oriented() for r in results]
    if all(o[0].shape == oriented[0][0].shape for o in oriented):
        _, xl, yl, xlab, ylab = oriented[0]
        paths += plots.heatmap(seed_band([o[0] for o in oriented])[0], xl, yl, out / f"{name}_heatmap",
                               x_label=unseeded(xlab), y_label=unseeded(ylab),
                               title=f"CKA, mean of {n} seeds ({first.n_images} test images)")
    return paths


def _overview(name: str, results: Sequence[Any], out: Path, note: str) -> list[Path]:
    from . import plots
    from .results import curve_ylim

    first = results[0]
    labels = [unseeded(lab) for lab in first.labels]
    if any([unseeded(lab) for lab in r.labels] != labels or r.curves.shape != first.curves.shape for r in results):
        return []
    mean, lo, hi = seed_band([r.curves for r in results])
    longest = max(range(len(labels)), key=lambda i: len(first.layers[i]))
    width = len(first.layers[longest])
    series = {lab: mean[i, :width] for i, lab in enumerate(labels)}
    bands = {lab: (lo[i, :width], hi[i, :width]) for i, lab in enumerate(labels)}
    return plots.curves(series, first.layers[longest], out / f"{name}_curves", bands=bands,
                        title=f"{first.title} ({note})", ylim=curve_ylim(np.concatenate([lo, hi])))


def _temporal(name: str, results: Sequence[Any], out: Path, note: str) -> list[Path]:
    """Fig. 6 over seeds: the mean CKA between time steps per layer with its band, and the mean ``T x T`` grid
    of the residual-block outputs (the layers the per-seed grid shows)."""
    from . import plots
    from .results import curve_ylim

    first, n = results[0], len(results)
    if not _same((r.layers, r.T, np.shape(r.matrices)) for r in results):
        return []
    mean, lo, hi = seed_band([r.off_diagonal_mean() for r in results])
    label = unseeded(first.label) or "model"
    paths = plots.curves({label: mean}, first.layers, out / f"{name}_curve", kinds=first.kinds,
                         bands={label: (lo, hi)}, ylabel="mean CKA between time steps",
                         ylim=curve_ylim(np.concatenate([lo, hi])),
                         title=f"Similarity across time steps, 1 = static in time ({note})")
    idx = [i for i, k in enumerate(first.kinds) if k == "block"] or list(range(min(len(first.layers), 36)))
    if idx:
        grid = seed_band([np.asarray(r.matrices)[idx] for r in results])[0]
        paths += plots.temporal_grid(grid, [first.layers[i] for i in idx], out / f"{name}_grid",
                                     title=f"CKA across time steps: {label}, mean of {n} seeds")
    return paths


def _blocks(name: str, results: Sequence[Any], out: Path, note: str) -> list[Path]:
    """Fig. 3 over seeds: the CKA curve marked by layer type, the seed mean with its band."""
    from . import plots
    from .results import curve_ylim

    first = results[0]
    if not _same(r.layers for r in results):
        return []
    mean, lo, hi = seed_band([r.curve for r in results])
    label = " vs ".join(unseeded(p) for p in first.label.split(" vs ")) or "model"
    return plots.curves({label: mean}, first.layers, out / f"{name}_curve", kinds=first.kinds,
                        bands={label: (lo, hi)}, ylim=curve_ylim(np.concatenate([lo, hi])),
                        title=f"CKA curve by layer type ({note})")


def _robustness(name: str, results: Sequence[Any], out: Path, note: str) -> list[Path]:
    """Fig. 8 over seeds: robust accuracy per eps (bars: the seed mean, error bars: the range) and, per model,
    the clean-vs-adversarial CKA per layer at every eps (the mean with its band)."""
    from . import plots
    from .results import curve_ylim

    first = results[0]
    labels = [unseeded(lab) for lab in first.labels]
    if not _same(([unseeded(lab) for lab in r.labels], r.eps, r.layers) for r in results):
        return []
    acc, acc_lo, acc_hi = seed_band([[[c, *a] for c, a in zip(r.clean_accuracy, r.accuracy, strict=True)]
                                     for r in results])
    paths = plots.robustness_bars([0.0, *first.eps], dict(zip(labels, acc, strict=True)), out / f"{name}_accuracy",
                                  spread={lab: (acc_lo[m], acc_hi[m]) for m, lab in enumerate(labels)},
                                  title=f"Robustness under PGD ({_bars(note)})")
    for m, lab in enumerate(labels):
        if not first.layers[m] or any(len(r.cka[m]) != len(first.eps) for r in results):
            continue
        mean, lo, hi = seed_band([r.cka[m] for r in results])  # [E, L]
        series = {f"eps={e:g}": mean[k] for k, e in enumerate(first.eps)}
        bands = {f"eps={e:g}": (lo[k], hi[k]) for k, e in enumerate(first.eps)}
        paths += plots.curves(series, first.layers[m], out / f"{name}_cka_{m}_{_slug(lab)}", bands=bands,
                              title=f"CKA clean vs adversarial: {lab} ({note})",
                              ylim=curve_ylim(np.concatenate([lo.ravel(), hi.ravel()])))
    return paths


def _accuracy_table(name: str, results: Sequence[Any], out: Path, note: str) -> list[Path]:
    from . import plots

    first = results[0]
    keys = [(r["model"], r["type"]) for r in first.rows if r.get("ours (%)") is not None]
    per = [{(r["model"], r["type"]): r.get("ours (%)") for r in res.rows} for res in results]
    if not keys or any(any(p.get(k) is None for k in keys) for p in per):
        return []
    mean, lo, hi = seed_band([[p[k] for k in keys] for p in per])
    return plots.paper_bars([f"{m} {t}" for m, t in keys], mean, [None] * len(keys), out / f"{name}_accuracy",
                            spread=(lo, hi),
                            title=f"Accuracy at {first.scale} scale ({_bars(note)}; the paper's {first.table} "
                                  "numbers: table)")


def seed_figures(name: str, results: Sequence[Any], out: str | Path) -> list[Path]:
    """The figures of one analysis over its seeds (``results``, seed order): the mean with a band spanning the
    seeds' range. CKA comparisons: the curve of corresponding layers (not of a model against itself) and the mean
    heatmap; overviews: every
    pair's curve; temporal CKA: the mean CKA between time steps per layer and the mean ``T x T`` grid; blocks:
    the curve by layer type; robustness: the accuracy per eps (error bars) and each model's clean-vs-adversarial
    CKA curves; accuracy tables: the bars with the seeds' range as error bars. Other kinds, or seeds whose
    layers differ: no figure (their per-seed figures stand)."""
    from .analyses import BlocksResult, CompareAnalysis, Overview, RobustnessResult, TemporalAnalysis

    draw: dict[type, Callable[[str, Sequence[Any], Path, str], list[Path]]] = {
        CompareAnalysis: _compare, Overview: _overview, TemporalAnalysis: _temporal, BlocksResult: _blocks,
        RobustnessResult: _robustness}
    first = results[0]
    how = next((f for t, f in draw.items() if isinstance(first, t)),
               _accuracy_table if getattr(first, "analysis", "") == "paper-table" else None)
    if how is None:
        return []
    return how(name, results, Path(out), f"mean of {len(results)} seeds; band: their range")
