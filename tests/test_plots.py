"""Every figure function writes a non-blank PNG of the expected pixel size and a valid SVG."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from snncka import plots

LAYERS = ["conv1", "bn1", "s1.b0.act1", "s1.b0.conv1", "s1.b0", "s2.b0.act1", "s2.b0.conv1", "s2.b0", "act",
          "fc"]
KINDS = ["conv", "norm", "act", "conv", "block", "act", "conv", "block", "act", "linear"]


def _check(paths, size):
    png = next(p for p in paths if p.suffix == ".png")
    svg = next(p for p in paths if p.suffix == ".svg")
    img = np.asarray(Image.open(png).convert("RGB"), dtype=float)
    assert img.shape[1::-1] == size  # (width, height) in pixels = figsize * dpi
    assert img.std() > 10 and len(np.unique(img.reshape(-1, 3), axis=0)) > 20  # not blank
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    return img


def test_stage_boundaries():
    assert plots.stage_boundaries(LAYERS) == [(1.5, "s1"), (4.5, "s2"), (7.5, "head")]
    assert plots.stage_of("s3.b2.conv1") == "s3" and plots.stage_of("fc") == ""


def test_heatmap(tmp_path):
    rng = np.random.default_rng(0)
    m = rng.uniform(0, 1, (len(LAYERS), len(LAYERS)))
    paths = plots.heatmap(m, LAYERS, LAYERS, tmp_path / "h", title="t", figsize=(5, 4), dpi=80)
    assert [p.name for p in paths] == ["h.png", "h.svg"]
    _check(paths, (400, 320))
    with pytest.raises(ValueError, match="does not match"):
        plots.heatmap(m[:3], LAYERS, LAYERS, tmp_path / "bad")


def test_heatmap_colours_follow_the_fixed_scale(tmp_path):
    # a matrix of ones renders in the colour map's top colour, zeros in its bottom colour
    import matplotlib

    cmap = matplotlib.colormaps[plots.CMAP]
    for v in (0.0, 1.0):
        paths = plots.heatmap(np.full((4, 4), v), LAYERS[:4], LAYERS[:4], tmp_path / f"c{v}", figsize=(4, 4),
                              dpi=50, formats=("png",))
        img = np.asarray(Image.open(paths[0]).convert("RGB"), dtype=int)
        want = (np.array(cmap(v)[:3]) * 255).round().astype(int)
        assert (np.abs(img - want).sum(-1) <= 3).mean() > 0.15  # the heatmap area has that colour


def test_heatmap_grid(tmp_path):
    m = np.eye(len(LAYERS))
    panels = [(m, LAYERS, LAYERS, f"p{i}", "x", "y") for i in range(3)]
    paths = plots.heatmap_grid(panels, tmp_path / "g", ncols=3, panel_size=2.0, dpi=50)
    _check(paths, (int((2.0 * 3 + 0.8) * 50), int((2.0 + 0.4) * 50)))


def test_curves(tmp_path):
    ys = np.linspace(1, 0.3, len(LAYERS))
    paths = plots.curves({"a": ys, "b": ys[::-1]}, LAYERS, tmp_path / "c", figsize=(6, 3), dpi=60)
    _check(paths, (360, 180))
    paths = plots.curves({"a": ys}, LAYERS, tmp_path / "k", kinds=KINDS, figsize=(6, 3), dpi=60)
    _check(paths, (360, 180))
    with pytest.raises(ValueError, match="values for"):
        plots.curves({"a": ys[:3]}, LAYERS, tmp_path / "bad")


def test_temporal_grid(tmp_path):
    mats = np.stack([np.full((4, 4), v) for v in np.linspace(0.2, 1, 9)])
    paths = plots.temporal_grid(mats, [f"s{i // 3 + 1}.b{i % 3}" for i in range(9)], tmp_path / "t",
                                panel_size=1.5, dpi=60)
    _check(paths, (int((1.5 * 3 + 0.9) * 60), int((1.5 * 3 + 0.4) * 60)))
    with pytest.raises(ValueError, match="T, T"):
        plots.temporal_grid(mats[:, :, :2], ["a"] * 9, tmp_path / "bad")


def test_temporal_grid_scale_is_fitted_to_the_data(tmp_path):
    # CKA across time steps often spans only 0.85..1: the lowest value gets the colour map's bottom colour
    # and the highest its top colour (on a fixed 0..1 scale every panel would be the same yellow)
    import matplotlib

    assert plots.fitted_range(np.array([[0.85, 0.9], [np.nan, 1.0]])) == (0.85, 1.0)
    assert plots.fitted_range(np.ones((2, 2))) == (0.95, 1.0)  # at least 0.05 wide
    assert plots.fitted_range(np.full((2, 2), np.nan)) == (0.0, 1.0)
    mats = np.stack([np.full((4, 4), 0.85), np.full((4, 4), 1.0)])
    paths = plots.temporal_grid(mats, ["s1.b0", "s2.b0"], tmp_path / "t", panel_size=2.0, dpi=50,
                                formats=("png",))
    img = np.asarray(Image.open(paths[0]).convert("RGB"), dtype=int)
    cmap = matplotlib.colormaps[plots.CMAP]
    for v in (0.0, 1.0):
        want = (np.array(cmap(v)[:3]) * 255).round().astype(int)
        assert (np.abs(img - want).sum(-1) <= 3).mean() > 0.1, v


def test_importing_plots_leaves_the_backend_alone():
    # a notebook user's backend must survive `import snncka.plots` and drawing a figure; pyplot stays unused
    import subprocess
    import sys

    code = ("import matplotlib, sys; matplotlib.use('svg'); import snncka.plots as p, numpy as np, tempfile; "
            "p.heatmap(np.eye(2), ['a', 'b'], ['a', 'b'], tempfile.mkdtemp() + '/h'); "
            "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["svg", "False"]


def test_block_profile_robustness_probe_rates(tmp_path):
    _check(plots.block_profile(["act1", "conv1", "bn1", "output"], {"m": [0.8, 0.6, 0.6, 0.95]},
                               tmp_path / "b", figsize=(5, 3), dpi=60), (300, 180))
    _check(plots.robustness_bars([0, 0.01, 0.05], {"ANN": [91, 48, 1], "SNN": [89, 68, 12]}, tmp_path / "r",
                                 figsize=(6, 3), dpi=60), (360, 180))
    _check(plots.probe_curves(["s1.b0", "s2.b0", "s3.b0"], {"ANN": [60, 80, 95]}, tmp_path / "p",
                              model_accuracy={"ANN": 96}, figsize=(6, 3), dpi=60), (360, 180))
    per_step = np.array([[0.1, 0.2, 0.3, 0.2], [0.05, 0.1, 0.1, 0.1]])
    _check(plots.rate_bars(["s1.b0.act1", "act"], per_step.mean(1), tmp_path / "f", per_step=per_step,
                           figsize=(6, 3), dpi=60), (360, 180))


def test_save_figure_rejects_unknown_format(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure()
    with pytest.raises(ValueError, match="unsupported figure format"):
        plots.save_figure(fig, tmp_path / "x", formats=("bmp",))
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_stage_ticks_name_each_stage_at_its_middle():
    # stem = conv1,bn1 (0..1), s1 = 2..4, s2 = 5..7, head = act,fc (8..9)
    assert plots.stage_ticks(LAYERS) == [(0.5, "stem"), (3.0, "s1"), (6.0, "s2"), (8.5, "head")]
    assert plots.stage_ticks(["conv1", "s1.b0", "s2.b0", "fc"]) == [(0.0, "stem"), (1.0, "s1"), (2.0, "s2"),
                                                                    (3.0, "fc")]
    assert plots.stage_ticks([]) == []


def test_heatmap_axes_carry_stage_names(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.subplots()
    plots._draw_heatmap(ax, np.zeros((len(LAYERS), len(LAYERS))), LAYERS, LAYERS, "t", "SNN layers", "ANN layers")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["stem", "s1", "s2", "head"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["stem", "s1", "s2", "head"]
    assert "dashed: stage boundaries" in ax.get_xlabel()


def test_bar_legend_hides_no_bar():
    fig = plots._bars_figure(["0", "0.01", "0.05"], {"ANN resnet20 x1 seed0": [99, 98, 97],
                                                     "SNN resnet20 x1 T4 seed0": [99, 97, 95]},
                             xlabel="eps", ylabel="acc", ylim=(0, 105), fmt="%.1f", title="t", figsize=(6, 3.5))
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    bars = [p.get_window_extent(renderer) for p in fig.axes[0].patches]
    assert len(bars) == 6 and not any(box.overlaps(b) for b in bars)
