"""The result of an analysis that returns a dict of JSON numbers and lists: saved as it is, shown as a table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..results import Result, jsonable

__all__ = ["TableResult"]


@dataclass
class TableResult(Result):
    """``values`` (what a registered analysis returned) of model ``model``, with the ``settings`` the
    experiment file gave the analysis (its ``[[analysis]]`` entry's other keys)."""

    analysis: ClassVar[str] = "table"

    analysis_kind: str
    model: str
    values: dict
    settings: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = jsonable(self.values)
        self.settings = jsonable(self.settings)

    def summary(self) -> list[dict[str, Any]]:
        """One row per index when every value is a list of one length (e.g. one per layer), else one row."""
        lists = [v for v in self.values.values() if isinstance(v, list)]
        if lists and len(lists) == len(self.values) and len({len(v) for v in lists}) == 1:
            return [{"model": self.model, **{k: v[i] for k, v in self.values.items()}}
                    for i in range(len(lists[0]))]
        return [{"model": self.model, **self.values}]
