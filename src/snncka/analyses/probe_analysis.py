"""``probe``: linear classifiers on each block's pooled output, accuracy per block (Fig. A.6)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from ..recipes import Recipe
from ..registry import register_analysis
from ..results import labelled
from ..runtime import environment, resolve_device
from .subjects import RecipeMeasured, Subject, accuracy, model_input, positive, resolve_recipe, subjects

__all__ = ["ProbeResult", "fit_linear_probe", "pooled_features", "probe", "probe_layers"]


def fit_linear_probe(
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    *,
    num_classes: int,
    l2: float = 1e-4,
    max_iter: int = 100,
) -> tuple[float, float]:
    """Multinomial logistic regression on standardised features (full-batch L-BFGS, L2 ``l2/2 ||W||^2`` on the
    weights, mean cross-entropy); returns (train accuracy %, test accuracy %).

    The objective equals scikit-learn's ``LogisticRegression(C=1/(n*l2))`` up to a constant factor, so both
    reach the same optimum; it runs on the features' device (GPU for the paper's scale).
    """
    dt = torch.float64 if x_train.device.type == "cpu" else torch.float32
    xtr, xte = x_train.to(dt), x_test.to(dt)
    mu, sd = xtr.mean(0), xtr.std(0)
    sd = torch.where(sd > 1e-8, sd, torch.ones_like(sd))
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    ytr = y_train.to(xtr.device).long()
    W = torch.zeros(xtr.shape[1], num_classes, dtype=dt, device=xtr.device, requires_grad=True)
    b = torch.zeros(num_classes, dtype=dt, device=xtr.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [W, b],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(xtr @ W + b, ytr) + 0.5 * l2 * (W * W).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        tr = float(((xtr @ W + b).argmax(1) == ytr).double().mean()) * 100
        te = float(((xte @ W + b).argmax(1) == y_test.to(xte.device)).double().mean()) * 100
    return tr, te


def probe_layers(model: nn.Module) -> list[str]:
    """Names of the blocks a probe is trained on: residual blocks ``sX.bY`` (ResNet) or conv units ``sX.lY``
    (VGG), in forward order."""
    names = [n for n, _ in model.named_modules() if re.fullmatch(r"s\d+\.[bl]\d+", n)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no blocks named like 's1.b0' or 's1.l0' to probe")
    return names


@torch.no_grad()
def pooled_features(
    s: Subject,
    x_all: Tensor,
    names: Sequence[str],
    batch_size: int,
    device: torch.device,
    progress: bool = False,
    desc: str = "",
) -> dict[str, Tensor]:
    """Global-average-pooled outputs ``[N, C]`` of the named modules, averaged over time steps for an SNN."""
    from tqdm.auto import tqdm

    feats: dict[str, list[Tensor]] = {n: [] for n in names}
    mods = dict(s.model.named_modules())
    state = {"B": 0}

    def hook(name: str) -> Callable[..., None]:
        def f(module: nn.Module, inputs: Any, out: Tensor) -> None:
            pooled = out.detach().float().mean(dim=tuple(range(2, out.dim())))  # [T_l*B, C]
            B = state["B"]
            feats[name].append(pooled.reshape(pooled.shape[0] // B, B, -1).mean(0).cpu())

        return f

    handles = [mods[n].register_forward_hook(hook(n)) for n in names]
    try:
        for i in tqdm(range(0, len(x_all), batch_size), desc=desc, disable=not progress, unit="batch"):
            x = x_all[i : i + batch_size]
            state["B"] = len(x)
            s.model(model_input(s, x).to(device))
    finally:
        for h in handles:
            h.remove()
    return {n: torch.cat(v) for n, v in feats.items()}


@dataclass
class ProbeResult(RecipeMeasured):
    """Linear-probe test accuracy (%) ``accuracy[m][k]`` on block ``blocks[m][k]`` of model m."""

    analysis: ClassVar[str] = "probe"

    labels: list[str]
    blocks: list[list[str]]
    accuracy: list[list[float]]
    train_accuracy: list[list[float]]
    model_accuracy: list[float]
    n_train: int
    n_test: int
    l2: float
    sources: list[str | None] = field(default_factory=list)

    def plot(self, out: str | Path, name: str | None = None) -> list[Path]:
        from .. import plots

        name = name or self.analysis
        longest = max(self.blocks, key=len)
        acc = {
            lab: list(a) + [float("nan")] * (len(longest) - len(a))
            for lab, a in zip(self.labels, self.accuracy, strict=True)
        }
        return plots.probe_curves(
            longest,
            acc,
            Path(out) / f"{name}_accuracy",
            model_accuracy=dict(zip(self.labels, self.model_accuracy, strict=True)),
        )

    def accuracies(self) -> list[tuple[str, float, str | None]]:
        return labelled(self.labels, self.model_accuracy, self.sources)

    def summary(self) -> list[dict[str, Any]]:
        return [
            {
                "model": lab,
                "model accuracy": ma,
                "best probe": f"{np.nanmax(a):.2f} ({b[int(np.nanargmax(a))]})" if np.isfinite(a).any() else None,
                "last block probe": a[-1],
                **{f"probe {n}": v for n, v in zip(b, a, strict=True)},
            }
            for lab, b, a, ma in zip(
                self.labels, self.blocks, self.accuracy, self.model_accuracy, strict=True
            )
        ]


def probe(
    sources: Sequence[Any],
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    l2: float = 1e-4,
    batch_size: int = 256,
    recipe: str | Recipe | None = None,
    data_root: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> ProbeResult:
    """Train a linear classifier on every block's pooled (for an SNN also time-averaged) output on the
    training split and report its test accuracy (Fig. A.6). ``n_train``/``n_test`` limit the images
    (default: all). ``recipe`` (default: the first model's) picks the checkpoint of a run folder."""
    positive(n_train, "n_train (--n-train)")
    positive(n_test, "n_test (--n-test)")
    positive(batch_size, "batch_size (--batch-size)")
    if not (isinstance(l2, int | float) and math.isfinite(l2) and l2 >= 0):
        raise ValueError(f"the probes' L2 penalty (--l2) must be a finite number >= 0, got {l2}")
    t0 = time.perf_counter()
    dev = resolve_device(device)
    subs = subjects(list(sources), data_root, dev, same_data=False, recipe=recipe)
    if not subs:
        raise ValueError("probe needs at least one checkpoint")
    _, recorded = resolve_recipe(recipe, subs)
    out = dict(labels=[], blocks=[], accuracy=[], train_accuracy=[], model_accuracy=[], sources=[])
    ntr = nte = 0
    for s in subs:
        d = s.data
        ntr = len(d.y_train) if n_train is None else min(n_train, len(d.y_train))
        nte = len(d.y_test) if n_test is None else min(n_test, len(d.y_test))
        names = probe_layers(s.model)
        ftr = pooled_features(
            s, d.x_train[:ntr], names, batch_size, dev, progress, f"features {s.label} (train)"
        )
        fte = pooled_features(
            s, d.x_test[:nte], names, batch_size, dev, progress, f"features {s.label} (test)"
        )
        tr_acc, te_acc = [], []
        for nme in names:
            a, b = fit_linear_probe(
                ftr[nme].to(dev),
                d.y_train[:ntr],
                fte[nme].to(dev),
                d.y_test[:nte],
                num_classes=d.num_classes,
                l2=l2,
            )
            tr_acc.append(a)
            te_acc.append(b)
        out["labels"].append(s.label)
        out["blocks"].append(names)
        out["accuracy"].append(te_acc)
        out["train_accuracy"].append(tr_acc)
        out["model_accuracy"].append(accuracy(s, nte, batch_size, dev))
        out["sources"].append(s.source)
    return ProbeResult(
        n_train=ntr, n_test=nte, l2=l2, seconds=time.perf_counter() - t0, environment=environment(), **out,
        **recorded,
    )




@register_analysis("probe", needs="all", on_checkpoints=True)
def probe_models(run: Any, *, models: list[str] | None = None, name: str | None = None) -> None:
    """Fig. A.6: linear probes on every block of every model of the experiment, in one result."""
    chosen = [run.ckpt(s, k) for s in run.models(models, ()) for k in s.types]
    run.cached("probe" + (f"-{name}" if name else ""), probe, chosen, **run.analysis_options(images=False))
