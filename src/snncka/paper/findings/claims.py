"""The paper's qualitative claims, checked: each claim is a predicate over snncka's results.

A claim evaluates to ``"holds"``, ``"does not hold"``, ``"uncertain"`` (the 95 % interval of its effect straddles
the threshold; ``effects``) or ``"not measured"`` (the results it needs are absent or undefined), with the effect,
its interval and the numbers behind the verdict. At small scale this compares *trends* (which model is more
similar, which loses more accuracy), never absolute accuracies, so a smoke run on the digits data can still
confirm or contradict the paper's direction of effect.

Every predicate is a small pure function over results of the types ``evaluate`` routes to it (ANN-vs-SNN
``CompareAnalysis``, ``BlocksResult``, ``TemporalAnalysis``, ``RobustnessResult``, ``SeedsResult``, the
paper-table ``PaperComparison``). Model properties (depth, width, T, residual, SNN or ANN) are read from the
model identities every result records (``snncka.identity.ModelIdentity``). The thresholds are the constants
of ``finding``, each derived from its claim's wording and the paper's own numbers (the derivation is beside
it) and checked by ``evaluate_paper``: every predicate holds on the paper's numbers wherever the paper prints
them. Each predicate judges only the setting its claim is about (``OUT_OF_SCOPE``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ...analyses import BlocksResult
from ...identity import ModelIdentity
from ...results import finite_mean
from .effects import Effect, Samples, accuracy_effect, cka_effect, cka_of, combine, judge, on_side, worst
from .finding import (
    HOLDS,
    SHORT,
    THRESHOLDS,
    UNCERTAIN,
    UNMEASURED,
    VERDICTS,
    Finding,
)

__all__ = ["SHORT", "THRESHOLDS", "VERDICTS", "Finding", "model_info", "spearman"]


# --------------------------------------------------------------------------------------------------------
# Reading results
# --------------------------------------------------------------------------------------------------------

def model_info(identity: ModelIdentity | None) -> dict[str, Any]:
    """Arch, family, depth, width, T, residual (every stage) and SNN-or-ANN of a model's identity (all None,
    width 1 and residual for a result that records none)."""
    if identity is None:
        return {"arch": None, "family": None, "depth": None, "width": 1.0, "T": None, "residual": True,
                "spiking": None}
    return {"arch": identity.arch, "family": identity.family, "depth": identity.depth, "width": identity.width,
            "T": identity.T if identity.spiking else None, "residual": all(identity.residual),
            "spiking": identity.spiking}


def _diagonal(r: Any) -> tuple[list[str], np.ndarray, list[str]]:
    """Corresponding-layer CKA of a cross-layer result: (names, values, kinds) in model a's order."""
    names, d = r.corresponding()
    kinds = dict(zip(r.layers_a, r.kinds_a, strict=False))
    return names, d, [kinds.get(n, "") for n in names]


def _samples(r: Any) -> Samples | None:
    """The per-batch HSIC sums behind a result's corresponding-layer CKA (None where it kept none)."""
    cka = getattr(r, "cka", r)
    get = getattr(cka, "batch_samples", None)
    return get() if get is not None else None


def _curve_stats(d: np.ndarray, kinds: Sequence[str]) -> dict[str, float]:
    """Mean, block-output mean and fraction above ``high_cka`` of a corresponding-layer CKA curve."""
    d = np.asarray(d, dtype=float)
    blocks = [v for v, k in zip(d, kinds, strict=True) if k == "block"]
    mean = finite_mean(d)
    return {"mean": mean, "block_mean": finite_mean(blocks) if blocks else mean,
            "fraction_high": float(np.mean(d[np.isfinite(d)] > THRESHOLDS["high_cka"])) if len(d) else math.nan}


def _pair_info(r: Any) -> dict[str, Any]:
    """The SNN side's model info of an ANN-vs-SNN result (its T), plus its curve's statistics and layer kinds."""
    info = model_info(r.identity(spiking=True))
    _, d, kinds = _diagonal(r)
    info.update(_curve_stats(d, kinds), kinds=kinds, result=r)
    return info


def _stat(key: str, info: dict[str, Any]) -> Callable[[Samples], float]:
    """``_curve_stats(...)[key]`` of one result's CKA recomputed from (resampled) HSIC sums."""
    return lambda sums: _curve_stats(cka_of(*sums), info["kinds"])[key]


def _accuracies(table: Any) -> dict[tuple[str, str], float]:
    """``{(model id, "ann"|"snn"): our accuracy}`` from an accuracy table's rows."""
    out = {}
    for row in getattr(table, "rows", []):
        v = row.get("ours (%)", row.get("ours"))
        if v is not None and row.get("model") is not None:
            out[(str(row["model"]), str(row.get("type", "")).lower())] = float(v)
    return out


