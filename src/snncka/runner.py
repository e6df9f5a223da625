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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from . import data, recipes, registry
from .analyses import Result, Subject, load_result
from .analyses.subjects import run_recipe
from .analyses.table import call_analysis
from .checkpoint import resolve_checkpoint
from .experiment import (
    Experiment,
    ModelSpec,
    default_cache,
    load_experiment,
    model_jobs,
    scale_settings,
    train_config,
)
from .files import atomic_link_or_copy, atomic_write, atomic_write_text, check_writable
from .fingerprint import fingerprint
from .launch import InlineLauncher, ModelJob, ensure_trained
from .options import RunOptions, seed_suffix
from .report import build_report
from .results import record_figures, saved_inputs
from .runtime import environment

__all__ = ["Run", "RunOptions", "default_cache", "default_out", "model_jobs", "run", "run_one", "scale_settings",
           "submit", "train_config", "training_jobs"]


@dataclass
class Run:
    """One experiment run of one seed at one scale under one recipe: what a ``needs="all"`` analysis is given.

    ``options``: the run's options (``snncka.options.RunOptions``: the recipe, device, ...); ``runs[spec.name]
    [type]``: the trained model's run folder; ``seed``: which of the run's seeds (``ModelSpec.seed + seed``; the
    specs carry it), whose results are named with ``seed_suffix(seed)`` (``-s<k>``, none for the first);
    ``n_images``: the test images of the CKA analyses (None: the recipe's); ``cka_batch``: their minibatch
    (None: the recipe's)."""

    exp: Experiment
    options: RunOptions
    specs: list[ModelSpec]
    runs: dict[str, dict[str, Path]]
    out: Path
    n_images: int | None = None
    seed: int = 0
    cka_batch: int | None = None
    about: dict[str, dict[str, Any]] = field(default_factory=dict)  # result name -> {"model": ..., "seed": k}
    _made: dict[int, tuple[Result, str]] = field(default_factory=dict, repr=False)  # result id -> its inputs

    @property
    def scale(self) -> str:
        return self.options.scale

    @property
    def recipe(self) -> str:
        """The recipe every model of the run was trained under and every analysis runs under."""
        return self.options.recipe_name

    def analysis_options(self, *, images: bool = True) -> dict[str, Any]:
        """The keyword arguments every checkpoint analysis takes from the run: ``recipe``, ``data_root``,
        ``device``, ``progress`` and (``images``) ``n_images`` and ``batch_size`` where the run gives them, not
        the recipe's."""
        o = self.options
        given = images and self.n_images is not None
        return {"recipe": self.recipe, "data_root": o.data_root, "device": o.torch_device, "progress": o.progress,
                **({"n_images": self.n_images} if given else {}),
                **({"batch_size": self.cka_batch} if images and self.cka_batch is not None else {})}

    def result_name(self, stem: str) -> str:
        """The file stem of this seed's result ``stem`` (``stem`` for the first seed, ``stem-s<k>`` else)."""
        return stem + seed_suffix(self.seed)

    def ckpt(self, spec: ModelSpec, network: str) -> Path:
        """The checkpoint the recipe analyses (its ``checkpoint``: best or last epoch; last if no best) of the
        spec's ``network`` ("ann" or "snn")."""
        return resolve_checkpoint(self.runs[spec.name][network], recipes.get(self.recipe).checkpoint)

    def models(self, models: list[str] | None, need: tuple[str, ...]) -> list[ModelSpec]:
        """The specs of the ids ``models`` (None: all) that have the network types ``need``."""
        chosen = [s for s in self.specs if models is None or s.id in models]
        return [s for s in chosen if all(k in s.types for k in need)]

    def cached(self, name: str, fn: Callable[..., Any], *args: Any, model: str | None = None,
               **kwargs: Any) -> Result:
        """``fn(*args, **kwargs)`` saved as ``results/<name>`` (``result_name``: with this seed's suffix), or
        loaded from there if a run already did it from the same inputs: the same function, recipe and settings,
        checkpoints of the same content (a ``Path`` argument), results computed from the same inputs. Any change
        recomputes it, and so every result derived from it. ``model``: the name of the experiment's model the
        result is about (recorded in ``experiment.json`` with the seed)."""
        name = self.result_name(name)
        if model is not None:
            self.about[name] = {"model": model, "seed": self.seed}
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
            save_drawn(res, self.out, name, fp)
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
        """Save ``res`` as ``results/<name>`` with this seed's suffix (``inputs``: the fingerprint of what it was
        computed from) and draw its figures into ``figures``."""
        save_drawn(res, self.out, self.result_name(name), inputs)


