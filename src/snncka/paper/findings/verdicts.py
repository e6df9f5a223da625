"""The paper's findings judged on an experiment's own results, saved as a result every report shows.

``judge({recipe: folder}, scale)`` (the judge ``findings`` of the paper's experiment files) evaluates the
claims once per recipe on the results that recipe's run saved (``<folder>/results``) and returns a
``FindingsResult``: one verdict per claim and recipe (holds / does not hold / not measured) with the numbers
behind it. Below paper scale (other data, few epochs) the
verdicts compare trends -- which model is more similar, which loses more accuracy -- never absolute
accuracies; the result says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ...registry import register_judge
from ...results import Result
from . import UNMEASURED, evaluate, results_in, to_rows

__all__ = ["FindingsResult", "judge"]

# results that are themselves judgements or comparisons of judgements, never evidence for a claim
_NOT_EVIDENCE = ("findings", "paper-vs-code")


@dataclass
class FindingsResult(Result):
    """The paper's claims judged on this run's results, per recipe (``verdicts[recipe]``: one row per claim
    with ``finding``, ``claim``, ``source``, ``verdict``, ``evidence``, ``numbers``)."""

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
        first = self.verdicts[self.recipes[0]]
        if len(self.recipes) == 1:
            return [{**{k: r[k] for k in ("finding", "claim", "source", "verdict", "evidence")},
                     "judged on": self.basis} for r in first]
        rows = []
        for k, r in enumerate(first):
            row: dict[str, Any] = {"finding": r["finding"], "claim": r["claim"], "source": r["source"]}
            per = {name: self.verdicts[name][k] for name in self.recipes}
            row.update({f"verdict ({name} recipe)": v["verdict"] for name, v in per.items()})
            said = [v["verdict"] for v in per.values()]
            row["recipes agree"] = None if UNMEASURED in said else len(set(said)) == 1
            row.update({f"evidence ({name} recipe)": v["evidence"] for name, v in per.items()})
            row["judged on"] = self.basis
            rows.append(row)
        return rows

    def plot(self, out: str | Path, name: str | None = None) -> list[Path]:
        from ... import plots

        first = self.verdicts[self.recipes[0]]
        grid = [[self.verdicts[r][k]["verdict"] for r in self.recipes] for k in range(len(first))]
        trends = "" if self.scale == "paper" else ": trends only"
        return plots.verdict_grid([r["finding"] for r in first], [f"{r} recipe" for r in self.recipes], grid,
                                  Path(out) / f"{name or self.analysis}_verdicts",
                                  title=f"The paper's findings\n({self.scale} scale{trends})")


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
