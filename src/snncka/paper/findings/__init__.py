"""The paper's qualitative claims, checked on snncka's results (the predicates: ``claims``), and their verdicts
on an experiment run (``verdicts``: the judge the paper's experiment files name).

``evaluate(results)`` routes a mapping ``{name: result}`` (the names the runner saves results under, e.g.
``"compare-resnet56"``, ``"paper-table2"``; prefix ``"<experiment>/"`` to pool experiments) to every predicate
by the results' types; ``evaluate_paper()`` applies the accuracy predicates to the paper's own numbers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ...analyses import BlocksResult, CompareAnalysis, RobustnessResult, SeedsResult, TemporalAnalysis, load_result
from ...data import is_event_data
from ...results import TemporalResult
from ...seed_runs import seed_names, seed_of
from ..numbers import numbers as _paper_tables
from ..tables import PaperComparison
from .claims import (
    blocks_restore_similarity,
    depth_lowers_similarity,
    early_static_late_dynamic,
    event_lowers_similarity,
    first_stage_tolerates_one_step,
    residuals_matter_more_for_snn,
    seed_pairings_alike,
    similarity_high,
    snn_adversarial_features_closer,
    snn_more_robust,
    spearman,
    time_steps_add_little,
    width_closes_accuracy_gap,
    width_raises_similarity,
)
from .effects import Effect, combine, judge, on_side, over_seeds, worst
from .finding import FAILS, HOLDS, OUT_OF_SCOPE, SHORT, THRESHOLDS, UNCERTAIN, UNMEASURED, VERDICTS, Finding

__all__ = ["FAILS", "HOLDS", "ORDER", "PAPER_BASIS", "SHORT", "THRESHOLDS", "UNCERTAIN", "UNMEASURED", "VERDICTS",
           "Finding", "effect_text", "evaluate", "evaluate_paper", "results_in", "seed_of", "seeds_text", "spearman",
           "to_markdown", "to_rows"]


# Routing results to the predicates
# --------------------------------------------------------------------------------------------------------


def _on_event_data(r: Any) -> bool:
    """Whether the result's (first) model saw event data, by its identity's dataset."""
    ident = r.identity() if callable(getattr(r, "identity", None)) else None
    return ident is not None and is_event_data(ident.data)

ORDER = (
    "similarity-high", "depth-lowers-similarity", "width-raises-similarity", "width-closes-accuracy-gap",
    "blocks-restore-similarity", "residuals-matter-more-for-snn", "time-steps-add-little",
    "early-static-late-dynamic", "first-stage-tolerates-one-step", "event-data-lowers-similarity",
    "snn-more-robust", "snn-adversarial-features-closer", "seed-pairings-alike",
)


def _items(results: Mapping[str, Any] | Iterable[Any], experiment: str | None) -> list[tuple[str, str, Any]]:
    """(experiment, name, result) for a mapping ``{"[exp/]name": result}`` or a list of results / pairs."""
    pairs = results.items() if isinstance(results, Mapping) else [
        r if isinstance(r, tuple) else (str(getattr(r, "analysis", "")), r) for r in results]
    out = []
    for key, r in pairs:
        exp, _, name = str(key).rpartition("/")
        out.append((exp or experiment or "", name, r))
    return out


def _tag(exp: str) -> str:
    """The tag of an experiment key ``"<id>:<tag>"`` (e.g. a recipe); "" when untagged."""
    return exp.partition(":")[2]


def _per_experiment(pred: Callable[[Sequence[Any]], Finding], groups: Mapping[str, list[Any]]) -> Finding:
    """``pred`` on each experiment's results; the measured ones are combined (each experiment is one study)."""
    return _merge({exp: pred(rs) for exp, rs in groups.items() if rs}, lambda: pred([]))


