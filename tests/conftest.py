"""Shared fixtures."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import snncka  # noqa: F401  (before torch: its OpenMP waiting policy, idle threads sleep, must reach torch's runtime)

if os.environ.get("PYTEST_XDIST_WORKER"):  # -n auto: the cores shared out, so that workers never oversubscribe them
    import torch

    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(max(1, _cores // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))

# torch's "torch.__trace" logger sits at DEBUG and pytest's log capture would print a trace line for every
# compiled graph in a failure's report; keep failures readable.
logging.getLogger("torch.__trace").setLevel(logging.INFO)


@pytest.hookimpl(optionalhook=True)  # xdist's hook: without xdist, no hook and no error
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (pyproject's addopts): one worker per usable core, at most 8. Models train with one thread
    each (``TrainConfig.threads``), so one pytest process leaves every other core idle; each worker holds torch
    and its models (~0.5-1 GB), hence the cap."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, 8))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The test files with slow end-to-end tests first, their slow tests first within each file, so that the
    workers of ``-n auto`` start on the long ones and finish together on the many short ones. A stable sort
    that keeps each file's tests together (a module-scoped fixture is made once per worker)."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    order = {path: i for i, path in reversed(list(enumerate(item.path for item in items)))}  # first index
    items.sort(key=lambda item: (item.path not in slow_files, order[item.path],
                                 item.get_closest_marker("slow") is None))


def _shared(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder of this test session that every xdist worker sees (each worker's base temp folder lies in the
    session's); what is written there concurrently must be safe for that (atomic files, training locks)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path = root / name
    path.mkdir(exist_ok=True)
    return path


def once_per_session(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]) -> Path:
    """The shared folder ``name``, filled by ``make(folder)`` once in this test session, whichever xdist worker
    asks first; a worker that asks while another is filling it waits for it (a file lock), then reuses it."""
    from snncka.files import file_lock

    folder = _shared(tmp_path_factory, name)
    with file_lock(folder.parent / f"{name}.lock"):
        if not (folder / ".done").exists():
            make(folder)
            (folder / ".done").touch()
    return folder


@pytest.fixture(scope="session", autouse=True)
def _snncka_cache(tmp_path_factory: pytest.TempPathFactory):
    """Caches (generated datasets, integrated frames, trained models) go to one folder per test session, shared
    by its xdist workers: tests never write to ~/.cache, and share what they generate (digits-dvs is simulated
    once; files there are written atomically)."""
    old = os.environ.get("SNNCKA_CACHE")
    os.environ["SNNCKA_CACHE"] = str(_shared(tmp_path_factory, "snncka-cache"))
    yield
    if old is None:
        os.environ.pop("SNNCKA_CACHE", None)
    else:
        os.environ["SNNCKA_CACHE"] = old


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache for the end-to-end runs of the whole session (every xdist worker): a model that several
    tests train with the same config (e.g. the demo pair of tests/test_pretrained.py) trains once; a worker
    that needs a model another is training waits for it (the cache's training lock). Tests of training and of
    the launchers themselves use their own empty caches."""
    return _shared(tmp_path_factory, "models")


SMALL_TRAIN, SMALL_TEST = 4, 2  # small_digits keeps every 4th training image and every 2nd test image