def _images(table: Any) -> int | None:
    """The test images each accuracy of a table was measured on (None when its rows do not say)."""
    n = [r.get("images") for r in getattr(table, "rows", [])]
    return int(min(n)) if n and all(isinstance(v, int | float) and v > 0 for v in n) else None


def _rank(x: Sequence[float]) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    order = np.argsort(a, kind="stable")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(len(a), dtype=float)
    for v in np.unique(a):  # ties share their mean rank
        ranks[a == v] = ranks[a == v].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (NaN when either side is constant or has fewer than 2 values)."""
    if len(x) < 2:
        return math.nan
    rx, ry = _rank(x), _rank(y)
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def _monotone(xs: Sequence[float], ys: Sequence[float], sign: int) -> tuple[str, float]:
    """The trend's second condition (``sign=-1``: y falls with x; ``+1``: rises): Spearman's rank correlation
    has that sign. The first, the change from the smallest to the largest x, is the effect and decides the
    verdict; a series whose ranks disagree with it cannot be said to hold (uncertain), but a point statistic
    without interval never makes it fail."""
    rho = spearman(xs, ys)
    return (HOLDS if math.isfinite(rho) and rho * sign > 0 else UNCERTAIN), rho


def _f(v: float) -> str:
    return "nan" if not math.isfinite(v) else f"{v:.3f}"


def _found(fid: str, claim: str, src: str, effect: Effect, key: str | float, side: str, evidence: str,
           numbers: dict[str, Any], also: Sequence[str] = ()) -> Finding:
    """A measured finding: the three-way verdict of ``effect <side> threshold`` (``key``: a ``THRESHOLDS``
    name or the number), combined with the verdicts ``also`` of the claim's other conditions; one seed."""
    thr = THRESHOLDS[key] if isinstance(key, str) else float(key)
    verdict = combine([judge(effect, thr, side), *also])
    seeds = int(math.isfinite(effect.value))
    return Finding(fid, claim, src, verdict, evidence, numbers, effect.value, tuple(effect.interval), thr, side,
                   effect.basis, int(seeds and on_side(effect.value, thr, side)), seeds)


def _unmeasured(fid: str, claim: str, src: str, why: str, key: str | float, side: str) -> Finding:
    thr = THRESHOLDS[key] if isinstance(key, str) else float(key)
    return Finding(fid, claim, src, UNMEASURED, why, threshold=thr, side=side)


# --------------------------------------------------------------------------------------------------------
# The predicates
# --------------------------------------------------------------------------------------------------------


def similarity_high(pairs: Sequence[Any]) -> Finding:
    """§4.1 / Fig. 2: ANN and SNN ResNet-20 are similar: most (a strict majority of) corresponding layers have
    CKA above 0.5. Judged on the shallowest width-1 residual ResNet given (the claim is about ResNet-20, so a VGG
    or another family never stands in for it). Effect: the fraction of layers above 0.5, threshold 0.5."""
    fid, src = "similarity-high", "§4.1, Fig. 2"
    claim = "Most corresponding layers of ANN and SNN ResNet-20 have CKA above 0.5"
    infos = [i for i in map(_pair_info, pairs)
             if i["family"] == "resnet" and i["residual"] and i["width"] == 1 and i["depth"] is not None]
    if not infos:
        return _unmeasured(fid, claim, src, "no ANN-vs-SNN result of a width-1 residual ResNet", "high_fraction",
                           ">")
    info = min(infos, key=lambda i: (i["depth"], abs((i["T"] or 4) - 4)))
    frac = info["fraction_high"]
    if not math.isfinite(frac):
        return _unmeasured(fid, claim, src, f"{info['arch']}: its CKA is undefined", "high_fraction", ">")
    eff = cka_effect(lambda s: _stat("fraction_high", info)(s[0]), [_samples(info["result"])], frac)
    return _found(fid, claim, src, eff, "high_fraction", ">",
                  f"{info['arch']}: {frac:.0%} of corresponding layers above {THRESHOLDS['high_cka']} "
                  f"(mean {_f(info['mean'])})",
                  {"model": info["arch"], "fraction above": frac, "mean diagonal CKA": info["mean"]})


