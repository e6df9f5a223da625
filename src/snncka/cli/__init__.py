"""Command line: ``snncka <command>``; each command lives beside the code it drives."""

from __future__ import annotations

import click
import torch

from ..models import create, list_models
from .analysis import AnalysisGroup
from .errors import user_errors


@click.group(cls=AnalysisGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="snncka")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
              help="Import MODULE first (repeatable; also from the current folder): your registered models and "
                   "analyses, e.g. `snncka --plugin my_models train --model mynet`.")
def main(plugins: tuple[str, ...]) -> None:
    """snncka: train spiking and artificial twins, record every layer, compare them with CKA."""
    if plugins:
        from pathlib import Path

        from ..experiment import import_plugins

        with user_errors():
            import_plugins(list(plugins), Path.cwd())


@main.command("models")
@click.option("--width", default=1.0, show_default=True, help="Channel width factor.")
@click.option("--num-classes", default=10, show_default=True)
@click.option("--in-channels", default=3, show_default=True)
def models_cmd(width: float, num_classes: int, in_channels: int) -> None:
    """List every registered model with its parameter count (ANN and SNN)."""
    with user_errors():  # a bad width or class count is one line, before any output
        for spiking in (False, True):
            with torch.device("meta"):
                create("resnet20", spiking=spiking, width=width, num_classes=num_classes, in_channels=in_channels)
    click.echo(f"{'model':<10} {'ANN params':>12} {'SNN params':>12}  layers (conv/norm/act)")
    for name in list_models():
        counts = []
        for spiking in (False, True):
            with torch.device("meta"):  # shapes only: no memory, no random initialisation
                m = create(name, spiking=spiking, width=width, num_classes=num_classes,
                           in_channels=in_channels)
            counts.append(sum(p.numel() for p in m.parameters()))
        kinds = {k: sum(type(x).__name__ in v for x in m.modules()) for k, v in
                 {"conv": ("Conv2d",), "norm": ("TDBatchNorm2d",), "act": ("LIF",)}.items()}
        layers = f"{kinds['conv']}/{kinds['norm']}/{kinds['act']}"
        click.echo(f"{name:<10} {counts[0]:>12,} {counts[1]:>12,}  {layers}")


from .train import eval_cmd, train_cmd  # noqa: E402  (commands defined beside the trainer)

main.add_command(train_cmd)
main.add_command(eval_cmd)

from .data import data_cmd  # noqa: E402  (snncka data: list / prepare datasets)

main.add_command(data_cmd)

from .analysis import register as _register_analyses  # noqa: E402  (report; the analyses' commands: AnalysisGroup)

_register_analyses(main)

from .reproduce import demo_cmd, reproduce_cmd  # noqa: E402  (every paper experiment; the main job)

main.add_command(reproduce_cmd)
main.add_command(demo_cmd)

