"""``snncka reproduce`` (every experiment of the paper, one command each, or a user's experiment file; ``--plan``
for its cost; local or Slurm launchers for its models) and ``snncka demo`` (the main job)."""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from .. import paper
from ..experiment import SCALES, load_experiment
from ..launch import InlineLauncher, LocalLauncher, SlurmLauncher, parse_minutes
from ..options import RunOptions
from ..recipes import RECIPES
from ..runner import default_out, run, submit, training_jobs
from .errors import user_errors

LAUNCHERS = ("inline", "local", "slurm", "submitit-local")


@click.command("reproduce")
@click.argument("exp_id", required=False, metavar="ID|FILE.toml")
@click.option("--list", "show_list", is_flag=True, help="List the experiments and exit.")
@click.option("--plan", "show_plan", is_flag=True,
              help="Print the compute plan (models, cache state, GPU-hours, disk, CKA memory) and exit; trains "
                   "nothing, needs no GPU and no data. Without ID or with ID 'all': every experiment.")
@click.option("--scale", type=click.Choice(SCALES), default="smoke", show_default=True,
              help="smoke: digits, a few epochs, minutes on a CPU; paper: the paper's data and 300 epochs (GPU).")
@click.option("--recipe", default=None, metavar="NAME",
              help=f"Train and analyse as the paper's text or the released code describes ({', '.join(RECIPES)}; "
                   "default paper; docs/FIDELITY.md). Part of each model's cache key. paper-vs-code runs both.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder (default runs/<ID>-<scale>, runs/<ID>-<scale>-<recipe> for another recipe).")
@click.option("--cache", type=click.Path(file_okay=False), default=None,
              help="Trained-model cache shared by all experiments (default $SNNCKA_CACHE/models or "
                   "~/.cache/snncka/models).")
@click.option("--data-root", type=click.Path(), default=None, help="Folder holding the real datasets.")
@click.option("--download", is_flag=True, help="Download CIFAR archives (needs a network).")
@click.option("--device", default="auto", show_default=True)
@click.option("--epochs", type=int, default=None, help="Override the scale's number of epochs.")
@click.option("--cka-images", type=int, default=None, help="Override the number of test images for CKA.")
@click.option("--seeds", type=int, default=None,
              help="Train every model with seeds seed..seed+N-1 (each its own cache entry) and run every analysis "
                   "per seed; results of seed k > 0 are named <result>-s<k> [default: the scale's: smoke 1, "
                   "paper 3; the atlas: 3 per cell].")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--launcher", type=click.Choice(LAUNCHERS), default="inline", show_default=True,
              help="How the models train: inline (one after another here), local (--jobs processes at once: one "
                   "per GPU, or CPU slots), slurm (a job array through submitit; the analyses follow as a job; an "
                   "error where no Slurm controller answers), submitit-local (the slurm launcher's jobs as local "
                   "processes through submitit's local executor, all at once: trials without a cluster).")
@click.option("--jobs", type=int, default=1, show_default=True,
              help="Models trained at once (local launcher; implies --launcher local).")
@click.option("--partition", default=None, help="slurm: partition.")
@click.option("--time", "time_limit", default="24:00:00", show_default=True,
              help="slurm: time limit per job (minutes or [D-]H:MM:SS); a job that runs out requeues and resumes.")
@click.option("--gpus-per-model", type=int, default=1, show_default=True,
              help="slurm: GPUs per model; > 1 trains models estimated at >= --ddp-min-hours with DDP.")
@click.option("--ddp-min-hours", type=float, default=4.0, show_default=True,
              help="slurm: plan estimate (GPU-hours) from which a model gets --gpus-per-model GPUs.")
@click.option("--cpus-per-task", type=int, default=8, show_default=True, help="slurm: CPUs per job.")
@click.option("--slurm-folder", type=click.Path(file_okay=False), default=None,
              help="slurm: submitit's scripts and logs (default <out>/slurm).")
