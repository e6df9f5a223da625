"""What is the paper's alone, on top of the library: its experiment files (``experiments/*.toml``), its numbers
(``numbers``), our numbers beside them (``tables``: the analyses ``accuracy`` and ``robustness-table``), its
claims judged on the results (``findings``: the judge ``findings``) and its text against its released code
(``recipe_compare``: the judge ``paper-vs-code``).

The paper's experiment files list this package in ``plugins``; importing it registers its experiments, analyses
and judges through the library's public registries (``snncka.registry``), as a user's plugin does.
"""

from __future__ import annotations

from importlib import resources

from .. import registry
from ..experiment import Experiment, experiment_files, load_experiment, order
from . import atlas, findings, recipe_compare, tables  # noqa: F401  (register the paper's analyses, judges, atlas)
from .findings import verdicts  # noqa: F401  (registers the judge "findings")
from .numbers import numbers, row, value

__all__ = ["EXPERIMENTS", "list_experiments", "numbers", "row", "value"]

EXPERIMENTS = resources.files("snncka.paper") / "experiments"
registry.register_experiments(EXPERIMENTS)


def list_experiments() -> list[Experiment]:
    """The paper's experiments in the paper's order."""
    ids = [i for i, p in experiment_files().items() if p.parent == EXPERIMENTS]
    return [load_experiment(i) for i in sorted(ids, key=order)]
