"""``MinibatchCKA`` (the streaming accumulator ``compare`` is built on), time reduction, non-finite features
and a single tensor as data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from snncka.cka import MinibatchCKA, compare
from snncka.record import Recorder


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5)).double().eval()


def _batches(k: int = 3, n: int = 12) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(n, 2, 4, 4, generator=g, dtype=torch.float64) for _ in range(k)]


def _features(net: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad(), Recorder(net) as rec:
        rec(x)
    return dict(rec.features)


def test_accumulator_equals_compare_merge_and_reset():
    a, b = _net(0), _net(1)
    data = _batches()
    ref = compare(a, b, data, progress=False)
    acc = MinibatchCKA()
    for x in data:
        acc.update(_features(a, x), _features(b, x))
    res = acc.compute()
    assert res.layers_a == ref.layers_a == ["0", "1", "3"] and res.n_batches == 3 and res.n_images == 36
    np.testing.assert_allclose(res.matrix, ref.matrix, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.ci_low, ref.ci_low, rtol=0, atol=1e-12)
    # lists of tensors work like dicts (layers named by position); two accumulators merged = one over all
    first, second = MinibatchCKA(), MinibatchCKA()
    first.update(list(_features(a, data[0]).values()), list(_features(b, data[0]).values()))
    for x in data[1:]:
        second.update(list(_features(a, x).values()), list(_features(b, x).values()))
    merged = first.merge(second).compute()
    assert merged.layers_a == ["0", "1", "2"] and merged.n_batches == 3
    np.testing.assert_allclose(merged.matrix, ref.matrix, rtol=0, atol=1e-12)
    acc.reset()
    with pytest.raises(ValueError, match="empty"):
        acc.compute()
    with pytest.raises(ValueError, match="cannot merge"):
        MinibatchCKA(unbiased=False).merge(first)


def test_time_reduce_concat_and_mean_hand_computed():
    """Two steps s1 = y + d, s2 = y - d with y, d centred, orthogonal, of equal norm. Their mean is y
    (biased linear CKA with y: 1); concatenated, K = 2 (y y^T + d d^T) and CKA = 2|y|^4 / (2 sqrt(2) |y|^4)
    = 1 / sqrt(2)."""
    y = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)[:, None]
    d = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64)[:, None]
    steps = [y + d, y - d]
    for reduce, expect in (("concat", 1 / math.sqrt(2)), ("mean", 1.0)):
        bt = MinibatchCKA(unbiased=False, time_a="BT", time_reduce=reduce)
        bt.update({"snn": torch.stack(steps, 1)}, {"ann": y})  # [B, T, p]
        loop = MinibatchCKA(unbiased=False, time_a="loop", time_reduce=reduce)
        loop.update({"snn": steps}, {"ann": y})  # a layer's per-step tensors
        assert bt.compute().matrix[0, 0] == pytest.approx(expect, abs=1e-12)
        assert loop.compute().matrix[0, 0] == pytest.approx(expect, abs=1e-12)
        # compare on a model that outputs those steps [B, T, 1]
        res = compare(nn.Sequential(nn.Identity()), nn.Sequential(nn.Identity()), [torch.stack(steps, 1)],
                      data_b=[y], layers_a=["0"], layers_b=["0"], time_a="BT", unbiased=False,
                      time_reduce=reduce, progress=False)
        assert res.matrix[0, 0] == pytest.approx(expect, abs=1e-12) and res.meta["time_reduce"] == reduce
    with pytest.raises(ValueError, match="unknown time_reduce"):
        MinibatchCKA(time_reduce="sum")


def test_non_finite_features_name_layer_model_and_batch():
    a, b = _net(0), _net(1)
    data = _batches()
    data[1][3, 0, 2, 2] = float("nan")  # one NaN pixel
    with pytest.raises(ValueError, match=r"non-finite features \(NaN or Inf\) in layer '0' of model_a "
                                         r"\(Sequential\), batch 1; check the input data"):
        compare(a, b, data, progress=False)
    with torch.no_grad():
        b[3].weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match="in layer '3' of model_b"):
        compare(a, b, _batches(), progress=False)
    acc = MinibatchCKA()
    feats = _features(a, data[0])
    acc.update(feats, feats)
    bad = dict(feats, **{"1": feats["1"].clone().fill_(float("inf"))})
    with pytest.raises(ValueError, match="layer '1' of features_a, batch 1"):
        acc.update(bad, feats)


def test_single_tensor_as_data_is_split_into_batches():
    a, b = _net(0), _net(1)
    data = _batches()
    ref = compare(a, b, data, progress=False)
    res = compare(a, b, torch.cat(data), batch_size=12, progress=False)
    np.testing.assert_allclose(res.matrix, ref.matrix, rtol=0, atol=1e-12)
    assert (res.n_batches, res.batch_size) == (3, 12)
    # 37 images, batch_size 12: 4 near-equal batches, none too small for the unbiased estimator
    res = compare(a, b, torch.randn(37, 2, 4, 4, dtype=torch.float64), batch_size=12, progress=False)
    assert (res.n_images, res.n_batches, res.batch_size) == (37, 4, 10)
    assert compare(a, b, torch.cat(data), progress=False).n_batches == 1  # default batch_size 256
    # a dataset of single samples instead of batches: say so
    samples = [(x, 0) for x in data[0]]
    with pytest.raises(ValueError, match="batch 0 is one sample .* DataLoader"):
        compare(a, b, samples, progress=False)
