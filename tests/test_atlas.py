"""The findings atlas (``snncka reproduce atlas``): its grid of variations, its one-line errors, and a tiny atlas
end to end (tiny models, 1 epoch, 2 variations besides the baseline, 2 seeds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from snncka.cli import main
from snncka.experiment import load_experiment
from snncka.neurons import SURROGATES
from snncka.paper import atlas
from snncka.paper import findings as F
from snncka.paper.findings.verdicts import evidence

BASE = """
id = "tinybase"
title = "A tiny ResNet pair for the atlas's tests"
plugins = ["snncka.paper"]

[scale.smoke]
epochs = 1
cka_images = 32

[[model]]
id = "resnet8"
arch = "resnet8"
width = 0.25
T = 2

[[analysis]]
analysis = "compare"
[[analysis]]
analysis = "blocks"
[[analysis]]
analysis = "temporal"
layers = "block"
[[analysis]]
analysis = "robustness"
eps = [0.05]
"""


def test_grid_is_the_baseline_then_one_choice_per_column() -> None:
    grid = atlas.variations()
    assert grid[0].name == "baseline" and grid[0].recipe == "paper" and not grid[0].cka and not grid[0].neuron
    assert [v.name for v in grid[1:]] == [
        "recipe=code", "surrogate=triangle", "surrogate=sigmoid", "surrogate=arctan", "surrogate=dspike",
        "estimator=biased-linear", "estimator=rbf", "time=mean"]
    assert set(atlas.AXES["surrogate"]) == set(SURROGATES) and atlas.BASELINE["surrogate"] == "rect"
    assert [v.retrains for v in grid] == [False, True, True, True, True, True, False, False, False]
    assert [v.name for v in atlas.variations(["estimator", "time=mean"])] == [
        "baseline", "estimator=biased-linear", "estimator=rbf", "time=mean"]
    assert atlas.Variation("estimator", "biased-linear").cka == {"unbiased": False}
    assert atlas.Variation("estimator", "rbf").cka == {"kernel": "rbf"}
    assert atlas.Variation("time", "mean").cka == {"time_reduce": "mean"}


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_seeds_below_one_are_an_error(bad) -> None:
    with pytest.raises(ValueError, match="--seeds must be an integer >= 1"):
        atlas.check_seeds(bad)


def test_unknown_variation_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown atlas variation 'surrogate=foo'; valid: recipe=code, .*time=mean"):
        atlas.variations(["surrogate=foo"])


@pytest.mark.parametrize("args, says", [
    (["--vary", "surrogate=foo"], "Error: unknown atlas variation 'surrogate=foo'; valid: recipe=code"),
    (["--vary", "nosuch"], "Error: unknown atlas variation 'nosuch'; valid:"),
    (["--seeds", "0"], "Error: --seeds must be an integer >= 1"),
    (["--seeds", "-2", "--plan"], "Error: --seeds must be an integer >= 1"),
    (["--recipe", "code"], "Error: the atlas varies the recipe itself"),
])
def test_cli_bad_input_is_one_line(args: list[str], says: str) -> None:
    res = CliRunner().invoke(main, ["reproduce", "atlas", *args])
    assert res.exit_code == 1 and res.exception is None or isinstance(res.exception, SystemExit)
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(says), res.output


def test_atlas_options_with_another_experiment_are_one_line() -> None:
    res = CliRunner().invoke(main, ["reproduce", "fig8", "--vary", "time"])
    assert res.exit_code == 1 and res.output.strip().splitlines() == [
        "Error: --vary and --base are options of `snncka reproduce atlas`; leave them out for fig8"]


def test_plan_counts_each_cache_entry_once(tmp_path: Path) -> None:
    """Estimator and time columns add no model; a surrogate column adds its SNNs only (the ANN is shared)."""
    rows = atlas.atlas_plan(["fig8"], "paper", seeds=2, vary=["estimator", "time", "surrogate=dspike"],
                            cache=tmp_path)
    assert len(rows) == 2 * 2 + 2  # baseline: ANN + SNN per seed; dspike: one SNN per seed
    assert all(r.cost.gpu_hours(r.cfg.epochs) > 0 for r in rows)
    res = CliRunner().invoke(main, ["reproduce", "atlas", "--plan", "--scale", "paper", "--base", "fig8",
                                    "--seeds", "2", "--vary", "time", "--cache", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "total: 4 distinct models (0 cached)" in res.output and "GPU-hours to train" in res.output


def test_variant_applies_one_choice_and_the_seed(tmp_path: Path) -> None:
    (tmp_path / "base.toml").write_text(BASE)
    exp = load_experiment(tmp_path / "base.toml")
    v = atlas.variant(exp, atlas.Variation("surrogate", "dspike"), seed=2)
    assert v.models[0]["seed"] == 2 and v.models[0]["neuron"] == {"surrogate": "dspike"}
    assert v.analyses == exp.analyses and exp.models[0].get("seed") is None  # the base is unchanged
    e = atlas.variant(exp, atlas.Variation("estimator", "rbf"))
    assert [a.get("kernel") for a in e.analyses] == ["rbf"] * 4 and "neuron" not in e.models[0]
    t = atlas.variant(exp, atlas.Variation("time", "mean"))  # the temporal CKA compares steps: no time reduction
    assert [a.get("time_reduce") for a in t.analyses] == ["mean", "mean", None, "mean"]


def test_effect_from_numbers_is_the_compared_quantity() -> None:
    f = F.Finding("blocks-restore-similarity", "c", "s", F.HOLDS, "e",
                  {"mean CKA": {"block": 0.9, "act": 0.7, "conv": 0.8}, "restore fraction": 1.0})
    assert atlas.effect_of(f) == pytest.approx(0.1)
    g = F.Finding("snn-adversarial-features-closer", "c", "s", F.FAILS, "e",
                  {"SNN": {"0.01": {"ann": 0.9, "snn": 0.95}, "0.05": {"ann": 0.8, "snn": 0.7}}})
    assert atlas.effect_of(g) == pytest.approx(-0.1)


@pytest.fixture(scope="module")
def tiny_atlas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("atlas")
    (root / "base.toml").write_text(BASE)
    cache, out = root / "cache", root / "out"
    atlas.run_atlas([str(root / "base.toml")], "smoke", out, seeds=2, vary=["estimator=biased-linear",
                                                                            "surrogate=dspike"],
                    cache=cache, device="cpu", progress=False)
    return {"root": root, "cache": cache, "out": out}


def models_of(out: Path, col: str, k: int) -> dict:
    """The cache entries a cell's run used (its experiment.json)."""
    return json.loads((out / "cells" / col / "tinybase" / f"seed{k}" / "experiment.json").read_text())["models"]


