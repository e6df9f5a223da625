"""The paper's qualitative claims, checked: each claim is a predicate over snncka's results.

A claim evaluates to ``"holds"``, ``"does not hold"`` or ``"not measured"`` (the results it needs are absent or
undefined), with the numbers behind the verdict. At small scale this compares *trends* (which model is more
similar, which loses more accuracy), never absolute accuracies, so a smoke run on the digits data can still
confirm or contradict the paper's direction of effect.

Every predicate is a small pure function over results of the types ``evaluate`` routes to it (ANN-vs-SNN
``CompareAnalysis``, ``BlocksResult``, ``TemporalAnalysis``, ``RobustnessResult``, ``SeedsResult``, the
paper-table ``PaperComparison``). Model properties (depth, width, T, residual, SNN or ANN) are read from the
model identities every result records (``snncka.identity.ModelIdentity``). The thresholds are the constants
below, each derived from its claim's wording and the paper's own numbers (the derivation is beside it) and checked by
``evaluate_paper``: every predicate holds on the paper's numbers wherever the paper prints them. Each predicate
judges only the setting its claim is about (``OUT_OF_SCOPE``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ...analyses import BlocksResult
from ...identity import ModelIdentity
from ...results import finite_mean

__all__ = ["THRESHOLDS", "VERDICTS", "Finding", "model_info", "spearman"]

VERDICTS = ("holds", "does not hold", "not measured")
HOLDS, FAILS, UNMEASURED = VERDICTS

THRESHOLDS: dict[str, float] = {
    # Derived from each claim's wording and the paper's own numbers, never tuned on snncka's results; each
    # predicate holds on the paper's numbers wherever the paper prints them (``evaluate_paper``).
    #
    # Sec. 4.1, Fig. 2: "Most layers go above 0.5": a layer counts when its CKA exceeds 0.5, and "most" is a
    # strict majority (fraction > 0.5).
    "high_cka": 0.5,
    "high_fraction": 0.5,
    # Sec. 4.2, Table 2: with residuals "the gap is relatively small, with 1~2% accuracy degradation"; without,
    # it "significantly enlarges". The gap must grow by more than that whole small-gap band: the SNN's drop minus
    # the ANN's drop > 2 points, at EVERY depth. The paper's own smallest growth is 3.39 points (ResNet-20:
    # gap 1.43 -> 4.82), then 7.33 (38), 10.05 (74), 54.97 (56), so a 5-point margin would fail ResNet-20.
    "residual_margin": 2.0,
    # Sec. 4.2, Fig. 3: "EVERY time when the residual connection meets the main branch, the CKA similarity
    # restores": every block's output is above the mean of its own conv and LIF/ReLU layers (fraction 1).
    "restore_fraction": 1.0,
    # Sec. 4.3, Fig. 5: "we cannot find significant differences": the mean block-output CKA differs across T by
    # at most the finest CKA step the paper reads off its figures (0.05: "0.75" vs "0.95", App. A.3).
    "time_spread": 0.05,
    # Sec. 4.3, Fig. 6: stage 1 is "all-yellow ... extremely high similarity", above stage 2's ">0.8", which
    # "starts to produce differences": stage 1's mean CKA between different steps is at least 0.9 ...
    "static_min": 0.9,
    # ... and "the last stage ... demonstrates around 0.5": the paper's gap is ~0.5 (all-yellow ~1 vs ~0.5);
    # the last stage must be lower by at least half of it (0.25), i.e. nearer the reported gap than to none.
    "dynamic_gap": 0.25,
    # Sec. 4.3, Table 3: "the first stage can have much lower accuracy degradation (<1%), while the last stage
    # drop 2~4%": the last stage's drop exceeds the first's by at least the 1 point between those two bands, at
    # every T (the paper's smallest margin is 1.40 points, T=4: 0.86 vs 2.26). Not an absolute "<1%" on the
    # first stage: the paper's own T=16 row drops 1.07.
    "stage_margin": 1.0,
    # Sec. 4.5, Fig. 8, Fig. A.9: an eps counts where one model lost at least 1 point, the low end of what the
    # paper calls a small accuracy degradation ("1~2%", Sec. 4.2); below it the attack says nothing about which
    # model is more robust. Every eps the paper shows counts (its smallest drop is 1.90, SNN at eps 0.001); no
    # margin on the comparison itself: Fig. 8 at eps 0.001 has the SNN ahead by 1.17 points only.
    "min_drop": 1.0,
    # App. C, Fig. C.2: "all four permutations have a similar distribution of CKA values": the mean diagonal
    # CKA of the ANN-SNN pairings differs by at most the finest CKA step the paper states (0.05, as above).
    "seed_spread": 0.05,
}

# The settings each claim is about (Sec. 4.1 and Fig. 2 are CIFAR-10 ResNets): experiments whose results a claim
# must not judge. App. A.2 (CIFAR-100) calls its width results "somewhat irregular" (ResNet-20 x8 has the
# lowest similarity in its last blocks), so it neither supports nor contradicts "wider is more similar"; and
# "most layers above 0.5" is said of Fig. 2's CIFAR-10 ResNet-20 only.
OUT_OF_SCOPE: dict[str, tuple[str, ...]] = {
    "width-raises-similarity": ("appA2",),
    "similarity-high": ("appA2",),
}


@dataclass(frozen=True)
class Finding:
    """One claim of the paper with its verdict on the results given and the numbers behind it."""

    id: str
    claim: str
    source: str
    verdict: str
    evidence: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def _pair_info(r: Any) -> dict[str, Any]:
    """The SNN side's model info of an ANN-vs-SNN result (its T), plus the mean diagonal CKA."""
    info = model_info(r.identity(spiking=True))
    names, d, kinds = _diagonal(r)
    blocks = [v for v, k in zip(d, kinds, strict=True) if k == "block"]
    info["mean"] = finite_mean(d)
    info["block_mean"] = finite_mean(blocks) if blocks else info["mean"]
    info["fraction_high"] = float(np.mean(d[np.isfinite(d)] > THRESHOLDS["high_cka"])) if len(d) else math.nan
    return info


