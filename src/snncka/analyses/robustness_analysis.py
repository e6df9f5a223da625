"""``robustness``: PGD robust accuracy per eps and per-layer CKA clean vs adversarial (Fig. 8, A.9)."""

from __future__ import annotations

import copy
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from .. import recipes
from ..cka import compare as cka_compare
from ..registry import register_analysis
from ..results import curve_ylim, finite_mean, labelled
from ..runtime import environment, resolve_device
from .subjects import (
    RecipeMeasured,
    Subject,
    check_same_images,
    cka_settings,
    first_batches,
    images_in,
    model_input,
    n_images_of,
    resolve_recipe,
    subjects,
)

__all__ = ["DEFAULT_EPS", "DRIFT_EPS", "RobustnessResult", "robustness"]

DEFAULT_EPS = (0.001, 0.005, 0.01, 0.02, 0.05)
#: A near-zero eps: under an attack that moves BatchNorm statistics (the released train-mode attack), the
#: clean-vs-adversarial CKA at this eps measures that drift alone, as the perturbation is nil.
DRIFT_EPS = 1e-9


@dataclass
class RobustnessResult(RecipeMeasured):
    """PGD robust accuracy (%) ``accuracy[m, e]`` of model m at ``eps[e]`` on ``n_images`` test images, and
    per-layer CKA between the clean and the adversarial features of each model ``cka[m][e]`` (over
    ``layers[m]``) on the first ``cka_images`` test images, attacked with the model in ``cka_attack_mode``.

    When that attack is not the eval-mode one (the ``code`` recipe's train-mode attack, whose BatchNorm
    statistics drift), ``cka_eval[m][e]`` is the same CKA under the eval-mode attack, and ``drift_cka[m]`` the
    mean CKA of the recipe's attack at ``drift_eps`` (near zero): what the drift alone does to the features."""

    analysis: ClassVar[str] = "robustness"
    arrays: ClassVar[tuple[str, ...]] = ("cka_hsic",)

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
    cka_images: int = 0
    cka_attack_mode: str = "eval"
    clip: bool = False
    cka_eval: list[list[list[float]]] = field(default_factory=list)
    drift_eps: float | None = None
    drift_cka: list[float] = field(default_factory=list)
    # per model and eps, the per-batch HSIC sums behind the judged clean-vs-adversarial CKA (``cka_eval`` where
    # there is one, else ``cka``): ``[M, E, 3 (ab, aa, bb), batches, L]``, NaN-padded to the most layers;
    # intervals over test images. Empty where not kept
    cka_hsic: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 3, 0, 0)))

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
            mode = f" ({self.cka_attack_mode}-mode attack)" if self.cka_eval else ""
            for k, (e, a, c) in enumerate(zip(self.eps, self.accuracy[m], self.cka[m], strict=True)):
                row[f"acc eps={e:g}"] = a
                row[f"mean CKA eps={e:g}{mode}"] = finite_mean(c)
                if self.cka_eval:
                    row[f"mean CKA eps={e:g} (eval-mode attack)"] = finite_mean(self.cka_eval[m][k])
            if self.drift_cka:  # the flag: below 1 at a nil perturbation = BatchNorm drift, not the attack
                row[f"BN drift: mean CKA at eps={self.drift_eps:g} ({self.cka_attack_mode}-mode attack)"] = \
                    self.drift_cka[m]
            rows.append(row)
        return rows


