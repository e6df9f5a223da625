"""snncka.demo_pair: the demo's models in one call, from the same cache entry as `snncka demo`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import snncka
from snncka.experiment import load_experiment
from snncka.launch import run_folder
from snncka.runner import model_jobs, scale_settings


@pytest.mark.slow
def test_demo_pair_trains_once_and_shares_the_demos_cache(model_cache, eager_kernels) -> None:
    pair = snncka.demo_pair(cache=model_cache, epochs=1, progress=False)
    assert pair.images.shape == (360, 1, 8, 8) and pair.labels.shape == (360,)
    assert not pair.ann.config["spiking"] and pair.snn.config["spiking"] and pair.snn.config["T"] == 4
    exp = load_experiment("demo")
    jobs, _ = model_jobs(exp, "smoke", scale_settings(exp, "smoke", epochs=1), model_cache)
    assert sorted(pair.runs.values()) == sorted(run_folder(j.cfg, model_cache) for j in jobs)
    stamp = {k: (p / "last.pt").stat().st_mtime_ns for k, p in pair.runs.items()}
    again = snncka.demo_pair(cache=model_cache, epochs=1, progress=False)  # cached: nothing retrains
    assert {k: (p / "last.pt").stat().st_mtime_ns for k, p in again.runs.items()} == stamp
    for a, b in zip(pair.snn.state_dict().values(), again.snn.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    res = snncka.compare(pair.ann, pair.ann, pair.images)  # a tensor of images is accepted
    assert res.matrix.shape[0] == len(res.layers_a) and abs(res.diagonal()[0] - 1.0) < 1e-6


@pytest.mark.slow
def test_demo_pair_is_the_checkpoint_the_demos_report_analyses(tmp_path, model_cache, eager_kernels) -> None:
    """The quickstart's CKA equals the report's: demo_pair loads the recipe's checkpoint (best test accuracy
    under the paper's recipe), the very file the demo's compare analysis reads."""
    from snncka import recipes
    from snncka.checkpoint import resolve_checkpoint
    from snncka.results import load_result
    from snncka.runner import run

    pair = snncka.demo_pair(cache=model_cache, epochs=1, progress=False)
    assert recipes.get("paper").checkpoint == "best"
    assert pair.checkpoints == {k: resolve_checkpoint(r, "best") for k, r in pair.runs.items()}
    assert {p.name for p in pair.checkpoints.values()} == {"best.pt"}
    run("demo", "smoke", tmp_path / "out", cache=model_cache, epochs=1, progress=False)  # no retraining
    res = load_result(tmp_path / "out" / "results" / "compare-resnet20.json")
    assert (res.source_a, res.source_b) == (str(pair.checkpoints["snn"]), str(pair.checkpoints["ann"]))
    batches = [pair.images[:256], pair.images[256:]]  # the analysis' minibatches of 256
    mine = snncka.compare(pair.snn, pair.ann, batches, progress=False)
    np.testing.assert_allclose(mine.matrix, res.cka.matrix, rtol=0, atol=1e-6)