def _grouped_trend(pairs: Sequence[Any], vary: str, keep: tuple[str, ...], sign: int, fid: str, claim: str,
                   src: str) -> Finding:
    """Mean diagonal CKA against ``vary`` (depth or width) within the largest group of pairs equal in ``keep``.
    Effect: the change from the smallest to the largest ``vary`` (threshold 0, in the claim's direction); the
    series' rank correlation must have the same sign."""
    side = "<" if sign < 0 else ">"
    groups: dict[tuple, dict[float, dict[str, Any]]] = {}
    for r in pairs:
        i = _pair_info(r)
        if i["depth"] is None or not i["residual"]:
            continue
        groups.setdefault(tuple(i[k] for k in keep), {}).setdefault(float(i[vary]), i)
    g = max(groups.values(), key=len) if groups else {}
    xs = [x for x in sorted(g) if math.isfinite(g[x]["mean"])]
    if len(xs) < 2:
        return _unmeasured(fid, claim, src, f"needs ANN-vs-SNN results at two or more {vary}s", 0.0, side)
    ys = [g[x]["mean"] for x in xs]
    first, last = g[xs[0]], g[xs[-1]]
    eff = cka_effect(lambda s: _stat("mean", last)(s[1]) - _stat("mean", first)(s[0]),
                     [_samples(first["result"]), _samples(last["result"])], ys[-1] - ys[0])
    mono, rho = _monotone(xs, ys, sign)
    series = ", ".join(f"{vary} {x:g}: {_f(y)}" for x, y in zip(xs, ys, strict=True))
    return _found(fid, claim, src, eff, 0.0, side, f"mean diagonal CKA {series}; Spearman {_f(rho)}",
                  {"mean diagonal CKA": {f"{x:g}": y for x, y in zip(xs, ys, strict=True)}, "spearman": rho}, [mono])


def depth_lowers_similarity(pairs: Sequence[Any]) -> Finding:
    """§4.1 / Fig. 2 top and bottom: deeper ANN/SNN pairs are less similar (mean diagonal CKA falls)."""
    return _grouped_trend(pairs, "depth", ("family", "width", "T"), -1, "depth-lowers-similarity",
                          "Deeper ANN/SNN pairs are less similar", "§4.1, Fig. 2 (top, bottom)")


def width_raises_similarity(pairs: Sequence[Any]) -> Finding:
    """§4.1 / Fig. 2 middle and bottom: wider ANN/SNN pairs are more similar (mean diagonal CKA rises). Not
    judged on CIFAR-100 (App. A.2 calls its width results "somewhat irregular"; see ``OUT_OF_SCOPE``)."""
    return _grouped_trend(pairs, "width", ("family", "depth", "T"), +1, "width-raises-similarity",
                          "Wider ANN/SNN pairs are more similar", "§4.1, Fig. 2 (middle, bottom)")


def width_closes_accuracy_gap(table: Any) -> Finding:
    """§4.1 / Table 1: the ANN-SNN accuracy gap shrinks as ResNet-20 gets wider (1.39 -> 0.05 points). Effect:
    the gap at the largest width minus the gap at the smallest (points, below 0); the gaps' rank correlation
    with width must be negative too."""
    fid, claim, src = "width-closes-accuracy-gap", "The ANN-SNN accuracy gap shrinks with width", "§4.1, Table 1"
    acc = _accuracies(table) if table is not None else {}
    who = {str(r["model"]): r["identity"] for r in getattr(table, "rows", []) if r.get("identity")}
    groups: dict[str, dict[float, str]] = {}
    for mid in sorted({m for m, _ in acc}):  # fully residual networks of one architecture at several widths
        ident = who.get(mid)
        if ident and all(ident["residual"]) and (mid, "ann") in acc and (mid, "snn") in acc:
            groups.setdefault(ident["arch"], {})[float(ident["width"])] = mid
    if not groups or max(len(g) for g in groups.values()) < 2:
        return _unmeasured(fid, claim, src, "needs ANN and SNN accuracies of one ResNet at two widths", 0.0, "<")
    g = max(groups.values(), key=len)
    xs = sorted(g)
    gap = {x: acc[(g[x], "ann")] - acc[(g[x], "snn")] for x in xs}
    lo, hi = g[xs[0]], g[xs[-1]]
    eff = accuracy_effect([(1, acc[(hi, "ann")]), (-1, acc[(hi, "snn")]), (-1, acc[(lo, "ann")]),
                           (1, acc[(lo, "snn")])], _images(table))
    mono, rho = _monotone(xs, [gap[x] for x in xs], -1)
    return _found(fid, claim, src, eff, 0.0, "<",
                  "ANN-SNN gap " + ", ".join(f"x{x:g}: {gap[x]:+.2f}" for x in xs) + f"; Spearman {_f(rho)}",
                  {"gap (points)": {f"{x:g}": gap[x] for x in xs}, "spearman": rho}, [mono])


