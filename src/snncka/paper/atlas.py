"""The findings atlas: which of the paper's conclusions depend on the authors' choices?

``snncka reproduce atlas`` judges every finding (``snncka.paper.findings``) that its base experiments can
measure under variations of the choices the paper makes:

* recipe: the paper's text or the released code (``snncka.recipes``: ``paper``, ``code``);
* surrogate gradient of the LIF neuron (Sec. 3.2, Eq. 3: the box ``rect``; ``snncka.neurons.SURROGATES``);
* CKA estimator (Sec. 3.3: unbiased linear HSIC; biased linear; RBF kernel);
* time reduction (Sec. 3.3: an SNN layer's T steps concatenated into one feature; or their mean);
* seeds: every cell is judged over ``seeds`` seeds (seed k: each model's ``seed`` + k).

Design: one choice at a time. The baseline column is the paper's setting (recipe ``paper``, the paper's
surrogate, unbiased linear CKA, concatenation); every other column changes exactly one choice, so a verdict
that differs from the baseline's is caused by that choice (a full factorial grid would cost 2 x 5 x 3 x 2 = 60
settings per seed and cannot be read as a table). The seeds are the spread within a cell, never a column.
The estimator and time-reduction columns retrain nothing: their models are the baseline's cache entries (the
model cache is keyed by the training config) and only the analyses run again; the recipe and surrogate
columns train their own models through the same cache and launchers (a surrogate changes only the SNN: the
ANN is shared).

The variant experiments are the base experiments themselves with the variation applied (``variant``): the
models' ``seed`` and ``neuron``, and the CKA settings of every analysis that takes them; each cell runs with
the runner's ``run_one`` into ``<out>/cells/<variation>/<base>/seed<k>``. The atlas is saved as
``<out>/results/atlas.json`` (an ``AtlasResult``) with one figure and an HTML report naming the conclusions
that flip (``<out>/report.html``).
"""

from __future__ import annotations

import inspect
import math
import multiprocessing
import textwrap
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from .. import registry, stats
from ..experiment import Experiment, import_plugins, load_experiment, model_jobs, scale_settings
from ..launch import InlineLauncher, ModelJob, trained_epochs
from ..neurons import SURROGATES
from ..recipes import RECIPES
from ..results import Result
from . import findings as F
from .findings.verdicts import evidence

__all__ = ["AXES", "BASELINE", "DEFAULT_BASES", "DEFAULT_SEEDS", "AtlasResult", "Variation", "atlas_plan",
           "check_seeds", "judge_cell", "run_atlas", "variant", "variations"]

ESTIMATORS: dict[str, dict[str, Any]] = {"unbiased-linear": {}, "biased-linear": {"unbiased": False},
                                         "rbf": {"kernel": "rbf"}}
AXES: dict[str, tuple[str, ...]] = {
    "recipe": tuple(RECIPES),
    "surrogate": tuple(SURROGATES),
    "estimator": tuple(ESTIMATORS),
    "time": ("concat", "mean"),
}
#: the paper's choices: Sec. 3.2 (Eq. 3's surrogate), Sec. 3.3 (unbiased linear CKA of the concatenated steps)
BASELINE: dict[str, str] = {"recipe": "paper", "surrogate": RECIPES["paper"].surrogate,
                            "estimator": "unbiased-linear", "time": "concat"}
RETRAINS = ("recipe", "surrogate")  # the axes whose columns train their own models
#: the atlas's own base experiment (``atlas.toml``: a ResNet depth pair, temporal CKA, PGD): six findings at once
BASE_FILE = Path(str(resources.files("snncka.paper") / "atlas.toml"))
DEFAULT_BASES = (str(BASE_FILE),)
DEFAULT_SEEDS = 3


@dataclass(frozen=True)
class Variation:
    """One column of the atlas: the baseline, or the baseline with one choice (``axis``) set to ``value``."""

    axis: str  # "" for the baseline
    value: str = "baseline"

    @property
    def name(self) -> str:
        return f"{self.axis}={self.value}" if self.axis else "baseline"

    @property
    def retrains(self) -> bool:
        return self.axis in RETRAINS

    @property
    def recipe(self) -> str:
        return self.value if self.axis == "recipe" else BASELINE["recipe"]

    @property
    def neuron(self) -> dict[str, str]:
        return {"surrogate": self.value} if self.axis == "surrogate" else {}

    @property
    def cka(self) -> dict[str, Any]:
        if self.axis == "estimator":
            return dict(ESTIMATORS[self.value])
        return {"time_reduce": self.value} if self.axis == "time" and self.value != "concat" else {}