def robustness(
    sources: Sequence[Any],
    *,
    eps: Sequence[float] = DEFAULT_EPS,
    steps: int | None = None,
    step_size: float | None = None,
    random_start: bool | None = None,
    pixel_std: Sequence[float] | None = None,
    n_images: int | None | str = "recipe",
    batch_size: int | None = None,
    layers: Any = None,
    unbiased: bool = True,
    kernel: str = "linear",
    time_reduce: str = "concat",
    seed: int = 0,
    recipe: str | recipes.Recipe | None = None,
    data_root: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> RobustnessResult:
    """PGD (paper Eq. 5, L-inf) against each model: robust accuracy per eps, CKA clean vs adversarial.

    The recipe (default: the first model's; ``snncka.attacks.pgd_options``) sets the attack: each eps is
    attacked on its own from the clean images, with ``steps`` steps of ``step_frac * eps`` (both recipes: 20
    of eps/10, no random start, no clipping), the model in eval mode for robust accuracy, and in the recipe's
    ``pgd_model_mode`` for the clean-vs-adversarial CKA (``code``: train mode on a copy of the model whose
    BatchNorm statistics drift, as released; the analysed model is never changed). When that attack is not the
    eval-mode one, the eval-mode CKA is reported beside it (``cka_eval``) with the drift alone: the recipe's
    attack's CKA at ``DRIFT_EPS`` (``drift_cka``). ``steps``, ``step_size``
    and ``random_start`` override the recipe's. Images: robust accuracy on the recipe's ``pgd_images`` (None:
    the whole test split) and CKA on its ``cka_images`` in minibatches of ``cka_batch``, unless ``n_images``
    (None: all) and ``batch_size`` are given. eps is in the normalised input space the models receive, unless
    ``pixel_std`` (the per-channel std used to standardise the data) makes it a fraction of the pixel range.
    """
    from tqdm.auto import tqdm

    from ..attacks import pgd, pgd_options, to_normalised_eps

    t0 = time.perf_counter()
    dev = resolve_device(device)
    eps = [float(e) for e in eps]
    if not eps or not all(math.isfinite(e) and e >= 0 for e in eps):
        raise ValueError(f"eps must be a non-empty list of finite values >= 0, got {eps}")
    if list(eps) != sorted(eps):
        raise ValueError(f"eps must be in increasing order, got {eps}")
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be at least 1 (or left out for the recipe's), got {steps}")
    subs = subjects(list(sources), data_root, dev, recipe=recipe)
    if not subs:
        raise ValueError("robustness needs at least one checkpoint")
    for s in subs[1:]:
        check_same_images(subs[0], s)
    rec, recorded = resolve_recipe(recipe, subs)
    n_cka, cka_batch, layers = cka_settings(rec, n_images, batch_size, layers)
    n_acc = rec.pgd_images if n_images == "recipe" else n_images
    # the robust-accuracy attack runs in batches of the recipe's minibatch at least (a smaller CKA minibatch, as
    # the smoke scale's, only cuts the CKA batches finer: its eval-mode examples are per image)
    attack_batch = max(cka_batch, rec.cka_batch)
    overrides = {k: v for k, v in (("steps", steps), ("step_size", step_size), ("random_start", random_start))
                 if v is not None}
    g = torch.Generator().manual_seed(seed)
    est = {"unbiased": unbiased, "kernel": kernel, "time_reduce": time_reduce}  # the CKA estimator (Sec. 3.3)
    out = dict(labels=[], clean_accuracy=[], accuracy=[], layers=[], kinds=[], cka=[], sources=[], cka_eval=[],
               drift_cka=[])
    hsic: list[list[np.ndarray]] = []
    for s in subs:
        bounds = _data_bounds(s, dev) if rec.pgd_clip else None
        acc_opts = {**pgd_options(rec, bounds=bounds), **overrides}
        cka_opts = {**pgd_options(rec, cka=True, bounds=bounds), **overrides}
        asked = n_images != "recipe" and s is subs[0]  # one count asked for both passes: said once
        na, nc = n_images_of(s, n_acc, asked=asked), n_images_of(s, n_cka, asked=False)
        batches = [(model_input(s, s.data.x_test[i:min(i + attack_batch, na)]).to(dev),
                    s.data.y_test[i:min(i + attack_batch, na)].to(dev)) for i in range(0, na, attack_batch)]
        cka_x = first_batches(s, nc, cka_batch, dev)
        cka_b = [(x, s.data.y_test[i:i + images_in(x)].to(dev))
                 for i, x in zip(range(0, nc, cka_batch), cka_x, strict=False)]
        # an eval-mode CKA attack is the robust-accuracy attack: its examples are reused, not recomputed;
        # another attack (the released train mode) is reported beside the eval-mode one ("dual")
        reuse = cka_opts["mode"] == acc_opts["mode"] and not cka_opts["keep_bn_updates"]
        dual = not reuse
        with torch.no_grad():
            clean_ok = sum(int((s.model(x).argmax(-1) == y).sum()) for x, y in batches)
        accs, ckas, ckas_eval, lay, kin, sums = [], [], [], [], [], []
        bar = tqdm(total=len(eps) * (len(batches) + (0 if reuse else len(cka_b))) + (len(cka_b) if dual else 0),
                   desc=f"PGD {s.label}", disable=not progress, unit="batch")
        for e in eps:
            e_t: float | Tensor = e if pixel_std is None else to_normalised_eps(e, pixel_std).to(dev)
            ok, kept = 0, []
            for k, (x, y) in enumerate(batches):
                xa = pgd(s.model, x, y, eps=e_t, generator=g, **acc_opts)
                with torch.no_grad():
                    ok += int((s.model(xa).argmax(-1) == y).sum())
                if k * attack_batch < nc:  # holds some of the first nc images: the CKA's
                    kept.append(xa)
                bar.update(1)
            accs.append(100.0 * ok / na)
            done = _cut(kept, [images_in(x) for x, _ in cka_b])
            lay, kin, values, judged = _clean_vs_adversarial(s, cka_b, e_t, layers, cka_opts, g, est,
                                                             bar, None if dual else done)
            ckas.append(values)
            if dual:
                _, _, values, judged = _clean_vs_adversarial(s, cka_b, e_t, layers, acc_opts, g, est,
                                                             _NoBar(), done)
                ckas_eval.append(values)
            sums.append(judged)
        if dual:
            out["cka_eval"].append(ckas_eval)
            out["drift_cka"].append(finite_mean(
                _clean_vs_adversarial(s, cka_b, DRIFT_EPS, layers, cka_opts, g, est, bar)[2]))
        bar.close()
        out["labels"].append(s.label)
        out["clean_accuracy"].append(100.0 * clean_ok / na)
        out["accuracy"].append(accs)
        out["layers"].append(lay)
        out["kinds"].append(kin)
        out["cka"].append(ckas)
        out["sources"].append(s.source)
        hsic.append(sums)
    frac = rec.pgd_step_frac
    inv = 1.0 / frac
    step_label = f"eps/{inv:g}" if abs(inv - round(inv)) < 1e-9 else f"{frac:g}*eps"
    return RobustnessResult(
        eps=eps,
        steps=int(overrides.get("steps", rec.pgd_steps)),
        step_size=step_label if step_size is None else f"{step_size:g}",
        random_start=bool(overrides.get("random_start", rec.pgd_random_start)),
        space="pixel" if pixel_std is not None else "normalised",
        n_images=n_images_of(subs[0], n_acc, asked=False),  # said above
        cka_images=n_images_of(subs[0], n_cka, asked=False),
        cka_attack_mode=rec.pgd_model_mode,
        clip=bool(rec.pgd_clip),
        drift_eps=DRIFT_EPS if out["drift_cka"] else None,
        cka_hsic=_padded(hsic),
        seconds=time.perf_counter() - t0,
        environment=environment(),
        **out,
        **recorded,
    )


def _padded(hsic: list[list[np.ndarray | None]]) -> np.ndarray:
    """Per model and eps ``[3, batches, L]`` HSIC sums as one ``[M, E, 3, batches, max L]`` array (NaN-padded);
    empty when one is missing or the batch counts differ."""
    flat = [h for per in hsic for h in per]
    if not flat or any(h is None for h in flat) or len({h.shape[1] for h in flat}) != 1:
        return np.zeros((0, 0, 3, 0, 0))
    width = max(h.shape[2] for h in flat)
    out = np.full((len(hsic), len(hsic[0]), 3, flat[0].shape[1], width), np.nan)
    for m, per in enumerate(hsic):
        for e, h in enumerate(per):
            out[m, e, :, :, : h.shape[2]] = h
    return out


def _cut(parts: list[Tensor], sizes: list[int]) -> list[Tensor] | None:
    """The adversarial images of the CKA minibatches (``sizes`` images each, in order) cut from those of the
    attack batches (``parts``, in order); None where these hold too few."""
    if not parts:
        return None
    dim = 1 if parts[0].dim() == 5 else 0
    every = torch.cat(parts, dim)
    if every.shape[dim] < sum(sizes):
        return None
    return list(torch.split(every.narrow(dim, 0, sum(sizes)), sizes, dim))


def _clean_vs_adversarial(s: Subject, batches: list[tuple[Tensor, Tensor]], eps: float | Tensor, layers: Any,
                          opts: dict[str, Any], g: torch.Generator, est: dict[str, Any], bar: Any,
                          adversarial_batches: list[Tensor] | None = None
                          ) -> tuple[list[str], list[str], list[float], np.ndarray | None]:
    """Per-layer CKA between the model's features of the clean images and of their adversarial versions
    (layers, kinds, values, and the per-batch HSIC sums ``[3, batches, L]`` behind them), minibatch by
    minibatch (``adversarial_batches``: already attacked, eval mode). An attack that keeps BatchNorm updates
    (the released train-mode attack) runs on a copy of the model, batch by batch, and each batch's adversarial
    features come from the copy's statistics right after that batch's attack, as released; the clean features
    come from the model itself, which is never changed."""
    from ..attacks import pgd

    clean = [x for x, _ in batches]
    if opts.get("keep_bn_updates"):
        attacked, viewer = copy.deepcopy(s.model), copy.deepcopy(s.model)

        def adversarial() -> Any:  # lazily: the engine asks for batch i after the features of batch i - 1
            for x, y in batches:
                xa = pgd(attacked, x, y, eps=eps, generator=g, **opts)
                viewer.load_state_dict(attacked.state_dict())  # the recorded copy sees the drifted statistics
                bar.update(1)
                yield xa

        model_b, data_b = viewer, adversarial()
    elif adversarial_batches is not None:
        model_b, data_b = s.model, adversarial_batches
    else:
        model_b, data_b = s.model, []
        for x, y in batches:
            data_b.append(pgd(s.model, x, y, eps=eps, generator=g, **opts))
            bar.update(1)
    res = cka_compare(s.model, model_b, clean, data_b=data_b, layers_a=layers, layers_b=layers, **est,
                      device=clean[0].device, progress=False)
    names, values = res.corresponding()
    kinds = dict(zip(res.layers_a, res.kinds_a, strict=True))
    sums = res.batch_samples()
    return names, [kinds[n] for n in names], values.tolist(), None if sums is None else np.stack(sums)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass


def _data_bounds(s: Subject, dev: torch.device) -> tuple[Tensor, Tensor]:
    """Per-channel (min, max) of the normalised test images: the valid range a clipping recipe keeps
    adversarial images in (for images: the normalised 0 and full-scale pixel values)."""
    x = s.data.x_test
    dims = [d for d in range(x.dim()) if d != x.dim() - 3]
    shape = [-1, 1, 1]
    return x.amin(dim=dims).reshape(shape).to(dev), x.amax(dim=dims).reshape(shape).to(dev)


@register_analysis("robustness", needs="all", on_checkpoints=True)
def robustness_of_pairs(run: Any, *, models: list[str] | None = None, layers: Any = None,
                        eps: Sequence[float] = DEFAULT_EPS, steps: int | None = None, unbiased: bool = True,
                        kernel: str = "linear", time_reduce: str = "concat") -> None:
    """Fig. 8: PGD accuracy and clean-vs-adversarial CKA of every ANN/SNN pair (``unbiased``, ``kernel``,
    ``time_reduce``: the CKA estimator, as ``compare``'s)."""
    from .compare_analysis import cka_choice, layer_choice

    for s in run.models(models, ("ann", "snn")):
        run.cached(f"robustness-{s.name}", robustness, [run.ckpt(s, "ann"), run.ckpt(s, "snn")], eps=eps,
                   model=s.name, **layer_choice(layers), **({"steps": steps} if steps is not None else {}),
                   **cka_choice(unbiased, kernel, time_reduce), **run.analysis_options())