_BLOCK = re.compile(r"^(s\d+\.b\d+)(?:\.(.+))?$")


def _restoration(names: Sequence[str], d: np.ndarray, kinds: Sequence[str]
                 ) -> tuple[dict[str, float], dict[str, float]]:
    """(mean CKA per layer type, per block: its output's CKA minus the mean of its inner conv/act/norm layers)."""
    by_type: dict[str, list[float]] = {"block": [], "act": [], "conv": []}
    per_block: dict[str, dict[str, list[float]]] = {}
    for n, v, k in zip(names, d, kinds, strict=True):
        m = _BLOCK.match(n)
        if not m or not math.isfinite(v) or k not in by_type:
            continue
        by_type[k].append(float(v))
        per_block.setdefault(m.group(1), {"out": [], "inner": []})["out" if k == "block" else "inner"].append(v)
    means = {k: finite_mean(v) for k, v in by_type.items()}
    margins = {b: float(np.mean(v["out"]) - np.mean(v["inner"])) for b, v in per_block.items()
               if v["out"] and v["inner"]}
    return means, margins


def blocks_restore_similarity(curves: Sequence[Any]) -> Finding:
    """§4.2 / Fig. 3: inside residual blocks, block outputs are more similar to the ANN than the conv and
    LIF/ReLU layers (the jagged curve), and "every time" (every block) the output restores the similarity its
    inner layers lose (``restore_fraction`` 1). Effect: the smallest restoration over blocks (a block's output
    CKA minus the mean of its inner layers), above 0; block outputs' mean must also exceed the conv and
    LIF/ReLU means.

    Takes blocks results (``curve``, ``layers``, ``kinds``) or ANN-vs-SNN CKA results (their diagonal); the
    deepest network given is judged."""
    fid, claim, src = ("blocks-restore-similarity",
                       "Residual block outputs are more similar to the ANN than conv and LIF layers", "§4.2, Fig. 3")
    best = None
    for r in curves:
        if isinstance(r, BlocksResult):
            names, d, kinds, label = list(r.layers), np.asarray(r.curve, float), list(r.kinds), str(r.label)
            sample = None
        else:
            names, d, kinds = _diagonal(r)
            label = r.label_a if r.spiking_a else r.label_b
            sample = _samples(r)
        n_blocks = len({m.group(1) for n in names if (m := _BLOCK.match(n))})
        # the deepest; of equally deep ones, one that kept its per-batch sums (a blocks result is the curve of a
        # comparison, which keeps them: its interval is over test images, not a point)
        if n_blocks and (best is None or n_blocks > best[0] or
                         (n_blocks == best[0] and best[5] is None and sample is not None)):
            best = (n_blocks, names, d, kinds, label, sample)
    if best is None:
        return _unmeasured(fid, claim, src, "no ResNet CKA curve with residual-block layers", 0.0, ">")
    _, names, d, kinds, label, sample = best
    means, margins = _restoration(names, d, kinds)
    if not margins or not all(math.isfinite(v) for v in means.values()):
        return _unmeasured(fid, claim, src, f"{label}: the curve lacks block, conv or act layers", 0.0, ">")
    frac = float(np.mean([m > 0 for m in margins.values()]))

    def restore(s: list[Samples]) -> float:
        return min(_restoration(names, cka_of(*s[0]), kinds)[1].values())

    def above(s: list[Samples]) -> float:
        m = _restoration(names, cka_of(*s[0]), kinds)[0]
        return m["block"] - max(m["act"], m["conv"])

    eff = cka_effect(restore, [sample], min(margins.values()))
    types = judge(cka_effect(above, [sample], means["block"] - max(means["act"], means["conv"])), 0.0, ">")
    return _found(fid, claim, src, eff, 0.0, ">",
                  f"{label}: mean CKA block outputs {_f(means['block'])}, LIF/ReLU {_f(means['act'])}, "
                  f"conv {_f(means['conv'])}; {frac:.0%} of blocks restore similarity",
                  {"model": label, "mean CKA": means, "restore fraction": frac, "restoration per block": margins},
                  [types])


