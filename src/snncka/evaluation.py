"""Evaluation: accuracy, loss and LIF firing rates of a model on labelled inputs -- the one accuracy loop of
training (after every epoch), ``snncka eval`` and the analyses."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import data as data_mod
from . import limits
from .distributed import _all_reduce, _Dist
from .neurons import RateMeter


def _autocast(device: torch.device, amp: bool):
    """bf16 autocast on ``device`` (CUDA, or CPU when asked for explicitly) when ``amp``."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()


@torch.no_grad()
def evaluate_tensors(model: nn.Module, x: Tensor, y: Tensor, batch_size: int, device: torch.device,
                     amp: bool = False, d: _Dist | None = None, channels_last: bool = False,
                     to_input: Callable[[Tensor], Tensor] = data_mod.to_model_input) -> dict[str, Any]:
    """The evaluation loop: ``{"acc", "loss", "n", "correct"}`` (+ ``"firing_rates"`` for an SNN) of ``model``
    on inputs ``x`` and labels ``y`` in batches, in eval mode (restored afterwards). ``to_input`` turns a
    dataset batch into the model's input; under torch.distributed (``d``) each rank takes its shard and the
    sums are all-reduced."""
    d = d or _Dist()
    was_training = model.training
    model.eval()
    meter = RateMeter(model, device)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
    try:
        n = x.shape[0]
        lo, hi = n * d.rank // d.world, n * (d.rank + 1) // d.world  # this rank's shard
        for i in range(lo, hi, batch_size):
            xb = x[i:min(i + batch_size, hi)].to(device, non_blocking=True)
            yb = y[i:min(i + batch_size, hi)].to(device, non_blocking=True)
            xb = to_input(xb)
            if channels_last and xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with _autocast(device, amp):
                logits = model(xb)
            sums[0] += F.cross_entropy(logits.float(), yb, reduction="sum").double()
            sums[1] += (logits.argmax(1) == yb).sum()
            sums[2] += yb.numel()
        _all_reduce(sums, d)
        _all_reduce(meter.sums, d)
    finally:
        meter.close()
        model.train(was_training)
    loss, correct, count = sums.tolist()
    out: dict[str, Any] = {"acc": correct / max(count, 1), "loss": loss / max(count, 1), "n": int(count),
                           "correct": int(correct)}
    if meter.names:
        out["firing_rates"] = meter.rates()
    return out


def evaluate(model: nn.Module, dataset_or_tensors: data_mod.Dataset | tuple[Tensor, Tensor],
             batch_size: int = 512, device: str | torch.device | None = None,
             amp: bool = False) -> dict[str, Any]:
    """Accuracy and mean cross-entropy of ``model`` on a ``Dataset``'s test split or on ``(x, y)`` tensors.

    Returns ``{"acc", "loss", "n", "correct"}`` plus ``"firing_rates"`` ({LIF layer name: fraction of spikes}) for
    spiking models. ``device`` defaults to the model's. The model's train/eval mode is restored afterwards.
    """
    if isinstance(dataset_or_tensors, data_mod.Dataset):
        x, y = dataset_or_tensors.x_test, dataset_or_tensors.y_test
    else:
        try:
            x, y = dataset_or_tensors
        except (TypeError, ValueError):
            raise TypeError("evaluate() takes a snncka.data.Dataset or a pair (inputs, labels) of tensors"
                            ) from None
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"inputs and labels differ in length: {x.shape[0]} vs {y.shape[0]}")
    limits.integer("batch_size", batch_size, 1, limits.MAX_BATCH)
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    model.to(device)
    return evaluate_tensors(model, x, y, batch_size, device, amp)
