"""Figures in the paper's style (matplotlib): CKA heatmaps, CKA curves, T x T grids, robustness
bars, probe curves and firing rates.

Every function takes plain arrays and layer names (so any result, saved or fresh, can be drawn), writes the
figure as PNG and SVG next to ``out`` (``out`` is a path without suffix) atomically, and returns the written
paths. Figures have a fixed size (``figsize`` inches at ``dpi``), so a PNG is exactly
``figsize[0]*dpi x figsize[1]*dpi`` pixels. Heatmaps use a fixed 0..1 colour scale with a colour bar (values
outside, possible with the unbiased estimator, are clipped in colour only) and mark stage boundaries
(``s1.*`` | ``s2.*`` | ...) with dashed lines, as in the paper's Fig. 2. The ``T x T`` grids of Fig. 6 use one
colour scale fitted to their values (stated on the colour bar), since those values often span only 0.85..1.

Figures are ``matplotlib.figure.Figure`` objects drawn without pyplot: importing this module neither selects
nor changes the matplotlib backend (a notebook keeps its own), and no figure is left open in pyplot's state.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from .files import atomic_write

__all__ = [
    "FORMATS",
    "fitted_range",
    "block_profile",
    "curves",
    "grouped_bars",
    "heatmap",
    "heatmap_grid",
    "stage_ticks",
    "overlay_lines",
    "probe_curves",
    "rate_bars",
    "robustness_bars",
    "save_figure",
    "stage_boundaries",
    "stage_of",
    "temporal_grid",
]

FORMATS: tuple[str, ...] = ("png", "svg")
CMAP = "inferno"  # high similarity is yellow, as in the paper's figures
KIND_STYLE: dict[str, tuple[str, str, str]] = {
    # kind -> (legend label, colour, marker), the legend of the paper's Fig. 3
    "block": ("Res. block", "tab:red", "*"),
    "act": ("LIF/ReLU", "tab:blue", "o"),
    "conv": ("Conv", "tab:green", "s"),
    "norm": ("(td)BN", "tab:orange", "^"),
}


def save_figure(fig: Figure, out: str | Path, formats: Sequence[str] = FORMATS, dpi: int = 100) -> list[Path]:
    """Write ``fig`` as ``out.<fmt>`` for each format, atomically (temp file + ``os.replace``)."""
    out = Path(out)
    bad = [f for f in formats if f not in ("png", "svg", "pdf")]
    if bad:
        raise ValueError(f"unsupported figure format {bad[0]!r}; use png, svg or pdf")
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    engine = fig.get_layout_engine()
    try:
        for fmt in formats:
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, dpi=dpi, metadata={"Date": None} if fmt == "svg" else None)
            # the layout is computed once, for the first format; the others reuse it (a constrained layout
            # of a many-panel figure costs as much as drawing it)
            fig.set_layout_engine("none")
            path = out.with_name(out.name + "." + fmt)
            atomic_write(path, functools.partial(Path.write_bytes, data=buf.getvalue()))
            paths.append(path)
    finally:
        fig.set_layout_engine(engine)
    return paths


def stage_of(name: str) -> str:
    """The stage a layer belongs to: ``"s2"`` for ``s2.b0.conv1``; ``"stem"``/``"head"`` otherwise
    (decided by position in ``stage_boundaries``)."""
    m = re.match(r"(s\d+)(\.|$)", name)
    return m.group(1) if m else ""


def stage_boundaries(layers: Sequence[str]) -> list[tuple[float, str]]:
    """Positions (between layer indices, e.g. 6.5) where the stage changes, with the new stage's name."""
    out = []
    prev = None
    for i, name in enumerate(layers):
        s = stage_of(name) or ("stem" if prev is None or prev == "stem" else "head")
        if prev is not None and s != prev:
            out.append((i - 0.5, s))
        prev = s
    return out


def _new(figsize: tuple[float, float], **kw) -> tuple[Figure, object]:
    """A figure (no pyplot, no backend) and its axes."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(**kw)


def stage_ticks(layers: Sequence[str]) -> list[tuple[float, str]]:
    """One tick per stage at its middle layer, named ``stem``/``s1``/.../``head`` (the head by its layer name,
    e.g. ``fc``, when it is one layer), so a heatmap's axes say which layers a region holds."""
    if not layers:
        return []
    bounds = stage_boundaries(layers)
    starts = [-0.5] + [b for b, _ in bounds]
    ends = [b for b, _ in bounds] + [len(layers) - 0.5]
    first = stage_of(layers[0]) or "stem"
    names = [first] + [n for _, n in bounds]
    out = []
    for lo, hi, name in zip(starts, ends, names, strict=True):
        if name == "head" and hi - lo == 1:
            name = layers[int(lo + 0.5)].split(".")[-1]
        out.append(((lo + hi) / 2, name))
    return out