def _merge(found: Mapping[str, Finding], empty: Callable[[], Finding] | None = None) -> Finding:
    """One finding from the findings of several studies: their verdicts combined (each must hold), the effect of
    the study farthest from the claim's side, the fewest seeds holding, evidence side by side (``empty()`` when
    there are none)."""
    measured = {exp: f for exp, f in found.items() if f.verdict != UNMEASURED}
    if len(measured) <= 1:
        one = next(iter(measured.values()), None) or next(iter(found.values()), None)
        if one is None:
            if empty is None:
                raise ValueError("no findings to merge")
            return empty()
        return one
    fs = list(measured.values())
    f0 = fs[0]
    eff = worst([Effect(f.effect, f.interval, f.basis) for f in fs], f0.side)
    return replace(f0, verdict=combine([f.verdict for f in fs]),
                   evidence="; ".join(f"{exp or 'results'}: {f.evidence}" for exp, f in measured.items()),
                   numbers={exp: f.numbers for exp, f in measured.items()}, effect=eff.value,
                   interval=eff.interval, basis=eff.basis, seeds_holding=min(f.seeds_holding for f in fs),
                   seeds_total=max(f.seeds_total for f in fs))


def _over_seeds(per_seed: Mapping[int, Finding]) -> Finding:
    """One finding from the same claim judged on each seed's results: the mean effect with its t interval over
    the seeds (at least as wide as the seeds' own intervals make it: ``over_seeds``), the verdict on that
    interval, and for how many seeds the point effect is on the claim's side (each seed's own verdict and
    numbers are kept in ``numbers``)."""
    measured = {k: f for k, f in per_seed.items() if f.verdict != UNMEASURED}
    if len(measured) <= 1:
        return next(iter(measured.values()), None) or next(iter(per_seed.values()))
    f0 = next(iter(measured.values()))
    eff = over_seeds([f.effect for f in measured.values()], [f.interval for f in measured.values()])
    return replace(f0, verdict=judge(eff, f0.threshold, f0.side),
                   evidence="; ".join(f"seed {k}: {f.evidence}" for k, f in measured.items()),
                   numbers={f"seed {k}": {"verdict": f.verdict, "effect": f.effect, **f.numbers}
                            for k, f in measured.items()},
                   effect=eff.value, interval=eff.interval, basis=eff.basis,
                   seeds_holding=sum(on_side(f.effect, f.threshold, f.side) for f in measured.values()),
                   seeds_total=len(measured))


def evaluate(results: Mapping[str, Any] | Iterable[Any], *, experiment: str | None = None) -> list[Finding]:
    """Every claim of the paper judged on ``results``; one ``Finding`` per claim, in ``ORDER``.

    ``results``: ``{name: result}`` with the names the experiment runner saves results under
    (``compare-<model>``, ``blocks-<model>``, ``temporal[-<name>]-<model>``, ``robustness-<model>``,
    ``seeds``, ``paper-table1/2/3``); prefix a name with ``"<experiment id>[:<tag>]/"`` to pool several
    experiments (or give ``experiment`` for all). Each experiment is one study: the depth, width and time-step
    series never mix results of two experiments. Results with different tags (e.g. recipes) are judged
    separately and each finding then combines the tags' verdicts, with the numbers per tag; to show a verdict
    per recipe, call ``evaluate`` once per recipe. Event-data pairs are those whose models' identity names an
    event dataset (``snncka.data.is_event_data``); the other ANN-vs-SNN pairs are static. Accuracy
    tables of one name pool their rows. A list of results works too (every result then belongs to
    ``experiment``).
    """
    by_tag: dict[str, list[tuple[str, str, Any]]] = {}
    for item in _items(results, experiment):
        by_tag.setdefault(_tag(item[0]), []).append(item)
    if len(by_tag) <= 1:
        return _evaluate_seeds(next(iter(by_tag.values()), []))
    per_tag = {tag or "untagged": _evaluate_seeds(items) for tag, items in by_tag.items()}
    merged = []
    for k in range(len(ORDER)):
        found = {tag: fs[k] for tag, fs in per_tag.items()}
        merged.append(_merge(found))
    return merged