def residuals_matter_more_for_snn(table: Any) -> Finding:
    """§4.2 / Table 2: removing the residual connections costs the SNN far more accuracy than the ANN (the gap
    "significantly enlarges, ranging from 5~56%"; ResNet-56: SNN 91.94 -> 33.61, ANN 92.98 -> 89.62). Model ids
    ``X`` and ``X-nores``, each with an ANN and an SNN accuracy; judged at EVERY depth given (the paper states it
    for all of 20/38/56/74): effect, the smallest extra SNN drop over depths, above ``residual_margin``."""
    fid, claim, src = ("residuals-matter-more-for-snn",
                       "Removing residual connections costs an SNN far more accuracy than its ANN, at every depth",
                       "§4.2, Table 2")
    acc = _accuracies(table) if table is not None else {}
    bases = [m for m, _ in acc if all((k, t) in acc for k in (m, f"{m}-nores") for t in ("ann", "snn"))]
    if not bases:
        return _unmeasured(fid, claim, src, "needs ANN and SNN accuracies of a model X and of X-nores",
                           "residual_margin", ">")
    who = {str(r["model"]): r["identity"] for r in getattr(table, "rows", []) if r.get("identity")}
    depth = {m: (who.get(m) or {}).get("depth") or 0 for m in bases}  # the trained architecture's (identity)
    drops = {m: {t: acc[(m, t)] - acc[(f"{m}-nores", t)] for t in ("ann", "snn")}
             for m in sorted(depth, key=lambda m: (depth[m], m))}
    n = _images(table)
    effs = [accuracy_effect([(1, acc[(m, "snn")]), (-1, acc[(f"{m}-nores", "snn")]), (-1, acc[(m, "ann")]),
                             (1, acc[(f"{m}-nores", "ann")])], n) for m in drops]
    margin = THRESHOLDS["residual_margin"]
    texts = [f"{m}: SNN {acc[(m, 'snn')]:.2f} -> {acc[(f'{m}-nores', 'snn')]:.2f} ({-d['snn']:+.2f}), ANN "
             f"{acc[(m, 'ann')]:.2f} -> {acc[(f'{m}-nores', 'ann')]:.2f} ({-d['ann']:+.2f}), SNN loses "
             f"{d['snn'] - d['ann']:.2f} more" for m, d in drops.items()]
    return _found(fid, claim, src, worst(effs, ">"), "residual_margin", ">",
                  "; ".join(texts) + f" (needs > {margin:g} points more at every depth)",
                  {"drop (points)": drops,
                   "extra SNN drop (points)": {m: d["snn"] - d["ann"] for m, d in drops.items()}})


def time_steps_add_little(pairs: Sequence[Any]) -> Finding:
    """§4.3 / Fig. 5: more time steps do not change the ANN-SNN similarity much ("we cannot find significant
    differences"; block outputs reach the same point): the spread of the mean block-output CKA across T is
    small (effect: that spread, at most ``time_spread``). (The paper does *not* claim that more steps raise the
    similarity.)"""
    fid, claim, src = ("time-steps-add-little", "More time steps barely change ANN-SNN similarity",
                       "§4.3, Fig. 5")
    groups: dict[tuple, dict[int, dict[str, Any]]] = {}
    for r in pairs:
        i = _pair_info(r)
        if i["T"] is not None and i["depth"] is not None and i["residual"]:
            groups.setdefault((i["arch"], i["width"]), {}).setdefault(i["T"], i)
    if not groups or max(len(g) for g in groups.values()) < 2:
        return _unmeasured(fid, claim, src, "needs ANN-vs-SNN results of one network at two or more T",
                           "time_spread", "<=")
    g = max(groups.values(), key=len)
    ts = [t for t in sorted(g) if math.isfinite(g[t]["block_mean"])]
    if len(ts) < 2:
        return _unmeasured(fid, claim, src, "the CKA of the runs is undefined", "time_spread", "<=")
    vals = [g[t]["block_mean"] for t in ts]

    def spread(s: list[Samples]) -> float:
        v = [_stat("block_mean", g[t])(x) for t, x in zip(ts, s, strict=True)]
        return float(np.nanmax(v) - np.nanmin(v))

    eff = cka_effect(spread, [_samples(g[t]["result"]) for t in ts], float(max(vals) - min(vals)))
    return _found(fid, claim, src, eff, "time_spread", "<=",
                  "mean block-output CKA " + ", ".join(f"T{t}: {_f(g[t]['block_mean'])}" for t in sorted(g))
                  + f"; spread {_f(eff.value)} (at most {THRESHOLDS['time_spread']:g})",
                  {"mean block-output CKA": {str(t): g[t]["block_mean"] for t in sorted(g)}, "spread": eff.value})


def _stage_means(layers: Sequence[str], kinds: Sequence[str], offdiag: np.ndarray) -> dict[int, float]:
    """Mean CKA between different time steps of each stage's residual-block outputs."""
    stages: dict[int, list[float]] = {}
    for n, k, x in zip(layers, kinds, offdiag, strict=False):
        b = _BLOCK.match(n)
        if k == "block" and b and b.group(2) is None:
            stages.setdefault(int(n[1:n.index(".")]), []).append(float(x))
    return {s: finite_mean(v) for s, v in stages.items()}