def _mark_stages(ax, layers: Sequence[str], axis: str, color: str = "white") -> None:
    """Dashed lines at the stage boundaries, and stage names as the axis's ticks."""
    for pos, _ in stage_boundaries(layers):
        if axis == "x":
            ax.axvline(pos, color=color, lw=0.8, ls="--", alpha=0.8)
        else:
            ax.axhline(pos, color=color, lw=0.8, ls="--", alpha=0.8)
    ticks = stage_ticks(layers)
    if len(ticks) > 1:
        set_ticks = ax.set_xticks if axis == "x" else ax.set_yticks
        set_ticks([t for t, _ in ticks], [n for _, n in ticks], fontsize=7)


def _draw_heatmap(
    ax,
    matrix: np.ndarray,
    x_layers: Sequence[str],
    y_layers: Sequence[str],
    title: str,
    x_label: str,
    y_label: str,
):
    m = np.asarray(matrix, dtype=float)
    if m.shape != (len(y_layers), len(x_layers)):
        raise ValueError(
            f"matrix shape {m.shape} does not match {len(y_layers)} y layers x {len(x_layers)} x layers"
        )
    im = ax.imshow(m, origin="lower", cmap=CMAP, vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    _mark_stages(ax, x_layers, "x")
    _mark_stages(ax, y_layers, "y")
    staged = len(stage_boundaries(x_layers)) + len(stage_boundaries(y_layers)) > 0
    ax.set_xlabel(x_label + (" (dashed: stage boundaries)" if staged else ""), fontsize=8 if staged else None)
    ax.set_ylabel(y_label)
    ax.set_title(title, fontsize=10 if "\n" not in title else 8)
    return im


def heatmap(
    matrix: np.ndarray,
    x_layers: Sequence[str],
    y_layers: Sequence[str],
    out: str | Path,
    *,
    x_label: str = "SNN layers",
    y_label: str = "ANN layers",
    title: str = "",
    figsize: tuple[float, float] = (5.5, 4.5),
    dpi: int = 100,
    formats: Sequence[str] = FORMATS,
) -> list[Path]:
    """Cross-layer CKA heatmap, ``matrix[i, j]`` = CKA(y layer i, x layer j); 0..1 colour bar, stage lines.

    By the paper's convention the SNN's layers go on x and the ANN's on y (``analyses`` orients results so).
    """
    fig, ax = _new(figsize)
    im = _draw_heatmap(ax, matrix, x_layers, y_layers, title, x_label, y_label)
    fig.colorbar(im, ax=ax, label="CKA")
    return save_figure(fig, out, formats, dpi)


def heatmap_grid(
    panels: Sequence[tuple[np.ndarray, Sequence[str], Sequence[str], str, str, str]],
    out: str | Path,
    *,
    ncols: int | None = None,
    title: str = "",
    panel_size: float = 3.2,
    dpi: int = 100,
    formats: Sequence[str] = FORMATS,
) -> list[Path]:
    """Several heatmaps side by side with one shared 0..1 colour bar (e.g. the seed pairings of App. C).

    Each panel is ``(matrix, x_layers, y_layers, title, x_label, y_label)``.
    """
    if not panels:
        raise ValueError("heatmap_grid needs at least one panel")
    n = len(panels)
    ncols = ncols or min(n, 4)
    nrows = -(-n // ncols)
    fig, axes = _new((panel_size * ncols + 0.8, panel_size * nrows + 0.4), nrows=nrows, ncols=ncols,
                     squeeze=False)
    im = None
    for ax, (m, xl, yl, t, xlab, ylab) in zip(axes.flat, panels, strict=False):
        im = _draw_heatmap(ax, m, xl, yl, t, xlab, ylab)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.colorbar(im, ax=axes, label="CKA", shrink=0.8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, out, formats, dpi)


def curves(
    series: Mapping[str, Sequence[float]],
    layers: Sequence[str],
    out: str | Path,
    *,
    kinds: Sequence[str] | None = None,
    title: str = "",
    ylabel: str = "CKA",
    ylim: tuple[float, float] | None = (0.0, 1.05),
    figsize: tuple[float, float] = (7.0, 3.5),
    dpi: int = 100,
    formats: Sequence[str] = FORMATS,
    bands: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
) -> list[Path]:
    """CKA curves (e.g. a heatmap's diagonal) over layers, one line per series, with a legend.

    With ``kinds`` (one per layer), points are marked by layer type (residual-block output, LIF/ReLU, conv,
    norm) as in the paper's Fig. 3, which shows the periodic jagged shape. ``bands[series]``: (low, high) per
    layer, shaded around that series' line (e.g. the range of several seeds around their mean).
    """
    if not series:
        raise ValueError("curves needs at least one series")
    fig, ax = _new(figsize)
    x = np.arange(len(layers))
    for label, ys in series.items():
        ys = np.asarray(ys, dtype=float)
        if ys.shape != (len(layers),):
            raise ValueError(f"series {label!r} has {ys.shape} values for {len(layers)} layers")
        (line,) = ax.plot(x, ys, lw=1.2, label=label)
        if bands and label in bands:
            lo, hi = (np.asarray(v, dtype=float) for v in bands[label])
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    if kinds is not None and len(series) == 1:
        ys = np.asarray(next(iter(series.values())), dtype=float)
        k = np.asarray(kinds)
        for kind, (lab, col, mk) in KIND_STYLE.items():
            sel = k == kind
            if sel.any():
                ax.scatter(x[sel], ys[sel], s=22, color=col, marker=mk, label=lab, zorder=3)
    _mark_stages(ax, layers, "x", color="grey")
    ax.set_xlabel("Layers")
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlim(-0.5, len(layers) - 0.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title, fontsize=10)
    return save_figure(fig, out, formats, dpi)


def fitted_range(values: np.ndarray, min_width: float = 0.05) -> tuple[float, float]:
    """A colour range from the smallest to the largest finite value, widened downwards to ``min_width``
    (0..1 when nothing is finite)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not v.size:
        return 0.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    return (min(lo, hi - min_width), hi)


def temporal_grid(
    matrices: np.ndarray,
    labels: Sequence[str],
    out: str | Path,
    *,
    ncols: int | None = None,
    title: str = "",
    panel_size: float = 1.8,
    dpi: int = 100,
    formats: Sequence[str] = FORMATS,
) -> list[Path]:
    """A grid of ``T x T`` CKA heatmaps (time step vs time step), one per layer, labelled by layer
    (``s1.b0`` ...): the paper's Fig. 6. One colour scale for all panels, fitted to their finite values (from
    the smallest to the largest, at least 0.05 wide) and stated on the shared colour bar; axes are time steps."""
    mats = np.asarray(matrices, dtype=float)
    if mats.ndim != 3 or mats.shape[1] != mats.shape[2] or len(labels) != mats.shape[0] or not len(labels):
        raise ValueError(
            f"temporal_grid needs [L, T, T] matrices with one label per layer, got {mats.shape} "
            f"and {len(labels)} labels"
        )
    n = mats.shape[0]
    ncols = ncols or min(n, int(np.ceil(np.sqrt(n))) if n > 9 else n if n <= 3 else 3)
    nrows = -(-n // ncols)
    fig, axes = _new((panel_size * ncols + 0.9, panel_size * nrows + 0.4), nrows=nrows, ncols=ncols,
                     squeeze=False)
    vmin, vmax = fitted_range(mats)
    im = None
    T = mats.shape[1]
    for k, (ax, m, lab) in enumerate(zip(axes.flat, mats, labels, strict=False)):
        im = ax.imshow(m, origin="lower", cmap=CMAP, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(lab, fontsize=9)
        ticks = np.unique(np.linspace(0, T - 1, min(T, 4)).round().astype(int))
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.tick_params(labelsize=7)
        if k + ncols >= n:  # the lowest panel of its column
            ax.set_xlabel("time step", fontsize=8)
        if k % ncols == 0:
            ax.set_ylabel("time step", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.colorbar(im, ax=axes, label=f"CKA (scale {vmin:.2f} to {vmax:.2f}, fitted to the data)", shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, out, formats, dpi)


def block_profile(
    positions: Sequence[str],
    means: Mapping[str, Sequence[float]],
    out: str | Path,
    *,
    title: str = "",
    figsize: tuple[float, float] = (5.0, 3.5),
    dpi: int = 100,
    formats: Sequence[str] = FORMATS,
) -> list[Path]:
    """Mean CKA at each position inside a residual block (act1, conv1, bn1, ..., block output), one line per
    series: the paper's Fig. 3 (top right)."""
    fig, ax = _new(figsize)
    x = np.arange(len(positions))
    for label, ys in means.items():
        ax.plot(x, np.asarray(ys, dtype=float), marker="o", label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(positions, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("mean CKA")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, out, formats, dpi)


def robustness_bars(
    eps: Sequence[float],
    accuracy: Mapping[str, Sequence[float]],
    out: str | Path,
    *,
    title: str = "Robustness under PGD",
    figsize: tuple[float, float] = (6.0, 3.5),
    dpi: int = 100,
    formats: Sequence[str] = FORMATS,
    spread: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
) -> list[Path]:
    """Grouped bars: accuracy (%) of each model at each eps (include eps 0 for clean), values on the bars;
    the paper's Fig. 8 (left). ``spread[model]``: (low, high) per eps, drawn as error bars."""
    return grouped_bars([f"{e:g}" for e in eps], accuracy, out, xlabel="eps (L-inf)", ylabel="Accuracy (%)",
                        ylim=(0, 105), title=title, figsize=figsize, dpi=dpi, formats=formats, spread=spread)


def grouped_bars(
    groups: Sequence[str],
    values: Mapping[str, Sequence[float]],
    out: str | Path,
    *,
    xlabel: str = "",
    ylabel: str = "",
    ylim: tuple[float, float] | None = None,
    fmt: str = "%.1f",
    title: str = "",
    figsize: tuple[float, float] = (6.0, 3.5),
    dpi: int = 100,
    formats: Sequence[str] = FORMATS,
    spread: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
) -> list[Path]:
    """Bars side by side: one group per entry of ``groups``, one bar per series of ``values`` in each group,
    values on the bars (e.g. the mean CKA per layer type under two recipes); the legend sits above the axes.
    ``spread[series]``: (low, high) per group, drawn as error bars (e.g. the range of several seeds)."""
    fig = _bars_figure(groups, values, xlabel=xlabel, ylabel=ylabel, ylim=ylim, fmt=fmt, title=title,
                       figsize=figsize, spread=spread)
    return save_figure(fig, out, formats, dpi)


def _bars_figure(groups: Sequence[str], values: Mapping[str, Sequence[float]], *, xlabel: str, ylabel: str,
                 ylim: tuple[float, float] | None, fmt: str, title: str, figsize: tuple[float, float],
                 spread: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None) -> Figure:
    fig, ax = _new(figsize)
    n = len(values)
    width = 0.8 / max(n, 1)
    x = np.arange(len(groups))
    for i, (label, vals) in enumerate(values.items()):
        v = np.asarray(vals, dtype=float)
        if v.shape != (len(groups),):
            raise ValueError(f"{label!r}: {v.shape} values for {len(groups)} groups")
        err = None if not spread or label not in spread else np.abs(np.asarray(spread[label], dtype=float) - v)
        bars = ax.bar(x + (i - (n - 1) / 2) * width, v, width, label=label, yerr=err, capsize=2)
        ax.bar_label(bars, fmt=fmt, fontsize=6, padding=1, label_type="edge" if err is None else "center")
    ax.set_xticks(x)
    ax.set_xticklabels(list(groups))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if n:  # above the axes, beside no bar: a legend inside the axes hides the bars under it
        fig.legend(loc="outside upper center", ncols=min(n, 3), fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10)
    return fig


LINE_STYLES = ("-", "--", ":", "-.")


def overlay_lines(
    x: Sequence[float],
    series: Mapping[str, Mapping[str, Sequence[float]]],
    out: str | Path,
    *,
    xlabel: str = "",
    ylabel: str = "",
    ylim: tuple[float, float] | None = None,
    title: str = "",
    figsize: tuple[float, float] = (6.0, 3.5),
    dpi: int = 100,
    formats: Sequence[str] = FORMATS,
) -> list[Path]:
    """Lines over ``x`` (shown at equal spacing, labelled by value), ``series[group][variant]``: one colour
    per group (e.g. ANN, SNN) and one line style per variant (e.g. the paper's and the code's recipe), so
    the variants of each group lie on top of each other."""
    fig, ax = _new(figsize)
    pos = np.arange(len(x))
    variants = list(dict.fromkeys(v for by_variant in series.values() for v in by_variant))
    for g, (group, by_variant) in enumerate(series.items()):
        color = f"C{g % 10}"
        for variant, ys in by_variant.items():
            y = np.asarray(ys, dtype=float)
            if y.shape != (len(x),):
                raise ValueError(f"{group!r} / {variant!r}: {y.shape} values for {len(x)} x values")
            style = LINE_STYLES[variants.index(variant) % len(LINE_STYLES)]
            ax.plot(pos, y, ls=style, marker="o", ms=3, color=color, label=f"{group} ({variant})")
    ax.set_xticks(pos)
    ax.set_xticklabels([f"{v:g}" for v in x])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, out, formats, dpi)


def probe_curves(
    blocks: Sequence[str],
    accuracy: Mapping[str, Sequence[float]],
    out: str | Path,
    *,
    model_accuracy: Mapping[str, float] | None = None,
    title: str = "Linear probes",
    figsize: tuple[float, float] = (6.0, 3.5),
    dpi: int = 100,
    formats: Sequence[str] = FORMATS,
) -> list[Path]:
    """Linear-probe accuracy (%) per block, one line per model, the model's own accuracy dashed (Fig. A.6)."""
    fig, ax = _new(figsize)
    x = np.arange(len(blocks))
    for i, (label, acc) in enumerate(accuracy.items()):
        (line,) = ax.plot(x, np.asarray(acc, dtype=float), marker="o", label=label)
        if model_accuracy and label in model_accuracy:
            ax.axhline(
                model_accuracy[label],
                color=line.get_color(),
                ls="--",
                lw=0.8,
                label=f"{label} (model)" if i < 8 else None,
            )
    ax.set_xticks(x)
    ax.set_xticklabels(blocks, rotation=45, ha="right", fontsize=7)
    ax.set_xlabel("Blocks")
    ax.set_ylabel("Accuracy (%)")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, out, formats, dpi)


