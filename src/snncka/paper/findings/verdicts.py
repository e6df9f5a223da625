"""The paper's findings judged on an experiment's own results, saved as a result every report shows.

``judge({recipe: folder}, scale)`` (the judge ``findings`` of the paper's experiment files) evaluates the
claims once per recipe on the results that recipe's run saved (``<folder>/results``) and returns a
``FindingsResult``: one verdict per claim and recipe (holds / does not hold / uncertain / not measured) with
its effect, 95 % interval, threshold, seeds and the numbers behind it. Below paper scale (other data, few epochs) the
verdicts compare trends -- which model is more similar, which loses more accuracy -- never absolute
accuracies; the result says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ...registry import register_judge
from ...results import Result
from . import UNMEASURED, effect_text, evaluate, results_in, seeds_text, to_rows

__all__ = ["FindingsResult", "judge"]

# results that are themselves judgements or comparisons of judgements, never evidence for a claim
_NOT_EVIDENCE = ("findings", "paper-vs-code")


@dataclass
class FindingsResult(Result):
    """The paper's claims judged on this run's results, per recipe (``verdicts[recipe]``: one row per claim
    with the fields of ``to_rows`` -- ``finding``, ``claim``, ``verdict``, ``effect``, ``interval``, ``threshold``,
    ``seeds_holding``, ``seeds_total``, ... -- and ``numbers``); saved as ``results/findings.json``."""

    analysis: ClassVar[str] = "findings"

    recipes: list[str]
    verdicts: dict[str, list[dict]]
    scale: str
    experiment: str = ""

    @property
    def basis(self) -> str:
        """What the verdicts compare: the paper's absolute numbers only at paper scale, else trends."""
        if self.scale == "paper":
            return "paper scale: the paper's setting"
        return f"{self.scale} scale: trends only (other data, few epochs), not the paper's absolute numbers"

    def verdict(self, recipe: str, finding: str) -> str:
        """The verdict on claim ``finding`` under ``recipe``."""
        return next(r["verdict"] for r in self.verdicts[recipe] if r["finding"] == finding)

    def summary(self) -> list[dict[str, Any]]:
        """One row per claim, in words: its verdict (per recipe), the effect with its 95 % interval against the
        claim's threshold, the seeds behind it; evidence, source and id last."""
        first = self.verdicts[self.recipes[0]]
        rows = []
        for k, r in enumerate(first):
            row: dict[str, Any] = {"claim": r["claim"]}
            per = {name: self.verdicts[name][k] for name in self.recipes}
            one = len(self.recipes) == 1
            for name, v in per.items():
                tag = "" if one else f" ({name} recipe)"
                row[f"verdict{tag}"] = _verdict_label(v)
                row[f"effect [95 % interval]{tag}"] = effect_text(v) or None
                row[f"seeds{tag}"] = seeds_text(v) or None
            if not one:
                said = [v["verdict"] for v in per.values()]
                row["recipes agree"] = None if UNMEASURED in said else len(set(said)) == 1
            row["interval over"] = "; ".join(dict.fromkeys(v.get("basis", "") for v in per.values()
                                                            if v.get("basis"))) or None
            row.update({("evidence" if one else f"evidence ({name} recipe)"): v["evidence"] for name, v in per.items()})
            row.update({"source": r["source"], "finding": r["finding"], "judged on": self.basis})
            rows.append(row)
        return rows

    def plot(self, out: str | Path, name: str | None = None) -> list[Path]:
        from . import figures as plots

        first = self.verdicts[self.recipes[0]]
        grid = [[self.verdicts[r][k]["verdict"] for r in self.recipes] for k in range(len(first))]
        trends = "" if self.scale == "paper" else ": trends only"
        labels = [r.get("short") or r["finding"] for r in first]
        base = Path(out) / f"{name or self.analysis}"
        notes = [[_seeds_note(self.verdicts[r][k]) for r in self.recipes] for k in range(len(first))]
        paths = plots.verdict_grid(labels, [f"{r} recipe" for r in self.recipes], grid, Path(f"{base}_verdicts"),
                                   title=f"The paper's findings\n({self.scale} scale{trends})", notes=notes)
        per = {rec: [(v.get("effect"), v.get("interval"), v["verdict"]) for v in self.verdicts[rec]]
               for rec in self.recipes}
        if any(e is not None and np.isfinite(e) for rows in per.values() for e, _, _ in rows):
            paths += plots.effect_intervals(labels, [(r.get("threshold"), r.get("side", "")) for r in first], per,
                                            Path(f"{base}_effects"),
                                            title=f"Effects with 95 % intervals against each claim's threshold\n"
                                                  f"({self.scale} scale{trends})")
        return paths


def _seeds_note(row: dict[str, Any]) -> str:
    """The seeds behind a verdict, briefly: "one seed", "2/3 seeds" (on the claim's side), or ""."""
    total = int(row.get("seeds_total") or 0)
    if total == 0 or row["verdict"] == UNMEASURED:
        return ""
    return "one seed" if total == 1 else f"{int(row.get('seeds_holding') or 0)}/{total} seeds"


def _verdict_label(row: dict[str, Any]) -> str:
    """The verdict, marked "one seed" where it rests on one."""
    one = int(row.get("seeds_total") or 0) == 1 and row["verdict"] != UNMEASURED
    return row["verdict"] + (" (one seed)" if one else "")


def evidence(folder: str | Path) -> dict[str, Any]:
    """The results of one experiment folder that can support or contradict a claim (``results_in``
    without this module's own judgements)."""
    return {k: r for k, r in results_in(folder).items()
            if getattr(r, "analysis", "") not in _NOT_EVIDENCE}


@register_judge("findings")
def judge(folders: Mapping[str, str | Path], scale: str, experiment: str = "") -> FindingsResult:
    """``evaluate`` once per recipe on the results in that recipe's experiment folder."""
    if not folders:
        raise ValueError("judge needs at least one {recipe: experiment folder}")
    verdicts = {}
    for recipe, folder in folders.items():
        found = evaluate(evidence(folder))
        verdicts[recipe] = [{**row, "numbers": f.numbers} for f, row in zip(found, to_rows(found),
                                                                             strict=True)]
    return FindingsResult(recipes=list(folders), verdicts=verdicts, scale=scale, experiment=experiment)
