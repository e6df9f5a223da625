"""Results of several seeds: names, groups, and figures of the seed mean with a band (in the report too)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from snncka import plots
from snncka.analyses import RobustnessResult, blocks_from
from snncka.analyses.compare_analysis import overview
from snncka.report import build_report
from snncka.seed_runs import seed_figures, seed_groups, seed_names, seed_of, unseeded
from test_findings import pgd, temporal
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


def _spy(monkeypatch, name: str) -> list[dict]:
    """Record every call of ``plots.<name>`` (its series or values and its bands), then draw it."""
    calls: list[dict] = []
    real = getattr(plots, name)

    def spy(*args, **kw):
        calls.append({"args": args, **kw})
        return real(*args, **kw)

    monkeypatch.setattr(plots, name, spy)
    return calls


def test_unseeded_labels() -> None:
    assert unseeded("SNN resnet20 T4 seed1") == "SNN resnet20 T4"
    assert unseeded("SNN resnet8 T4 seed0 vs ANN resnet8 seed0") == "SNN resnet8 T4 vs ANN resnet8"
    assert unseeded("ANN resnet20 x4") == "ANN resnet20 x4"


def test_seed_figures_of_temporal_results(tmp_path: Path, monkeypatch) -> None:
    # two seeds of an SNN whose block outputs have off-diagonal CKA 0.8/0.6 (seed 0) and 0.9/0.4 (seed 1)
    runs = [temporal(f"SNN resnet8 T3 seed{s}", 3, {"s1.b0": a, "s2.b0": b}) for s, (a, b) in
            enumerate(((0.8, 0.6), (0.9, 0.4)))]
    curves, grids = _spy(monkeypatch, "curves"), _spy(monkeypatch, "temporal_grid")
    paths = seed_figures("temporal-x", runs, tmp_path)
    assert sorted(p.name for p in paths if p.suffix == ".png") == ["temporal-x_curve.png", "temporal-x_grid.png"]
    (call,) = curves
    (label, mean), = call["args"][0].items()
    assert label == "SNN resnet8 T3" and call["ylabel"] == "mean CKA between time steps"
    # the layers: s1.b0, s2.b0 and a conv layer at 0.1 in both seeds
    np.testing.assert_allclose(mean, [0.85, 0.5, 0.1])
    np.testing.assert_allclose(call["bands"][label][0], [0.8, 0.4, 0.1])
    np.testing.assert_allclose(call["bands"][label][1], [0.9, 0.6, 0.1])
    (g,) = grids  # the block outputs' mean T x T matrices
    assert list(g["args"][1]) == ["s1.b0", "s2.b0"]
    np.testing.assert_allclose(g["args"][0][0], [[1, 0.85, 0.85], [0.85, 1, 0.85], [0.85, 0.85, 1]])
    np.testing.assert_allclose(g["args"][0][1, 0, 1], 0.5)


def test_seed_figures_of_blocks_results(tmp_path: Path, monkeypatch) -> None:
    names = ["s1.b0.conv1", "s1.b0.act1", "s1.b0"]
    kinds = ["conv", "act", "block"]
    runs = [blocks_from(v, names, kinds, f"SNN resnet8 T4 seed{s} vs ANN resnet8 seed{s}")
            for s, v in enumerate(([0.5, 0.6, 0.9], [0.7, 0.4, 0.8]))]
    calls = _spy(monkeypatch, "curves")
    paths = seed_figures("blocks-x", runs, tmp_path)
    assert [p.name for p in paths if p.suffix == ".png"] == ["blocks-x_curve.png"]
    (call,) = calls
    (label, mean), = call["args"][0].items()
    assert label == "SNN resnet8 T4 vs ANN resnet8" and list(call["kinds"]) == kinds
    np.testing.assert_allclose(mean, [0.6, 0.5, 0.85])
    np.testing.assert_allclose(call["bands"][label][0], [0.5, 0.4, 0.8])
    np.testing.assert_allclose(call["bands"][label][1], [0.7, 0.6, 0.9])


def test_seed_figures_of_robustness_results(tmp_path: Path, monkeypatch) -> None:
    def run(seed: int, clean, acc, cka) -> RobustnessResult:
        r = pgd(clean, acc, cka)
        r.labels = [f"{lab} seed{seed}" for lab in r.labels]
        return r

    # accuracy [model][eps] at eps 0.001, 0.01; CKA [model][eps][layer] over layers l0, l1
    runs = [run(0, (90, 80), ((70, 40), (60, 30)), [[[0.9, 0.8], [0.7, 0.6]], [[0.95, 0.9], [0.5, 0.4]]]),
            run(1, (94, 86), ((74, 50), (50, 20)), [[[0.7, 0.8], [0.5, 0.2]], [[0.85, 0.7], [0.3, 0.4]]])]
    bars, curves = _spy(monkeypatch, "grouped_bars"), _spy(monkeypatch, "curves")
    paths = seed_figures("robustness-x", runs, tmp_path)
    assert sorted(p.name for p in paths if p.suffix == ".png") == [
        "robustness-x_accuracy.png", "robustness-x_cka_0_ann_resnet8.png", "robustness-x_cka_1_snn_resnet8_t4.png"]
    (b,) = bars
    assert list(b["args"][0]) == ["0", "0.001", "0.01"] and b["xlabel"] == "eps (L-inf)"
    np.testing.assert_allclose(b["args"][1]["ANN resnet8"], [92, 72, 45])
    np.testing.assert_allclose(b["args"][1]["SNN resnet8 T4"], [83, 55, 25])
    np.testing.assert_allclose(b["spread"]["ANN resnet8"], [[90, 70, 40], [94, 74, 50]])
    np.testing.assert_allclose(b["spread"]["SNN resnet8 T4"], [[80, 50, 20], [86, 60, 30]])
    ann, snn = curves
    assert list(ann["args"][0]) == ["eps=0.001", "eps=0.01"] and "ANN resnet8" in ann["title"]
    np.testing.assert_allclose(ann["args"][0]["eps=0.001"], [0.8, 0.8])
    np.testing.assert_allclose(ann["bands"]["eps=0.001"], [[0.7, 0.8], [0.9, 0.8]])
    np.testing.assert_allclose(snn["args"][0]["eps=0.01"], [0.4, 0.4])
    np.testing.assert_allclose(snn["bands"]["eps=0.01"], [[0.3, 0.4], [0.5, 0.4]])


def test_seeds_whose_layers_differ_get_no_seed_figure(tmp_path: Path) -> None:
    a = blocks_from([0.5, 0.9], ["s1.b0.conv1", "s1.b0"], ["conv", "block"], "x")
    b = blocks_from([0.5, 0.9], ["s1.b0.conv2", "s1.b0"], ["conv", "block"], "x")
    assert seed_figures("blocks-x", [a, b], tmp_path) == []


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_report_draws_temporal_blocks_and_robustness_seeds_as_one_figure(tmp_path: Path) -> None:
    res = tmp_path / "results"
    res.mkdir()
    for s in range(2):
        sfx = f"-s{s}" if s else ""
        temporal(f"SNN resnet8 T3 seed{s}", 3, {"s1.b0": 0.8 - 0.1 * s}).save(res, "temporal-x" + sfx)
        blocks_from([0.5, 0.9 - 0.1 * s], ["s1.b0.conv1", "s1.b0"], ["conv", "block"], "SNN vs ANN").save(
            res, "blocks-x" + sfx)
        pgd((90 + s, 80), ((70, 40), (60, 30)), [[[0.9, 0.8], [0.7, 0.6]]] * 2).save(res, "robustness-x" + sfx)
    doc = build_report(tmp_path).read_text()
    alts = re.findall(r"alt='([^']*)'", doc)
    assert sorted(alts) == sorted(
        [f"temporal-x, mean of 2 seeds: temporal-x_{f}" for f in ("curve", "grid")]
        + ["blocks-x, mean of 2 seeds: blocks-x_curve"]
        + [f"robustness-x, mean of 2 seeds: robustness-x_{f}" for f in
           ("accuracy", "cka_0_ann_resnet8", "cka_1_snn_resnet8_t4")])


def test_two_seeds_with_equal_effects_keep_their_test_image_noise() -> None:
    """Two seeds whose accuracies differ by the same test images have a t interval of width 0 over the seeds;
    the interval of their mean is then the one their own (Agresti-Caffo) intervals give it, not a point."""
    from scipy.stats import norm

    from snncka.paper.findings import FAILS, UNCERTAIN, evaluate

    n, accs = 360, {("resnet8", "ann"): 98.89, ("resnet8", "snn"): 94.72, ("resnet8-nores", "ann"): 98.06,
                    ("resnet8-nores", "snn"): 94.44}
    f = {x.id: x for x in evaluate({"paper-table2": table("table2", accs, images=n),
                                    "paper-table2-s1": table("table2", accs, images=n)})}
    r = f["residuals-matter-more-for-snn"]
    extra = (94.72 - 94.44) - (98.89 - 98.06)
    z = norm.ppf(0.975)
    p = [(a / 100 * n + 2) / (n + 4) for a in accs.values()]
    seed_half = z * 100 * math.sqrt(sum(q * (1 - q) / (n + 4) for q in p))  # one seed's interval
    half = z * math.sqrt(2 * (seed_half / z) ** 2) / 2  # the mean of two independent seeds
    assert r.effect == pytest.approx(extra) and (r.seeds_holding, r.seeds_total) == (0, 2)
    assert r.interval == pytest.approx((extra - half, extra + half))
    assert r.verdict == UNCERTAIN != FAILS and "widened to the seeds' own intervals" in r.basis
    assert [r.numbers[f"seed {k}"]["verdict"] for k in (0, 1)] == [UNCERTAIN, UNCERTAIN]


def test_a_model_id_ending_like_a_seed_is_no_seed() -> None:
    """Fig. 4's models ``resnet56-nores-s1`` (stage 1 without residuals) and ``resnet56-nores``: the results of
    the first are not seed 1 of the second; ``-s1`` after a name of the same models is."""
    from snncka.paper import findings

    def of(label: str, residual: list[bool]):
        r = measured_pair(label, 0.5)
        r.identities = [{**d, "residual": residual} for d in r.identities]
        return r

    nores = of("SNN resnet8 T4", [False] * 3)
    s1, s1_seed1 = of("SNN resnet8 T4", [False, True, True]), of("SNN resnet8 T4 seed1", [False, True, True])
    named = [("self-nores", nores), ("self-nores-s1", s1), ("self-nores-s1-s1", s1_seed1)]
    assert seed_names(named) == [("self-nores", 0), ("self-nores-s1", 0), ("self-nores-s1", 1)]
    assert {b: [k for k, _ in g] for b, g in seed_groups(named).items()} == {"self-nores-s1": [0, 1]}
    # one name under two recipes (paper-vs-code), each with two seeds: a group per recipe, never a mix
    code = [of(lb, [False, True, True]) for lb in ("SNN resnet8 T4", "SNN resnet8 T4 seed1")]
    for r in code:
        r.identities = [{**d, "recipe": "code"} for d in r.identities]
        r.recipe = "code"
    s1.recipe = s1_seed1.recipe = "paper"
    two = [("x", s1), ("x-s1", s1_seed1), ("x", code[0]), ("x-s1", code[1])]
    assert {b: [r for _, r in g] for b, g in seed_groups(two).items()} == {"x-paper": [s1, s1_seed1],
                                                                          "x-code": code}
    assert seed_groups([("x", s1), ("x", code[0])]) == {}  # two recipes' seed 0: no seeds of one model
    assert findings.seed_of("compare-x-s1") == ("compare-x", 1)  # the name alone cannot tell


def test_a_model_against_itself_gets_the_mean_heatmap_alone(tmp_path: Path) -> None:
    import dataclasses

    runs = [dataclasses.replace(r, label_b=r.label_a, spiking_b=True) for r in
            (measured_pair(f"SNN resnet8 T4 seed{s}", 0.5, seed=s) for s in range(2))]
    assert [p.name for p in seed_figures("self-x", runs, tmp_path) if p.suffix == ".png"] == ["self-x_heatmap.png"]


def test_overviews_group_by_their_rows_identities_without_seeds():
    """An overview records a list of identities per row; its seeds group like any other result's."""
    from snncka.analyses.compare_analysis import Overview
    from snncka.seed_runs import seed_groups

    def ov(seed: int, recipe: str = "paper") -> Overview:
        ids = [[{"arch": "resnet20", "spiking": s, "seed": seed, "recipe": recipe} for s in (False, True)]]
        return Overview(curves=np.full((1, 2), 0.5 + seed), labels=["resnet20"], layers=[["a", "b"]],
                                identities=ids)

    groups = seed_groups([("overview", ov(0)), ("overview-s1", ov(1))])
    assert list(groups) == ["overview"] and [k for k, _ in groups["overview"]] == [0, 1]
    both = seed_groups([("o", ov(0)), ("o-s1", ov(1)), ("o", ov(0, "code")), ("o-s1", ov(1, "code"))])
    assert sorted(both) == ["o-code", "o-paper"]