def rate_bars(
    layers: Sequence[str],
    rates: Sequence[float],
    out: str | Path,
    *,
    per_step: np.ndarray | None = None,
    title: str = "Firing rates",
    figsize: tuple[float, float] = (7.0, 3.5),
    dpi: int = 100,
    formats: Sequence[str] = FORMATS,
) -> list[Path]:
    """Mean firing rate of each LIF layer (bars); with ``per_step`` ``[L, T]``, each step's rate as dots."""
    fig, ax = _new(figsize)
    x = np.arange(len(layers))
    ax.bar(x, np.asarray(rates, dtype=float), color="tab:blue", alpha=0.7, label="mean")
    if per_step is not None:
        ps = np.asarray(per_step, dtype=float)
        for t in range(ps.shape[1]):
            ax.scatter(
                x,
                ps[:, t],
                s=8,
                color=matplotlib.colormaps["viridis"](t / max(ps.shape[1] - 1, 1)),
                label=f"t={t}" if ps.shape[1] <= 8 else None,
                zorder=3,
            )
    ax.set_xticks(x)
    ax.set_xticklabels(layers, rotation=60, ha="right", fontsize=6)
    ax.set_ylabel("Firing rate")
    ax.set_ylim(0, max(1e-3, float(np.nanmax(rates)) * 1.25 if len(rates) else 1))
    ax.legend(fontsize=7, ncols=2)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, out, formats, dpi)


