"""Trained models in one call, for a first look and for examples.

``demo_pair()`` returns the ResNet-20 ANN/SNN pair of ``snncka demo`` (the embedded digits data, 12 epochs,
T = 4: ANN ~99 %, SNN ~95 %) with its test images. The pair is trained once into the model cache (under a
minute on 2 CPU cores) and loaded from there afterwards; it is the very same cache entry that ``snncka demo``
trains, so either one makes the other instant.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from . import data as data_mod
from . import recipes
from .checkpoint import resolve_checkpoint
from .launch import ensure_trained
from .models import SNNCKAModel, load

__all__ = ["Pair", "demo_pair"]


@dataclass
class Pair:
    """A trained ANN and SNN of one architecture, their test images and labels, and their run folders."""

    ann: SNNCKAModel
    snn: SNNCKAModel
    images: Tensor
    labels: Tensor
    runs: dict[str, Path]
    checkpoints: dict[str, Path]  # the checkpoint file of each model: the one the demo's analyses read


def demo_pair(*, cache: str | Path | None = None, epochs: int | None = None, progress: bool = True) -> Pair:
    """The demo's trained ResNet-20 ANN and SNN (eval mode, CPU) and the digits test split (360 images).

    ``cache``: the model cache (default ``$SNNCKA_CACHE/models``, as for ``snncka reproduce``); ``epochs``:
    override the demo's 12 (as ``snncka demo --epochs``; a different number is a different cached model).
    Each model is its run's checkpoint that the recipe analyses (best test accuracy under the paper's recipe),
    the very file the demo's report reads, so the CKA computed here equals the report's."""
    from .experiment import load_experiment
    from .runner import default_cache, model_jobs, scale_settings

    exp = load_experiment("demo")
    settings = scale_settings(exp, "smoke", epochs=epochs)
    jobs, runs = model_jobs(exp, "smoke", settings, Path(cache) if cache is not None else default_cache(),
                            progress=progress)
    for job in jobs:
        ensure_trained(job.cfg, job.cache)
    (spec_runs,) = runs.values()
    which = recipes.get(jobs[0].cfg.recipe).checkpoint  # as the analyses pick a run folder's checkpoint
    ckpts = {net: resolve_checkpoint(run, which) for net, run in spec_runs.items()}
    models = {net: load(path) for net, path in ckpts.items()}  # CPU, eval mode
    ds = data_mod.get(jobs[0].cfg.data)
    return Pair(ann=models["ann"], snn=models["snn"], images=ds.x_test, labels=ds.y_test,
                runs={k: Path(v) for k, v in spec_runs.items()}, checkpoints=ckpts)