def _checkpoints(cache: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in cache.rglob("*.pt")}


def test_tiny_atlas_writes_the_grid(tiny_atlas: dict[str, Path]) -> None:
    out = tiny_atlas["out"]
    js = json.loads((out / "results" / "atlas.json").read_text())
    names = [v["name"] for v in js["variations"]]
    assert names == ["baseline", "estimator=biased-linear", "surrogate=dspike"]  # in the order asked for
    assert list(js["cells"]) == list(F.ORDER) and js["seeds"] == 2
    for row in js["cells"].values():
        assert list(row) == names
        for cell in row.values():
            assert {"verdict", "effect", "interval", "seeds_holding", "seeds_total"} <= set(cell)
            assert cell["verdict"] in (*F.VERDICTS, "uncertain") and 0 <= cell["seeds_holding"] <= cell[
                "seeds_total"] <= 2
    measured = [c for c in (row["baseline"] for row in js["cells"].values()) if c["verdict"] != F.UNMEASURED]
    assert measured and all(c["seeds_total"] == 2 and c["effect"] is not None for c in measured)
    assert js["cells"]["width-raises-similarity"]["baseline"]["verdict"] == F.UNMEASURED
    assert (out / "figures" / "atlas_grid.png").stat().st_size > 0
    html = (out / "report.html").read_text()
    assert "findings atlas" in html and "atlas_grid" in html


def test_estimator_columns_reuse_the_cached_models(tiny_atlas: dict[str, Path]) -> None:
    cache, out = tiny_atlas["cache"], tiny_atlas["out"]
    runs = {p.parent for p in cache.rglob("config.json")}
    assert len(runs) == 2 * 2 + 2  # baseline ANN + SNN per seed, the dspike SNN per seed
    cells = out / "cells"
    for k in range(2):
        assert models_of(out, "estimator=biased-linear", k) == models_of(out, "baseline", k)  # same cache entries
        dspike, base = models_of(out, "surrogate=dspike", k)["resnet8"], models_of(out, "baseline", k)["resnet8"]
        assert dspike["ann"] == base["ann"] and dspike["snn"] != base["snn"]  # a surrogate retrains the SNN only
    assert models_of(out, "baseline", 0) != models_of(out, "baseline", 1)  # each seed its own models
    before = _checkpoints(cache)
    # a time-reduction column added to the same atlas: its cells analyse the baseline's models again
    atlas.run_atlas([str(tiny_atlas["root"] / "base.toml")], "smoke", out, seeds=2,
                    vary=["estimator=biased-linear", "surrogate=dspike", "time=mean"], cache=cache, device="cpu",
                    progress=False)
    assert _checkpoints(cache) == before  # nothing trained again, nothing rewritten
    assert models_of(out, "time=mean", 1) == models_of(out, "baseline", 1)
    cmp = json.loads((cells / "time=mean" / "tinybase" / "seed0" / "results" / "compare-resnet8.json").read_text())
    base = json.loads((cells / "baseline" / "tinybase" / "seed0" / "results" / "compare-resnet8.json").read_text())
    assert cmp["cka"]["meta"]["time_reduce"] == "mean" and base["cka"]["meta"]["time_reduce"] == "concat"


def test_cell_verdict_is_what_evaluate_says(tiny_atlas: dict[str, Path]) -> None:
    out = tiny_atlas["out"]
    js = json.loads((out / "results" / "atlas.json").read_text())
    for col in [v["name"] for v in js["variations"]]:
        per_seed = [evidence(out / "cells" / col / "tinybase" / f"seed{k}") for k in range(2)]
        assert atlas.judge_cell(per_seed) == [{"finding": fid, **js["cells"][fid][col]} for fid in F.ORDER]
        if atlas._seed_aware():
            pooled = {f"{key}-s{k}" if k else key: r for k, res in enumerate(per_seed) for key, r in res.items()}
            assert [js["cells"][f.id][col]["verdict"] for f in F.evaluate(pooled)] == [
                js["cells"][fid][col]["verdict"] for fid in F.ORDER]
            continue
        per = [F.evaluate(res) for res in per_seed]
        for i, fid in enumerate(F.ORDER):
            said = [fs[i].verdict for fs in per if fs[i].verdict != F.UNMEASURED]
            cell = js["cells"][fid][col]
            assert cell["seeds_total"] == len(said) and cell["seeds_holding"] == said.count(F.HOLDS)
            if said and len(set(said)) == 1:
                assert cell["verdict"] == said[0]
            elif said:
                assert cell["verdict"] == "uncertain"
            else:
                assert cell["verdict"] == F.UNMEASURED