def _accuracies(table: Any) -> dict[tuple[str, str], float]:
    """``{(model id, "ann"|"snn"): our accuracy}`` from an accuracy table's rows."""
    out = {}
    for row in getattr(table, "rows", []):
        v = row.get("ours (%)", row.get("ours"))
        if v is not None and row.get("model") is not None:
            out[(str(row["model"]), str(row.get("type", "")).lower())] = float(v)
    return out


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


def _trend(xs: Sequence[float], ys: Sequence[float], sign: int) -> tuple[str, float]:
    """``sign=-1``: y falls with x; ``+1``: y rises. Holds when the rank correlation has that sign and the
    value at the largest x is beyond the value at the smallest x in that direction."""
    ok = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y)]
    if len({x for x, _ in ok}) < 2:
        return UNMEASURED, math.nan
    ok.sort()
    rho = spearman([x for x, _ in ok], [y for _, y in ok])
    ends = (ok[-1][1] - ok[0][1]) * sign > 0
    return (HOLDS if ends and math.isfinite(rho) and rho * sign > 0 else FAILS), rho


def _combine(parts: Sequence[str]) -> str:
    """All measured parts hold -> holds; any fails -> does not hold; none measured -> not measured."""
    measured = [p for p in parts if p != UNMEASURED]
    if not measured:
        return UNMEASURED
    return HOLDS if all(p == HOLDS for p in measured) else FAILS


def _f(v: float) -> str:
    return "nan" if not math.isfinite(v) else f"{v:.3f}"


# --------------------------------------------------------------------------------------------------------
# The predicates
# --------------------------------------------------------------------------------------------------------


