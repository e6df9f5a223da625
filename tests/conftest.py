"""Shared fixtures."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

# torch's "torch.__trace" logger sits at DEBUG and pytest's log capture would print a trace line for every
# compiled graph in a failure's report; keep failures readable.
logging.getLogger("torch.__trace").setLevel(logging.INFO)


@pytest.fixture(scope="session", autouse=True)
def _snncka_cache(tmp_path_factory: pytest.TempPathFactory):
    """Caches (generated datasets, integrated frames, trained models) go to one folder per test session:
    tests never write to ~/.cache, and share what they generate (digits-dvs is simulated once)."""
    old = os.environ.get("SNNCKA_CACHE")
    os.environ["SNNCKA_CACHE"] = str(tmp_path_factory.mktemp("snncka-cache"))
    yield
    if old is None:
        os.environ.pop("SNNCKA_CACHE", None)
    else:
        os.environ["SNNCKA_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny trained ANN/SNN pair (ResNet-8 x0.5, T=4, 3/2 epochs on digits: ~95%/~70%) as trainer runs.

    Returns ``{"root": folder holding both runs, "ann": ann best.pt, "snn": snn best.pt}``. Session-scoped:
    the analyses, plots and report tests share it.
    """
    from snncka.training import TrainConfig, train

    root = tmp_path_factory.mktemp("tiny_runs")
    out: dict[str, Path] = {"root": root}
    for kind in ("ann", "snn"):
        cfg = TrainConfig(model="resnet8", spiking=kind == "snn", T=4, width=0.5, data="digits",
                          epochs=3 if kind == "ann" else 2,
                          batch_size=32, lr=0.1, seed=0, device="cpu", progress=False)
        train(cfg, root / kind)
        out[kind] = root / kind / "best.pt"
    return out


@pytest.fixture
def eager_kernels(monkeypatch: pytest.MonkeyPatch):
    """Eager fused LIF kernels and one thread: model-level tests on tiny tensors (each compiled kernel variant
    costs seconds; tests of the compiled path ask for it with ``compiled=True``)."""
    import torch

    monkeypatch.setenv("SNNCKA_COMPILE", "0")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add synchronisation (badly so on a busy machine)
    yield
    torch.set_num_threads(threads)
