"""Results of several seeds: names, groups, and figures of the seed mean with a band (in the report too)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from snncka import plots
from snncka.analyses.compare_analysis import overview
from snncka.report import build_report
from snncka.seed_runs import seed_figures, seed_groups, seed_of
from test_verdicts import measured_pair, table


def test_seed_names_and_groups() -> None:
    assert seed_of("compare-resnet20-s3") == ("compare-resnet20", 3)
    assert seed_of("compare-resnet20x2") == ("compare-resnet20x2", 0)
    a, b, c = (measured_pair("SNN resnet8 T4", 0.5, seed=s) for s in range(3))
    groups = seed_groups([("compare-x-s2", c), ("compare-x", a), ("compare-x-s1", b), ("compare-y", a)])
    assert list(groups) == ["compare-x"] and [k for k, _ in groups["compare-x"]] == [0, 1, 2]


def test_seed_figures_draw_the_mean_and_the_seeds_range(tmp_path: Path, monkeypatch) -> None:
    runs = [measured_pair("SNN resnet8 T4", noise, seed=s) for s, noise in enumerate((0.3, 0.6, 0.9))]
    drawn = {}
    real = plots.curves

    def spy(series, layers, out, **kw):
        drawn.update(series=series, bands=kw.get("bands"))
        return real(series, layers, out, **kw)

    monkeypatch.setattr(plots, "curves", spy)
    paths = seed_figures("compare-x", runs, tmp_path)
    assert sorted(p.name for p in paths if p.suffix == ".png") == ["compare-x_curve.png", "compare-x_heatmap.png"]
    d = np.stack([r.corresponding()[1] for r in runs])
    (label, mean), = drawn["series"].items()
    np.testing.assert_allclose(mean, d.mean(0))
    lo, hi = drawn["bands"][label]
    np.testing.assert_allclose(lo, d.min(0))
    np.testing.assert_allclose(hi, d.max(0))
    ov = [overview("t", [r], ["SNN resnet8"]) for r in runs]
    assert [p.name for p in seed_figures("overview", ov, tmp_path) if p.suffix == ".png"] == ["overview_curves.png"]
    accs = [table("table1", {("resnet20", "ann"): a, ("resnet20", "snn"): a - 2}) for a in (90.0, 92.0)]
    assert [p.name for p in seed_figures("paper-table1", accs, tmp_path)
            if p.suffix == ".png"] == ["paper-table1_accuracy.png"]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_report_draws_an_analysis_of_several_seeds_once(tmp_path: Path) -> None:
    res = tmp_path / "results"
    res.mkdir()
    for s, noise in enumerate((0.3, 0.6)):
        measured_pair("SNN resnet8 T4", noise, seed=s).save(res, "compare-x" + (f"-s{s}" if s else ""))
    measured_pair("SNN resnet14 T4", 0.5, seed=9).save(res, "compare-y")
    doc = build_report(tmp_path).read_text()
    for fig in ("curve", "heatmap"):
        assert f"compare-x, mean of 2 seeds: compare-x_{fig}" in doc
    alts = re.findall(r"alt='([^']*)'", doc)  # compare-y alone keeps its own figures; compare-x's seeds do not
    assert sorted(alts) == sorted([f"compare-x, mean of 2 seeds: compare-x_{fig}" for fig in ("curve", "heatmap")]
                                  + ["compare_heatmap", "compare_curve"])