def similarity_high(pairs: Sequence[Any]) -> Finding:
    """§4.1 / Fig. 2: ANN and SNN ResNet-20 are similar: most (a strict majority of) corresponding layers have
    CKA above 0.5. Judged on the shallowest width-1 residual ResNet given (the claim is about ResNet-20, so a VGG
    or another family never stands in for it)."""
    fid, src = "similarity-high", "§4.1, Fig. 2"
    claim = "Most corresponding layers of ANN and SNN ResNet-20 have CKA above 0.5"
    infos = [(r, _pair_info(r)) for r in pairs]
    infos = [(r, i) for r, i in infos
             if i["family"] == "resnet" and i["residual"] and i["width"] == 1 and i["depth"] is not None]
    if not infos:
        return Finding(fid, claim, src, UNMEASURED, "no ANN-vs-SNN result of a width-1 residual ResNet")
    _, info = min(infos, key=lambda t: (t[1]["depth"], abs((t[1]["T"] or 4) - 4)))
    frac = info["fraction_high"]
    verdict = UNMEASURED if not math.isfinite(frac) else HOLDS if frac > THRESHOLDS["high_fraction"] else FAILS
    return Finding(fid, claim, src, verdict,
                   f"{info['arch']}: {frac:.0%} of corresponding layers above {THRESHOLDS['high_cka']} "
                   f"(mean {_f(info['mean'])})",
                   {"model": info["arch"], "fraction above": frac, "mean diagonal CKA": info["mean"]})


def _grouped_trend(pairs: Sequence[Any], vary: str, keep: tuple[str, ...], sign: int, fid: str, claim: str,
                   src: str) -> Finding:
    """Mean diagonal CKA against ``vary`` (depth or width) within the largest group of pairs equal in ``keep``."""
    groups: dict[tuple, dict[float, dict[str, Any]]] = {}
    for r in pairs:
        i = _pair_info(r)
        if i["depth"] is None or not i["residual"]:
            continue
        groups.setdefault(tuple(i[k] for k in keep), {}).setdefault(float(i[vary]), i)
    if not groups or max(len(g) for g in groups.values()) < 2:
        return Finding(fid, claim, src, UNMEASURED, f"needs ANN-vs-SNN results at two or more {vary}s")
    g = max(groups.values(), key=len)
    xs = sorted(g)
    ys = [g[x]["mean"] for x in xs]
    verdict, rho = _trend(xs, ys, sign)
    series = ", ".join(f"{vary} {x:g}: {_f(y)}" for x, y in zip(xs, ys, strict=True))
    return Finding(fid, claim, src, verdict, f"mean diagonal CKA {series}; Spearman {_f(rho)}",
                   {"mean diagonal CKA": {f"{x:g}": y for x, y in zip(xs, ys, strict=True)}, "spearman": rho})


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
    """§4.1 / Table 1: the ANN-SNN accuracy gap shrinks as ResNet-20 gets wider (1.39 -> 0.05 points)."""
    fid, claim, src = "width-closes-accuracy-gap", "The ANN-SNN accuracy gap shrinks with width", "§4.1, Table 1"
    acc = _accuracies(table) if table is not None else {}
    who = {str(r["model"]): r["identity"] for r in getattr(table, "rows", []) if r.get("identity")}
    groups: dict[str, dict[float, float]] = {}
    for mid in {m for m, _ in acc}:  # fully residual networks of one architecture at several widths
        ident = who.get(mid)
        if ident and all(ident["residual"]) and (mid, "ann") in acc and (mid, "snn") in acc:
            groups.setdefault(ident["arch"], {})[float(ident["width"])] = acc[(mid, "ann")] - acc[(mid, "snn")]
    if not groups or max(len(g) for g in groups.values()) < 2:
        return Finding(fid, claim, src, UNMEASURED, "needs ANN and SNN accuracies of one ResNet at two widths")
    g = max(groups.values(), key=len)
    xs = sorted(g)
    verdict, rho = _trend(xs, [g[x] for x in xs], -1)
    return Finding(fid, claim, src, verdict,
                   "ANN-SNN gap " + ", ".join(f"x{x:g}: {g[x]:+.2f}" for x in xs) + f"; Spearman {_f(rho)}",
                   {"gap (points)": {f"{x:g}": g[x] for x in xs}, "spearman": rho})


_BLOCK = re.compile(r"^(s\d+\.b\d+)(?:\.(.+))?$")