def variations(vary: Sequence[str] | None = None) -> list[Variation]:
    """The atlas's columns: the baseline, then each one-choice variation (``vary``: only these, by name like
    ``surrogate=dspike`` or by axis like ``estimator``). An unknown name is a one-line error listing the valid
    ones."""
    grid = [Variation(a, v) for a, values in AXES.items() for v in values if v != BASELINE[a]]
    if not vary:
        return [Variation(""), *grid]
    by_name = {v.name: v for v in grid}
    chosen: list[Variation] = []
    for name in vary:
        if name in AXES:
            chosen += [v for v in grid if v.axis == name]
        elif name in by_name:
            chosen.append(by_name[name])
        else:
            raise ValueError(f"unknown atlas variation {name!r}; valid: {', '.join(by_name)} (or a whole axis: "
                             f"{', '.join(AXES)})")
    return [Variation(""), *dict.fromkeys(chosen)]


def check_seeds(seeds: Any) -> int:
    """``seeds`` as an int >= 1, else a one-line error."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"--seeds must be an integer >= 1 (the seeds judged per cell), got {seeds!r}")
    return seeds


def _cka_of(analysis: str, cka: dict[str, Any]) -> dict[str, Any]:
    """The CKA settings of ``cka`` that analysis ``analysis`` takes (``temporal`` compares one SNN's steps: it takes
    the estimator, not the time reduction)."""
    params = inspect.signature(registry.get_analysis(analysis).fn).parameters
    return {k: v for k, v in cka.items() if k in params}


def variant(exp: Experiment, var: Variation, seed: int = 0) -> Experiment:
    """``exp`` with ``var`` applied and every model's seed moved by ``seed``: the models' ``seed`` and
    ``neuron`` (a surrogate changes the SNN only), and the CKA settings of every analysis that takes them."""
    models = []
    for m in exp.models:
        m = {**m, "seed": int(m.get("seed", 0)) + seed}
        if var.neuron:
            m["neuron"] = {**m.get("neuron", {}), **var.neuron}
        models.append(m)
    analyses = [{**a, **_cka_of(a["analysis"], var.cka)} for a in exp.analyses]
    return replace(exp, models=models, analyses=analyses, judges=[])


def _cells(bases: Sequence[Experiment], grid: Sequence[Variation], seeds: int, out: Path
           ) -> list[tuple[Variation, int, Experiment, Path]]:
    return [(var, k, variant(exp, var, k), out / "cells" / var.name / exp.id / f"seed{k}")
            for var in grid for exp in bases for k in range(seeds)]


def _jobs(cells: Sequence[tuple[Variation, int, Experiment, Path]], scale: str, cache: Path,
          epochs: int | None, cka_images: int | None, **run_opts: Any) -> list[tuple[str, ModelJob]]:
    """Every model of every cell, once per cache entry (checked here, before any training), with its cell;
    ``run_opts``: as the runner's (data_root, download, device, progress)."""
    jobs: dict[Path, tuple[str, ModelJob]] = {}
    for var, k, exp, _ in cells:
        settings = scale_settings(exp, scale, epochs, cka_images)
        for job in model_jobs(exp, scale, settings, cache, **run_opts, recipe=var.recipe)[0]:
            jobs.setdefault(job.run_dir, (f"{var.name}/{exp.id}/s{k}", job))
    return list(jobs.values())


def _bases(ids: Sequence[str]) -> list[Experiment]:
    if not ids:
        raise ValueError("the atlas needs at least one base experiment (--base ID)")
    exps = [load_experiment(i) for i in dict.fromkeys(ids)]
    for e in exps:
        if e.recipes:
            raise ValueError(f"experiment {e.id} compares recipes itself; the atlas varies the recipe: choose "
                             "a base experiment that runs under one recipe")
    return exps


def atlas_plan(bases: Sequence[str] = DEFAULT_BASES, scale: str = "smoke", seeds: int = DEFAULT_SEEDS,
               vary: Sequence[str] | None = None, cache: str | Path | None = None, epochs: int | None = None
               ) -> list[Any]:
    """The atlas's models as ``snncka.plan.PlannedModel`` rows (for ``plan.format_plan``): every model its
    columns and seeds train, once per cache entry; nothing is trained."""
    from ..experiment import default_cache
    from ..plan import PlannedModel, model_cost

    cache = Path(cache) if cache is not None else default_cache()
    exps = _bases(bases)
    cells = _cells(exps, variations(vary), check_seeds(seeds), Path("."))
    batch = min(256, int(scale_settings(exps[0], scale, epochs).get("cka_images", 4096)))
    out = []
    for where, job in _jobs(cells, scale, cache, epochs, None):
        cost = model_cost(job.cfg, batch)
        out.append(PlannedModel("atlas", f"{where}/{job.label}", job.cfg, job.run_dir, trained_epochs(job.run_dir),
                                cost, cost.cka_bytes))
    return out