@click.option("--wait", is_flag=True, help="slurm: wait for the models here and run the analyses here.")
@click.option("--vary", multiple=True, metavar="NAME",
              help="atlas: only these columns besides the baseline (repeatable): a variation like "
                   "surrogate=dspike or a whole axis (recipe, surrogate, estimator, time). Default: all.")
@click.option("--base", "bases", multiple=True, metavar="ID",
              help="atlas: base experiments (repeatable; default the atlas's own, src/snncka/paper/atlas.toml).")
def reproduce_cmd(exp_id, show_list, show_plan, scale, recipe, out, cache, data_root, download, device, epochs,
                  cka_images, seeds, no_progress, launcher, jobs, partition, time_limit, gpus_per_model, ddp_min_hours,
                  cpus_per_task, slurm_folder, wait, vary, bases) -> None:
    """Run one experiment of the paper (see --list) or your own experiment file (docs/EXPERIMENTS.md): train or
    reuse its models, analyse, report. ``atlas``: the findings atlas (which conclusions depend on the authors'
    choices; docs/EXPERIMENTS.md)."""
    if exp_id == "atlas":
        from .atlas import reproduce_atlas

        if recipe is not None or launcher in ("slurm", "submitit-local"):
            raise click.ClickException("the atlas varies the recipe itself and trains with the inline or local "
                                       "launcher: leave out --recipe and --launcher slurm")
        # as the demo: by default two models train at once where there are two cores (one thread each)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        chosen = LocalLauncher(jobs if launcher == "local" or jobs != 1 else min(2, cores), not no_progress)
        return reproduce_atlas(show_plan=show_plan, scale=scale, out=out, bases=bases, vary=vary, seeds=seeds,
                               launcher=chosen, workers=min(2, cores), cache=cache, data_root=data_root,
                               download=download, device=device, epochs=epochs, cka_images=cka_images,
                               progress=not no_progress)
    if vary or bases:
        raise click.ClickException("--vary and --base are options of `snncka reproduce atlas`; leave them out for "
                                   f"{exp_id}")
    with user_errors():  # every option checked once, before any work (one line each)
        opts = RunOptions(scale=scale, recipe=recipe, epochs=epochs, cka_images=cka_images, seeds=seeds,
                          cache=cache, data_root=data_root, download=download, device=device,
                          progress=not no_progress)
    if show_plan:
        from ..plan import format_plan, plan

        with user_errors():
            ids = [e.id for e in paper.list_experiments()] if exp_id in (None, "all") else [exp_id]
            click.echo(format_plan(plan(ids, opts), scale))
        return
    if show_list or not exp_id:
        click.echo("models: the networks trained (an ANN and an SNN count as two; one shared by several entries "
                   "counts once; every seed of the scale's), as --plan lists them")
        for exp in paper.list_experiments():
            n = {s: _trained(exp, s) for s in SCALES}
            click.echo(f"{exp.id:<7} {exp.title}\n{'':<7} models: {n['paper']} at paper scale, {n['smoke']} at "
                       f"smoke scale; `snncka reproduce {exp.id} --scale smoke`")
        click.echo("atlas   The findings atlas: every finding under one changed choice per column (recipe, "
                   "surrogate, CKA estimator, time reduction), 3 seeds per cell; `snncka reproduce atlas`")
        if not show_list:
            raise click.UsageError("give an experiment ID (listed above)")
        return
    t0 = time.perf_counter()
    with user_errors():
        exp = load_experiment(exp_id)  # a bad file, key, model or analysis: one line, before any work
    out = out or str(default_out(exp.id, scale, recipe))
    with user_errors():
        if launcher in ("slurm", "submitit-local"):
            for name, v in (("--gpus-per-model", gpus_per_model), ("--cpus-per-task", cpus_per_task)):
                if v < 1:
                    raise ValueError(f"{name} must be >= 1, got {v}")
            slurm = SlurmLauncher(Path(slurm_folder or Path(out) / "slurm"), partition=partition,
                                  time_min=parse_minutes(time_limit), gpus_per_model=gpus_per_model,
                                  ddp_min_hours=ddp_min_hours, cpus_per_task=cpus_per_task,
                                  cluster="slurm" if launcher == "slurm" else "local")
            slurm.check()  # no Slurm here: one line now, not a silent local run
            if not wait:
                return _submit(slurm, exp_id, out, opts)
            chosen = slurm
        elif launcher == "local" or jobs != 1:  # --jobs N alone means the local launcher
            chosen = LocalLauncher(jobs, not no_progress)
        else:
            chosen = InlineLauncher(not no_progress)
        with _warnings_as_lines():
            report = run(exp_id, out=out, launcher=chosen, options=opts)
    how = f"{scale}, recipe {recipe}" if recipe else scale
    click.echo(f"{exp.id} ({how}) done in {time.perf_counter() - t0:.0f} s; report: {report}")