def blocks_restore_similarity(curves: Sequence[Any]) -> Finding:
    """§4.2 / Fig. 3: inside residual blocks, block outputs are more similar to the ANN than the conv and
    LIF/ReLU layers (the jagged curve), and "every time" (every block) the output restores the similarity its
    inner layers lose (``restore_fraction`` 1).

    Takes blocks results (``curve``, ``layers``, ``kinds``) or ANN-vs-SNN CKA results (their diagonal); the
    deepest network given is judged."""
    fid, claim, src = ("blocks-restore-similarity",
                       "Residual block outputs are more similar to the ANN than conv and LIF layers", "§4.2, Fig. 3")
    best = None
    for r in curves:
        if isinstance(r, BlocksResult):
            names, d, kinds, label = list(r.layers), np.asarray(r.curve, float), list(r.kinds), str(r.label)
        else:
            names, d, kinds = _diagonal(r)
            label = r.label_a if r.spiking_a else r.label_b
        n_blocks = len({m.group(1) for n in names if (m := _BLOCK.match(n))})
        if n_blocks and (best is None or n_blocks > best[0]):
            best = (n_blocks, names, d, kinds, label)
    if best is None:
        return Finding(fid, claim, src, UNMEASURED, "no ResNet CKA curve with residual-block layers")
    _, names, d, kinds, label = best
    by_type: dict[str, list[float]] = {"block": [], "act": [], "conv": []}
    per_block: dict[str, dict[str, list[float]]] = {}
    for n, v, k in zip(names, d, kinds, strict=True):
        m = _BLOCK.match(n)
        if not m or not math.isfinite(v) or k not in by_type:
            continue
        by_type[k].append(float(v))
        per_block.setdefault(m.group(1), {"out": [], "inner": []})["out" if k == "block" else "inner"].append(v)
    means = {k: finite_mean(v) for k, v in by_type.items()}
    restored = [np.mean(b["out"]) > np.mean(b["inner"]) for b in per_block.values() if b["out"] and b["inner"]]
    frac = float(np.mean(restored)) if restored else math.nan
    if not all(math.isfinite(v) for v in (*means.values(), frac)):
        return Finding(fid, claim, src, UNMEASURED, f"{label}: the curve lacks block, conv or act layers")
    ok = means["block"] > means["act"] and means["block"] > means["conv"] and frac >= THRESHOLDS["restore_fraction"]
    return Finding(fid, claim, src, HOLDS if ok else FAILS,
                   f"{label}: mean CKA block outputs {_f(means['block'])}, LIF/ReLU {_f(means['act'])}, "
                   f"conv {_f(means['conv'])}; {frac:.0%} of blocks restore similarity",
                   {"model": label, "mean CKA": means, "restore fraction": frac})


def residuals_matter_more_for_snn(table: Any) -> Finding:
    """§4.2 / Table 2: removing the residual connections costs the SNN far more accuracy than the ANN (the gap
    "significantly enlarges, ranging from 5~56%"; ResNet-56: SNN 91.94 -> 33.61, ANN 92.98 -> 89.62). Model ids
    ``X`` and ``X-nores``, each with an ANN and an SNN accuracy; judged at EVERY depth given (the paper states it
    for all of 20/38/56/74): at each, the SNN's drop exceeds the ANN's by more than ``residual_margin``."""
    fid, claim, src = ("residuals-matter-more-for-snn",
                       "Removing residual connections costs an SNN far more accuracy than its ANN, at every depth",
                       "§4.2, Table 2")
    acc = _accuracies(table) if table is not None else {}
    bases = [m for m, _ in acc if all((k, t) in acc for k in (m, f"{m}-nores") for t in ("ann", "snn"))]
    if not bases:
        return Finding(fid, claim, src, UNMEASURED, "needs ANN and SNN accuracies of a model X and of X-nores")
    who = {str(r["model"]): r["identity"] for r in getattr(table, "rows", []) if r.get("identity")}
    depth = {m: (who.get(m) or {}).get("depth") or 0 for m in bases}  # the trained architecture's (identity)
    drops = {m: {t: acc[(m, t)] - acc[(f"{m}-nores", t)] for t in ("ann", "snn")}
             for m in sorted(depth, key=lambda m: (depth[m], m))}
    margin = THRESHOLDS["residual_margin"]
    parts = [HOLDS if d["snn"] - d["ann"] > margin else FAILS for d in drops.values()]
    texts = [f"{m}: SNN {acc[(m, 'snn')]:.2f} -> {acc[(f'{m}-nores', 'snn')]:.2f} ({-d['snn']:+.2f}), ANN "
             f"{acc[(m, 'ann')]:.2f} -> {acc[(f'{m}-nores', 'ann')]:.2f} ({-d['ann']:+.2f}), SNN loses "
             f"{d['snn'] - d['ann']:.2f} more" for m, d in drops.items()]
    return Finding(fid, claim, src, _combine(parts),
                   "; ".join(texts) + f" (needs > {margin:g} points more at every depth)",
                   {"drop (points)": drops,
                    "extra SNN drop (points)": {m: d["snn"] - d["ann"] for m, d in drops.items()}})