def save_drawn(res: Result, out: Path, name: str, inputs: str | None = None) -> None:
    """Save ``res`` as ``out/results/<name>`` and draw its figures into ``out/figures``."""
    js = res.save(out / "results", name, inputs=inputs)  # first: a figure that fails loses no result
    record_figures(js, res.plot(out / "figures", name))  # the report shows these instead of redrawing them


def _per_model(run: Run, entry: registry.AnalysisEntry, a: dict[str, Any]) -> None:
    """A ``needs="pair"|"snn"|"ann"`` analysis on every model it applies to, each result saved once."""
    settings = {k: v for k, v in a.items() if k not in ("analysis", "name", "models")}
    need = ("ann", "snn") if entry.needs == "pair" else (entry.needs,)
    stem = a.get("name", entry.name)
    dev = run.options.torch_device
    n = run.n_images or recipes.get(run.recipe).cka_images
    for s in run.models(a.get("models"), need):
        def go(fn: Callable[..., Any], ckpts: list[Path], n_images: int, data_root: str | None,
               settings: dict[str, Any], s: ModelSpec = s) -> Result:
            subs = [Subject.load(c, data_root=data_root, device=dev) for c in ckpts]
            return call_analysis(entry, subs, n_images, settings, s.name)
        run.cached(f"{stem}-{s.name}", go, entry.fn, [run.ckpt(s, k) for k in need], n,
                   run.options.data_root, settings, model=s.name)


def run(ref: str | Path, scale: str = "smoke", out: str | Path | None = None, *, launcher: Any = None,
        options: RunOptions | None = None, **kwargs: Any) -> Path:
    """Run the experiment ``ref`` (a TOML file or a registered ID) at ``scale``: train (or reuse) its models,
    run its analyses and judges, write figures and the HTML report into ``out``; returns the report's path.

    ``kwargs`` are the run's options (``snncka.options.RunOptions``: ``recipe``, ``epochs``, ``cka_images``,
    ``seeds``, ``cache``, ``data_root``, ``download``, ``device``, ``progress``), checked here before any work;
    or pass ``options`` made already (its ``scale`` then rules). ``recipe`` ("paper", the default, or "code")
    trains every model and runs every analysis the way the paper's text or the released code does; it is part of
    each model's cache key. ``seeds`` (default: the scale's) trains every model with seeds ``ModelSpec.seed + k``
    for k < seeds and runs every analysis per seed (results of seed k > 0 named ``<stem>-s<k>``). An experiment
    that compares recipes (``recipes = [...]`` in its file) runs once per recipe into ``out/<recipe>``, then
    its judges compare them; it takes no ``recipe``. ``launcher`` trains the models (``snncka.launch``:
    ``InlineLauncher`` by default, ``LocalLauncher(jobs)``, ``SlurmLauncher(...)``); the analyses run here."""
    opts = options if options is not None else RunOptions(scale=scale, **kwargs)
    exp = load_experiment(ref)
    out = Path(out) if out is not None else default_out(exp.id, opts.scale, opts.recipe)
    if exp.recipes:
        if opts.recipe is not None:
            raise ValueError(f"experiment {exp.id} runs every recipe it compares ({', '.join(exp.recipes)}); "
                             "leave out --recipe")
        return _run_recipes(exp, opts, out, launcher)
    _run_one(exp, opts, out, launcher)
    suffix = "" if opts.recipe_name == "paper" else f", recipe {opts.recipe}"
    return build_report(out, title=f"snncka {exp.id} ({opts.scale} scale{suffix}): {exp.title}")


