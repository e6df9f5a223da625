"""Multi-process CKA: 2 gloo processes on CPU, each taking every other batch, give the single-process
result.

The models run in float32, so each batch's Gram matrices differ in the last float32 bits between a
1-thread worker and a multi-thread reference (a different summation order): the results are held to
float32 tolerances. A wrong merge (a batch lost or counted twice) moves the CKA values by ~1e-2.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import snncka
from snncka.cka import MinibatchCKA, compare, temporal


def _models() -> tuple[torch.nn.Module, torch.nn.Module]:
    kw = dict(num_classes=3, in_channels=1, width=0.25)
    torch.manual_seed(0)
    ann = snncka.create("resnet8", spiking=False, **kw)
    snn = snncka.create("resnet8", spiking=True, T=2, v_th=0.3, **kw)
    return ann, snn


def _data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(6, 1, 8, 8, generator=g), torch.zeros(6)) for _ in range(5)]  # 5 batches: 3 + 2


def _features() -> list[tuple[dict[str, torch.Tensor], list[torch.Tensor]]]:
    """5 batches of float64 features of two 'models' (a dict and a list), for MinibatchCKA."""
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(5):
        x = torch.randn(7, 10, generator=g, dtype=torch.float64)
        out.append(({"x": x, "x2": x**2}, [torch.tanh(x @ torch.randn(10, 3, generator=g, dtype=torch.float64))]))
    return out


def _accumulate(rank: int, world: int) -> MinibatchCKA:
    acc = MinibatchCKA()
    for i, (fa, fb) in enumerate(_features()):
        if i % world == rank:
            acc.update(fa, fb)
    return acc


def _run(rank: int, world: int, init: str, out: str) -> None:
    os.environ["SNNCKA_COMPILE"] = "0"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        ann, snn = _models()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = compare(ann, snn, _data(), progress=False)
            tr = temporal(snn, _data(), progress=False)
        acc = _accumulate(rank, world).compute()  # all-reduced over the two processes
        np.savez(f"{out}.{rank}.npz", matrix=res.matrix, ci_low=res.ci_low, n=res.n_images, k=res.n_batches,
                 temporal=tr.matrices, acc=acc.matrix, acc_ci=acc.ci_high, acc_n=acc.n_batches)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_equal_single_process(tmp_path, monkeypatch):
    # eager kernels here too: compiling would emit torch's structured trace, which pytest's log capture
    # (attached to every non-propagating logger, torch.__trace included) would print as DEBUG lines
    monkeypatch.setenv("SNNCKA_COMPILE", "0")
    out = str(tmp_path / "res")
    mp.spawn(_run, args=(2, f"file://{tmp_path / 'rendezvous'}", out), nprocs=2, join=True)
    ann, snn = _models()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = compare(ann, snn, _data(), progress=False)
        tref = temporal(snn, _data(), progress=False)
    for rank in range(2):
        with np.load(f"{out}.{rank}.npz") as got:
            assert int(got["n"]) == ref.n_images == 30 and int(got["k"]) == ref.n_batches == 5
            np.testing.assert_allclose(got["matrix"], ref.matrix, rtol=0, atol=1e-5, equal_nan=True)
            np.testing.assert_allclose(got["ci_low"], ref.ci_low, rtol=0, atol=1e-4, equal_nan=True)
            np.testing.assert_allclose(got["temporal"], tref.matrices, rtol=0, atol=1e-5, equal_nan=True)
            # float64 features: the accumulator's all-reduce equals one process holding every batch
            acc = _accumulate(0, 1).compute()
            assert int(got["acc_n"]) == acc.n_batches == 5
            np.testing.assert_allclose(got["acc"], acc.matrix, rtol=0, atol=1e-12)
            np.testing.assert_allclose(got["acc_ci"], acc.ci_high, rtol=0, atol=1e-12)
    assert np.isfinite(ref.matrix).sum() > 100
