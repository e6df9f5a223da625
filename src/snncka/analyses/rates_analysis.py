"""``rates``: firing-rate statistics of every LIF layer of an SNN (how active, dead or saturated it is)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..neurons import RateMeter
from ..recipes import Recipe
from ..registry import register_analysis
from ..runtime import environment, resolve_device
from .subjects import RecipeMeasured, images_used, model_input, positive, resolve_recipe, subject

__all__ = ["RatesResult", "rates", "rates_of_snns"]


@dataclass
class RatesResult(RecipeMeasured):
    """Firing-rate statistics of every LIF layer over the test images.

    ``mean``: fraction of (neuron, step, image) that spike; ``per_step[l, t]``: the rate at step t (NaN
    past the layer's own T); ``dead``: fraction of neurons that never spike on any image; ``saturated``:
    fraction that spike at every step of every image; ``neuron_std``: spread of the per-neuron rates.
    """

    analysis: ClassVar[str] = "rates"
    arrays: ClassVar[tuple[str, ...]] = ("mean", "per_step", "dead", "saturated", "neuron_std")

    mean: np.ndarray
    per_step: np.ndarray
    dead: np.ndarray
    saturated: np.ndarray
    neuron_std: np.ndarray
    layers: list[str]
    T: list[int]
    label: str
    n_images: int
    source: str | None = None

    def plot(self, out: str | Path, name: str | None = None) -> list[Path]:
        from .. import plots

        name = name or self.analysis
        return plots.rate_bars(
            self.layers,
            self.mean,
            Path(out) / f"{name}_bars",
            per_step=self.per_step,
            title=f"Firing rate per LIF layer: {self.label}",
        )

    def summary(self) -> list[dict[str, Any]]:
        return [
            {
                "model": self.label,
                "layer": n,
                "T": t,
                "rate": float(m),
                "dead": float(d),
                "saturated": float(sa),
            }
            for n, t, m, d, sa in zip(self.layers, self.T, self.mean, self.dead, self.saturated, strict=True)
        ]


@torch.no_grad()
def rates(
    a: Any,
    *,
    n_images: int | None = None,
    batch_size: int = 256,
    recipe: str | Recipe | None = None,
    data_root: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> RatesResult:
    """Firing-rate statistics per LIF layer of a spiking checkpoint on the first ``n_images`` test images
    (``recipe``, default the model's, picks the checkpoint of a run folder)."""
    from tqdm.auto import tqdm

    positive(n_images, "n_images (--n-images)")
    positive(batch_size, "batch_size (--batch-size)")
    t0 = time.perf_counter()
    dev = resolve_device(device)
    s = subject(a, data_root, dev, recipe)
    _, recorded = resolve_recipe(recipe, [s])
    meter = RateMeter(s.model, dev, detail=True)
    if not meter.names:
        meter.close()
        raise ValueError(f"{s.label} has no LIF layers: firing rates need a spiking checkpoint")
    n = images_used(s, n_images)
    with meter:
        for i in tqdm(range(0, n, batch_size), desc=f"rates {s.label}", disable=not progress, unit="batch"):
            x = s.data.x_test[i : min(i + batch_size, n)]
            meter.images = len(x)
            s.model(model_input(s, x).to(dev))
    steps_of, step_sum, neuron_sum = meter.steps, meter.step_sum, meter.neuron_sum
    names = [nm for nm in meter.names if nm in steps_of]
    Tmax = max(steps_of.values())
    per_step = np.full((len(names), Tmax), np.nan)
    mean, dead, sat, nstd, Ts = [], [], [], [], []
    for k, nm in enumerate(names):
        T = steps_of[nm]
        p = neuron_sum[nm].numel()
        per_step[k, :T] = (step_sum[nm] / (n * p)).cpu().numpy()
        counts = neuron_sum[nm].cpu().numpy()
        mean.append(float(counts.sum() / (n * p * T)))
        dead.append(float(np.mean(counts == 0)))
        sat.append(float(np.mean(counts == n * T)))
        nstd.append(float(np.std(counts / (n * T))))
        Ts.append(T)
    return RatesResult(
        mean=np.array(mean),
        per_step=per_step,
        dead=np.array(dead),
        saturated=np.array(sat),
        neuron_std=np.array(nstd),
        layers=names,
        T=Ts,
        label=s.label,
        n_images=n,
        source=s.source,
        seconds=time.perf_counter() - t0,
        environment=environment(),
        **recorded,
    )




@register_analysis("rates", needs="all", on_checkpoints=True)
def rates_of_snns(run: Any, *, models: list[str] | None = None, name: str | None = None) -> None:
    """Firing-rate statistics of every SNN of the experiment on the whole test split."""
    for s in run.models(models, ("snn",)):
        run.cached("rates" + (f"-{name}" if name else "") + f"-{s.name}", rates, run.ckpt(s, "snn"), model=s.name,
                   **run.analysis_options(images=False))
