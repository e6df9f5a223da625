"""The experiment runner: trains (or reuses) an experiment file's models, runs its analyses and judges, writes
the report. It runs any experiment file (``snncka.experiment``): the paper's and a user's alike.

Trained models are cached by their full training config (``snncka.launch``), so every experiment that needs the
same model reuses it, a rerun resumes what was interrupted, and the models can train as parallel or Slurm jobs.
A finished analysis is reused only while what it was computed from is unchanged (``snncka.fingerprint``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import data, recipes, registry
from .analyses import Result, Subject, load_result
from .analyses.table import TableResult
from .checkpoint import resolve_checkpoint
from .experiment import (
    Experiment,
    ModelSpec,
    default_cache,
    default_scales,
    load_experiment,
    model_jobs,
    scale_settings,
    train_config,
)
from .files import atomic_link_or_copy, atomic_write, atomic_write_text, check_writable
from .fingerprint import fingerprint
from .launch import InlineLauncher, ModelJob, ensure_trained
from .report import build_report
from .results import saved_inputs
from .runtime import environment

__all__ = ["Run", "default_cache", "default_out", "model_jobs", "run", "run_one", "scale_settings", "submit",
           "train_config"]


@dataclass
class Run:
    """One experiment run at one scale under one recipe: what a ``needs="all"`` analysis is given.

    ``runs[spec.name][type]``: the trained model's run folder; ``common``: the keyword arguments every
    checkpoint analysis takes (``n_images`` unless the recipe's, ``data_root``, ``device``, ``progress``)."""

    exp: Experiment
    scale: str
    specs: list[ModelSpec]
    runs: dict[str, dict[str, Path]]
    out: Path
    common: dict[str, Any]
    recipe: str = "paper"
    about: dict[str, dict[str, str]] = field(default_factory=dict)  # result name -> {"model": model name}
    _made: dict[int, tuple[Result, str]] = field(default_factory=dict, repr=False)  # result id -> its inputs

    def ckpt(self, spec: ModelSpec, kind: str) -> Path:
        """The checkpoint the recipe analyses (its ``checkpoint``: best or last epoch; last if no best)."""
        return resolve_checkpoint(self.runs[spec.name][kind], recipes.get(self.recipe).checkpoint)

    def models(self, models: list[str] | None, need: tuple[str, ...]) -> list[ModelSpec]:
        """The specs of the ids ``models`` (None: all) that have the network types ``need``."""
        chosen = [s for s in self.specs if models is None or s.id in models]
        return [s for s in chosen if all(k in s.types for k in need)]

    def cached(self, name: str, fn: Callable[..., Any], *args: Any, model: str | None = None,
               **kwargs: Any) -> Result:
        """``fn(*args, **kwargs)`` saved as ``results/<name>``, or loaded from there if a run already did it from
        the same inputs: the same function, recipe and settings, checkpoints of the same content (a ``Path``
        argument), results computed from the same inputs. Any change recomputes it, and so every result
        derived from it. ``model``: the name of the experiment's model the result is about (recorded in
        ``experiment.json``)."""
        if model is not None:
            self.about[name] = {"model": model}
        path = self.out / "results" / f"{name}.json"
        fp = self.inputs(fn, *args, **kwargs)
        res: Result | None = None
        if saved_inputs(path) == fp:
            try:
                res = load_result(path)
            except (OSError, ValueError):  # a damaged file: compute it again
                res = None
        if res is None:
            out = fn(*args, **kwargs)
            res = out[0] if isinstance(out, tuple) else out
            self.save(res, name, inputs=fp)
        self._made[id(res)] = (res, fp)
        return res

    def inputs(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
        """The fingerprint of ``fn(*args, **kwargs)`` under this run's recipe (``progress`` aside): what a
        saved result must have been computed from to be reused."""
        settings = {k: v for k, v in kwargs.items() if k != "progress"}
        return fingerprint([fn, recipes.get(self.recipe), list(args), settings], self._inputs_of)

    def _inputs_of(self, x: Any) -> str | None:
        """The fingerprint of the inputs of ``x`` if it is a result this run computed or reused, else None."""
        made = self._made.get(id(x))
        return made[1] if made is not None and made[0] is x else None

    def save(self, res: Result, name: str, inputs: str | None = None) -> None:
        """Save ``res`` as ``results/<name>`` (``inputs``: the fingerprint of what it was computed from) and draw
        its figures into ``figures``."""
        res.save(self.out / "results", name, inputs=inputs)
        res.plot(self.out / "figures", name)


def _per_model(run: Run, entry: registry.AnalysisEntry, a: dict[str, Any]) -> None:
    """A ``needs="pair"|"snn"|"ann"`` analysis on every model it applies to, each result saved once."""
    settings = {k: v for k, v in a.items() if k not in ("kind", "name", "models")}
    need = ("ann", "snn") if entry.needs == "pair" else (entry.needs,)
    stem = a.get("name", entry.name)
    dev = run.common.get("device")
    n = run.common.get("n_images") or recipes.get(run.recipe).cka_images
    for s in run.models(a.get("models"), need):
        def go(fn: Callable[..., Any], ckpts: list[Path], n_images: int, data_root: str | None,
               settings: dict[str, Any], s: ModelSpec = s) -> Result:
            subs = [Subject.load(c, data_root=data_root, device=dev) for c in ckpts]
            models = [sub.model for sub in (subs[::-1] if entry.needs == "pair" else subs)]  # the SNN first
            out = fn(*models, subs[-1].data.x_test[:n_images], **settings)
            if isinstance(out, dict):
                return TableResult(analysis_kind=entry.name, model=s.name, values=out, settings=settings)
            if not isinstance(out, Result):
                raise TypeError(f"analysis {entry.name!r} returned a {type(out).__name__}; return a dict of "
                                "numbers and lists or a snncka Result")
            return out
        run.cached(f"{stem}-{s.name}", go, entry.fn, [run.ckpt(s, k) for k in need], n,
                   run.common.get("data_root"), settings, model=s.name)


def run(ref: str | Path, scale: str = "smoke", out: str | Path | None = None, *,
        cache: str | Path | None = None, data_root: str | None = None, download: bool = False,
        device: str = "auto", epochs: int | None = None, cka_images: int | None = None, progress: bool = True,
        launcher: Any = None, recipe: str | None = None) -> Path:
    """Run the experiment ``ref`` (a TOML file or a registered ID) at ``scale``: train (or reuse) its models,
    run its analyses and judges, write figures and the HTML report into ``out``; returns the report's path.

    ``recipe`` (``snncka.recipes``: "paper", the default, or "code") trains every model and runs every analysis
    the way the paper's text or the released code does; it is part of each model's cache key. An experiment
    that compares recipes (``recipes = [...]`` in its file) runs once per recipe into ``out/<recipe>``, then
    its judges compare them; it takes no ``recipe``. ``launcher`` trains the models (``snncka.launch``:
    ``InlineLauncher`` by default, ``LocalLauncher(jobs)``, ``SlurmLauncher(...)``); the analyses run here."""
    exp = load_experiment(ref)
    out = Path(out) if out is not None else default_out(exp.id, scale, recipe)
    opts = dict(cache=cache, data_root=data_root, download=download, device=device, epochs=epochs,
                cka_images=cka_images, progress=progress, launcher=launcher)
    if exp.recipes:
        if recipe is not None:
            raise ValueError(f"experiment {exp.id} runs every recipe it compares ({', '.join(exp.recipes)}); "
                             "leave out --recipe")
        return _run_recipes(exp, scale, out, **opts)
    run_one(exp, scale, out, recipe=recipe or "paper", **opts)
    suffix = "" if (recipe or "paper") == "paper" else f", recipe {recipe}"
    return build_report(out, title=f"snncka {exp.id} ({scale} scale{suffix}): {exp.title}")


def default_out(exp_id: str, scale: str, recipe: str | None = None) -> Path:
    """``runs/<ID>-<scale>``, with ``-<recipe>`` for a recipe other than the paper's."""
    return Path("runs") / (f"{exp_id}-{scale}" + (f"-{recipe}" if recipe not in (None, "paper") else ""))


def run_one(ref: str | Path | Experiment, scale: str, out: Path, *, cache: str | Path | None = None,
            data_root: str | None = None, download: bool = False, device: str = "auto", epochs: int | None = None,
            cka_images: int | None = None, progress: bool = True, launcher: Any = None, recipe: str = "paper",
            judge: bool = True) -> None:
    """``run`` under one recipe without the report: models, analyses, ``experiment.json`` and (``judge``) the
    experiment's judges on this run's results."""
    cache = Path(cache) if cache is not None else default_cache()
    recipes.get(recipe)  # an unknown name is a one-line error listing the recipes, before any work
    exp, settings, jobs, runs = _prepare(ref, scale, out, cache, epochs, cka_images, data_root=data_root,
                                         download=download, device=device, progress=progress, recipe=recipe)
    specs = exp.resolve(scale)
    (launcher or InlineLauncher(progress)).train(jobs)
    for job in jobs:  # all trained now; a concurrent run may still hold a lock for the same model: wait for it
        ensure_trained(job.cfg, job.cache)
    for spec in specs:  # training logs and checkpoints beside the results (for the report and `snncka compare`)
        for k, run_dir in runs[spec.name].items():
            _export_run(run_dir, out / "models" / f"{spec.name}-{k}")

    dev = None if device == "auto" else device
    common: dict[str, Any] = dict(data_root=data_root, device=dev, progress=progress)
    if not (scale == "paper" and cka_images is None
            and settings.get("cka_images") == default_scales()["paper"].get("cka_images")):
        common["n_images"] = settings.get("cka_images", 4096)  # else the recipe's (paper 4096, code 2048)
    ctx = Run(exp, scale, specs, runs, out, common, recipe)
    for a in exp.analyses_at(scale):
        entry = registry.get_analysis(a["kind"])
        if entry.needs == "all":
            entry.fn(ctx, **{k: v for k, v in a.items() if k != "kind"})
        else:
            _per_model(ctx, entry, a)

    _write_json(out / "experiment.json", {
        "id": exp.id, "title": exp.title, "description": exp.description, "scale": scale, "recipe": recipe,
        "settings": settings, "source": exp.source, "cache": str(cache),
        "models": {sid: {k: str(p) for k, p in kinds.items()} for sid, kinds in runs.items()},
        "results": ctx.about,  # each per-model result: the experiment's model it is about
        "environment": environment(),
    })
    if judge:
        _judge(exp, {recipe: out}, scale, out)


def _judge(exp: Experiment, folders: dict[str, Path], scale: str, out: Path) -> None:
    for name in exp.judges:
        res = registry.get_judge(name)(folders, scale, exp.id)
        res.save(out / "results", name)
        res.plot(out / "figures", name)


def _run_recipes(exp: Experiment, scale: str, out: Path, **opts: Any) -> Path:
    """Run ``exp`` once per recipe of ``exp.recipes`` into ``out/<recipe>``, then its judges on all of them into
    ``out``; returns the report's path. Every recipe's configs are checked before any training."""
    cache = Path(opts["cache"]) if opts.get("cache") is not None else default_cache()
    folders = {r: out / r for r in exp.recipes}
    for r, folder in folders.items():  # fail before training: configs, data, output folders of every recipe
        _prepare(exp, scale, folder, cache, opts.get("epochs"), opts.get("cka_images"),
                 data_root=opts.get("data_root"), download=bool(opts.get("download")),
                 device=opts.get("device", "auto"), progress=False, recipe=r)
    for r, folder in folders.items():
        run_one(exp, scale, folder, **{**opts, "cache": cache}, recipe=r, judge=False)
    _judge(exp, folders, scale, out)
    _write_json(out / "experiment.json", {
        "id": exp.id, "title": exp.title, "scale": scale, "recipes": list(exp.recipes),
        "folders": {r: str(f) for r, f in folders.items()}, "cache": str(cache)})
    return build_report(out, title=f"snncka {exp.id} ({scale} scale, recipes {' vs '.join(exp.recipes)}): "
                                   f"{exp.title}")


def _prepare(ref: str | Path | Experiment, scale: str, out: Path, cache: Path, epochs: int | None,
             cka_images: int | None, **run_opts: Any
             ) -> tuple[Experiment, dict[str, Any], list[ModelJob], dict[str, dict[str, Path]]]:
    """Everything checked before any training: the experiment, the overrides, every analysis's settings, every
    training config, the datasets' availability and the output folder."""
    exp = ref if isinstance(ref, Experiment) else load_experiment(ref)
    settings = scale_settings(exp, scale, epochs, cka_images)
    for a in exp.analyses_at(scale):
        entry = registry.get_analysis(a["kind"])
        if entry.check is not None:
            chosen = [s for s in exp.resolve(scale) if a.get("models") is None or s.id in a["models"]]
            entry.check(chosen, **{k: v for k, v in a.items() if k != "kind"})
    jobs, runs = model_jobs(exp, scale, settings, cache, **run_opts)
    for name in sorted({j.cfg.data for j in jobs}):
        check_available(name, run_opts.get("data_root"), bool(run_opts.get("download")))
    _check_writable(out)
    return exp, settings, jobs, runs


def submit(ref: str | Path, scale: str, out: str | Path, slurm: Any, *, cache: str | Path | None = None,
           **kwargs: Any) -> tuple[list[Any], Any]:
    """Submit experiment ``ref``'s models to ``slurm`` (a ``snncka.launch.SlurmLauncher``) and its analyses as
    a job that runs ``run`` once they are all trained; returns (training jobs, analysis job). ``kwargs``: as
    ``run``'s (data_root, download, device, epochs, cka_images)."""
    from .plan import model_cost

    out, cache = Path(out), Path(cache) if cache is not None else default_cache()
    run_opts = {k: kwargs.get(k) for k in ("data_root", "download", "device")}
    exp = load_experiment(ref)
    jobs = []
    for recipe in exp.recipes or [kwargs.get("recipe") or "paper"]:  # comparing recipes trains each's models
        jobs += _prepare(exp, scale, out / recipe if exp.recipes else out, cache, kwargs.get("epochs"),
                         kwargs.get("cka_images"), **run_opts, recipe=recipe, progress=False)[2]
    for j in jobs:
        j.hours = model_cost(j.cfg).gpu_hours(j.cfg.epochs)
    ref = exp.source if Path(exp.source).is_file() else ref
    return slurm.submit_experiment(jobs, _analyse_job, str(ref), scale, str(out),
                                   {**kwargs, "cache": str(cache), "progress": False}, torch.get_num_threads())


def _analyse_job(ref: str, scale: str, out: str, kwargs: dict[str, Any], threads: int) -> str:
    """The analysis job of ``submit``: every model is in the cache by now, so ``run`` only analyses. It uses the
    submitting process's thread count (CKA's float sums depend on it), so its results equal an inline run's."""
    torch.set_num_threads(threads)
    return str(run(ref, scale, out, **kwargs))


def _check_writable(out: Path) -> None:
    """Fail before training when the output folder can't be created (e.g. a file is in the way)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        raise OSError(f"cannot create the output folder {str(out)!r}: a file is in the way ({e.strerror}); "
                      "choose another --out") from e
    check_writable(out)  # an existing read-only --out fails here, not after the training


def check_available(name: str, data_root: str | None, download: bool) -> None:
    """Fail before any training when a dataset can't be loaded, with the loader's message on what to do."""
    data.get(name, root=data_root, download=download)  # raises for an unknown name, listing the known ones


def _export_run(run_dir: Path, dst: Path) -> None:
    """The run's logs (copies) and checkpoints (hard links where possible, else copies) into ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in ("config.json", "metrics.jsonl"):
        atomic_write(dst / f, lambda tmp, f=f: shutil.copyfile(run_dir / f, tmp))
    for f in ("last.pt", "best.pt"):
        if (run_dir / f).is_file():
            atomic_link_or_copy(run_dir / f, dst / f)  # the cache replaces (never rewrites) its checkpoints


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=1, default=str))