def default_out(exp_id: str, scale: str, recipe: str | None = None) -> Path:
    """``runs/<ID>-<scale>``, with ``-<recipe>`` for a recipe other than the paper's."""
    return Path("runs") / (f"{exp_id}-{scale}" + (f"-{recipe}" if recipe not in (None, "paper") else ""))


def run_one(ref: str | Path | Experiment, scale: str, out: Path, *, launcher: Any = None, judge: bool = True,
            options: RunOptions | None = None, **kwargs: Any) -> None:
    """``run`` under one recipe without the report: models, analyses, ``experiment.json`` and (``judge``) the
    experiment's judges on this run's results. ``kwargs``/``options``: as ``run``'s."""
    opts = options if options is not None else RunOptions(scale=scale, **kwargs)
    exp = ref if isinstance(ref, Experiment) else load_experiment(ref)
    _run_one(exp, opts, Path(out), launcher, judge)


def _run_one(exp: Experiment, opts: RunOptions, out: Path, launcher: Any, judge: bool = True) -> None:
    settings, jobs, runs = _prepare(exp, opts, out)
    (launcher or InlineLauncher(opts.progress)).train(jobs)
    for job in jobs:  # all trained now; a concurrent run may still hold a lock for the same model: wait for it
        ensure_trained(job.cfg, job.cache)
    _check_recipes(runs, opts.recipe_name)
    about: dict[str, dict[str, Any]] = {}
    models: dict[str, dict[str, str]] = {}
    for k, seed_runs in enumerate(runs):
        specs = exp.resolve(opts.scale, k)
        for spec in specs:  # training logs and checkpoints beside the results (for the report and `snncka compare`)
            for net, run_dir in seed_runs[spec.name].items():
                _export_run(run_dir, out / "models" / f"{spec.name}{seed_suffix(k)}-{net}")
            models[spec.name + seed_suffix(k)] = {net: str(p) for net, p in seed_runs[spec.name].items()}
        ctx = Run(exp, opts, specs, seed_runs, out, opts.analysis_images(settings), k,
                  cka_batch=opts.analysis_batch(settings))
        for a in exp.analyses_at(opts.scale):
            entry = registry.get_analysis(a["analysis"])
            if entry.needs == "all":
                entry.fn(ctx, **{key: v for key, v in a.items() if key != "analysis"})
            else:
                _per_model(ctx, entry, a)
        about.update(ctx.about)

    _write_json(out / "experiment.json", {
        "id": exp.id, "title": exp.title, "description": exp.description, "scale": opts.scale,
        "recipe": opts.recipe_name, "settings": settings, "source": exp.source, "cache": str(opts.cache),
        "models": models,  # by model name, with -s<k> for seed k > 0
        "results": about,  # each per-model result: the experiment's model it is about, and the seed
        "environment": environment(),
    })
    if judge:
        _judge(exp, {opts.recipe_name: out}, opts.scale, out)


def _check_recipes(runs: list[dict[str, dict[str, Path]]], recipe: str) -> None:
    """Every trained model's recipe (its run folder's config) is the run's: what the analyses are handed."""
    for seed_runs in runs:
        for nets in seed_runs.values():
            for folder in nets.values():
                got = run_recipe(folder)
                if got != recipe:
                    raise ValueError(f"{folder} was trained under recipe {got!r}, but this run's recipe is "
                                     f"{recipe!r}; the model cache is inconsistent: delete that folder and rerun")


def _judge(exp: Experiment, folders: dict[str, Path], scale: str, out: Path) -> None:
    for name in exp.judges:
        save_drawn(registry.get_judge(name)(folders, scale, exp.id), out, name)