def _evaluate_seeds(items: Sequence[tuple[str, str, Any]]) -> list[Finding]:
    """The claims judged on each seed's results (``seed_names`` of their names), then combined over the seeds."""
    by_seed: dict[int, list[tuple[str, str, Any]]] = {}
    names = seed_names((f"{exp}/{name}", r) for exp, name, r in items)
    for (exp, _, r), (base, k) in zip(items, names, strict=True):
        by_seed.setdefault(k, []).append((exp, base.rpartition("/")[2], r))
    if len(by_seed) <= 1:
        return _evaluate_study(next(iter(by_seed.values()), []))
    per_seed = {k: _evaluate_study(v) for k, v in sorted(by_seed.items())}
    return [_over_seeds({k: fs[j] for k, fs in per_seed.items()}) for j in range(len(ORDER))]


def _evaluate_study(items: Sequence[tuple[str, str, Any]]) -> list[Finding]:
    """The claims on the results of one tag, routed by the results' types (and the models' data, for event
    data)."""
    static: dict[str, list[Any]] = {}
    event: list[Any] = []
    curves: list[Any] = []
    temporal: list[Any] = []
    tables: dict[str, _Table] = {}
    robust: list[Any] = []
    seeds: list[Any] = []
    for exp, _, r in items:
        is_event = _on_event_data(r)
        if isinstance(r, CompareAnalysis) and bool(r.spiking_a) != bool(r.spiking_b):
            (event if is_event else static.setdefault(exp, [])).append(r)
        elif isinstance(r, BlocksResult):
            curves.append(r)
        elif isinstance(r, TemporalAnalysis) and not is_event:
            temporal.append(r)
        elif isinstance(r, PaperComparison):  # tables of one name pool their rows
            tables.setdefault(str(r.table), _Table(str(r.table), [])).rows.extend(r.rows)
        elif isinstance(r, RobustnessResult):
            robust.append(r)
        elif isinstance(r, SeedsResult):
            seeds.append(r)
    all_static = [r for rs in static.values() for r in rs]
    return [
        _per_experiment(similarity_high, _in_scope("similarity-high", static)),
        _per_experiment(depth_lowers_similarity, static),
        _per_experiment(width_raises_similarity, _in_scope("width-raises-similarity", static)),
        width_closes_accuracy_gap(tables.get("table1")),
        blocks_restore_similarity([*curves, *all_static]),
        residuals_matter_more_for_snn(tables.get("table2")),
        _per_experiment(time_steps_add_little, static),
        early_static_late_dynamic(temporal),
        first_stage_tolerates_one_step(tables.get("table3")),
        event_lowers_similarity(event, all_static),
        snn_more_robust(robust),
        snn_adversarial_features_closer(robust),
        seed_pairings_alike(seeds),
    ]


def _in_scope(fid: str, groups: Mapping[str, list[Any]]) -> dict[str, list[Any]]:
    """The experiments' results that claim ``fid`` is about (``OUT_OF_SCOPE`` drops the others)."""
    return {exp: rs for exp, rs in groups.items() if exp.split(":", 1)[0] not in OUT_OF_SCOPE.get(fid, ())}


def results_in(*folders: str | Any) -> dict[str, Any]:
    """The saved results of experiment output folders as ``{"<experiment>/<name>": result}`` for ``evaluate``
    (the experiment id comes from each folder's ``experiment.json``, else the folder's name)."""
    out: dict[str, Any] = {}
    for folder in map(Path, folders):
        meta = folder / "experiment.json"
        exp = json.loads(meta.read_text()).get("id", folder.name) if meta.is_file() else folder.name
        for p in sorted((folder / "results").glob("*.json")):
            out[f"{exp}/{p.stem}"] = load_result(p)
    return out


@dataclass
class _Table:
    table: str
    rows: list[dict[str, Any]]


@dataclass
class _PGD:
    eps: list[float]
    labels: list[str]
    clean_accuracy: list[float]
    accuracy: list[list[float]]
    cka: list[Any] = field(default_factory=list)
    identities: list[dict] = field(default_factory=lambda: [{"spiking": False}, {"spiking": True}])  # ANN, SNN