def time_steps_add_little(pairs: Sequence[Any]) -> Finding:
    """§4.3 / Fig. 5: more time steps do not change the ANN-SNN similarity much ("we cannot find significant
    differences"; block outputs reach the same point): the spread of the mean block-output CKA across T is
    small. (The paper does *not* claim that more steps raise the similarity.)"""
    fid, claim, src = ("time-steps-add-little", "More time steps barely change ANN-SNN similarity",
                       "§4.3, Fig. 5")
    groups: dict[tuple, dict[int, float]] = {}
    for r in pairs:
        i = _pair_info(r)
        if i["T"] is not None and i["depth"] is not None and i["residual"]:
            groups.setdefault((i["arch"], i["width"]), {}).setdefault(i["T"], i["block_mean"])
    if not groups or max(len(g) for g in groups.values()) < 2:
        return Finding(fid, claim, src, UNMEASURED, "needs ANN-vs-SNN results of one network at two or more T")
    g = max(groups.values(), key=len)
    vals = [g[t] for t in sorted(g) if math.isfinite(g[t])]
    if len(vals) < 2:
        return Finding(fid, claim, src, UNMEASURED, "the CKA of the runs is undefined")
    spread = float(max(vals) - min(vals))
    return Finding(fid, claim, src, HOLDS if spread <= THRESHOLDS["time_spread"] else FAILS,
                   "mean block-output CKA " + ", ".join(f"T{t}: {_f(g[t])}" for t in sorted(g))
                   + f"; spread {_f(spread)} (at most {THRESHOLDS['time_spread']:g})",
                   {"mean block-output CKA": {str(t): g[t] for t in sorted(g)}, "spread": spread})


def early_static_late_dynamic(temporals: Sequence[Any]) -> Finding:
    """§4.3 / Fig. 6: block outputs of the first stage are nearly static across time steps (mean CKA between
    different steps >= ``static_min``), those of the last stage are not (at least ``dynamic_gap`` lower; the
    paper: all-yellow vs "around 0.5"). Judged on every temporal result with residual-block layers; holds when it
    holds for each."""
    fid, claim, src = ("early-static-late-dynamic",
                       "Stage 1 is nearly static across time steps, the last stage is not", "§4.3, Fig. 6")
    parts, texts, numbers = [], [], {}
    for r in temporals:
        m = np.asarray(r.matrices, dtype=float)
        if m.ndim != 3 or m.shape[-1] < 2:
            continue
        stages: dict[int, list[float]] = {}
        for n, k, x in zip(r.layers, r.kinds, r.off_diagonal_mean(), strict=False):
            b = _BLOCK.match(n)
            if k == "block" and b and b.group(2) is None:
                stages.setdefault(int(n[1:n.index(".")]), []).append(float(x))
        if len(stages) < 2:
            continue
        early, late = finite_mean(stages[min(stages)]), finite_mean(stages[max(stages)])
        ok = early >= THRESHOLDS["static_min"] and late <= early - THRESHOLDS["dynamic_gap"]
        parts.append(HOLDS if ok else FAILS)
        texts.append(f"{r.label}: stage {min(stages)} {_f(early)}, stage {max(stages)} {_f(late)}")
        numbers[str(r.label)] = {"first stage": early, "last stage": late}
    if not parts:
        return Finding(fid, claim, src, UNMEASURED, "no temporal result of residual-block outputs with T >= 2")
    return Finding(fid, claim, src, _combine(parts),
                   "mean CKA between different steps: " + "; ".join(texts)
                   + f" (stage 1 >= {THRESHOLDS['static_min']:g}, last stage >= "
                   f"{THRESHOLDS['dynamic_gap']:g} lower)", numbers)


