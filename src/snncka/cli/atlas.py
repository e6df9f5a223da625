"""``snncka reproduce atlas``: the findings atlas (``snncka.paper.atlas``): every finding its base experiments
measure, judged under one changed choice per column (recipe, surrogate, CKA estimator, time reduction), over
several seeds per cell."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from ..paper import atlas
from .errors import user_errors


def reproduce_atlas(*, show_plan: bool, scale: str, out: str | None, bases: tuple[str, ...],
                    vary: tuple[str, ...], seeds: int | None, launcher: Any, workers: int = 1, **kwargs: Any
                    ) -> None:
    """Check the atlas's arguments (one-line errors), then print its plan or build it."""
    bases = bases or atlas.DEFAULT_BASES
    seeds = atlas.DEFAULT_SEEDS if seeds is None else seeds
    with user_errors():
        atlas.check_seeds(seeds)
        grid = atlas.variations(vary)  # an unknown name: one line listing the valid ones
        if show_plan:
            from ..plan import format_plan

            click.echo(f"atlas: {len(grid)} columns ({', '.join(v.name for v in grid)}), {seeds} seed(s) each")
            click.echo(format_plan(atlas.atlas_plan(bases, scale, seeds, vary, kwargs.get("cache"),
                                                    kwargs.get("epochs")), scale))
            return
        t0 = time.perf_counter()
        out = out or f"runs/atlas-{scale}"
        report = atlas.run_atlas(bases, scale, out, seeds=seeds, vary=vary, launcher=launcher,
                                 workers=workers, **kwargs)
    click.echo(f"atlas ({scale}) done in {time.perf_counter() - t0:.0f} s; atlas: "
               f"{Path(out) / 'results' / 'atlas.json'}; figure: {Path(out) / 'figures' / 'atlas_grid.png'}; "
               f"report: {report}")