def _rows(pairs: Iterable[tuple[str, float, float]], who: Mapping[str, dict] | None = None
          ) -> list[dict[str, Any]]:
    """Accuracy-table rows (ANN and SNN per model), each with its model's identity fields where ``who`` has them."""
    return [{"model": m, "type": t, "ours (%)": v, **({"identity": who[m]} if who and m in who else {})}
            for m, a, s in pairs for t, v in (("ANN", a), ("SNN", s))]


def _pgd_readings(table: dict[str, Any]) -> list[tuple[str, _PGD]]:
    """The PGD bars of a paper figure, once per reading of its ambiguous labels (Fig. 8 at eps 0.05)."""
    rows = table["rows"]
    clean = next(r for r in rows if r["eps"] == 0)
    attacked = [r for r in rows if r["eps"] > 0]
    variants: list[tuple[str, list[dict[str, Any]]]] = [("", attacked)]
    for i, r in enumerate(attacked):
        if r.get("readings"):
            variants = [(f"{txt}reading ANN {rd['ann']:g} / SNN {rd['snn']:g} at eps {r['eps']:g} "
                         f"(printed '{r.get('raw', '')}')", [*rs[:i], {**r, **rd}, *rs[i + 1:]])
                        for txt, rs in variants for rd in r["readings"]]
    return [(txt, _PGD([r["eps"] for r in rs], ["ANN", "SNN"], [clean["ann"], clean["snn"]],
                       [[r["ann"] for r in rs], [r["snn"] for r in rs]])) for txt, rs in variants]


@dataclass
class _Temporal(TemporalResult):
    label: str = ""


def _fig6_as_quoted() -> _Temporal:
    """Fig. 6 (T=4) as Sec. 4.3 describes it in words: stage 1 "all-yellow" (read as 1), stage 2 ">0.8"
    (read as 0.8), the last stage "around 0.5"; the paper prints no numbers for it."""
    levels = {"s1.b0": 1.0, "s1.b1": 1.0, "s1.b2": 1.0, "s2.b0": 0.8, "s2.b1": 0.8, "s2.b2": 0.8,
              "s3.b0": 0.5, "s3.b1": 0.5, "s3.b2": 0.5}
    mats = np.stack([np.where(np.eye(4, dtype=bool), 1.0, v) for v in levels.values()])
    return _Temporal(list(levels), ["block"] * len(levels), mats, 4, 0, label="SNN resnet20 T4 (Sec. 4.3 text)")


def evaluate_paper() -> list[Finding]:
    """Every predicate the paper gives numbers for, judged on those numbers: a check that each predicate (and
    its threshold) states what the paper reports. Table 1: the width series and each width against x1; Table
    B.1: the same on CIFAR-100; Table 2: every depth; Table 3: every T; Fig. 6: the levels Sec. 4.3 quotes;
    Fig. 8 (one finding per reading of its ambiguous bar label) and Fig. A.9: every eps."""
    p = _paper_tables()

    def width_rows(rows: list[dict[str, Any]], ann: str, snn: str
                   ) -> tuple[list[tuple[str, float, float]], dict[str, dict]]:
        chosen = [r for r in rows if r["model"] == "resnet20" and r.get("T", 4) == 4 and r[ann] is not None
                  and r[snn] is not None]
        named = [(r["model"] + (f"x{r['width']}" if r["width"] != 1 else ""), r) for r in chosen]
        return ([(m, r[ann], r[snn]) for m, r in named],
                {m: {"arch": r["model"], "width": r["width"], "residual": [True] * 3} for m, r in named})

    out = []
    for name, (t1, who) in (("Table 1", width_rows(p["table1"]["rows"], "ann", "snn")),
                            ("Table B.1, CIFAR-100", width_rows(p["tableB1"]["rows"], "ann_c100", "snn_c100"))):
        out.append(_relabel(width_closes_accuracy_gap(_Table("table1", _rows(t1, who))), name))
        for row in t1[1:]:  # every width against x1
            out.append(_relabel(width_closes_accuracy_gap(_Table("table1", _rows([t1[0], row], who))),
                                f"{name}, x1 vs {row[0].removeprefix('resnet20')}"))
    t2 = [(r["model"] + ("" if r["residual"] else "-nores"), r["ann"], r["snn"]) for r in p["table2"]["rows"]]
    suffix = {"full": "", "first_stage_1": "-first1", "last_stage_1": "-last1"}
    t3 = [{"model": f"snn-T{r['T']}{suffix[r['variant']]}", "type": "SNN", "ours (%)": r["snn"]}
          for r in p["table3"]["rows"]]
    out += [
        _relabel(residuals_matter_more_for_snn(_Table("table2", _rows(t2))), "Table 2"),
        _relabel(first_stage_tolerates_one_step(_Table("table3", t3)), "Table 3"),
        _relabel(early_static_late_dynamic([_fig6_as_quoted()]), "Sec. 4.3's reading of Fig. 6"),
    ]
    for fig in ("fig8", "figA9"):
        for reading, res in _pgd_readings(p[fig]):
            f = snn_more_robust([res])
            name = "Fig. 8" if fig == "fig8" else "Fig. A.9"
            out.append(_relabel(f, name + (f", {reading}" if reading else "")))
    return out


