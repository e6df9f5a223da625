"""The paper's qualitative claims, checked: each claim is a predicate over snncka's results.

A claim evaluates to ``"holds"``, ``"does not hold"`` or ``"not measured"`` (the results it needs are absent or
undefined), with the numbers behind the verdict. At small scale this compares *trends* (which model is more
similar, which loses more accuracy), never absolute accuracies, so a smoke run on the digits data can still
confirm or contradict the paper's direction of effect.

Every predicate is a small pure function over results of the types ``evaluate`` routes to it (ANN-vs-SNN
``CompareAnalysis``, ``BlocksResult``, ``TemporalAnalysis``, ``RobustnessResult``, ``SeedsResult``, the
paper-table ``PaperComparison``). Model properties (depth, width, T, residual) are read from the
labels snncka writes (``"SNN resnet20 x4 T8 res010"``). The thresholds are the constants below; the paper
gives none, so each is the weakest reading of its wording that still separates the claim from its negation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ...analyses import BlocksResult
from ...results import finite_mean

__all__ = ["THRESHOLDS", "VERDICTS", "Finding", "model_info", "spearman"]

VERDICTS = ("holds", "does not hold", "not measured")
HOLDS, FAILS, UNMEASURED = VERDICTS

THRESHOLDS: dict[str, float] = {
    # Fig. 2 / §4.1: "most layers [of ResNet-20] go above 0.5": this fraction of corresponding layers above 0.5
    "high_cka": 0.5,
    "high_fraction": 0.5,
    # Table 2 / §4.2: removing residuals costs the SNN at least this many points more than the ANN
    "residual_margin": 5.0,
    # Fig. 3 / §4.2: at least this fraction of blocks has an output CKA above the mean of its conv/act layers
    "restore_fraction": 0.5,
    # Fig. 5 / §4.3: "no significant differences" across T: spread of the mean block-output CKA at most this
    "time_spread": 0.05,
    # Fig. 6 / §4.3: stage 1 "all-yellow": mean CKA between different steps at least this ...
    "static_min": 0.9,
    # ... and the last stage at least this much lower
    "dynamic_gap": 0.05,
    # Fig. 8 / §4.5: an eps counts only where one of the two models lost at least this many points
    "min_drop": 1.0,
    # App. C / Fig. C.2: the ANN-SNN pairings of two seeds differ in mean diagonal CKA by at most this
    "seed_spread": 0.05,
}

RESIDUAL_MODEL = "resnet56"  # the model id Table 2's claim is judged on (the paper's example in §4.2)
EVENT_EXPERIMENTS = ("fig7", "appA3")  # experiments whose models see event data
_EVENT_NAME = re.compile(r"dvs|caltech", re.IGNORECASE)


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

_LABEL = re.compile(r"^(?P<kind>ANN|SNN)\s+(?P<arch>(?P<family>[a-z]+?)(?P<depth>\d+))\b(?P<rest>.*)$")


def model_info(label: str) -> dict[str, Any]:
    """Arch, depth, width, T and residual flags from a label like ``"SNN resnet20 x4 T8 res010"``."""
    m = _LABEL.match(label.strip())
    if not m:
        return {"arch": None, "family": None, "depth": None, "width": 1.0, "T": None, "residual": True,
                "spiking": None}
    rest = m.group("rest")
    w = re.search(r"\bx([\d.]+)\b", rest)
    t = re.search(r"\bT(\d+)\b", rest)
    r = re.search(r"\bres([01]+)\b", rest)
    return {
        "arch": m.group("arch"),
        "family": m.group("family"),
        "depth": int(m.group("depth")),
        "width": float(w.group(1)) if w else 1.0,
        "T": int(t.group(1)) if t else None,
        "residual": r is None or set(r.group(1)) == {"1"},
        "spiking": m.group("kind") == "SNN",
    }


def _diagonal(r: Any) -> tuple[list[str], np.ndarray, list[str]]:
    """Corresponding-layer CKA of a cross-layer result: (names, values, kinds) in model a's order."""
    names, d = r.corresponding()
    kinds = dict(zip(r.layers_a, r.kinds_a, strict=False))
    return names, d, [kinds.get(n, "") for n in names]


