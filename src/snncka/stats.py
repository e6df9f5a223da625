"""95 % intervals for effect sizes, and verdicts that say "uncertain" when an interval straddles a threshold.

An effect is the number a claim compares with its threshold (an accuracy drop, a CKA difference, a spread).
Two sources of noise, two intervals:

* **Test images** (CKA quantities): minibatch CKA (Nguyen, Raghu & Kornblith 2020) is a ratio of HSIC sums over
  batches of test images, so the batch is the resampling unit (resampling single images inside a batch would
  change the estimator's Gram terms). ``cka_interval`` takes the per-batch HSIC arrays the CKA engine keeps and
  any statistic of the resulting CKA matrices: a percentile bootstrap over batches
  (``bootstrap_batches``), or, with fewer than ``MIN_BOOTSTRAP`` batches, where the bootstrap distribution has
  too few distinct values, the leave-one-batch-out jackknife with Student t (``jackknife_batches``; the
  engine's own per-entry interval uses the same ``jackknife_interval``).
* **Seeds** (accuracies): ``seed_interval`` of the per-seed effects. With 2-3 seeds a percentile bootstrap is
  degenerate: its replicates are means of the few seeds, so its interval lies inside [min, max] of the seeds and
  for 2 seeds IS that range, which covers the true mean only about half the time. Below ``MIN_BOOTSTRAP`` seeds
  it is therefore the Student t interval (wide with 2 seeds, t(0.975, 1) = 12.7, as it should be); one seed
  has no interval (NaN).

``verdict(interval, threshold, side)``: "holds" when the whole interval is on the claim's side of the
threshold, "does not hold" when it is wholly on the other side, "uncertain" otherwise (or when undefined).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as _sp

__all__ = ["LEVEL", "MIN_BOOTSTRAP", "bootstrap_batches", "cka_interval", "jackknife_batches",
           "jackknife_interval", "percentile_bootstrap", "seed_interval", "t_interval", "verdict"]

LEVEL = 0.95
MIN_BOOTSTRAP = 10  # fewer resampling units (seeds, batches) than this: t-based intervals instead
HOLDS, FAILS, UNCERTAIN = "holds", "does not hold", "uncertain"
_SIDES: dict[str, Callable[[float, float], bool]] = {">": operator.gt, ">=": operator.ge, "<": operator.lt,
                                                     "<=": operator.le}

Interval = tuple[float, float]


def _check_level(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), e.g. 0.95; got {level}")
    return level


def verdict(interval: Sequence[float], threshold: float, side: str) -> str:
    """The claim ``effect <side> threshold`` judged on an interval of the effect: "holds" when every value of
    the interval satisfies it, "does not hold" when none does, "uncertain" otherwise or when a bound is NaN.
    ``side``: one of ``>``, ``>=``, ``<``, ``<=`` (the claim's side of the threshold)."""
    if side not in _SIDES:
        raise ValueError(f"side must be one of {', '.join(_SIDES)}, got {side!r}")
    lo, hi = (float(v) for v in interval)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return UNCERTAIN
    if lo > hi:
        raise ValueError(f"interval must be [low, high], got [{lo}, {hi}]")
    ok = _SIDES[side]
    if ok(lo, threshold) and ok(hi, threshold):
        return HOLDS
    if not ok(lo, threshold) and not ok(hi, threshold):
        return FAILS
    return UNCERTAIN


# --------------------------------------------------------------------------------------------------------
# Seeds
# --------------------------------------------------------------------------------------------------------


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Student t interval of the mean of ``values`` (NaN for fewer than 2 values)."""
    x = np.asarray(values, dtype=float)
    _check_level(level)
    if x.size < 2:
        return math.nan, math.nan
    half = float(_sp.t.ppf(0.5 + level / 2, x.size - 1)) * float(x.std(ddof=1)) / math.sqrt(x.size)
    m = float(x.mean())
    return m - half, m + half


def percentile_bootstrap(values: Sequence[float], *, statistic: Callable[[np.ndarray], float] = np.mean,
                         n_boot: int = 10_000, level: float = LEVEL, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of ``statistic`` over ``values`` resampled with replacement."""
    x = np.asarray(values, dtype=float)
    _check_level(level)
    if x.size < 2:
        return math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, x.size, size=(n_boot, x.size))
    reps = np.array([statistic(x[i]) for i in idx]) if statistic is not np.mean else x[idx].mean(1)
    return _percentiles(reps, level)


def seed_interval(values: Sequence[float], level: float = LEVEL, method: str = "auto") -> Interval:
    """95 % interval of the mean per-seed effect: ``"t"``, ``"bootstrap"`` (percentile), or ``"auto"``: the
    bootstrap from ``MIN_BOOTSTRAP`` seeds on, the t interval below (see the module's docstring)."""
    if method not in ("auto", "t", "bootstrap"):
        raise ValueError(f"method must be 'auto', 't' or 'bootstrap', got {method!r}")
    if method == "auto":
        method = "bootstrap" if len(values) >= MIN_BOOTSTRAP else "t"
    return percentile_bootstrap(values, level=level) if method == "bootstrap" else t_interval(values, level)


