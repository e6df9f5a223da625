"""`snncka reproduce --recipe` and `snncka reproduce paper-vs-code`: both recipes, their overlay, the findings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from snncka import analyses, plots
from snncka import runner as reproduce
from snncka.cli import main
from snncka.launch import cache_key
from snncka.paper import findings
from snncka.paper.findings import figures
from snncka.paper.findings.verdicts import FindingsResult


def test_the_recipe_reaches_every_training_config_and_the_cache_key(tmp_path: Path) -> None:
    exp = reproduce.load_experiment("fig8")
    settings = exp.settings("smoke")
    by_recipe = {r: reproduce.model_jobs(exp, "smoke", settings, tmp_path, recipe=r)[0] for r in ("paper", "code")}
    for r, jobs in by_recipe.items():
        assert [j.cfg.recipe for j in jobs] == [r, r]  # the ANN and the SNN
    paper, code = ({(j.cfg.model, j.cfg.spiking): j for j in jobs} for jobs in by_recipe.values())
    assert paper.keys() == code.keys()
    for k in paper:  # same model otherwise, so only the recipe tells the two cache entries apart
        assert {**vars(paper[k].cfg), "recipe": "code"} == vars(code[k].cfg)
        assert cache_key(paper[k].cfg) != cache_key(code[k].cfg) and paper[k].run_dir != code[k].run_dir


def test_an_unknown_recipe_is_a_one_line_error_before_any_work(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["reproduce", "fig3", "--recipe", "bogus", "--out", str(tmp_path / "out"),
                                    "--cache", str(tmp_path / "cache")])
    assert res.exit_code == 1
    assert res.output == "Error: unknown recipe 'bogus'; choose one of: paper, code\n"
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_paper_vs_code_takes_no_recipe(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["reproduce", "paper-vs-code", "--recipe", "code", "--out", str(tmp_path / "o"),
                                    "--cache", str(tmp_path / "cache")])
    assert res.exit_code == 1 and "leave out --recipe" in res.output, res.output
    assert not (tmp_path / "cache").exists()


def test_paper_vs_code_is_listed_with_both_recipes() -> None:
    exp = reproduce.load_experiment("paper-vs-code")
    assert exp.recipes == ["paper", "code"]
    assert {a["analysis"] for a in exp.analyses} == {"compare", "blocks", "robustness"}
    assert "snncka reproduce paper-vs-code" in CliRunner().invoke(main, ["reproduce", "--list"]).output
    assert reproduce.default_out("fig8", "smoke", "code") == Path("runs/fig8-smoke-code")
    assert reproduce.default_out("fig8", "smoke", None) == reproduce.default_out("fig8", "smoke", "paper")


def _row(finding: str, verdict: str, effect: float | None = None, seeds: int = 1) -> dict:
    return {"finding": finding, "claim": finding, "source": "§4", "verdict": verdict, "evidence": "e",
            "numbers": {}, "effect": effect, "interval": [effect, effect], "threshold": 0.0, "side": ">",
            "seeds_holding": seeds, "seeds_total": seeds, "basis": "point only"}


def test_findings_side_by_side_say_where_the_recipes_disagree(tmp_path: Path) -> None:
    res = FindingsResult(recipes=["paper", "code"], scale="smoke", verdicts={
        "paper": [_row("a", "holds"), _row("b", "holds"), _row("c", "not measured")],
        "code": [_row("a", "holds"), _row("b", "does not hold"), _row("c", "holds")]})
    rows = res.summary()
    assert [(r["verdict (paper recipe)"], r["verdict (code recipe)"], r["recipes agree"]) for r in rows] == [
        ("holds (one seed)", "holds (one seed)", True), ("holds (one seed)", "does not hold (one seed)", False),
        ("not measured", "holds (one seed)", None)]
    assert all("trends only" in r["judged on"] for r in rows)
    assert res.verdict("code", "b") == "does not hold"
    loaded = analyses.load_result(res.save(tmp_path, "findings"))
    assert loaded.summary() == rows
    (png,) = [p for p in loaded.plot(tmp_path) if p.suffix == ".png"]  # no effect measured: the grid only
    assert Image.open(png).size[0] > 0
    one = FindingsResult(recipes=["paper"], scale="paper", verdicts={"paper": [_row("a", "holds", 0.4, seeds=3)]})
    assert one.summary() == [{"claim": "a", "verdict": "holds", "effect [95 % interval]": "0.4 (claim: > 0)",
                              "seeds": "3 of 3 seeds on the claim's side", "interval over": "point only",
                              "evidence": "e", "source": "§4", "finding": "a",
                              "judged on": "paper scale: the paper's setting"}]
    pngs = sorted(p.name for p in one.plot(tmp_path) if p.suffix == ".png")
    assert pngs == ["findings_effects.png", "findings_verdicts.png"]


def test_overlay_figures_have_their_fixed_size_and_reject_ragged_input(tmp_path: Path) -> None:
    series = {"ANN": {"paper": [90, 80, 70], "code": [91, 85, 60]}, "SNN": {"paper": [88, 84, 80]}}
    (png, _) = plots.overlay_lines([0, 0.01, 0.05], series, tmp_path / "lines", figsize=(6.0, 3.5), dpi=50)
    assert Image.open(png).size == (300, 175)
    (png, _) = plots.grouped_bars(["a", "b"], {"paper": [0.5, 0.6], "code": [0.7, 0.4]}, tmp_path / "bars",
                                  figsize=(4.0, 3.0), dpi=50)
    assert Image.open(png).size == (200, 150)
    with pytest.raises(ValueError, match="3 x values"):
        plots.overlay_lines([0, 1, 2], {"ANN": {"paper": [1, 2]}}, tmp_path / "bad")
    with pytest.raises(ValueError, match="2 groups"):
        plots.grouped_bars(["a", "b"], {"paper": [1.0]}, tmp_path / "bad")
    with pytest.raises(ValueError, match="holds"):
        figures.verdict_grid(["a"], ["paper"], [["maybe"]], tmp_path / "bad")


@pytest.mark.slow
def test_paper_vs_code_end_to_end(tmp_path: Path, small_digits: Path) -> None:
    """Both recipes trained (1 epoch) and analysed; the comparison's numbers are those of each recipe's own
    results; a verdict per claim per recipe; the overlay figures and both recipes in the report."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    report = reproduce.run("paper-vs-code", "smoke", out, cache=cache, epochs=1, cka_images=48, progress=False,
                           device="cpu")
    assert len(list(cache.iterdir())) == 4  # ANN and SNN per recipe: four cache entries
    for recipe in ("paper", "code"):
        meta = json.loads((out / recipe / "experiment.json").read_text())
        assert meta["recipe"] == recipe
        for kind in ("ann", "snn"):
            cfg = json.loads((out / recipe / "models" / f"resnet8-for-resnet20-{kind}" / "config.json").read_text())
            assert cfg["train"]["recipe"] == recipe and cfg["model"]["recipe"] == recipe  # trained and built
        names = {p.stem for p in (out / recipe / "results").glob("*.json")}
        assert names == {f"{k}-resnet8-for-resnet20" for k in ("compare", "blocks", "robustness")}
        for name in names:  # every analysis ran under the recipe its models were trained with
            assert analyses.load_result(out / recipe / "results" / f"{name}.json").recipe == recipe

    cmp = analyses.load_result(out / "results" / "paper-vs-code.json")
    rows = {(r["paper figure"], r["quantity"]): r for r in cmp.summary()}
    for recipe in ("paper", "code"):  # each recipe's number, recomputed from that recipe's own results
        pair = analyses.load_result(out / recipe / "results" / "compare-resnet8-for-resnet20.json")
        diag = pair.corresponding()[1]
        assert rows[("Fig. 2", "mean CKA of corresponding layers")][f"{recipe} recipe"] == pytest.approx(
            float(np.nanmean(diag)))
        pgd = analyses.load_result(out / recipe / "results" / "robustness-resnet8-for-resnet20.json")
        snn = [i for i, lab in enumerate(pgd.labels) if lab.startswith("SNN")][0]
        assert rows[("Fig. 8", "SNN robust accuracy (%), eps=0.05")][f"{recipe} recipe"] == pytest.approx(
            pgd.accuracy[snn][-1])
    r = rows[("Fig. 8", "SNN robust accuracy (%), eps=0.05")]
    assert r["code - paper"] == pytest.approx(r["code recipe"] - r["paper recipe"])
    for fig in ("diagonal", "heatmaps", "block_types", "block_profile", "robust_accuracy", "adversarial_cka"):
        assert (out / "figures" / f"paper-vs-code_resnet8_for_resnet20_{fig}.png").is_file(), fig

    found = analyses.load_result(out / "results" / "findings.json")
    assert found.recipes == ["paper", "code"]
    for recipe in found.recipes:
        assert [v["finding"] for v in found.verdicts[recipe]] == list(findings.ORDER)
        assert {v["verdict"] for v in found.verdicts[recipe]} <= set(findings.VERDICTS)
        on_its_own = findings.evaluate(findings.results_in(out / recipe))
        assert [v["verdict"] for v in found.verdicts[recipe]] == [f.verdict for f in on_its_own]
        assert found.verdict(recipe, "similarity-high") != "not measured"  # Fig. 2's pair was measured
    html = report.read_text()
    assert "verdict (paper recipe)" in html and "verdict (code recipe)" in html and "code - paper" in html
