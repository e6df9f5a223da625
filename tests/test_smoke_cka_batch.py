"""The smoke scale's CKA minibatch (``cka_batch``): small batches, so the intervals over batches of test images
rest on enough batches; the paper scale keeps the recipe's (Sec. 3.3: 256)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import snncka.paper  # noqa: F401  (registers the paper's experiments: fig3)
from snncka.analyses import CompareAnalysis, load_result
from snncka.experiment import default_scales, load_experiment
from snncka.options import RunOptions
from snncka.runner import Run, run_one


def test_the_smoke_scale_sets_the_cka_batch_and_the_paper_scale_the_recipes() -> None:
    exp = load_experiment("fig3")
    smoke = RunOptions(scale="smoke")
    b = smoke.analysis_batch(smoke.settings(exp))
    assert b == default_scales()["smoke"]["cka_batch"] and 4 <= b < 256
    # 360 smoke test images in at least 10 batches: a bootstrap over them, not a jackknife over 2
    assert math.ceil(360 / b) >= 10
    paper = RunOptions(scale="paper")
    assert paper.analysis_batch(paper.settings(exp)) is None
    run = Run(exp, smoke, [], {}, Path("."), 360, cka_batch=b)
    assert run.analysis_options()["batch_size"] == b and "batch_size" not in run.analysis_options(images=False)
    assert "batch_size" not in Run(exp, paper, [], {}, Path(".")).analysis_options()
    for bad in (3, 2.5, "24"):
        with pytest.raises(ValueError, match="cka_batch must be an integer >= 4"):
            smoke.analysis_batch({"cka_batch": bad})


def test_a_smoke_run_measures_cka_in_the_scales_batches(tmp_path: Path, small_digits: Path) -> None:
    b = default_scales()["smoke"]["cka_batch"]
    n = 2 * b + 8  # two full batches and one of 8 images
    run_one("fig3", "smoke", tmp_path, cache=small_digits, epochs=1, cka_images=n, progress=False, judge=False)
    res = load_result(tmp_path / "results" / "compare-resnet20-for-resnet110.json")
    assert isinstance(res, CompareAnalysis) and res.cka.n_images == n
    ab, aa, bb = res.cka.batch_samples()
    assert ab.shape[0] == aa.shape[0] == bb.shape[0] == 3


def test_a_small_cka_batch_cuts_the_cka_finer_but_attacks_in_the_recipes_batches(tiny_runs) -> None:
    """The smoke scale's small CKA minibatch costs no slower attack: robust accuracy is attacked in batches of
    the recipe's minibatch (the same examples whatever the CKA batch), and the CKA cut from their examples."""
    from snncka.analyses import robustness

    kw = dict(eps=[0.02], steps=2, n_images=40, device="cpu", progress=False)
    fine = robustness([tiny_runs["ann"], tiny_runs["snn"]], batch_size=8, **kw)
    coarse = robustness([tiny_runs["ann"], tiny_runs["snn"]], batch_size=40, **kw)
    assert fine.accuracy == coarse.accuracy and fine.clean_accuracy == coarse.clean_accuracy
    assert fine.cka_hsic.shape[:4] == (2, 1, 3, 5) and coarse.cka_hsic.shape[:4] == (2, 1, 3, 1)
    # the same adversarial examples in both: the CKA of their HSIC sums over all 40 images agree closely
    for r in (fine, coarse):
        assert np.isfinite(np.asarray(r.cka, dtype=float)).all()
    assert np.allclose(np.asarray(fine.cka, dtype=float), np.asarray(coarse.cka, dtype=float), atol=0.05)