def _offdiag_from_hsic(H: np.ndarray, steps: Sequence[int]) -> np.ndarray:
    """Per layer, the mean CKA between different time steps from summed HSIC ``[L, T, T]`` (as the engine and
    ``TemporalResult.off_diagonal_mean``)."""
    d = np.diagonal(H, axis1=1, axis2=2)
    den = np.sqrt(d[:, :, None] * d[:, None, :])
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(den > 0, H / np.where(den > 0, den, 1.0), np.nan)
    out = np.full(len(m), np.nan)
    for j, s in enumerate(steps):
        x = m[j, :s, :s][~np.eye(s, dtype=bool)]
        x = x[np.isfinite(x)]
        if x.size:
            out[j] = x.mean()
    return out


def early_static_late_dynamic(temporals: Sequence[Any]) -> Finding:
    """§4.3 / Fig. 6: block outputs of the first stage are nearly static across time steps (mean CKA between
    different steps >= ``static_min``), those of the last stage are not (at least ``dynamic_gap`` lower; the
    paper: all-yellow vs "around 0.5"). Judged on every temporal result with residual-block layers; holds when it
    holds for each. Effect: the smallest gap (first stage minus last stage) over the results."""
    fid, claim, src = ("early-static-late-dynamic",
                       "Stage 1 is nearly static across time steps, the last stage is not", "§4.3, Fig. 6")
    gaps, statics, texts, numbers = [], [], [], {}
    for r in temporals:
        m = np.asarray(r.matrices, dtype=float)
        if m.ndim != 3 or m.shape[-1] < 2:
            continue
        stages = _stage_means(r.layers, r.kinds, r.off_diagonal_mean())
        if len(stages) < 2:
            continue
        s0, s1 = min(stages), max(stages)
        early, late = stages[s0], stages[s1]
        inner = getattr(r, "cka", r)
        hsic = getattr(inner, "batch_hsic", None)
        steps = list(getattr(inner, "steps", None) or [m.shape[-1]] * len(r.layers))
        keep = [j for j, k in enumerate(r.kinds) if k == "block"]  # only block outputs enter the stage means
        sample = (np.asarray(hsic)[:, keep],) if hsic is not None and np.size(hsic) else None
        names, kinds, steps = [r.layers[j] for j in keep], ["block"] * len(keep), [steps[j] for j in keep]

        def stage(s: list[Samples], which: int, names: list[str] = names, kinds: list[str] = kinds,
                  steps: list[int] = steps) -> float:
            return _stage_means(names, kinds, _offdiag_from_hsic(s[0][0], steps))[which]

        gaps.append(cka_effect(lambda s, f=stage, a=s0, b=s1: f(s, a) - f(s, b), [sample], early - late))
        statics.append(cka_effect(lambda s, f=stage, a=s0: f(s, a), [sample], early))
        texts.append(f"{r.label}: stage {s0} {_f(early)}, stage {s1} {_f(late)}")
        numbers[str(r.label)] = {"first stage": early, "last stage": late}
    if not gaps:
        return _unmeasured(fid, claim, src, "no temporal result of residual-block outputs with T >= 2",
                           "dynamic_gap", ">=")
    static = judge(worst(statics, ">="), THRESHOLDS["static_min"], ">=")
    return _found(fid, claim, src, worst(gaps, ">="), "dynamic_gap", ">=",
                  "mean CKA between different steps: " + "; ".join(texts)
                  + f" (stage 1 >= {THRESHOLDS['static_min']:g}, last stage >= "
                  f"{THRESHOLDS['dynamic_gap']:g} lower)", numbers, [static])


def first_stage_tolerates_one_step(table: Any) -> Finding:
    """§4.3 / Table 3: one time step in the first stage costs much less accuracy than one step in the last
    stage ("<1%" vs "2~4%"): at every T, the last stage's drop exceeds the first's by at least ``stage_margin``
    (effect: the smallest such excess over T). Model ids: ``snn-T4`` (full), ``snn-T4-first1``,
    ``snn-T4-last1`` (and likewise for other T)."""
    fid, claim, src = ("first-stage-tolerates-one-step",
                       "One step in stage 1 costs less accuracy than one step in the last stage", "§4.3, Table 3")
    acc = {m: v for (m, t), v in (_accuracies(table) if table is not None else {}).items() if t == "snn"}
    effs, texts, numbers = [], [], {}
    natural = lambda m: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", m)]  # noqa: E731  (T4 < T16)
    for full in sorted(acc, key=natural):
        if f"{full}-first1" in acc and f"{full}-last1" in acc:
            first, last = acc[full] - acc[f"{full}-first1"], acc[full] - acc[f"{full}-last1"]
            effs.append(accuracy_effect([(1, acc[f"{full}-first1"]), (-1, acc[f"{full}-last1"])], _images(table)))
            texts.append(f"{full}: first stage -{first:.2f}, last stage -{last:.2f}")
            numbers[full] = {"drop first stage": first, "drop last stage": last}
    if not effs:
        return _unmeasured(fid, claim, src, "needs SNN accuracies of X, X-first1 and X-last1", "stage_margin", ">=")
    return _found(fid, claim, src, worst(effs, ">="), "stage_margin", ">=",
                  "; ".join(texts) + f" (the last stage must cost >= {THRESHOLDS['stage_margin']:g} point more)",
                  numbers)


