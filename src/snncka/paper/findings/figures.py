"""The figures of the paper's findings: the verdict grid (claims x recipes) and each claim's effect with its
95 % interval against the claim's threshold."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from ...plots import FORMATS, _new, save_figure

__all__ = ["VERDICT_COLOURS", "effect_intervals", "verdict_grid"]

VERDICT_COLOURS = {"holds": "#59a14f", "does not hold": "#e15759", "uncertain": "#f1ce63", "not measured": "#d9d9d9"}


def verdict_grid(
    rows: Sequence[str],
    columns: Sequence[str],
    verdicts: Sequence[Sequence[str]],
    out: str | Path,
    *,
    title: str = "",
    notes: Sequence[Sequence[str]] | None = None,
    dpi: int = 100,
    formats: Sequence[str] = FORMATS,
) -> list[Path]:
    """A table of verdicts (``verdicts[row][column]``: holds / does not hold / uncertain / not measured) as
    coloured cells with the verdict written in them (and ``notes[row][column]`` after it, e.g. "one seed"): the
    paper's findings under each recipe at a glance."""
    known = list(VERDICT_COLOURS)
    bad = {v for r in verdicts for v in r} - set(known)
    if bad or len(verdicts) != len(rows) or any(len(r) != len(columns) for r in verdicts):
        raise ValueError(f"verdict_grid needs {len(rows)} x {len(columns)} verdicts from {known}")
    fig, ax = _new((2.2 + 1.6 * len(columns), 0.8 + 0.32 * len(rows)))
    for i, row in enumerate(verdicts):
        for j, v in enumerate(row):
            ax.add_patch(Rectangle((j, i), 1, 1, color=VERDICT_COLOURS[v], ec="white"))
            note = notes[i][j] if notes else ""
            ax.text(j + 0.5, i + 0.5, f"{v} ({note})" if note else v, ha="center", va="center", fontsize=7)
    ax.set_xlim(0, len(columns))
    ax.set_ylim(len(rows), 0)
    ax.set_xticks(np.arange(len(columns)) + 0.5)
    ax.set_xticklabels(list(columns), fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks(np.arange(len(rows)) + 0.5)
    ax.set_yticklabels(list(rows), fontsize=7)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=9, pad=18)
    return save_figure(fig, out, formats, dpi)


def effect_intervals(
    rows: Sequence[str],
    thresholds: Sequence[tuple[float | None, str]],
    effects: Mapping[str, Sequence[tuple[float | None, Sequence[float | None] | None, str]]],
    out: str | Path,
    *,
    title: str = "",
    dpi: int = 100,
    formats: Sequence[str] = FORMATS,
) -> list[Path]:
    """One small panel per claim (``rows``): each series' effect (``effects[series][row]``: effect, its
    interval [low, high], verdict) as a dot with its 95 % interval as an error bar, coloured by verdict, against
    the claim's threshold (a dashed line; ``thresholds[row]``: value and the claim's side, e.g. ``">"``). Each
    panel has its own x scale (the claims' effects have different units); claims no series measured get none."""
    series = list(effects)
    keep = [i for i in range(len(rows)) if any(effects[n][i][0] is not None and np.isfinite(effects[n][i][0])
                                               for n in series)]  # claims not measured get no panel
    if not keep:
        return []
    rows, thresholds = [rows[i] for i in keep], [thresholds[i] for i in keep]
    effects = {n: [effects[n][i] for i in keep] for n in series}
    fig, axes = _new((7.0, 0.9 + 0.42 * len(rows) * max(1.0, len(series) / 2)), nrows=len(rows), ncols=1,
                     squeeze=False)
    for i, (label, (thr, side)) in enumerate(zip(rows, thresholds, strict=True)):
        ax = axes[i, 0]
        xs: list[float] = []
        for j, name in enumerate(series):
            e, iv, verdict = effects[name][i]
            if e is None or not np.isfinite(e):
                continue
            lo, hi = (e, e) if iv is None or None in iv else (float(iv[0]), float(iv[1]))
            ax.errorbar([e], [j], xerr=[[e - lo], [hi - e]], fmt="o", ms=4, capsize=3,
                        color=VERDICT_COLOURS.get(verdict, "#4e79a7"), ecolor="#555555")
            xs += [lo, hi, e]
        if thr is not None and np.isfinite(thr):
            ax.axvline(thr, color="#333333", ls="--", lw=0.9)
            xs.append(thr)
        if xs:
            span = (max(xs) - min(xs)) or 1.0
            ax.set_xlim(min(xs) - 0.1 * span, max(xs) + 0.1 * span)
        ax.set_ylim(-0.7, len(series) - 0.3)
        ax.set_yticks(range(len(series)))
        ax.set_yticklabels(series if len(series) > 1 else [""], fontsize=6)
        ax.tick_params(axis="x", labelsize=6, length=2)
        ax.set_ylabel(f"{label}\n(claim: {side} {thr:g})" if thr is not None and np.isfinite(thr) else label,
                      rotation=0, ha="right", va="center", fontsize=7)
        ax.grid(axis="x", alpha=0.3)
    handles = [Line2D([], [], marker="o", ls="", color=c, label=v) for v, c in VERDICT_COLOURS.items()
               if v != "not measured"]
    handles.append(Line2D([], [], ls="--", color="#333333", label="threshold"))
    fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, out, formats, dpi)