@pytest.fixture
def png_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Figures as PNG only (not also SVG) in this test: the end-to-end runs draw dozens of figures, twice (the
    runner, then the report), and SVG rendering is tested in tests/test_plots.py."""
    from snncka import plots

    save = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, out, formats=("png",), dpi=100: save(fig, out, ("png",), dpi))


@pytest.fixture
def small_digits(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory,
                 png_figures: None) -> Path:
    """digits and digits-dvs with a quarter of their training images (360) and half their test images (180),
    for end-to-end runs whose checks do not depend on how well the models learn (every experiment still
    trains, analyses, plots and reports as at full size). Patched in the dataset registry, so training and the
    analyses of this process see them. Returns the session's model cache for models trained on them: not
    ``model_cache``, whose models trained on the full data under the same cache keys. Figures: ``png_figures``."""
    from dataclasses import replace

    from snncka.analyses import subjects
    from snncka.data import DATASETS

    monkeypatch.setattr(subjects, "_DATA_CACHE", {})  # the analyses' datasets: none loaded at full size before

    for name in ("digits", "digits-dvs"):
        def small(*args, _full=DATASETS[name], **kwargs):
            ds = _full(*args, **kwargs)
            return replace(ds, x_train=ds.x_train[::SMALL_TRAIN], y_train=ds.y_train[::SMALL_TRAIN],
                           x_test=ds.x_test[::SMALL_TEST], y_test=ds.y_test[::SMALL_TEST])

        monkeypatch.setitem(DATASETS, name, small)
    return _shared(tmp_path_factory, "models-small-digits")


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


ROOT = Path(__file__).resolve().parents[1]
# One experiment, small: fig3's two smoke models, one epoch, 64 CKA images, on the CPU.
FIG3 = ["fig3", "--epochs", "1", "--cka-images", "64", "--device", "cpu", "--no-progress"]


def _reproduce_fig3(out: Path, cache: Path, *more: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}  # no thread pin: a run trains with TrainConfig.threads
    r = subprocess.run([sys.executable, "-m", "snncka.cli", "reproduce", *FIG3, "--out", str(out), "--cache",
                        str(cache), *more], capture_output=True, text=True, env=env, cwd=out.parent,
                       timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.fixture(scope="session")
def reproduce_fig3() -> Callable[..., subprocess.CompletedProcess]:
    """``snncka reproduce fig3 --epochs 1 --cka-images 64`` in a fresh process, as a user runs it:
    ``reproduce_fig3(out, cache, *more options)``; asserts it succeeded and returns the finished process."""
    return _reproduce_fig3


@pytest.fixture(scope="session")
def fig3_launchers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """fig3 run inline and with ``--jobs 2``, each into its own empty cache: ``{"inline": (out, cache),
    "jobs2": (out, cache)}``. The launcher tests (tests/test_threads.py, and tests/test_slurm.py with its Slurm
    run) compare them: the runs happen once per session (``once_per_session``)."""
    def make(folder: Path) -> None:
        for name, more in (("inline", []), ("jobs2", ["--jobs", "2"])):
            (folder / name).mkdir()
            _reproduce_fig3(folder / name / "out", folder / name / "cache", *more)

    folder = once_per_session(tmp_path_factory, "fig3-launchers", make)
    return {name: (folder / name / "out", folder / name / "cache") for name in ("inline", "jobs2")}


def _same(x, y, where: str) -> None:
    import torch

    if isinstance(x, torch.Tensor):
        assert torch.equal(x, y), where
    elif isinstance(x, dict):
        assert x.keys() == y.keys(), where
        for k in x:
            _same(x[k], y[k], f"{where}.{k}")
    elif isinstance(x, list | tuple):
        assert len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            _same(u, v, f"{where}[{i}]")
    else:
        assert x == y, where


def _same_checkpoint(a: Path, b: Path) -> None:
    """Assert two training checkpoints are equal bit for bit: weights, optimizer, scheduler, RNG, epoch."""
    from snncka.checkpoint import load_checkpoint

    ca, cb = load_checkpoint(a), load_checkpoint(b)
    for key in ("model", "optimizer", "scheduler", "rng", "epoch", "best_acc"):
        _same(ca[key], cb[key], key)


def _same_run(run: tuple[Path, Path], ref: tuple[Path, Path]) -> None:
    out, cache = run
    ref_out, ref_cache = ref
    ckpts = sorted(p.relative_to(ref_cache) for p in ref_cache.glob("*/last.pt"))
    results = sorted(p.relative_to(ref_out) for p in ref_out.glob("results/*.npz"))
    assert len(ckpts) == 2 and {p.stem for p in results} >= {"compare-resnet20-for-resnet110",
                                                            "blocks-resnet20-for-resnet110"}
    assert sorted(p.relative_to(cache) for p in cache.glob("*/last.pt")) == ckpts  # the same cache keys
    for c in ckpts:
        _same_checkpoint(cache / c, ref_cache / c)
    for res in results:
        with np.load(out / res) as a, np.load(ref_out / res) as b:
            assert sorted(a.files) == sorted(b.files), res
            for k in a.files:
                assert a[k].tobytes() == b[k].tobytes(), (res, k)


@pytest.fixture(scope="session")
def same_run() -> Callable[[tuple[Path, Path], tuple[Path, Path]], None]:
    """``same_run((out, cache), (ref_out, ref_cache))``: assert two runs of fig3 (``reproduce_fig3``) trained the
    same checkpoints (same cache keys, equal bits) and computed the same result arrays, bit for bit."""
    return _same_run


@pytest.fixture(scope="session")
def same_checkpoints() -> Callable[[Path, Path], None]:
    """``same_checkpoints(a, b)``: assert two training checkpoints are equal bit for bit (weights, optimizer,
    scheduler, RNG state, epoch, best accuracy)."""
    return _same_checkpoint
