"""``snncka reproduce`` (every experiment of the paper, one command each) and ``snncka demo`` (the main job)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..reproduce import SCALES, list_experiments, run
from .errors import USER_ERRORS, one_line


@click.command("reproduce")
@click.argument("exp_id", required=False)
@click.option("--list", "show_list", is_flag=True, help="List the experiments and exit.")
@click.option("--scale", type=click.Choice(SCALES), default="smoke", show_default=True,
              help="smoke: digits, a few epochs, minutes on a CPU; paper: the paper's data and 300 epochs (GPU).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder (default runs/<ID>-<scale>).")
@click.option("--cache", type=click.Path(file_okay=False), default=None,
              help="Trained-model cache shared by all experiments (default $SNNCKA_CACHE/models or "
                   "~/.cache/snncka/models).")
@click.option("--data-root", type=click.Path(), default=None, help="Folder holding the real datasets.")
@click.option("--download", is_flag=True, help="Download CIFAR archives (needs a network).")
@click.option("--device", default="auto", show_default=True)
@click.option("--epochs", type=int, default=None, help="Override the scale's number of epochs.")
@click.option("--cka-images", type=int, default=None, help="Override the number of test images for CKA.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def reproduce_cmd(exp_id, show_list, scale, out, cache, data_root, download, device, epochs, cka_images,
                  no_progress) -> None:
    """Reproduce one experiment of the paper (see --list): train or reuse its models, analyse, report."""
    if show_list or not exp_id:
        for exp in list_experiments():
            smoke = exp.resolve("smoke")
            paper = exp.resolve("paper")
            click.echo(f"{exp.id:<7} {exp.title}\n{'':<7} models: {len(paper)} at paper scale, {len(smoke)} at "
                       f"smoke scale; `snncka reproduce {exp.id} --scale smoke`")
        if not show_list:
            raise click.UsageError("give an experiment ID (listed above)")
        return
    t0 = time.perf_counter()
    try:
        report = run(exp_id, scale, out, cache=cache, data_root=data_root, download=download, device=device,
                     epochs=epochs, cka_images=cka_images, progress=not no_progress)
    except USER_ERRORS as e:
        raise click.ClickException(one_line(e)) from e
    click.echo(f"{exp_id} ({scale}) done in {time.perf_counter() - t0:.0f} s; report: {report}")


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
    try:
        report = run("demo", "smoke", out, cache=cache, epochs=epochs, progress=not no_progress)
    except USER_ERRORS as e:
        raise click.ClickException(one_line(e)) from e
    figures = sorted(str(p) for p in Path(out).rglob("*.png"))
    click.echo(f"demo done in {time.perf_counter() - t0:.0f} s")
    click.echo(f"report:  {report}")
    click.echo(f"results: {Path(out) / 'results'}")
    for f in figures:
        click.echo(f"figure:  {f}")