PAPER_BASIS = "the paper's printed numbers: no sampling interval (the interval is the point)"


def _relabel(f: Finding, numbers_from: str) -> Finding:
    """A finding judged on the paper's own numbers: its source names them; no seeds, no sampling interval."""
    return replace(f, source=f"{f.source} (the paper's numbers: {numbers_from})", basis=PAPER_BASIS,
                   seeds_holding=0, seeds_total=0)


# --------------------------------------------------------------------------------------------------------
# Tables for reports
# --------------------------------------------------------------------------------------------------------


FIELDS = ("finding", "claim", "short", "source", "verdict", "effect", "interval", "threshold", "side", "basis",
          "seeds_holding", "seeds_total", "evidence")


def to_rows(findings: Iterable[Finding]) -> list[dict[str, Any]]:
    """One flat row per finding (``FIELDS``: claim, verdict, effect, its interval, threshold, seeds, evidence)
    for the report's tables and ``findings.json``."""
    return [{"finding": f.id, "claim": f.claim, "short": f.short, "source": f.source, "verdict": f.verdict,
             "effect": f.effect, "interval": [float(v) for v in f.interval], "threshold": f.threshold,
             "side": f.side, "basis": f.basis, "seeds_holding": f.seeds_holding, "seeds_total": f.seeds_total,
             "evidence": f.evidence} for f in findings]


def seeds_text(row: Mapping[str, Any]) -> str:
    """How many seeds a verdict rests on, in words: "one seed", "2 of 3 seeds", or "" (none, e.g. the paper's
    own numbers)."""
    total, holding = int(row.get("seeds_total") or 0), int(row.get("seeds_holding") or 0)
    if total == 0:
        return ""
    return "one seed" if total == 1 else f"{holding} of {total} seeds on the claim's side"


def effect_text(row: Mapping[str, Any]) -> str:
    """``effect [low, high] vs side threshold`` in words (empty when not measured)."""
    e = row.get("effect")
    if e is None or not np.isfinite(e):
        return ""
    lo, hi = (float("nan") if v is None else float(v) for v in row.get("interval") or (None, None))
    iv = f" [{lo:.3g}, {hi:.3g}]" if np.isfinite(lo) and np.isfinite(hi) and (lo, hi) != (e, e) else ""
    return f"{e:.3g}{iv} (claim: {row.get('side', '')} {row.get('threshold', float('nan')):g})"


def to_markdown(findings: Iterable[Finding]) -> str:
    """A Markdown table of the findings: claim, source, verdict, effect with its interval, seeds, evidence."""
    lines = ["| claim | source | verdict | effect [95 % interval] | seeds | evidence |", "|---|---|---|---|---|---|"]
    for row in to_rows(findings):
        cells = [str(v).replace("|", "\\|").replace("\n", " ") for v in
                 (row["claim"], row["source"], row["verdict"], effect_text(row), seeds_text(row), row["evidence"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