# --------------------------------------------------------------------------------------------------------
# Test images (batches of the CKA engine)
# --------------------------------------------------------------------------------------------------------


def _percentiles(reps: np.ndarray, level: float) -> Interval:
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(reps, [0.5 - level / 2, 0.5 + level / 2])
    return float(lo), float(hi)


def _jackknife_var(loo: np.ndarray) -> np.ndarray:
    k = loo.shape[0]
    return (k - 1) / k * ((loo - loo.mean(0)) ** 2).sum(0)


def jackknife_interval(full: np.ndarray | float, loo: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray,
                                                                                                 np.ndarray]:
    """Jackknife interval around ``full`` from the ``k`` leave-one-out estimates ``loo`` (axis 0; any trailing
    shape): variance ``(k-1)/k * sum (loo - mean)^2``, Student t with ``k - 1`` degrees of freedom. NaN for
    ``k < 2``."""
    loo = np.asarray(loo, dtype=float)
    full = np.asarray(full, dtype=float)
    k = loo.shape[0]
    if k < 2:
        nan = np.full(np.broadcast_shapes(full.shape, loo.shape[1:]), np.nan)
        return nan, nan.copy()
    half = float(_sp.t.ppf(0.5 + _check_level(level) / 2, k - 1)) * np.sqrt(_jackknife_var(loo))
    return full - half, full + half


def _batches(samples: Sequence[Sequence[np.ndarray]]) -> list[list[np.ndarray]]:
    out = []
    for s in samples:
        arrays = [np.asarray(a, dtype=float) for a in s]
        if not arrays or len({a.shape[0] for a in arrays}) != 1:
            raise ValueError("each sample is a tuple of per-batch arrays with one common batch axis (axis 0)")
        out.append(arrays)
    return out


def bootstrap_batches(statistic: Callable[..., float], *samples: Sequence[np.ndarray], n_boot: int = 2000,
                      level: float = LEVEL, seed: int = 0) -> Interval:
    """Percentile bootstrap over batches of test images.

    Each ``sample`` is a tuple of per-batch arrays sharing their batch axis 0 (one set of test images, e.g. the
    ``(hab, haa, hbb)`` of one CKA computation, or those of several computations on the same images, which are
    then resampled together: a paired bootstrap). Different samples (e.g. two data sets) are resampled
    independently. ``statistic`` gets, per sample, the tuple of the arrays' sums over the resampled batches,
    and returns the effect."""
    groups = _batches(samples)
    _check_level(level)
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    for b in range(n_boot):
        sums = []
        for arrays in groups:
            w = np.bincount(rng.integers(0, arrays[0].shape[0], arrays[0].shape[0]), minlength=arrays[0].shape[0])
            sums.append(tuple(np.tensordot(w.astype(float), a, axes=(0, 0)) for a in arrays))
        reps[b] = statistic(*sums)
    return _percentiles(reps, level)


def jackknife_batches(statistic: Callable[..., float], *samples: Sequence[np.ndarray],
                      level: float = LEVEL) -> Interval:
    """Leave-one-batch-out jackknife interval of ``statistic`` (arguments as in ``bootstrap_batches``). With
    several (independent) samples, each is jackknifed with the others whole and the variances add; Student t
    with ``min(k) - 1`` degrees of freedom. NaN when a sample has fewer than 2 batches."""
    groups = _batches(samples)
    _check_level(level)
    ks = [arrays[0].shape[0] for arrays in groups]
    if min(ks) < 2:
        return math.nan, math.nan
    totals = [tuple(a.sum(0) for a in arrays) for arrays in groups]
    full = float(statistic(*totals))
    var = 0.0
    for j, arrays in enumerate(groups):
        loo = np.array([statistic(*totals[:j], tuple(t - a[i] for t, a in zip(totals[j], arrays, strict=True)),
                                  *totals[j + 1:]) for i in range(ks[j])], dtype=float)
        var += float(_jackknife_var(loo))
    half = float(_sp.t.ppf(0.5 + level / 2, min(ks) - 1)) * math.sqrt(var)
    return full - half, full + half


def cka_interval(statistic: Callable[..., float], *samples: Sequence[np.ndarray], level: float = LEVEL,
                 method: str = "auto", n_boot: int = 2000, seed: int = 0) -> Interval:
    """95 % interval of a CKA effect over test images: ``"bootstrap"`` (``bootstrap_batches``), ``"jackknife"``
    (``jackknife_batches``) or ``"auto"``: the bootstrap from ``MIN_BOOTSTRAP`` batches in every sample on,
    else the jackknife."""
    if method not in ("auto", "bootstrap", "jackknife"):
        raise ValueError(f"method must be 'auto', 'bootstrap' or 'jackknife', got {method!r}")
    groups = _batches(samples)
    if method == "auto":
        method = "bootstrap" if min(arrays[0].shape[0] for arrays in groups) >= MIN_BOOTSTRAP else "jackknife"
    if method == "jackknife":
        return jackknife_batches(statistic, *groups, level=level)
    return bootstrap_batches(statistic, *groups, n_boot=n_boot, level=level, seed=seed)