def event_lowers_similarity(event_pairs: Sequence[Any], static_pairs: Sequence[Any]) -> Finding:
    """§4.4 / Fig. 7, App. A.3: on event data ANN and SNN are less similar than on static images (CIFAR10-DVS
    peaks near 0.75 vs 0.95 on CIFAR-10): each event pair's mean diagonal CKA lies below that of the static
    pair of the same architecture and width (effect: the largest event-minus-static difference, below 0; the two
    data sets' test images are resampled independently)."""
    fid, claim, src = ("event-data-lowers-similarity", "Event data lowers ANN-SNN similarity",
                       "§4.4, Fig. 7; App. A.3")
    static: dict[tuple, dict[str, Any]] = {}
    for r in static_pairs:
        i = _pair_info(r)
        if i["residual"]:
            static.setdefault((i["arch"], i["width"]), i)
    effs, texts, numbers = [], [], {}
    for r in event_pairs:
        i = _pair_info(r)
        key = (i["arch"], i["width"])
        if key not in static or not (math.isfinite(i["mean"]) and math.isfinite(static[key]["mean"])):
            continue
        st = static[key]
        effs.append(cka_effect(lambda s, i=i, st=st: _stat("mean", i)(s[0]) - _stat("mean", st)(s[1]),
                               [_samples(r), _samples(st["result"])], i["mean"] - st["mean"], paired=False))
        name = f"{i['arch']}" + (f" x{i['width']:g}" if i["width"] != 1 else "")
        texts.append(f"{name}: event {_f(i['mean'])} vs static {_f(st['mean'])}")
        numbers[name] = {"event": i["mean"], "static": st["mean"]}
    if not effs:
        return _unmeasured(fid, claim, src, "needs ANN-vs-SNN results of one architecture on event and on static "
                           "data", 0.0, "<")
    return _found(fid, claim, src, worst(effs, "<"), 0.0, "<", "mean diagonal CKA " + "; ".join(texts), numbers)


def _ann_snn(r: Any) -> tuple[int, int] | None:
    """(index of the ANN, index of the SNN) among a result's models, by their identities; None without both."""
    spiking = [bool(d["spiking"]) for d in r.identities]
    return (spiking.index(False), spiking.index(True)) if False in spiking and True in spiking else None


def snn_more_robust(robustness: Sequence[Any]) -> Finding:
    """§4.5 / Fig. 8 left, Fig. A.9: under PGD the SNN loses less accuracy than the ANN (eps 0.01: ANN -43,
    SNN -22 points). Counted at every eps where one model lost >= 1 point; must hold at each (effect: the
    largest SNN drop minus ANN drop over those eps, below 0)."""
    fid, src = "snn-more-robust", "§4.5, Fig. 8 (left); Fig. A.9"
    claim = "The SNN keeps more accuracy under PGD than the ANN"
    effs, texts, numbers = [], [], {}
    for r in robustness:
        idx = _ann_snn(r)
        if idx is None:
            continue
        a, s = idx
        drops = {e: (r.clean_accuracy[a] - r.accuracy[a][k], r.clean_accuracy[s] - r.accuracy[s][k])
                 for k, e in enumerate(r.eps)}
        counted = [k for k, e in enumerate(r.eps) if max(drops[e]) >= THRESHOLDS["min_drop"]]
        if not counted:
            continue
        n = getattr(r, "n_images", None)
        effs += [accuracy_effect([(1, r.clean_accuracy[s]), (-1, r.accuracy[s][k]), (-1, r.clean_accuracy[a]),
                                  (1, r.accuracy[a][k])], n) for k in counted]
        texts.append(", ".join(f"eps {r.eps[k]:g}: ANN -{drops[r.eps[k]][0]:.2f} / SNN -{drops[r.eps[k]][1]:.2f}"
                               for k in counted))
        numbers[str(r.labels[s])] = {f"{e:g}": {"ann drop": da, "snn drop": ds} for e, (da, ds) in drops.items()}
    if not effs:
        return _unmeasured(fid, claim, src, f"no PGD result in which an attack cost either model >= "
                           f"{THRESHOLDS['min_drop']:g} point", 0.0, "<")
    return _found(fid, claim, src, worst(effs, "<"), 0.0, "<", "; ".join(texts), numbers)


