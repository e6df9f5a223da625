"""Intervals and verdicts, against hand-computed values and naive loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from snncka import stats
from snncka.cka import MinibatchCKA, cka
from snncka.cka_math import cka_from_sums


def test_verdict_by_where_the_interval_lies() -> None:
    assert stats.verdict((0.6, 0.9), 0.5, ">") == "holds"
    assert stats.verdict((0.1, 0.4), 0.5, ">") == "does not hold"
    assert stats.verdict((0.4, 0.6), 0.5, ">") == "uncertain"
    assert stats.verdict((0.5, 0.7), 0.5, ">") == "uncertain"  # the low end touches the threshold
    assert stats.verdict((0.5, 0.7), 0.5, ">=") == "holds"
    assert stats.verdict((0.01, 0.04), 0.05, "<=") == "holds"
    assert stats.verdict((0.06, 0.2), 0.05, "<=") == "does not hold"
    assert stats.verdict((0.2, 0.2), 0.05, "<") == "does not hold"  # a zero-width interval is a point
    assert stats.verdict((math.nan, math.nan), 0.05, "<") == "uncertain"
    with pytest.raises(ValueError, match="side must be one of"):
        stats.verdict((0, 1), 0.5, "above")
    with pytest.raises(ValueError, match=r"\[low, high\]"):
        stats.verdict((1, 0), 0.5, ">")


def test_t_interval_by_hand() -> None:
    lo, hi = stats.t_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, t(0.975, 2) = 4.302653
    half = 4.302652729911275 / math.sqrt(3)
    assert (lo, hi) == pytest.approx((2 - half, 2 + half))
    lo, hi = stats.t_interval([10.0, 12.0])  # 2 seeds: t(0.975, 1) = 12.706, se = 1
    assert (lo, hi) == pytest.approx((11 - 12.706204736, 11 + 12.706204736))
    assert all(math.isnan(v) for v in stats.t_interval([5.0]))


def test_percentile_bootstrap_against_a_naive_loop() -> None:
    x = np.array([3.1, 2.7, 4.0, 3.3, 2.2, 3.8, 3.0, 2.9, 3.6, 3.4, 2.5])
    rng = np.random.default_rng(7)
    reps = []
    for _ in range(500):
        idx = rng.integers(0, len(x), size=len(x))
        reps.append(sum(x[i] for i in idx) / len(x))
    want = np.sort(reps)
    lo, hi = stats.percentile_bootstrap(x, n_boot=500, seed=7)
    assert lo == pytest.approx(np.quantile(want, 0.025)) and hi == pytest.approx(np.quantile(want, 0.975))
    assert stats.percentile_bootstrap(x, statistic=np.median, n_boot=200, seed=1) == pytest.approx(
        stats.percentile_bootstrap(x, statistic=lambda v: float(np.median(v)), n_boot=200, seed=1))


def test_seed_interval_uses_t_below_ten_seeds() -> None:
    two = [91.0, 92.0]
    # the percentile bootstrap of 2 seeds is their range: degenerate, so "auto" takes the t interval
    assert stats.percentile_bootstrap(two, n_boot=4000) == pytest.approx((91.0, 92.0))
    assert stats.seed_interval(two) == stats.t_interval(two)
    many = list(np.linspace(90, 92, 12))
    assert stats.seed_interval(many) == stats.percentile_bootstrap(many)
    assert stats.seed_interval(two, method="bootstrap") == stats.percentile_bootstrap(two)
    with pytest.raises(ValueError, match="method must be"):
        stats.seed_interval(two, method="normal")


def test_jackknife_of_a_mean_is_the_t_interval() -> None:
    x = np.array([0.2, 0.5, 0.4, 0.9, 0.1])
    ratio = lambda s: s[0] / s[1]  # noqa: E731  (leave-one-out: sum of the others / their count)
    lo, hi = stats.jackknife_batches(ratio, (x, np.ones_like(x)))
    assert (lo, hi) == pytest.approx(stats.t_interval(x))


def test_bootstrap_batches_against_a_naive_resampling() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random((6, 3)), rng.random(6) + 1
    c = rng.random(4)

    def effect(s1, s2):  # a ratio on one set of images minus a mean on another
        return float(s1[0][0] / s1[1]) - float(s2[0] / 4)

    naive = np.random.default_rng(3)
    reps = []
    for _ in range(300):
        i = naive.integers(0, 6, 6)  # the two arrays of one sample share the resampled batches
        j = naive.integers(0, 4, 4)  # the other sample is resampled independently
        reps.append(effect((a[i].sum(0), b[i].sum(0)), (c[j].sum(0),)))
    lo, hi = stats.bootstrap_batches(effect, (a, b), (c,), n_boot=300, seed=3)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])))
    with pytest.raises(ValueError, match="one common batch axis"):
        stats.bootstrap_batches(effect, (a, b[:5]), (c,))


def test_jackknife_of_independent_samples_adds_their_variances() -> None:
    x, y = np.array([0.2, 0.5, 0.4, 0.9, 0.1]), np.array([1.0, 1.4, 0.7, 1.1])
    ones = np.ones_like
    diff = lambda s1, s2: s1[0] / s1[1] - s2[0] / s2[1]  # noqa: E731  (mean of x minus mean of y)
    lo, hi = stats.jackknife_batches(diff, (x, ones(x)), (y, ones(y)))
    se = math.sqrt(x.var(ddof=1) / 5 + y.var(ddof=1) / 4)  # the two-sample standard error, by hand
    half = 3.182446305284263 * se  # t(0.975, min(5, 4) - 1 = 3)
    assert (lo, hi) == pytest.approx((x.mean() - y.mean() - half, x.mean() - y.mean() + half))
    assert all(math.isnan(v) for v in stats.jackknife_batches(diff, (x, ones(x)), (y[:1], ones(y[:1]))))


def _engine(k: int, seed: int = 0) -> tuple[MinibatchCKA, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(k * 16, 12, generator=g, dtype=torch.float64)
    Y = X @ torch.randn(12, 8, generator=g, dtype=torch.float64) + torch.randn(k * 16, 8, generator=g,
                                                                                dtype=torch.float64)
    acc = MinibatchCKA()
    for i in range(k):
        sl = slice(16 * i, 16 * (i + 1))
        acc.update({"x": X[sl], "y": Y[sl]}, {"x": X[sl], "y": Y[sl]})
    return acc, X, Y


def test_cka_interval_on_the_engines_batches() -> None:
    acc, X, Y = _engine(4)
    hab, haa, hbb = acc.batch_hsic()
    assert hab.shape == (4, 2, 2) and haa.shape == hbb.shape == (4, 2)
    res = acc.compute()
    # the statistic "CKA of x vs y" reproduces the engine's matrix and, with the jackknife, its interval
    xy = lambda s: float(cka_from_sums(*s)[0, 1])  # noqa: E731
    assert xy(tuple(h.sum(0) for h in (hab, haa, hbb))) == pytest.approx(res.matrix[0, 1], abs=1e-12)
    lo, hi = stats.cka_interval(xy, (hab, haa, hbb))  # 4 batches: the jackknife
    assert (lo, hi) == pytest.approx((res.ci_low[0, 1], res.ci_high[0, 1]), abs=1e-12)
    one = MinibatchCKA()  # one batch: the minibatch CKA is the reference estimator on it
    one.update({"x": X[:16]}, {"y": Y[:16]})
    s = one.batch_hsic()
    assert float(cka_from_sums(*(h.sum(0) for h in s))[0, 0]) == pytest.approx(
        float(cka(X[:16], Y[:16])), abs=1e-10)


def test_cka_interval_picks_the_bootstrap_from_ten_batches() -> None:
    acc, _, _ = _engine(12, seed=1)
    h = acc.batch_hsic()
    diff = lambda s: float(cka_from_sums(*s)[0, 1] - cka_from_sums(*s)[1, 1])  # noqa: E731
    assert stats.cka_interval(diff, h) == stats.bootstrap_batches(diff, h)
    assert stats.cka_interval(diff, h, method="jackknife") == stats.jackknife_batches(diff, h)
    lo, hi = stats.cka_interval(diff, h)
    point = diff(tuple(x.sum(0) for x in h))
    assert lo < point < hi < 0  # CKA(x, y) < CKA(y, y) = 1
    assert stats.verdict((lo, hi), 0.0, "<") == "holds"