def first_stage_tolerates_one_step(table: Any) -> Finding:
    """§4.3 / Table 3: one time step in the first stage costs much less accuracy than one step in the last
    stage ("<1%" vs "2~4%"): at every T, the last stage's drop exceeds the first's by at least ``stage_margin``.
    Model ids: ``snn-T4`` (full), ``snn-T4-first1``, ``snn-T4-last1`` (and likewise for other T)."""
    fid, claim, src = ("first-stage-tolerates-one-step",
                       "One step in stage 1 costs less accuracy than one step in the last stage", "§4.3, Table 3")
    acc = {m: v for (m, t), v in (_accuracies(table) if table is not None else {}).items() if t == "snn"}
    parts, texts, numbers = [], [], {}
    natural = lambda m: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", m)]  # noqa: E731  (T4 < T16)
    for full in sorted(acc, key=natural):
        if f"{full}-first1" in acc and f"{full}-last1" in acc:
            first, last = acc[full] - acc[f"{full}-first1"], acc[full] - acc[f"{full}-last1"]
            parts.append(HOLDS if last - first >= THRESHOLDS["stage_margin"] else FAILS)
            texts.append(f"{full}: first stage -{first:.2f}, last stage -{last:.2f}")
            numbers[full] = {"drop first stage": first, "drop last stage": last}
    if not parts:
        return Finding(fid, claim, src, UNMEASURED, "needs SNN accuracies of X, X-first1 and X-last1")
    return Finding(fid, claim, src, _combine(parts),
                   "; ".join(texts) + f" (the last stage must cost >= {THRESHOLDS['stage_margin']:g} point more)",
                   numbers)


def event_lowers_similarity(event_pairs: Sequence[Any], static_pairs: Sequence[Any]) -> Finding:
    """§4.4 / Fig. 7, App. A.3: on event data ANN and SNN are less similar than on static images (CIFAR10-DVS
    peaks near 0.75 vs 0.95 on CIFAR-10): each event pair's mean diagonal CKA lies below that of the static
    pair of the same architecture and width."""
    fid, claim, src = ("event-data-lowers-similarity", "Event data lowers ANN-SNN similarity",
                       "§4.4, Fig. 7; App. A.3")
    static: dict[tuple, float] = {}
    for r in static_pairs:
        i = _pair_info(r)
        if i["residual"]:
            static.setdefault((i["arch"], i["width"]), i["mean"])
    parts, texts, numbers = [], [], {}
    for r in event_pairs:
        i = _pair_info(r)
        key = (i["arch"], i["width"])
        if key not in static or not (math.isfinite(i["mean"]) and math.isfinite(static[key])):
            continue
        parts.append(HOLDS if i["mean"] < static[key] else FAILS)
        name = f"{i['arch']}" + (f" x{i['width']:g}" if i["width"] != 1 else "")
        texts.append(f"{name}: event {_f(i['mean'])} vs static {_f(static[key])}")
        numbers[name] = {"event": i["mean"], "static": static[key]}
    if not parts:
        return Finding(fid, claim, src, UNMEASURED,
                       "needs ANN-vs-SNN results of one architecture on event and on static data")
    return Finding(fid, claim, src, _combine(parts), "mean diagonal CKA " + "; ".join(texts), numbers)


def _ann_snn(r: Any) -> tuple[int, int] | None:
    """(index of the ANN, index of the SNN) among a result's models, by their identities; None without both."""
    spiking = [bool(d["spiking"]) for d in r.identities]
    return (spiking.index(False), spiking.index(True)) if False in spiking and True in spiking else None