def paper_bars(
    labels: Sequence[str],
    ours: Sequence[float],
    paper: Sequence[float | None],
    out: str | Path,
    *,
    title: str = "",
    dpi: int = 100,
    formats: Sequence[str] = FORMATS,
    spread: tuple[Sequence[float], Sequence[float]] | None = None,
) -> list[Path]:
    """Grouped bars of our accuracies beside the paper's (missing paper values are left out); ``spread``:
    (low, high) of ours, drawn as error bars (e.g. the range of several seeds around their mean)."""
    fig, ax = _new((max(5.0, 0.55 * len(labels) + 2), 3.6))
    x = np.arange(len(labels))
    ours = np.asarray(ours, dtype=float)
    err = None if spread is None else np.abs(np.asarray(spread, dtype=float) - ours)
    pv = np.array([np.nan if p is None else p for p in paper], dtype=float)
    both = bool(np.isfinite(pv).any())  # no paper bars (and no legend) where the paper gives no number
    ax.bar(x - 0.2 * both, ours, 0.4, yerr=err, capsize=2, label="ours", color="#4c72b0")
    if both:
        ax.bar(x + 0.2, pv, 0.4, label="paper", color="#dd8452")
    ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("Accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    if both:  # above the axes, beside no bar
        fig.legend(loc="outside upper center", ncols=2, fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, out, formats, dpi)