# --------------------------------------------------------------------------------------------------------
# Judging a cell: the findings over its seeds
# --------------------------------------------------------------------------------------------------------


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _robust_margin(n: dict) -> float:  # min over eps with a drop of >= min_drop: ANN drop - SNN drop
    d = [v for by_eps in n.values() for v in by_eps.values()]
    least = F.THRESHOLDS["min_drop"]
    counted = [v["ann drop"] - v["snn drop"] for v in d if max(v["ann drop"], v["snn drop"]) >= least]
    return min(counted)


#: a finding's effect from its numbers, where ``Finding`` has no ``effect`` of its own: the number its predicate
#: compares with its threshold
_EFFECTS: dict[str, Any] = {
    "similarity-high": lambda n: n["fraction above"],
    "depth-lowers-similarity": lambda n: n["spearman"],
    "width-raises-similarity": lambda n: n["spearman"],
    "width-closes-accuracy-gap": lambda n: n["spearman"],
    "blocks-restore-similarity": lambda n: n["mean CKA"]["block"] - max(n["mean CKA"]["act"], n["mean CKA"]["conv"]),
    "residuals-matter-more-for-snn": lambda n: min(n["extra SNN drop (points)"].values()),
    "time-steps-add-little": lambda n: n["spread"],
    "early-static-late-dynamic": lambda n: min(v["first stage"] - v["last stage"] for v in n.values()),
    "first-stage-tolerates-one-step": lambda n: min(v["drop last stage"] - v["drop first stage"] for v in n.values()),
    "event-data-lowers-similarity": lambda n: max(v["event"] - v["static"] for v in n.values()),
    "snn-more-robust": _robust_margin,
    "snn-adversarial-features-closer": lambda n: min(e["snn"] - e["ann"] for m in n.values() for e in m.values()),
    "seed-pairings-alike": lambda n: n["spread"],
}


def effect_of(f: Any) -> float | None:
    """The finding's effect size: its own ``effect`` where it has one, else read from its numbers (of the first
    study whose numbers give one, where several experiments measured it)."""
    own = _num(getattr(f, "effect", None))
    if own is not None or f.verdict == F.UNMEASURED:
        return own
    get = _EFFECTS.get(f.id)
    if get is None:
        return None
    for n in (f.numbers, *[v for v in f.numbers.values() if isinstance(v, dict)]):
        try:
            v = _num(get(n))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            continue
        if v is not None:
            return v
    return None


def _seed_aware() -> bool:
    """Whether ``Finding`` carries seed counts itself (``evaluate`` then judges pooled seeds)."""
    return "seeds_total" in {f.name for f in fields(F.Finding)}