def snn_more_robust(robustness: Sequence[Any]) -> Finding:
    """§4.5 / Fig. 8 left, Fig. A.9: under PGD the SNN loses less accuracy than the ANN (eps 0.01: ANN -43,
    SNN -22 points). Counted at every eps where one model lost >= 1 point; must hold at each."""
    fid, src = "snn-more-robust", "§4.5, Fig. 8 (left); Fig. A.9"
    claim = "The SNN keeps more accuracy under PGD than the ANN"
    parts, texts, numbers = [], [], {}
    for r in robustness:
        idx = _ann_snn(r)
        if idx is None:
            continue
        a, s = idx
        drops = {e: (r.clean_accuracy[a] - r.accuracy[a][k], r.clean_accuracy[s] - r.accuracy[s][k])
                 for k, e in enumerate(r.eps)}
        counted = {e: d for e, d in drops.items() if max(d) >= THRESHOLDS["min_drop"]}
        if not counted:
            continue
        ok = all(ds < da for da, ds in counted.values())
        parts.append(HOLDS if ok else FAILS)
        texts.append(", ".join(f"eps {e:g}: ANN -{da:.2f} / SNN -{ds:.2f}" for e, (da, ds) in counted.items()))
        numbers[str(r.labels[s])] = {f"{e:g}": {"ann drop": da, "snn drop": ds} for e, (da, ds) in drops.items()}
    if not parts:
        return Finding(fid, claim, src, UNMEASURED,
                       f"no PGD result in which an attack cost either model >= {THRESHOLDS['min_drop']:g} point")
    return Finding(fid, claim, src, _combine(parts), "; ".join(texts), numbers)


def snn_adversarial_features_closer(robustness: Sequence[Any]) -> Finding:
    """§4.5 / Fig. 8 right: the SNN's features of adversarial images stay closer to those of the clean images
    than the ANN's: its mean clean-vs-adversarial CKA over layers is higher at every eps. Where a result holds
    the eval-mode attack's CKA beside the recipe's (``cka_eval``: the released train-mode attack also moves
    BatchNorm statistics), the eval-mode one is judged: the claim is about the perturbation, not that drift."""
    fid, claim, src = ("snn-adversarial-features-closer",
                       "The SNN's clean and adversarial features are more similar than the ANN's",
                       "§4.5, Fig. 8 (right); Fig. A.9")
    parts, texts, numbers = [], [], {}
    for r in robustness:
        idx = _ann_snn(r)
        cka = getattr(r, "cka_eval", None) or getattr(r, "cka", None)
        if idx is None or not cka or not cka[idx[0]] or not cka[idx[1]]:
            continue
        means = {e: (finite_mean(cka[idx[0]][k]), finite_mean(cka[idx[1]][k])) for k, e in enumerate(r.eps)}
        if not all(math.isfinite(v) for pair in means.values() for v in pair):
            continue
        parts.append(HOLDS if all(s > a for a, s in means.values()) else FAILS)
        texts.append(", ".join(f"eps {e:g}: ANN {_f(a)} / SNN {_f(s)}" for e, (a, s) in means.items()))
        numbers[str(r.labels[idx[1]])] = {f"{e:g}": {"ann": a, "snn": s} for e, (a, s) in means.items()}
    if not parts:
        return Finding(fid, claim, src, UNMEASURED, "no PGD result with clean-vs-adversarial CKA of both models")
    return Finding(fid, claim, src, _combine(parts), "mean CKA clean vs adversarial " + "; ".join(texts), numbers)


def seed_pairings_alike(seeds: Sequence[Any]) -> Finding:
    """App. C / Fig. C.2: all ANN-SNN pairings of two seeds have a similar CKA (spread of the mean diagonal
    CKA over the pairings <= 0.05)."""
    fid, claim, src = "seed-pairings-alike", "All ANN/SNN seed pairings are alike", "App. C, Fig. C.2"
    for r in seeds:
        mats = np.asarray(r.matrices, dtype=float)
        vals = {f"{r.labels[i]} vs {r.labels[j]}": finite_mean(np.diagonal(mats[k]))
                for k, (i, j) in enumerate(r.pairs) if bool(r.spiking[i]) != bool(r.spiking[j])}
        vals = {k: v for k, v in vals.items() if math.isfinite(v)}
        if len(vals) >= 2:
            spread = max(vals.values()) - min(vals.values())
            return Finding(fid, claim, src, HOLDS if spread <= THRESHOLDS["seed_spread"] else FAILS,
                           "mean diagonal CKA " + ", ".join(f"{k}: {_f(v)}" for k, v in vals.items())
                           + f"; spread {_f(spread)} (at most {THRESHOLDS['seed_spread']:g})",
                           {"mean diagonal CKA": vals, "spread": spread})
    return Finding(fid, claim, src, UNMEASURED, "needs a seeds result with two or more ANN/SNN pairings")


# --------------------------------------------------------------------------------------------------------
