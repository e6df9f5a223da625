"""Effect sizes of the paper's claims with their 95 % intervals, and the verdicts they give.

An ``Effect`` is the number a claim compares with its threshold (an accuracy drop, a CKA difference, a spread)
with a 95 % interval and a line saying what the interval is over:

* CKA quantities: a bootstrap (or, below ``stats.MIN_BOOTSTRAP`` batches, a jackknife) over the batches of test
  images, from the per-batch HSIC sums the CKA results keep (``cka_effect``; ``snncka.stats.cka_interval``).
  Results measured on the same test images are resampled together (paired); results on different data sets
  independently. A percentile interval of a max/min statistic (a spread, the worst block) can miss the point
  estimate; it is then widened to contain it.
* Accuracies of one seed: the Agresti-Caffo adjusted Wald interval of a sum of accuracies over ``n`` test
  images (``accuracy_effect``), the models' errors treated as independent.
* Several seeds: the Student t interval of the per-seed effects (``over_seeds``; ``stats.seed_interval``), at
  least as wide as the seeds' own intervals make the mean's.
* Numbers without sampling data (the paper's printed numbers, results saved before the per-batch sums were
  kept, hand-made results): the interval is the point, and the line says so.

``judge(effect, threshold, side)`` is ``stats.verdict`` on the interval: holds / does not hold / uncertain.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from ... import stats

__all__ = ["POINT", "Effect", "accuracy_effect", "cka_effect", "cka_of", "combine", "judge", "on_side", "over_seeds",
           "point", "worst"]

HOLDS, FAILS, UNCERTAIN, UNMEASURED = "holds", "does not hold", "uncertain", "not measured"
POINT = "point only: no sampling data kept (the interval is the point)"
_SIDES: dict[str, Callable[[float, float], bool]] = {">": operator.gt, ">=": operator.ge, "<": operator.lt,
                                                     "<=": operator.le}


@dataclass(frozen=True)
class Effect:
    """An effect size, its 95 % interval ``(low, high)`` and what the interval is over (``basis``)."""

    value: float
    interval: tuple[float, float]
    basis: str


def point(value: float, basis: str = POINT) -> Effect:
    """An effect without sampling interval: the interval is the point."""
    return Effect(float(value), (float(value), float(value)), basis)


def on_side(value: float, threshold: float, side: str) -> bool:
    """Whether ``value <side> threshold`` (False for NaN)."""
    return math.isfinite(value) and _SIDES[side](value, threshold)


def judge(effect: Effect, threshold: float, side: str) -> str:
    """The three-way verdict of ``effect <side> threshold`` on the effect's interval; "not measured" for a NaN
    effect."""
    if not math.isfinite(effect.value):
        return UNMEASURED
    return stats.verdict(effect.interval, threshold, side)


def combine(parts: Sequence[str]) -> str:
    """The verdict of a claim that needs all its parts: any part that does not hold -> does not hold; else any
    uncertain -> uncertain; all hold -> holds; none measured -> not measured."""
    measured = [p for p in parts if p != UNMEASURED]
    if not measured:
        return UNMEASURED
    if FAILS in measured:
        return FAILS
    return UNCERTAIN if UNCERTAIN in measured else HOLDS


def worst(effects: Sequence[Effect], side: str) -> Effect:
    """The effect of a claim that must hold for every part (every depth, every T, every eps): the part farthest
    from the claim's side, with the interval ``[worst low, worst high]`` (it lies on the claim's side exactly
    when every part's interval does, and wholly off it when some part's does)."""
    if not effects:
        raise ValueError("worst of no effects")
    pick = min if side in (">", ">=") else max
    bases = list(dict.fromkeys(e.basis for e in effects))
    return Effect(pick(e.value for e in effects), (pick(e.interval[0] for e in effects),
                                                    pick(e.interval[1] for e in effects)), "; ".join(bases))


# --------------------------------------------------------------------------------------------------------
# CKA over batches of test images
# --------------------------------------------------------------------------------------------------------

Samples = tuple[np.ndarray, ...]  # per-batch HSIC arrays of one result, batch axis 0


def cka_of(ab: np.ndarray, aa: np.ndarray, bb: np.ndarray) -> np.ndarray:
    """CKA from HSIC sums (NaN where a side has no variance), as the engine computes it."""
    ab, aa, bb = (np.asarray(v, dtype=float) for v in (ab, aa, bb))
    den = np.sqrt(np.where((aa > 0) & (bb > 0), aa * bb, np.nan))
    return ab / den


def cka_effect(statistic: Callable[[list[Samples]], float], samples: Sequence[Samples | None], value: float, *,
               paired: bool = True) -> Effect:
    """The effect ``value`` (a CKA statistic of the saved matrices) with its interval over batches of test
    images: ``statistic(sums)`` recomputes it from, per result, the per-batch HSIC arrays summed over (resampled)
    batches. Results with equally many batches are resampled together when ``paired`` (the same test images),
    else each on its own. A point without interval where a result kept no per-batch sums."""
    value = float(value)
    if not samples or any(s is None for s in samples) or not math.isfinite(value):
        return point(value)
    samples = [tuple(np.asarray(a, dtype=float) for a in s) for s in samples if s is not None]
    ks = {s[0].shape[0] for s in samples}
    sizes = [len(s) for s in samples]
    if paired and len(ks) == 1:
        flat = tuple(a for s in samples for a in s)

        def stat(sums: tuple[np.ndarray, ...]) -> float:
            it = iter(sums)
            return statistic([tuple(next(it) for _ in range(n)) for n in sizes])

        lo, hi = stats.cka_interval(stat, flat)
    else:
        lo, hi = stats.cka_interval(lambda *sums: statistic(list(sums)), *samples)
    k = min(ks)
    method = "bootstrap" if k >= stats.MIN_BOOTSTRAP else "jackknife"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return point(value, f"{k} batch(es) of test images: too few for an interval (the interval is the point)")
    lo, hi = min(lo, value), max(hi, value)
    return Effect(value, (lo, hi), f"{method} over {k} batches of test images")


# --------------------------------------------------------------------------------------------------------
# Accuracies
# --------------------------------------------------------------------------------------------------------


def accuracy_effect(terms: Sequence[tuple[float, float]], n: int | None) -> Effect:
    """The effect ``sum(coefficient * accuracy)`` (accuracies in %) of ``terms`` ``(coefficient, accuracy)``,
    with the Agresti-Caffo adjusted Wald interval over ``n`` test images (each accuracy's proportion shrunk to
    ``(x + 2) / (n + 4)`` for its variance; the models' errors treated as independent). A point without ``n``."""
    value = float(sum(c * a for c, a in terms))
    if not n or n <= 0:
        return point(value)
    var = 0.0
    for c, a in terms:
        p = (a / 100.0 * n + 2.0) / (n + 4.0)
        var += c * c * p * (1.0 - p) / (n + 4.0)
    half = float(norm.ppf(0.5 + stats.LEVEL / 2)) * 100.0 * math.sqrt(var)
    return Effect(value, (value - half, value + half), f"Agresti-Caffo interval over {n} test images (one seed)")


def over_seeds(values: Sequence[float], intervals: Sequence[tuple[float, float]] | None = None) -> Effect:
    """The mean of per-seed effects with its interval over the seeds (``stats.seed_interval``: Student t below
    ``stats.MIN_BOOTSTRAP`` seeds).

    With ``intervals`` (each seed's own 95 % interval, over its test images), the interval is at least as wide
    as the one those give the mean (each read as a normal interval, the seeds independent: half-width
    ``z * sqrt(sum se_k^2) / n``). The spread of a few seeds can miss the test-image noise every seed carries:
    two seeds whose accuracies differ by the same number of test images have a t interval of width 0, while each
    seed alone is uncertain."""
    pairs = [(float(x), iv) for x, iv in zip(values, intervals or [None] * len(values), strict=True)
             if math.isfinite(float(x))]
    v = [x for x, _ in pairs]
    if not v:
        return point(math.nan)
    if len(v) == 1:
        return point(v[0])
    lo, hi = stats.seed_interval(v)
    mean = float(np.mean(v))
    basis = f"t interval over {len(v)} seeds" if len(v) < stats.MIN_BOOTSTRAP else f"bootstrap over {len(v)} seeds"
    z = float(norm.ppf(0.5 + stats.LEVEL / 2))
    halves = [(float(iv[1]) - float(iv[0])) / 2 for _, iv in pairs if iv is not None]
    if len(halves) == len(v) and all(math.isfinite(h) for h in halves):
        within = math.sqrt(sum((h / z) ** 2 for h in halves)) / len(v) * z
        if mean - within < lo or mean + within > hi:
            lo, hi = min(lo, mean - within), max(hi, mean + within)
            basis += ", widened to the seeds' own intervals (their test-image noise)"
    return Effect(mean, (lo, hi), basis)