def _pair_info(r: Any) -> dict[str, Any]:
    """The SNN side's model info of an ANN-vs-SNN result (its T), plus the mean diagonal CKA."""
    snn = r.label_a if r.spiking_a else r.label_b
    info = model_info(snn)
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
    """§4.1 / Fig. 2: ANN and SNN ResNet-20 are similar: most corresponding layers have CKA above 0.5."""
    fid, src = "similarity-high", "§4.1, Fig. 2"
    claim = "Most corresponding layers of ANN and SNN ResNet-20 have CKA above 0.5"
    infos = [(r, _pair_info(r)) for r in pairs]
    infos = [(r, i) for r, i in infos if i["residual"] and i["width"] == 1 and i["depth"] is not None]
    if not infos:
        return Finding(fid, claim, src, UNMEASURED, "no ANN-vs-SNN result of a width-1 residual network")
    _, info = min(infos, key=lambda t: (t[1]["depth"], abs((t[1]["T"] or 4) - 4)))
    frac = info["fraction_high"]
    verdict = UNMEASURED if not math.isfinite(frac) else HOLDS if frac >= THRESHOLDS["high_fraction"] else FAILS
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
    """§4.1 / Fig. 2 middle and bottom: wider ANN/SNN pairs are more similar (mean diagonal CKA rises)."""
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
    LIF/ReLU layers (the jagged curve), and most blocks restore the similarity their inner layers lose.

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
    """§4.2 / Table 2: removing the residual connections of a deep ResNet costs the SNN far more accuracy than
    the ANN (ResNet-56: SNN 91.94 -> 33.61, ANN 92.98 -> 89.62). Model ids ``X`` and ``X-nores``, each with an
    ANN and an SNN accuracy; ``resnet56`` (the paper's example; at ResNet-74 the ANN fails too) is judged when
    present, else the deepest; the drops of the others are reported beside it."""
    fid, claim, src = ("residuals-matter-more-for-snn",
                       "Removing residual connections costs a deep SNN far more accuracy than its ANN",
                       "§4.2, Table 2")
    acc = _accuracies(table) if table is not None else {}
    bases = [m for m, _ in acc if all((k, t) in acc for k in (m, f"{m}-nores") for t in ("ann", "snn"))]
    if not bases:
        return Finding(fid, claim, src, UNMEASURED, "needs ANN and SNN accuracies of a model X and of X-nores")
    depth = {m: int(d.group()) if (d := re.search(r"\d+", m)) else 0 for m in bases}
    base = RESIDUAL_MODEL if RESIDUAL_MODEL in depth else max(depth, key=lambda m: (depth[m], m))
    drops = {m: {t: acc[(m, t)] - acc[(f"{m}-nores", t)] for t in ("ann", "snn")}
             for m in sorted(depth, key=lambda m: (depth[m], m))}
    drop = drops[base]
    ok = drop["snn"] - drop["ann"] >= THRESHOLDS["residual_margin"]
    others = "; ".join(f"{m}: SNN {-d['snn']:+.2f}, ANN {-d['ann']:+.2f}" for m, d in drops.items() if m != base)
    return Finding(fid, claim, src, HOLDS if ok else FAILS,
                   f"{base}: SNN {acc[(base, 'snn')]:.2f} -> {acc[(f'{base}-nores', 'snn')]:.2f} "
                   f"({-drop['snn']:+.2f}), ANN {acc[(base, 'ann')]:.2f} -> {acc[(f'{base}-nores', 'ann')]:.2f} "
                   f"({-drop['ann']:+.2f}); needs the SNN to lose >= {THRESHOLDS['residual_margin']:g} points more"
                   + (f" (also {others})" if others else ""),
                   {"model": base, "drop (points)": drops})


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
    different steps >= 0.9), those of the last stage are not (at least 0.05 lower). Judged on every temporal
    result with residual-block layers; holds when it holds for each."""
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
    """§4.3 / Table 3: one time step in the first stage costs less accuracy than one step in the last stage.
    Model ids: ``snn-T4`` (full), ``snn-T4-first1``, ``snn-T4-last1`` (and likewise for other T)."""
    fid, claim, src = ("first-stage-tolerates-one-step",
                       "One step in stage 1 costs less accuracy than one step in the last stage", "§4.3, Table 3")
    acc = {m: v for (m, t), v in (_accuracies(table) if table is not None else {}).items() if t == "snn"}
    parts, texts, numbers = [], [], {}
    for full in sorted(acc):
        if f"{full}-first1" in acc and f"{full}-last1" in acc:
            first, last = acc[full] - acc[f"{full}-first1"], acc[full] - acc[f"{full}-last1"]
            parts.append(HOLDS if first < last else FAILS)
            texts.append(f"{full}: first stage -{first:.2f}, last stage -{last:.2f}")
            numbers[full] = {"drop first stage": first, "drop last stage": last}
    if not parts:
        return Finding(fid, claim, src, UNMEASURED, "needs SNN accuracies of X, X-first1 and X-last1")
    return Finding(fid, claim, src, _combine(parts), "; ".join(texts), numbers)


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
    kinds = ["snn" if str(lb).startswith("SNN") else "ann" for lb in r.labels]
    return (kinds.index("ann"), kinds.index("snn")) if "ann" in kinds and "snn" in kinds else None


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
    than the ANN's: its mean clean-vs-adversarial CKA over layers is higher at every eps."""
    fid, claim, src = ("snn-adversarial-features-closer",
                       "The SNN's clean and adversarial features are more similar than the ANN's",
                       "§4.5, Fig. 8 (right); Fig. A.9")
    parts, texts, numbers = [], [], {}
    for r in robustness:
        idx = _ann_snn(r)
        cka = getattr(r, "cka", None)
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
