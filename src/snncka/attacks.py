"""Projected gradient descent (PGD, Madry et al. 2018), SPEC Eq. 5, L-infinity ball:

    x_adv[k+1] = Proj_{||x_adv - x||_inf <= eps}( x_adv[k] + step_size * sign(grad_x L(x_adv[k], w, y)) )

with ``x_adv[0] = x`` (Eq. 5 as written; ``random_start=True`` starts from a uniform point of the ball
instead, as Madry et al. do) and L the cross-entropy of the model's prediction -- for an SNN the
time-averaged logits, differentiated through the surrogate gradients of its LIF neurons (BPTT).

Units: eps and the step size are in the space of the tensors the model receives, i.e. the *normalised* input
(snncka's datasets are standardised per channel), and the result is not clipped to a pixel range. A
pixel-space eps (fraction of the [0, 1] range) is ``eps / std`` per channel in that space: pass ``eps`` as a
tensor that broadcasts against the input (``to_normalised_eps`` builds it).

Defaults, since the paper gives neither: ``steps = 10`` (the common PGD-10 evaluation) and
``step_size = 2.5 * eps / steps`` (Madry et al.'s rule: enough total movement to reach the ball's boundary
from any start and to move along it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["pgd", "to_normalised_eps"]


def to_normalised_eps(eps: float, std: Sequence[float], channel_dim: int = -3) -> Tensor:
    """A pixel-space eps (on [0, 1] images) as the per-channel eps in the standardised input space."""
    s = torch.as_tensor(list(std), dtype=torch.float32)
    if (s <= 0).any():
        raise ValueError(f"channel std must be > 0, got {list(std)}")
    shape = [1] * (-channel_dim)
    shape[0] = len(s)
    return (eps / s).reshape(shape)


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float | Tensor,
    steps: int = 10,
    step_size: float | Tensor | None = None,
    random_start: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Adversarial examples for ``model`` (kept in its current mode; use eval) around ``x`` with labels ``y``.

    ``x`` is what the model takes (``[B, C, H, W]`` or frames ``[T, B, C, H, W]``); the model's parameters
    receive no gradient. Returns a tensor like ``x`` with ``|x_adv - x| <= eps`` elementwise.
    """
    eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    if (eps_t < 0).any():
        raise ValueError(f"eps must be >= 0, got {eps}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    alpha = (
        2.5 * eps_t / max(steps, 1)
        if step_size is None
        else torch.as_tensor(step_size, dtype=x.dtype, device=x.device)
    )
    x = x.detach()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
        x_adv = x + (2 * noise - 1) * eps_t
    else:
        x_adv = x.clone()
    if not bool((eps_t > 0).any()):
        return x_adv
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(model(x_adv), y)
            (grad,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            x_adv = x_adv.detach() + alpha * grad.sign()
            x_adv = torch.minimum(torch.maximum(x_adv, x - eps_t), x + eps_t)
    return x_adv.detach()
