"""Recipes reach the analyses: CKA layers, images and minibatch, PGD, the checkpoint of a run folder, and a
comparison of models of different recipes is recorded and reported."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from snncka import analyses as A
from snncka import recipes
from snncka.analyses.subjects import model_input
from snncka.attacks import pgd, pgd_options, pgd_sweep
from snncka.checkpoint import load_checkpoint, save_checkpoint
from snncka.cka import cka
from snncka.cli import main
from snncka.record import record
from snncka.report import build_report

KW = dict(device="cpu", progress=False)


@pytest.fixture(scope="module")
def subjects(tiny_runs):
    return A.Subject.load(tiny_runs["ann"], device="cpu"), A.Subject.load(tiny_runs["snn"], device="cpu")


@pytest.fixture(scope="module")
def code_ann(tiny_runs, tmp_path_factory):
    """The tiny ANN's weights in a checkpoint of a ``code`` model (the released topology: parameters load by
    order, so the same weights fit)."""
    ck = load_checkpoint(tiny_runs["ann"])
    ck["model_config"] = {**ck["model_config"], "recipe": "code"}
    path = tmp_path_factory.mktemp("code_ann") / "best.pt"
    save_checkpoint({k: v for k, v in ck.items() if k not in ("format", "version")}, path)
    return path


def test_the_recipes_cka_settings_reach_the_engine(subjects):
    ann, snn = subjects
    small = dataclasses.replace(recipes.get("code"), cka_images=100, cka_batch=50)
    code = A.compare_checkpoints(ann, snn, recipe=small, **KW)
    assert code.n_images == 100 and code.cka.n_batches == 2 and code.batch_size == 50
    assert code.recipe == "code" and code.recipe_settings["cka_images"] == 100
    paper = A.compare_checkpoints(ann, snn, recipe="paper", n_images=100, batch_size=50, **KW)
    # paper: every recorded layer, fc included; code: the same layers in the same order, without the fc
    assert "linear" in paper.kinds_a and "linear" not in code.kinds_a + code.kinds_b
    assert code.layers_a == [n for n, k in zip(paper.layers_a, paper.kinds_a, strict=True) if k != "linear"]
    keep = [i for i, k in enumerate(paper.kinds_a) if k != "linear"]
    np.testing.assert_allclose(code.matrix, paper.matrix[np.ix_(keep, keep)], atol=1e-6)
    # explicit arguments win over the recipe's
    r = A.temporal_checkpoint(snn, recipe="code", n_images=40, batch_size=20, layers="block", **KW)
    assert r.n_images == 40 and set(r.kinds) == {"block"} and r.recipe == "code"


def _direct_cka(model_a, x, model_b, xa, layers):
    fa, fb = record(model_a, [x], layers), record(model_b, [xa], layers)
    return [float(cka(fa[n].double(), fb[n].double())) for n in fa]


@pytest.mark.parametrize("name", ["paper", "code"])
def test_robustness_uses_the_recipes_pgd(subjects, name):
    eps, n = [0.1, 0.4], 48
    bn_before = [{k: v.clone() for k, v in s.model.state_dict().items()} for s in subjects]
    r = A.robustness(subjects, eps=eps, n_images=n, batch_size=n, recipe=name, **KW)
    assert (r.steps, r.step_size, r.random_start, r.n_images, r.cka_images) == (20, "eps/10", False, n, n)
    assert r.recipe == name and r.cka_attack_mode == recipes.get(name).pgd_model_mode
    for m, s in enumerate(subjects):
        x, y = model_input(s, s.data.x_test[:n]), s.data.y_test[:n]
        advs = pgd_sweep(s.model, x, y, eps, **pgd_options(name))  # each eps from the clean images
        with torch.no_grad():
            expect = [100.0 * float((s.model(a).argmax(-1) == y).float().mean()) for a in advs]
        assert r.accuracy[m] == pytest.approx(expect)
        # clean vs adversarial CKA: the recipe's attack (code: train mode on a copy whose BN statistics drift)
        opts = pgd_options(name, cka=True)
        attacked = copy.deepcopy(s.model) if opts["keep_bn_updates"] else s.model
        xa = pgd(attacked, x, y, eps=eps[1], **opts)
        layers = recipes.get(name).cka_selection()
        np.testing.assert_allclose(r.cka[m][1], _direct_cka(s.model, x, attacked, xa, layers), atol=2e-5)
        for k, v in s.model.state_dict().items():  # the analysed model is never changed
            assert torch.equal(v, bn_before[m][k]), k
        if not opts["keep_bn_updates"]:
            assert r.cka_eval == [] and r.drift_cka == [] and r.drift_eps is None
            continue
        # code: the eval-mode attack's CKA beside the released one, and the drift alone at a nil eps
        xe = pgd(s.model, x, y, eps=eps[1], **pgd_options(name))
        np.testing.assert_allclose(r.cka_eval[m][1], _direct_cka(s.model, x, s.model, xe, layers), atol=2e-5)
        drifted = copy.deepcopy(s.model)
        x0 = pgd(drifted, x, y, eps=A.DRIFT_EPS, **opts)
        assert r.drift_eps == A.DRIFT_EPS and float((x0 - x).abs().max()) <= 2 * A.DRIFT_EPS
        want = _direct_cka(s.model, x, drifted, x0, layers)
        assert r.drift_cka[m] == pytest.approx(float(np.nanmean(want)), abs=2e-5)
        row = r.summary()[m]
        assert row[f"BN drift: mean CKA at eps={A.DRIFT_EPS:g} (train-mode attack)"] == r.drift_cka[m]
        assert {f"mean CKA eps={eps[1]:g} ({mode}-mode attack)" for mode in ("eval", "train")} <= set(row)


def test_robustness_attacks_the_whole_test_set_by_default(subjects):
    ann, _ = subjects
    r = A.robustness([ann], eps=[0.0], recipe="paper", layers="block", **KW)
    assert r.n_images == len(ann.data.y_test) and r.accuracy[0][0] == pytest.approx(r.clean_accuracy[0])
    assert r.clean_accuracy[0] == pytest.approx(A.accuracy(ann, device="cpu"))
    assert r.cka_images == len(ann.data.y_test)  # the recipe's 4096 CKA images, capped at the test split


def test_mixing_recipes_is_recorded_and_reported(tiny_runs, code_ann, tmp_path):
    with pytest.warns(UserWarning, match="different recipes"):
        r = A.compare_checkpoints(tiny_runs["ann"], code_ann, n_images=64, batch_size=64, **KW)
    assert r.mixed_recipes and r.model_recipes == ["paper", "code"] and r.recipe == "paper"
    assert "different recipes" in r.recipe_warning and r.recipe_label() == "paper (models: paper, code; mixed)"
    back = A.load_result(r.save(tmp_path / "res"))
    assert back.mixed_recipes and back.model_recipes == ["paper", "code"] and back.recipe_warning
    # one recipe, chosen explicitly: no warning, and the models' recipe is still recorded
    same = A.compare_checkpoints(code_ann, None, recipe="paper", n_images=64, batch_size=64, **KW)
    assert not same.mixed_recipes and same.recipe_label() == "paper (models: code)"
    default = A.compare_checkpoints(code_ann, None, n_images=64, batch_size=64, **KW)  # the model's recipe by default
    assert default.recipe == "code" and "linear" not in default.kinds_a
    html = build_report(tmp_path).read_text()
    assert "Recipes" in html and "paper (models: paper, code; mixed)" in html
    assert "compare models built under different recipes" in html


def test_a_run_folder_means_the_recipes_checkpoint(tiny_runs):
    folder = tiny_runs["root"] / "ann"
    assert A.compare_checkpoints(folder, None, n_images=16, layers="block", **KW).source_a.endswith("best.pt")
    last = dataclasses.replace(recipes.get("paper"), checkpoint="last")
    res = A.compare_checkpoints(folder, None, recipe=last, n_images=16, layers="block", **KW)
    assert res.source_a.endswith("last.pt")


def test_cli_recipe_option(tiny_runs, code_ann, tmp_path):
    runner = CliRunner()
    for cmd in ("compare", "temporal", "blocks", "robustness", "probe", "seeds", "rates"):
        res = runner.invoke(main, [cmd, str(tiny_runs["snn"]), "--recipe", "bogus", "--out", str(tmp_path)])
        assert res.exit_code == 1, (cmd, res.output)
        assert res.output.strip() == "Error: unknown recipe 'bogus'; choose one of: paper, code", (cmd, res.output)
    out = tmp_path / "mixed"
    res = runner.invoke(main, ["compare", str(tiny_runs["ann"]), str(code_ann), "--recipe", "code", "--out",
                               str(out), "--n-images", "64", "--device", "cpu", "--quiet", "--no-plot"])
    assert res.exit_code == 0, res.output
    assert "Warning: comparing models built under different recipes" in res.output
    assert "recipe: code (models: paper, code; mixed)" in res.output
    meta = json.loads((out / "compare.json").read_text())
    assert meta["recipe"] == "code" and meta["mixed_recipes"] and meta["cka"]["batch_size"] == 64
    assert meta["recipe_settings"]["cka_layers"] == "code" and "linear" not in meta["cka"]["kinds_a"]
