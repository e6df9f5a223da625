"""Layers that give spiking networks the same parameters and names as their artificial twins.

snncka's spiking models pass *time-folded* tensors ``[T*B, ...]`` (step-major: rows ``t*B .. t*B+B-1`` are
step ``t``) between layers. Stateless layers (conv, pooling, linear) then run on all T steps at once, and
tdBN is exactly BatchNorm over the T*B samples; only the LIF neurons unfold time. ``fold``/``unfold`` convert
between ``[T, B, ...]`` and the folded layout.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["TDBatchNorm2d", "SeqFold", "change_steps", "encode_direct", "encode_frames", "fold", "unfold"]


def fold(x: Tensor) -> Tensor:
    """``[T, B, ...] -> [T*B, ...]`` (a view when ``x`` is contiguous)."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def unfold(x: Tensor, T: int) -> Tensor:
    """``[T*B, ...] -> [T, B, ...]``."""
    if x.shape[0] % T:
        raise ValueError(f"cannot unfold {x.shape[0]} rows into T={T} equal time steps")
    return x.reshape(T, x.shape[0] // T, *x.shape[1:])


def encode_direct(x: Tensor, T: int) -> Tensor:
    """Direct encoding: the static image ``[B, ...]`` is the input at every one of T steps; folded output."""
    return x.unsqueeze(0).expand(T, *x.shape).reshape(T * x.shape[0], *x.shape[1:])


def encode_frames(x: Tensor) -> Tensor:
    """Frame encoding: event frames ``[T, B, C, H, W]`` are already a sequence; folded output."""
    return fold(x)


def change_steps(x: Tensor, T_in: int, T_out: int) -> Tensor:
    """Move a folded tensor from T_in to T_out steps between stages (paper Table 3, "mixed time steps"):
    one step is repeated to T_out; T_in steps are averaged to one."""
    if T_in == T_out:
        return x
    if T_in == 1:
        return encode_direct(x, T_out)
    if T_out == 1:
        return unfold(x, T_in).mean(0)
    raise ValueError(f"cannot change from {T_in} to {T_out} time steps: one of them must be 1")


class TDBatchNorm2d(nn.BatchNorm2d):
    """Time-dependent BatchNorm (tdBN, Zheng et al. 2020): statistics over all T*B samples of all steps.

    Takes a folded ``[T*B, C, H, W]`` tensor (where it is plain BatchNorm2d, hence identical parameters and
    state-dict keys to the ANN's BatchNorm2d) or an unfolded ``[T, B, C, H, W]`` one.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 5:
            return super().forward(fold(x)).reshape(x.shape)
        return super().forward(x)


class SeqFold(nn.Module):
    """Run a stateless layer (conv, pool, linear, ...) on ``[T, B, ...]`` by folding T into the batch."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        y = self.module(fold(x))
        return y.reshape(x.shape[0], x.shape[1], *y.shape[1:])