def snn_adversarial_features_closer(robustness: Sequence[Any]) -> Finding:
    """§4.5 / Fig. 8 right: the SNN's features of adversarial images stay closer to those of the clean images
    than the ANN's: its mean clean-vs-adversarial CKA over layers is higher at every eps (effect: the smallest
    SNN-minus-ANN difference, above 0). Where a result holds the eval-mode attack's CKA beside the recipe's
    (``cka_eval``: the released train-mode attack also moves BatchNorm statistics), the eval-mode one is judged:
    the claim is about the perturbation, not that drift."""
    fid, claim, src = ("snn-adversarial-features-closer",
                       "The SNN's clean and adversarial features are more similar than the ANN's",
                       "§4.5, Fig. 8 (right); Fig. A.9")
    effs, texts, numbers = [], [], {}
    for r in robustness:
        idx = _ann_snn(r)
        cka = getattr(r, "cka_eval", None) or getattr(r, "cka", None)
        if idx is None or not cka or not cka[idx[0]] or not cka[idx[1]]:
            continue
        means = {e: (finite_mean(cka[idx[0]][k]), finite_mean(cka[idx[1]][k])) for k, e in enumerate(r.eps)}
        if not all(math.isfinite(v) for pair in means.values() for v in pair):
            continue
        hsic = np.asarray(getattr(r, "cka_hsic", np.zeros(0)), dtype=float)
        for k, (a, s) in enumerate(means.values()):
            sample = [tuple(hsic[m, k]) for m in idx] if hsic.ndim == 5 and hsic.size else [None]
            effs.append(cka_effect(lambda x: finite_mean(cka_of(*x[1])) - finite_mean(cka_of(*x[0])), sample,
                                   s - a))
        texts.append(", ".join(f"eps {e:g}: ANN {_f(a)} / SNN {_f(s)}" for e, (a, s) in means.items()))
        numbers[str(r.labels[idx[1]])] = {f"{e:g}": {"ann": a, "snn": s} for e, (a, s) in means.items()}
    if not effs:
        return _unmeasured(fid, claim, src, "no PGD result with clean-vs-adversarial CKA of both models", 0.0, ">")
    return _found(fid, claim, src, worst(effs, ">"), 0.0, ">", "mean CKA clean vs adversarial " + "; ".join(texts),
                  numbers)


def seed_pairings_alike(seeds: Sequence[Any]) -> Finding:
    """App. C / Fig. C.2: all ANN-SNN pairings of two seeds have a similar CKA (effect: the spread of the mean
    diagonal CKA over the pairings, at most ``seed_spread``)."""
    fid, claim, src = "seed-pairings-alike", "All ANN/SNN seed pairings are alike", "App. C, Fig. C.2"
    for r in seeds:
        mats = np.asarray(r.matrices, dtype=float)
        cross = {f"{r.labels[i]} vs {r.labels[j]}": k for k, (i, j) in enumerate(r.pairs)
                 if bool(r.spiking[i]) != bool(r.spiking[j])}
        vals = {p: finite_mean(np.diagonal(mats[k])) for p, k in cross.items()}
        cross = {p: k for p, k in cross.items() if math.isfinite(vals[p])}
        vals = {p: vals[p] for p in cross}
        if len(vals) >= 2:
            spread = max(vals.values()) - min(vals.values())
            hsic = np.asarray(getattr(r, "batch_hsic", np.zeros(0)), dtype=float)
            sample = [tuple(hsic[k]) for k in cross.values()] if hsic.ndim == 4 and hsic.size else [None]

            def spread_of(x: list[Samples]) -> float:
                v = [finite_mean(cka_of(*s)) for s in x]
                return float(np.nanmax(v) - np.nanmin(v))

            return _found(fid, claim, src, cka_effect(spread_of, sample, spread), "seed_spread", "<=",
                          "mean diagonal CKA " + ", ".join(f"{k}: {_f(v)}" for k, v in vals.items())
                          + f"; spread {_f(spread)} (at most {THRESHOLDS['seed_spread']:g})",
                          {"mean diagonal CKA": vals, "spread": spread})
    return _unmeasured(fid, claim, src, "needs a seeds result with two or more ANN/SNN pairings", "seed_spread", "<=")
