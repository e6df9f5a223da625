"""The paper's reported numbers (Tables 1, 2, 3, B.1, Fig. 8, Fig. A.9), cited in ``numbers.json`` itself:
the one place they are read."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["numbers", "row", "value"]


@cache
def _load() -> str:
    return (resources.files("snncka.paper") / "numbers.json").read_text()


def numbers() -> dict[str, Any]:
    """Every table of the paper's numbers (a fresh copy: callers may change it)."""
    return json.loads(_load())


def row(table: str, key: dict[str, Any]) -> dict[str, Any] | None:
    """The row of a paper table whose fields equal ``key`` (fields absent from the row are ignored)."""
    for r in numbers()[table]["rows"]:
        if all(r[k] == v for k, v in key.items() if k in r):
            return r
    return None


def value(r: dict[str, Any] | None, column: str) -> float | str | None:
    """The paper's value of ``column`` ("ann"/"snn") in row ``r``; where the printed value is ambiguous
    (``readings``, e.g. Fig. 8 at eps = 0.05) a text naming every reading and what was printed, e.g.
    ``"0.1 or 0.11 (printed '0.111.88')"``, so no report shows one reading as the paper's number."""
    if r is None:
        return None
    readings = r.get("readings")
    if r.get("ambiguous") and readings:
        values = [f"{x[column]:g}" for x in readings if x.get(column) is not None]
        return f"{' or '.join(values)} (printed {r.get('raw', '?')!r})" if values else None
    return r.get(column)
