"""``snncka train`` and ``snncka eval``: the trainer and checkpoint evaluation from the command line."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from ..checkpoint import load_checkpoint, resolve_checkpoint
from ..recipes import RECIPES
from ..training import DEFAULT_BATCH, TrainConfig, read_toml_fields
from .errors import user_errors

_D = TrainConfig()
_NEURON = {"tau": float, "v_th": float, "surrogate": str, "alpha": float, "reset": str, "detach_reset": bool,
           "neuron_backend": str}


def _ints(text: str | None, what: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise click.BadParameter(f"{what} takes comma-separated integers, e.g. 1,4,4; got {text!r}") from None


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)


def _config_from_cli(ctx: click.Context, p: dict[str, Any], base: TrainConfig | None,
                     config_file: str | None = None) -> TrainConfig:
    """TrainConfig from, in increasing priority: the defaults (or ``base``, a run being resumed), the TOML
    ``config_file``, the options given on the command line."""
    values = asdict(base) if base is not None else asdict(_D)
    if config_file is not None:
        values.update(read_toml_fields(config_file))
    for f in fields(TrainConfig):
        if f.name not in ("residual", "stage_T", "neuron") and f.name in p and _given(ctx, f.name):
            values[f.name] = p[f.name]
    if _given(ctx, "residual"):
        values["residual"] = [bool(r) for r in _ints(p["residual"], "--residual")]
    if _given(ctx, "stage_T"):
        values["stage_T"] = _ints(p["stage_T"], "--stage-T")
    neuron = dict(values["neuron"]) if isinstance(values["neuron"], dict) else values["neuron"]
    for k in _NEURON:
        if _given(ctx, k) and not (p[k] is None or (k == "detach_reset" and not p[k])):
            if not isinstance(neuron, dict):
                break  # a malformed [neuron] from the TOML file: TrainConfig names it
            neuron["backend" if k == "neuron_backend" else k] = p[k]
    values["neuron"] = neuron
    return TrainConfig.from_dict(values)


@click.command("train")
@click.option("--model", default=_D.model, show_default=True, help="Model name (list them: snncka models).")
@click.option("--spiking/--ann", default=_D.spiking, show_default=True, help="Train the SNN or the ANN twin.")
@click.option("--T", "T", type=int, default=_D.T, show_default=True, help="Time steps of the SNN.")
@click.option("--width", type=float, default=_D.width, show_default=True, help="Channel width factor.")
@click.option("--residual", default="1,1,1", show_default=True, help="Residual connections per stage (1/0).")
@click.option("--stage-T", "stage_T", default=None, help="Steps per stage (mixed time steps), e.g. 1,4,4.")
@click.option("--tau", type=float, default=None, help="LIF leak (default 0.5).")
@click.option("--v-th", type=float, default=None, help="LIF threshold (default 1.0).")
@click.option("--surrogate", default=None,
              help="Surrogate: rect (default), triangle, sigmoid, arctan, dspike")
@click.option("--alpha", type=float, default=None, help="Surrogate parameter (rect: 1.0).")
@click.option("--reset", type=click.Choice(["hard", "soft"]), default=None, help="LIF reset (default hard).")
@click.option("--detach-reset", is_flag=True, default=False, help="No gradient through the reset.")
@click.option("--neuron-backend", type=click.Choice(["fused", "reference"]), default=None)
@click.option("--data", default=_D.data, show_default=True, help="Dataset name.")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Folder with the dataset files.")
@click.option("--download", is_flag=True, default=False, help="Download the dataset (needs a network).")
@click.option("--frames", type=int, default=None, help="Event frames per sample [default: T (SNN), 1 (ANN)].")
@click.option("--data-seed", type=int, default=_D.data_seed, show_default=True,
              help="Seed of generated datasets.")
@click.option("--epochs", type=int, default=_D.epochs, show_default=True)
@click.option("--batch-size", type=int, default=None,
              help=f"Global batch size [default: {DEFAULT_BATCH['digits']} on {' and '.join(DEFAULT_BATCH)}, 256 "
                   "otherwise].")
@click.option("--lr", type=float, default=None, help="Peak learning rate [default: 0.1 * batch_size / 256].")
@click.option("--recipe", default=_D.recipe, show_default=True,
              help=f"{' | '.join(RECIPES)}: the paper's text (where it is silent, the released code's choice) or the "
                   "authors' released code; sets momentum, weight decay, model, normalisation (docs/FIDELITY.md).")
@click.option("--momentum", type=float, default=None, help="SGD momentum [default: the recipe's, 0.9].")
@click.option("--weight-decay", type=float, default=None, help="Weight decay [default: the recipe's, 1e-4].")
@click.option("--seed", type=int, default=_D.seed, show_default=True)
@click.option("--device", default=_D.device, show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--amp", type=click.Choice(["auto", "bf16", "off"]), default=_D.amp, show_default=True,
              help="bf16 autocast (auto: on CUDA only; bf16: on the CPU too).")
@click.option("--eval-batch-size", type=int, default=_D.eval_batch_size, show_default=True)
@click.option("--threads", type=int, default=_D.threads, show_default=True,
              help="CPU threads while training: part of the run (its bits depend on it), not of the machine.")
@click.option("--progress/--no-progress", default=_D.progress, show_default=True)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="TOML file of training settings (the fields of snncka.training.TrainConfig); options given "
                   "on the command line override it.")
@click.option("--out", type=click.Path(), required=True, help="Run folder (config.json, metrics.jsonl, .pt).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt.")
@click.option("--force", is_flag=True, help="Overwrite an existing run in --out.")
@click.pass_context
def train_cmd(ctx: click.Context, out: str, resume: bool, force: bool, config_file: str | None,
              **p: Any) -> None:
    """Train a model of the zoo with the paper's recipe; writes config.json, metrics.jsonl, last.pt, best.pt.

    Under torchrun the global batch is split over the processes:

    \b
      torchrun --nproc_per_node N -m snncka.cli train ...

    --resume continues a killed run; options not repeated keep the run's values.
    """
    from ..training import train

    if resume and force:
        raise click.UsageError("--resume continues a run and --force overwrites it; pass only one")
    with user_errors():
        base = None
        if resume and (Path(out) / "last.pt").is_file():
            saved = load_checkpoint(Path(out) / "last.pt").get("train_config")
            base = TrainConfig.from_dict(saved) if saved is not None else None
        cfg = _config_from_cli(ctx, p, base, config_file)
        result = train(cfg, out, resume=resume, force=force)
    click.echo(f"done: test accuracy {100 * result.get('test_acc', float('nan')):.2f} % "
               f"(best {100 * result['best_acc']:.2f} %) -> {out}")


@click.command("eval")
@click.argument("checkpoint", type=click.Path())
@click.option("--data", default=None, help="Dataset name [default: the one the model was trained on].")
@click.option("--data-root", type=click.Path(file_okay=False), default=None)
@click.option("--download", is_flag=True, default=False)
@click.option("--frames", type=int, default=None, help="Event frames per sample [default: as trained].")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--batch-size", type=int, default=_D.eval_batch_size, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def eval_cmd(checkpoint: str, data: str | None, data_root: str | None, download: bool, frames: int | None,
             split: str, batch_size: int, device: str, as_json: bool) -> None:
    """Accuracy and loss of a checkpoint's model on a dataset split (firing rates too for an SNN).

    CHECKPOINT is a .pt file or a run folder (its last.pt)."""
    from ..models import from_checkpoint
    from ..runtime import resolve_device
    from ..training import evaluate, load_dataset

    with user_errors():
        dev = resolve_device(device)
        checkpoint = str(resolve_checkpoint(checkpoint, "last"))
        ckpt = load_checkpoint(checkpoint, map_location=dev)
        model = from_checkpoint(ckpt, checkpoint, dev)  # one read of the file
        tc = dict(ckpt.get("train_config") or {})
        mc = ckpt["model_config"]
        cfg = TrainConfig.from_dict({**tc, "model": mc["name"], "spiking": mc["spiking"],
                                     "T": max(int(mc["T"]), 1)})
        cfg.data = data or tc.get("data") or _D.data
        if data_root is not None or data is not None:
            cfg.data_root = data_root
        cfg.download = download
        if frames is not None:
            cfg.frames = frames
        ds = load_dataset(cfg)
        xy = (ds.x_test, ds.y_test) if split == "test" else (ds.x_train, ds.y_train)
        res = evaluate(model, xy, batch_size=batch_size, device=dev, amp=False)
    res = {"checkpoint": str(checkpoint), "data": ds.name, "split": split, "epoch": ckpt.get("epoch"), **res}
    if as_json:
        click.echo(json.dumps(res))
        return
    click.echo(f"{checkpoint}: {ds.name} {split} accuracy {100 * res['acc']:.2f} %  loss {res['loss']:.4f}  "
               f"({res['n']} images, epoch {res['epoch']})")
    for name, rate in (res.get("firing_rates") or {}).items():
        click.echo(f"  firing rate {name:<14} {rate:.4f}")
