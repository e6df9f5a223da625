"""Projected gradient descent (PGD, Madry et al. 2018), SPEC Eq. 5, L-infinity ball:

    x_adv[k+1] = x + clip_[-eps, eps]( x_adv[k] + step_size * sign(grad_x L(x_adv[k], w, y)) - x )

with ``x_adv[0] = x`` (Eq. 5 as written; ``random_start=True`` starts from a uniform point of the ball
instead, as Madry et al. do) and L the cross-entropy of the model's prediction -- for an SNN the
time-averaged logits, differentiated through the surrogate gradients of its LIF neurons (BPTT).

Settings (Fig. 8; the paper gives none, so both recipes take the authors' released code's): 20 steps of
``eps / 10``, no random start, no clipping to the valid pixel range, eps in the *normalised* input space the
model receives (``to_normalised_eps`` converts a pixel-space eps), and every eps attacked from the clean
images (``pgd_sweep``). The released code attacks in eval mode for robust accuracy but in *train* mode for the
clean-vs-adversarial CKA (BatchNorm then uses batch statistics and its running statistics move with every
attack step); ``mode`` and ``keep_bn_updates`` reproduce that, ``pgd_options(recipe, cka=...)`` picks them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from . import recipes
from .models import BN_BUFFERS

__all__ = ["pgd", "pgd_options", "pgd_sweep", "pixel_bounds", "to_normalised_eps"]



def _channel_shape(n: int, channel_dim: int) -> list[int]:
    shape = [1] * (-channel_dim)
    shape[0] = n
    return shape


def to_normalised_eps(eps: float, std: Sequence[float], channel_dim: int = -3) -> Tensor:
    """A pixel-space eps (on [0, 1] images) as the per-channel eps in the standardised input space."""
    s = torch.as_tensor(list(std), dtype=torch.float32)
    if (s <= 0).any():
        raise ValueError(f"channel std must be > 0, got {list(std)}")
    return (eps / s).reshape(_channel_shape(len(s), channel_dim))


def pixel_bounds(mean: Sequence[float], std: Sequence[float], channel_dim: int = -3) -> tuple[Tensor, Tensor]:
    """The valid range ``[(0 - mean) / std, (1 - mean) / std]`` of standardised [0, 1] pixels, per channel:
    the ``clip`` bounds of ``pgd`` when adversarial images must stay images."""
    m = torch.as_tensor(list(mean), dtype=torch.float32)
    s = torch.as_tensor(list(std), dtype=torch.float32)
    if m.shape != s.shape or (s <= 0).any():
        raise ValueError(f"need one mean and one std > 0 per channel, got mean {list(mean)}, std {list(std)}")
    shape = _channel_shape(len(s), channel_dim)
    return (-m / s).reshape(shape), ((1 - m) / s).reshape(shape)


def _as(t: float | Tensor, x: Tensor) -> Tensor:
    return torch.as_tensor(t, dtype=x.dtype, device=x.device)


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float | Tensor,
    steps: int = 20,
    step_size: float | Tensor | None = None,
    step_frac: float = 0.1,
    random_start: bool = False,
    clip: tuple[float | Tensor, float | Tensor] | None = None,
    mode: str | None = None,
    keep_bn_updates: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Adversarial examples for ``model`` around ``x`` with labels ``y``.

    ``x`` is what the model takes (``[B, C, H, W]`` or frames ``[T, B, C, H, W]``); the model's parameters
    receive no gradient. Step size: ``step_size``, else ``eps * step_frac``. ``clip=(lo, hi)`` keeps every
    iterate inside those bounds (e.g. ``pixel_bounds``); off by default, as released. ``mode``: None attacks
    the model in its current mode, ``"eval"``/``"train"`` switch to that mode for the attack and back after;
    in train mode BatchNorm's running statistics move at every step, and are restored afterwards unless
    ``keep_bn_updates`` (the released code's side effect). Returns a tensor like ``x`` with
    ``|x_adv - x| <= eps`` elementwise.
    """
    eps_t = _as(eps, x)
    if (eps_t < 0).any():
        raise ValueError(f"eps must be >= 0, got {eps}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if step_size is None and not step_frac > 0:
        raise ValueError(f"step_frac must be > 0 (the step as a fraction of eps), got {step_frac}")
    if mode not in (None, "eval", "train"):
        raise ValueError(f"mode must be 'eval', 'train' or None (keep the model's mode), got {mode!r}")
    alpha = eps_t * step_frac if step_size is None else _as(step_size, x)
    lo, hi = (None, None) if clip is None else (_as(clip[0], x), _as(clip[1], x))
    x = x.detach()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
        x_adv = x + (2 * noise - 1) * eps_t
    else:
        x_adv = x.clone()
    if lo is not None:
        x_adv = torch.minimum(torch.maximum(x_adv, lo), hi)
    if not bool((eps_t > 0).any()):
        return x_adv
    loss_fn = nn.CrossEntropyLoss()
    flags = [m.training for m in model.modules()]
    bn = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [{k: getattr(m, k).clone() for k in BN_BUFFERS if getattr(m, k, None) is not None} for m in bn]
    if mode is not None:
        model.train(mode == "train")
    try:
        for _ in range(steps):
            x_adv.requires_grad_(True)
            with torch.enable_grad():
                loss = loss_fn(model(x_adv), y)
                (grad,) = torch.autograd.grad(loss, x_adv)
            with torch.no_grad():
                x_adv = x_adv.detach() + alpha * grad.sign()
                x_adv = x + torch.minimum(torch.maximum(x_adv - x, -eps_t), eps_t)
                if lo is not None:
                    x_adv = torch.minimum(torch.maximum(x_adv, lo), hi)
    finally:
        for m, f in zip(model.modules(), flags, strict=True):
            m.training = f
        if not keep_bn_updates:
            with torch.no_grad():
                for m, state in zip(bn, saved, strict=True):
                    for k, v in state.items():
                        getattr(m, k).copy_(v)
    return x_adv.detach()


def pgd_sweep(model: nn.Module, x: Tensor, y: Tensor, eps: Sequence[float | Tensor], **kwargs: Any) -> list[Tensor]:
    """One ``pgd`` attack per eps, each from the clean ``x`` (no example carried over from a smaller eps, as
    released); ``kwargs`` go to ``pgd`` (e.g. ``**pgd_options(recipe)``)."""
    return [pgd(model, x, y, eps=e, **kwargs) for e in eps]


def pgd_options(recipe: str | recipes.Recipe = "paper", *, cka: bool = False,
                bounds: tuple[float | Tensor, float | Tensor] | None = None) -> dict[str, Any]:
    """``pgd`` keyword arguments of a recipe: steps, step fraction, random start, clipping (``bounds`` from
    ``pixel_bounds``, needed when the recipe clips), and the model's mode -- eval for robust accuracy, the
    recipe's ``pgd_model_mode`` (and BN side effect) for the clean-vs-adversarial CKA (``cka=True``)."""
    r = recipes.get(recipe)
    if r.pgd_clip and bounds is None:
        raise ValueError(f"recipe {r.name!r} clips adversarial images: pass bounds=pixel_bounds(mean, std)")
    mode = r.pgd_model_mode if cka else "eval"
    return dict(steps=r.pgd_steps, step_frac=r.pgd_step_frac, random_start=r.pgd_random_start,
                clip=bounds if r.pgd_clip else None, mode=mode,
                keep_bn_updates=bool(cka and mode == "train" and r.pgd_bn_updates))
