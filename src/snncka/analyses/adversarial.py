"""``robustness``: PGD robust accuracy per eps and per-layer CKA clean vs adversarial (Fig. 8, A.9)."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from ..cka import compare as cka_compare
from ..results import Measured, curve_ylim, finite_mean, labelled
from ..runtime import environment, resolve_device
from .subjects import check_same_images, first_batches, images_in, n_images_of, subjects

__all__ = ["DEFAULT_EPS", "RobustnessResult", "robustness"]

DEFAULT_EPS = (0.001, 0.005, 0.01, 0.02, 0.05)


@dataclass
class RobustnessResult(Measured):
    """PGD robust accuracy (%) ``accuracy[m, e]`` of model m at ``eps[e]`` and per-layer CKA between the clean
    and the adversarial features of each model ``cka[m][e]`` (over ``layers[m]``)."""

    analysis: ClassVar[str] = "robustness"

    eps: list[float]
    labels: list[str]
    clean_accuracy: list[float]
    accuracy: list[list[float]]
    layers: list[list[str]]
    kinds: list[list[str]]
    cka: list[list[list[float]]]
    steps: int
    step_size: str
    random_start: bool
    space: str
    n_images: int
    sources: list[str | None] = field(default_factory=list)

    def plot(self, out: str | Path, name: str | None = None) -> list[Path]:
        from .. import plots

        name = name or self.analysis
        acc = {
            lab: [c, *a] for lab, c, a in zip(self.labels, self.clean_accuracy, self.accuracy, strict=True)
        }
        paths = plots.robustness_bars([0.0, *self.eps], acc, Path(out) / f"{name}_accuracy")
        for m, lab in enumerate(self.labels):
            series = {
                f"eps={e:g}": np.asarray(c, dtype=float) for e, c in zip(self.eps, self.cka[m], strict=True)
            }
            slug = re.sub(r"[^A-Za-z0-9]+", "_", lab).strip("_").lower()
            paths += plots.curves(
                series,
                self.layers[m],
                Path(out) / f"{name}_cka_{m}_{slug}",
                title=f"CKA clean vs adversarial: {lab}",
                ylim=curve_ylim([v for c in self.cka[m] for v in c] or [0.0]),
            )
        return paths

    def accuracies(self) -> list[tuple[str, float, str | None]]:
        return labelled(self.labels, self.clean_accuracy, self.sources)

    def summary(self) -> list[dict[str, Any]]:
        rows = []
        for m, lab in enumerate(self.labels):
            row: dict[str, Any] = {"model": lab, "clean": self.clean_accuracy[m]}
            for e, a, c in zip(self.eps, self.accuracy[m], self.cka[m], strict=True):
                row[f"acc eps={e:g}"] = a
                row[f"mean CKA eps={e:g}"] = finite_mean(c)
            rows.append(row)
        return rows


def robustness(
    sources: Sequence[Any],
    *,
    eps: Sequence[float] = DEFAULT_EPS,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = False,
    pixel_std: Sequence[float] | None = None,
    n_images: int | None = 4096,
    batch_size: int = 256,
    layers: Any = "paper",
    unbiased: bool = True,
    kernel: str = "linear",
    seed: int = 0,
    data_root: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> RobustnessResult:
    """PGD (paper Eq. 5, L-inf) against each model: robust accuracy per eps, CKA clean vs adversarial.

    eps is in the normalised input space the models receive, unless ``pixel_std`` (the per-channel std used
    to standardise the data) is given, in which case eps is a fraction of the [0, 1] pixel range. Default
    step size: ``2.5 * eps / steps`` (see ``snncka.attacks``). An example that fooled the model at a smaller
    eps lies inside every larger ball, so it is kept where the larger-eps attack did not succeed: robust
    accuracy is the worst case over the attacks run, hence never increases with eps.
    """
    from tqdm.auto import tqdm

    from ..attacks import pgd, to_normalised_eps

    t0 = time.perf_counter()
    dev = resolve_device(device)
    eps = [float(e) for e in eps]
    if not eps or any(e < 0 for e in eps):
        raise ValueError(f"eps must be a non-empty list of values >= 0, got {eps}")
    if list(eps) != sorted(eps):
        raise ValueError(f"eps must be in increasing order, got {eps}")
    subs = subjects(list(sources), data_root, dev)
    if not subs:
        raise ValueError("robustness needs at least one checkpoint")
    for s in subs[1:]:
        check_same_images(subs[0], s)
    g = torch.Generator().manual_seed(seed)
    out = dict(labels=[], clean_accuracy=[], accuracy=[], layers=[], kinds=[], cka=[], sources=[])
    for s in subs:
        n = n_images_of(s, n_images)
        clean = first_batches(s, n, batch_size, dev)
        labels = [
            s.data.y_test[i : i + images_in(x)].to(dev)
            for i, x in zip(range(0, n, batch_size), clean, strict=False)
        ]
        with torch.no_grad():
            pred_clean = [s.model(x).argmax(-1) for x in clean]
        ok_clean = torch.cat([p == y for p, y in zip(pred_clean, labels, strict=True)])
        best_adv = [x.clone() for x in clean]  # the worst example found so far for each image
        fooled = [~(p == y) for p, y in zip(pred_clean, labels, strict=True)]
        accs, ckas, lay, kin = [], [], None, None
        bar = tqdm(total=len(eps) * len(clean), desc=f"PGD {s.label}", disable=not progress, unit="batch")
        for e in eps:
            e_t: float | Tensor = e if pixel_std is None else to_normalised_eps(e, pixel_std).to(dev)
            advs = []
            for bi, (x, y) in enumerate(zip(clean, labels, strict=True)):
                xa = pgd(
                    s.model,
                    x,
                    y,
                    eps=e_t,
                    steps=steps,
                    step_size=step_size,
                    random_start=random_start,
                    generator=g,
                )
                with torch.no_grad():
                    wrong = s.model(xa).argmax(-1) != y
                keep = fooled[bi] & ~wrong  # fooled at a smaller eps but not now: keep the earlier example
                if keep.any():
                    bdim = 1 if xa.dim() == 5 else 0
                    mask = keep.view([-1 if d == bdim else 1 for d in range(xa.dim())])
                    xa = torch.where(mask, best_adv[bi], xa)
                    wrong = wrong | keep
                fooled[bi] = wrong
                best_adv[bi] = xa
                advs.append(xa)
                bar.update(1)
            accs.append(100.0 * float((~torch.cat(fooled)).float().mean()))
            res = cka_compare(s.model, s.model, clean, data_b=advs, layers_a=layers, layers_b=layers,
                              unbiased=unbiased, kernel=kernel, device=dev, progress=False)
            lay, kin = list(res.layers_a), list(res.kinds_a)
            ckas.append(res.corresponding()[1].tolist())  # each layer's clean vs adversarial features
        bar.close()
        out["labels"].append(s.label)
        out["clean_accuracy"].append(100.0 * float(ok_clean.float().mean()))
        out["accuracy"].append(accs)
        out["layers"].append(lay)
        out["kinds"].append(kin)
        out["cka"].append(ckas)
        out["sources"].append(s.source)
    return RobustnessResult(
        eps=eps,
        steps=steps,
        step_size="2.5*eps/steps" if step_size is None else f"{step_size:g}",
        random_start=random_start,
        space="pixel" if pixel_std is not None else "normalised",
        n_images=n_images_of(subs[0], n_images),
        seconds=time.perf_counter() - t0,
        environment=environment(),
        **out,
    )