def judge_cell(per_seed: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every finding judged on one cell's results, one row per finding in ``findings.ORDER``: ``verdict``,
    ``effect``, ``interval`` ([lo, hi] or None), ``seeds_holding``, ``seeds_total``, ``evidence``.

    ``per_seed[k]``: seed k's results as ``{"<experiment>/<name>": result}``. Where ``Finding`` carries seed
    counts and intervals, the pooled results (seed k's names with ``-s<k>``, seed 0's unchanged) are judged at
    once by ``evaluate``. Otherwise each seed is judged alone: the effect is the mean of the seeds' effects
    with its 95 % Student t interval over seeds (``stats.seed_interval``); the verdict is "holds" / "does not
    hold" when every measured seed says so, "uncertain" when they disagree, "not measured" when none measured."""
    if _seed_aware():
        pooled = {f"{key}-s{k}" if k else key: r for k, res in enumerate(per_seed) for key, r in res.items()}
        out = []
        for f in F.evaluate(pooled):
            iv = getattr(f, "interval", None)
            out.append({"finding": f.id, "verdict": f.verdict, "effect": effect_of(f),
                        "interval": None if iv is None else [_num(v) for v in iv],
                        "seeds_holding": int(getattr(f, "seeds_holding", 0) or 0),
                        "seeds_total": int(getattr(f, "seeds_total", 0) or 0), "evidence": f.evidence})
        return out
    per = [F.evaluate(res) for res in per_seed]
    out = []
    for i, fid in enumerate(F.ORDER):
        found = [fs[i] for fs in per if fs[i].verdict != F.UNMEASURED]
        said = {f.verdict for f in found}
        verdict = F.UNMEASURED if not said else said.pop() if len(said) == 1 else stats.UNCERTAIN
        effects = [e for e in map(effect_of, found) if e is not None]
        iv = stats.seed_interval(effects) if len(effects) >= 2 else None
        out.append({"finding": fid, "verdict": verdict, "effect": float(np.mean(effects)) if effects else None,
                    "interval": None if iv is None else [_num(v) for v in iv],
                    "seeds_holding": sum(f.verdict == F.HOLDS for f in found), "seeds_total": len(found),
                    "evidence": " | ".join(f"seed {k}: {fs[i].evidence}" for k, fs in enumerate(per))})
    return out


# --------------------------------------------------------------------------------------------------------
# The result: atlas.json, its figure and its report rows
# --------------------------------------------------------------------------------------------------------

VERDICT_COLOURS = {"holds": "#59a14f", "does not hold": "#e15759", "uncertain": "#f1ce63",
                   "not measured": "#d9d9d9"}


@dataclass
class AtlasResult(Result):
    """The findings x variations grid: ``cells[finding][variation]`` = verdict, effect, interval, seeds_holding,
    seeds_total (and the evidence); ``variations``: the columns (``name``, ``axis``, ``value``, ``retrains``),
    the first being the baseline; ``findings``: the rows (``id``, ``claim``, ``source``)."""

    analysis: ClassVar[str] = "atlas"

    scale: str
    bases: list[str]
    seeds: int
    variations: list[dict]
    findings: list[dict]
    cells: dict
    seconds: float = 0.0

    @property
    def basis(self) -> str:
        """What the verdicts rest on (shown above the report's table)."""
        trends = "" if self.scale == "paper" else ": trends only (other data, few epochs)"
        return (f"{self.scale} scale{trends}; bases {', '.join(self.bases)}; {self.seeds} seed(s) per cell; "
                "one choice changed per column")

    def flips(self) -> list[dict[str, Any]]:
        """Every cell whose verdict differs from the baseline column's verdict of its finding (both measured)."""
        base = self.variations[0]["name"]
        rows = []
        for f in self.findings:
            b = self.cells[f["id"]][base]
            for v in self.variations[1:]:
                c = self.cells[f["id"]][v["name"]]
                if F.UNMEASURED not in (b["verdict"], c["verdict"]) and c["verdict"] != b["verdict"]:
                    rows.append({"finding": f["id"], "claim": f["claim"], "baseline verdict": b["verdict"],
                                 "baseline effect": b["effect"], "changed choice": v["name"],
                                 "verdict there": c["verdict"], "effect there": c["effect"],
                                 "seeds holding there": f"{c['seeds_holding']}/{c['seeds_total']}"})
        return rows

    def summary(self) -> list[dict[str, Any]]:
        """The conclusions that flip (one row per finding and changed choice), or one row saying none does."""
        rows = self.flips()
        if rows:
            return rows
        measured = [f["id"] for f in self.findings
                    if self.cells[f["id"]][self.variations[0]["name"]]["verdict"] != F.UNMEASURED]
        return [{"finding": ", ".join(measured) or "none measured", "changed choice": "any",
                 "verdict there": "as the baseline's: no conclusion flips"}]

    def plot(self, out: str | Path, name: str | None = None) -> list[Path]:
        from matplotlib.patches import Rectangle

        from ..plots import _new, save_figure

        cols = [v["name"] for v in self.variations]
        fig, ax = _new((3.4 + 1.05 * len(cols), 1.2 + 0.42 * len(self.findings)))
        for i, f in enumerate(self.findings):
            for j, c in enumerate(cols):
                cell = self.cells[f["id"]][c]
                ax.add_patch(Rectangle((j, i), 1, 1, color=VERDICT_COLOURS[cell["verdict"]], ec="white"))
                txt = "" if cell["effect"] is None else f"{cell['effect']:.2f}"
                if cell["seeds_total"]:
                    txt += f"\n{cell['seeds_holding']}/{cell['seeds_total']} hold"
                ax.text(j + 0.5, i + 0.5, txt or "-", ha="center", va="center", fontsize=6.5)
        ax.set_xlim(0, len(cols))
        ax.set_ylim(len(self.findings), 0)
        ax.set_xticks(np.arange(len(cols)) + 0.5)
        ax.set_xticklabels([c.replace("=", "=\n") for c in cols], fontsize=7)
        ax.xaxis.tick_top()
        ax.set_yticks(np.arange(len(self.findings)) + 0.5)
        ax.set_yticklabels([textwrap.fill(f["claim"], 46) for f in self.findings], fontsize=6.5)
        ax.tick_params(length=0)
        for side in ax.spines.values():
            side.set_visible(False)
        handles = [Rectangle((0, 0), 1, 1, color=c) for c in VERDICT_COLOURS.values()]
        ax.legend(handles, list(VERDICT_COLOURS), loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=4,
                  fontsize=7, frameon=False)
        ax.set_title(f"Findings atlas ({self.scale} scale, bases {', '.join(self.bases)}, {self.seeds} seed(s) "
                     "per cell)\neach column changes one choice of the baseline; cell: effect, seeds holding",
                     fontsize=8, pad=24)
        return save_figure(fig, Path(out) / f"{name or self.analysis}_grid")


def _run_cell(exp: Experiment, scale: str, folder: Path, recipe: str, opts: dict[str, Any]) -> None:
    """One cell: the runner's ``run_one`` on the variant experiment (its models are all trained by now)."""
    from ..runner import run_one

    import_plugins(exp.plugins, Path(exp.source).parent if Path(exp.source).is_file() else None)
    run_one(exp, scale, folder, recipe=recipe, judge=False, launcher=InlineLauncher(False), **opts)


def run_atlas(bases: Sequence[str] = DEFAULT_BASES, scale: str = "smoke", out: str | Path = "runs/atlas-smoke", *,
              seeds: int = DEFAULT_SEEDS, vary: Sequence[str] | None = None, cache: str | Path | None = None,
              data_root: str | None = None, download: bool = False, device: str = "auto",
              epochs: int | None = None, cka_images: int | None = None, progress: bool = True,
              launcher: Any = None, workers: int = 1) -> Path:
    """Build the atlas (see the module doc) into ``out``; returns the report's path. Everything is checked
    before any training: the variations, the seeds, the base experiments and every training config.
    ``launcher`` trains the models (``snncka.launch``); ``workers``: cells analysed at once (processes)."""
    from ..experiment import default_cache
    from ..report import build_report

    t0 = time.perf_counter()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    grid = variations(vary)
    seeds = check_seeds(seeds)
    cache = Path(cache) if cache is not None else default_cache()
    out = Path(out)
    exps = _bases(bases)
    cells = _cells(exps, grid, seeds, out)
    jobs = [j for _, j in _jobs(cells, scale, cache, epochs, cka_images, data_root=data_root, download=download,
                                device=device, progress=progress)]
    (launcher or InlineLauncher(progress)).train(jobs)  # every model of every cell, before the analyses
    opts = dict(cache=cache, data_root=data_root, download=download, device=device, epochs=epochs,
                cka_images=cka_images, progress=progress and workers == 1)
    todo = [(exp, scale, folder, var.recipe, opts) for var, _, exp, folder in cells]
    if workers > 1:  # the cells' analyses, ``workers`` at once (one thread each)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=torch.set_num_threads,
                                 initargs=(1,)) as pool:
            for done in [pool.submit(_run_cell, *t) for t in todo]:
                done.result()
    else:
        for t in todo:
            _run_cell(*t)
    table: dict[str, dict[str, Any]] = {fid: {} for fid in F.ORDER}
    for var in grid:
        per_seed = [{key: r for exp in exps for key, r in evidence(out / "cells" / var.name / exp.id / f"seed{k}")
                     .items()} for k in range(seeds)]
        for row in judge_cell(per_seed):
            table[row.pop("finding")][var.name] = row
    claims = {f.id: f for f in F.evaluate({})}
    res = AtlasResult(scale=scale, bases=[e.id for e in exps], seeds=seeds,
                      variations=[{"name": v.name, "axis": v.axis or "baseline", "value": v.value,
                                   "retrains": v.retrains} for v in grid],
                      findings=[{"id": fid, "claim": claims[fid].claim, "source": claims[fid].source}
                                for fid in F.ORDER],
                      cells=table, seconds=time.perf_counter() - t0)
    res.save(out / "results", "atlas")
    res.plot(out / "figures", "atlas")
    return build_report(out / "results", out / "report.html",
                        title=f"snncka findings atlas ({scale} scale, bases {', '.join(res.bases)}, {seeds} "
                              "seed(s) per cell): which conclusions depend on the authors' choices")