def _run_recipes(exp: Experiment, opts: RunOptions, out: Path, launcher: Any) -> Path:
    """Run ``exp`` once per recipe of ``exp.recipes`` into ``out/<recipe>``, then its judges on all of them into
    ``out``; returns the report's path. Every recipe's configs are checked before any training."""
    folders = {r: out / r for r in exp.recipes}
    for r, folder in folders.items():  # fail before training: configs, data, output folders of every recipe
        _prepare(exp, opts.with_recipe(r), folder)
    for r, folder in folders.items():
        _run_one(exp, opts.with_recipe(r), folder, launcher, judge=False)
    _judge(exp, folders, opts.scale, out)
    _write_json(out / "experiment.json", {
        "id": exp.id, "title": exp.title, "scale": opts.scale, "recipes": list(exp.recipes),
        "folders": {r: str(f) for r, f in folders.items()}, "cache": str(opts.cache)})
    return build_report(out, title=f"snncka {exp.id} ({opts.scale} scale, recipes {' vs '.join(exp.recipes)}): "
                                   f"{exp.title}")


def training_jobs(exp: Experiment, opts: RunOptions, settings: dict[str, Any] | None = None
                  ) -> tuple[list[ModelJob], list[dict[str, dict[str, Path]]]]:
    """Every model ``exp`` trains under ``opts`` as a job, all seeds (each cache entry once), and each seed's run
    folders by spec name and network type."""
    settings = settings if settings is not None else opts.settings(exp)
    jobs: dict[Path, ModelJob] = {}
    runs = []
    for k in range(int(settings["seeds"])):
        seed_jobs, seed_runs = model_jobs(exp, opts.scale, settings, opts.cache, seed=k, data_root=opts.data_root,
                                          download=opts.download, device=opts.device, progress=opts.progress,
                                          recipe=opts.recipe_name)
        for j in seed_jobs:
            jobs.setdefault(j.run_dir, j)
        runs.append(seed_runs)
    return list(jobs.values()), runs


def _prepare(exp: Experiment, opts: RunOptions, out: Path
             ) -> tuple[dict[str, Any], list[ModelJob], list[dict[str, dict[str, Path]]]]:
    """Everything checked before any training: the settings, every analysis's settings, every training config of
    every seed, the datasets' availability and the output folder."""
    settings = opts.settings(exp)
    opts.analysis_batch(settings)
    for a in exp.analyses_at(opts.scale):
        entry = registry.get_analysis(a["analysis"])
        if entry.check is not None:
            chosen = [s for s in exp.resolve(opts.scale) if a.get("models") is None or s.id in a["models"]]
            entry.check(chosen, **{k: v for k, v in a.items() if k != "analysis"})
    jobs, runs = training_jobs(exp, opts, settings)
    for name in sorted({j.cfg.data for j in jobs}):
        check_available(name, opts.data_root, opts.download)
    _check_writable(out)
    for cache in sorted({j.cache for j in jobs}):  # every entry is written (its lock at least), cached or not
        check_writable(cache, "model cache", "--cache")
    return settings, jobs, runs


def submit(ref: str | Path, scale: str, out: str | Path, slurm: Any, *, options: RunOptions | None = None,
           **kwargs: Any) -> tuple[list[Any], Any]:
    """Submit experiment ``ref``'s models to ``slurm`` (a ``snncka.launch.SlurmLauncher``) and its analyses as
    a job that runs ``run`` once they are all trained; returns (training jobs, analysis job). ``kwargs`` /
    ``options``: as ``run``'s."""
    from .plan import model_cost

    opts = options if options is not None else RunOptions(scale=scale, **kwargs)
    out = Path(out)
    exp = load_experiment(ref)
    jobs = []
    for recipe in exp.recipes or [opts.recipe_name]:  # comparing recipes trains each's models
        jobs += _prepare(exp, replace(opts.with_recipe(recipe), progress=False),
                         out / recipe if exp.recipes else out)[1]
    for j in jobs:
        j.hours = model_cost(j.cfg).gpu_hours(j.cfg.epochs)
    ref = exp.source if Path(exp.source).is_file() else ref
    return slurm.submit_experiment(jobs, _analyse_job, str(ref), opts.scale, str(out),
                                   {"options": replace(opts, progress=False)}, torch.get_num_threads())


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