# The analyses name their arguments as the analysis commands spell them; reproduce spells some differently.
_OPTION_NAMES = {"n_images (--n-images)": "--cka-images"}


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Print each warning of a run as one ``Warning: ...`` line when it happens (as the analysis commands do),
    not as Python's two lines with a source path."""
    def show(message: Warning | str, *_a: Any, **_k: Any) -> None:
        text = str(message)
        for analysis_name, option in _OPTION_NAMES.items():  # name the option this command took
            text = text.replace(analysis_name, option)
        click.echo(f"Warning: {text}", err=True)

    shown = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def _trained(exp, scale: str) -> int:
    """The number of networks ``exp`` trains at ``scale`` (distinct cache entries), as the plan counts them."""
    return len(training_jobs(exp, RunOptions(scale=scale))[0])


def _submit(slurm: SlurmLauncher, exp_id: str, out: str, opts: RunOptions) -> None:
    """Submit the models as a job array and the analyses as a job after them; print the job ids."""
    trained, analysis = submit(exp_id, opts.scale, out, slurm, options=opts)
    click.echo(f"{exp_id}: {len(trained)} training job(s) and analysis job {analysis.job_id} submitted (logs: "
               f"{slurm.folder}); the report will be {Path(out) / 'report.html'}")
    follow = f"sacct -j {analysis.job_id}; " if slurm.cluster == "slurm" else ""
    click.echo(f"follow it: {follow}tail -f {analysis.paths.stdout}")


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False), default="runs/demo", show_default=True)
@click.option("--cache", type=click.Path(file_okay=False), default=None,
              help="Trained-model cache (default $SNNCKA_CACHE/models or ~/.cache/snncka/models).")
@click.option("--epochs", type=int, default=None, help="Override the demo's number of epochs.")
@click.option("--no-progress", is_flag=True)
def demo_cmd(out: str, cache: str | None, epochs: int | None, no_progress: bool) -> None:
    """Train ResNet-20 ANN and SNN (T=4) on the embedded digits data, compare every layer with CKA, write
    the figures and an HTML report."""
    t0 = time.perf_counter()
    with user_errors():
        # the ANN and the SNN train at once, one core each, where there are two (the same bits as one after the
        # other: each trains with its config's fixed threads)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        launcher = LocalLauncher(2, progress=not no_progress) if cores >= 2 else None
        report = run("demo", "smoke", out, cache=cache, epochs=epochs, progress=not no_progress, launcher=launcher)
    figures = sorted(str(p) for p in Path(out).rglob("*.png"))
    click.echo(f"demo done in {time.perf_counter() - t0:.0f} s")
    click.echo(f"report:  {report}")
    click.echo(f"results: {Path(out) / 'results'}")
    for f in sorted((Path(out) / "models").glob("*/last.pt")):
        click.echo(f"model:   {f}")
    for f in figures:
        click.echo(f"figure:  {f}")
