"""The result of an analysis that returns a dict of JSON numbers and lists: saved as it is, shown as a table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..results import Result, jsonable

__all__ = ["TableResult"]


@dataclass
class TableResult(Result):
    """``values`` (what the registered analysis ``analysis_name`` returned) of the experiment's model ``model``,
    with the ``settings`` the experiment file gave the analysis (its ``[[analysis]]`` entry's other keys) and
    the ``identities`` of the models it analysed (``snncka.identity.ModelIdentity`` as dicts, seed included)."""

    analysis: ClassVar[str] = "table"

    analysis_name: str
    model: str
    values: dict
    settings: dict = field(default_factory=dict)
    identities: list[dict] = field(default_factory=list)

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


def call_analysis(entry: Any, subs: list[Any], n_images: int, settings: dict[str, Any], model: str) -> Result:
    """Run the registered per-model analysis ``entry`` (``needs="pair"|"snn"|"ann"``) on ``subs`` (``Subject``s:
    an SNN and an ANN, in either order, or one model): ``f(snn, ann, images, **settings)`` or ``f(model, images,
    **settings)`` on the first ``n_images`` test images of the (first) model's data. A dict it returns becomes a
    ``TableResult`` about ``model`` recording the models' identities."""
    if entry.needs == "pair":
        if sorted(s.spiking for s in subs) != [False, True]:
            raise ValueError(f"analysis {entry.name} takes an SNN and an ANN checkpoint, got "
                             f"{', '.join(s.label for s in subs)}")
        subs = sorted(subs, key=lambda s: not s.spiking)  # the SNN first
    elif [s.spiking for s in subs] != [entry.needs == "snn"]:
        raise ValueError(f"analysis {entry.name} takes one {entry.needs.upper()} checkpoint, got "
                         f"{', '.join(s.label for s in subs)}")
    out = entry.fn(*[s.model for s in subs], subs[0].data.x_test[:n_images], **settings)
    if isinstance(out, dict):
        return TableResult(analysis_name=entry.name, model=model, values=out, settings=settings,
                           identities=[s.identity.as_dict() for s in subs])
    if not isinstance(out, Result):
        raise TypeError(f"analysis {entry.name!r} returned a {type(out).__name__}; return a dict of numbers and "
                        "lists or a snncka Result")
    return out
