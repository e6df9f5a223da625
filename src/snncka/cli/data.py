"""``snncka data``: list the datasets, or prepare one (download, simulate, integrate, cache) and show it."""

from __future__ import annotations

import click

from .. import data as data_mod
from .errors import user_errors


def _summary(doc: str | None) -> str:
    """A loader's one-line description (its docstring's first line) as plain text."""
    return (doc or "").strip().splitlines()[0].replace("``", "") if doc else ""


def _normalisation(stats: dict) -> str:
    mode = {"dataset": "training-set statistics", "fixed": "the released code's constants"}.get(
        stats.get("mode"), str(stats.get("mode")))
    channels = ", ".join(f"{m:.4g}/{s:.4g}" for m, s in zip(stats["mean"], stats["std"], strict=True))
    return f"{mode}, per-channel mean/std {channels}"


@click.command("data")
@click.argument("name", required=False)
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Folder with the dataset's files (CIFAR archives, event recordings).")
@click.option("--download", is_flag=True, help="Fetch a missing dataset (needs a network).")
@click.option("--frames", type=click.IntRange(min=1), default=None,
              help="Event datasets: frames per sample (SNN: T; ANN: 1). Default 10.")
@click.option("--seed", default=0, show_default=True, help="Seed of generated datasets (digits-dvs).")
@click.option("--normalisation", type=click.Choice(data_mod.NORMALISATIONS), default="dataset", show_default=True,
              help="Per-channel statistics: the training set's, or the released code's constants (CIFAR).")
def data_cmd(name: str | None, data_root: str | None, download: bool, frames: int | None, seed: int,
             normalisation: str) -> None:
    """Without NAME: list the datasets. With NAME: load it once (so later runs find it prepared and
    cached) and print its shapes, classes and normalisation."""
    if name is None:
        for key, loader in sorted(data_mod.DATASETS.items()):
            click.echo(f"{key:<12} {_summary(loader.__doc__)}")
        return
    with user_errors():
        ds = data_mod.get(name, root=data_root, frames=frames, download=download, seed=seed,
                          normalisation=normalisation)
    kind = f"{ds.frames} frames" if ds.frames else "static images"
    click.echo(f"{ds.name}: {ds.num_classes} classes, train {tuple(ds.x_train.shape)}, "
               f"test {tuple(ds.x_test.shape)}, {kind}")
    aug = ds.augment
    click.echo(f"augmentation: {f'random crop with {aug.pad}-pixel padding' if aug.pad else 'no crop'}, "
               f"{'horizontal flip' if aug.flip else 'no flip'}")
    for key, value in ds.meta.items():
        if key == "normalisation":
            text = _normalisation(value)
        elif isinstance(value, list | tuple):
            text = ", ".join(str(v) for v in value)
        else:
            text = str(value)
        click.echo(f"{key.replace('_', ' ')}: {text if len(text) <= 200 else text[:197] + '...'}")
