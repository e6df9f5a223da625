"""``snncka data``: list the datasets, or prepare one (download, simulate, integrate, cache) and show it."""

from __future__ import annotations

import click

from .. import data as data_mod
from .errors import USER_ERRORS, one_line


@click.command("data")
@click.argument("name", required=False)
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Folder with the dataset's files (CIFAR archives, event recordings).")
@click.option("--download", is_flag=True, help="Fetch a missing dataset (needs a network).")
@click.option("--frames", type=click.IntRange(min=1), default=None,
              help="Event datasets: frames per sample (SNN: T; ANN: 1). Default 10.")
@click.option("--seed", default=0, show_default=True, help="Seed of generated datasets (digits-dvs).")
def data_cmd(name: str | None, data_root: str | None, download: bool, frames: int | None, seed: int) -> None:
    """Without NAME: list the datasets. With NAME: load it once (so later runs find it prepared and
    cached) and print its shapes, classes and normalisation."""
    if name is None:
        for key, loader in sorted(data_mod.DATASETS.items()):
            click.echo(f"{key:<12} {(loader.__doc__ or '').strip().splitlines()[0]}")
        return
    try:
        ds = data_mod.get(name, root=data_root, frames=frames, download=download, seed=seed)
    except USER_ERRORS as e:
        raise click.ClickException(one_line(e)) from e
    kind = f"{ds.frames} frames" if ds.frames else "static images"
    click.echo(f"{ds.name}: {ds.num_classes} classes, train {tuple(ds.x_train.shape)}, "
               f"test {tuple(ds.x_test.shape)}, {kind}")
    click.echo(f"augmentation: pad {ds.augment.pad}, flip {ds.augment.flip}")
    for key, value in ds.meta.items():
        text = str(value)
        click.echo(f"{key}: {text if len(text) <= 200 else text[:197] + '...'}")
