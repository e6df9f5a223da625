"""Memory estimates made before a run allocates, checked against what the machine has.

A run whose settings are valid one by one (``snncka.limits``) can still be too big together: a large batch
times many time steps, a wide network, many event frames. ``check`` compares an estimate with the memory
free on the device the run will use and, when it does not fit, raises one ``MemoryEstimateError`` that says
how much would be needed, how much there is, and what to lower -- instead of an allocation that takes the
machine down or fails minutes later.

The estimate counts float32 tensors: the parameters with their gradients and the SGD momentum buffer, one
batch's layer outputs over all time steps (what backpropagation keeps; the model is run on PyTorch's ``meta``
device, which computes shapes without memory), and the dataset, which training keeps on the device. It is a
lower bound of the true footprint (allocator slack and temporaries come on top).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .readers import memory_available

GiB = 1 << 30
FLOAT = 4  # bytes per float32 element


class MemoryEstimateError(ValueError):
    """The run would need more memory than the device has free."""


def available_bytes(device: torch.device | str | None = None) -> int:
    """Memory free for a run on ``device``: the GPU's free memory for CUDA, else the RAM available to this
    process (the OS's available pages, and the cgroup limit where one is set)."""
    dev = torch.device(device or "cpu")
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    return memory_available()


# Below these sizes the activation count comes from one image's forward on the CPU (milliseconds), not from the
# meta device, whose first forward imports torch's compiler (~1.2 s in every training process: BatchNorm's meta
# kernel is a decomposition behind torch._dynamo's guard). Both give the same shapes.
_REAL_PARAMS, _REAL_PIXELS = 2**24, 2**16


def model_footprint(build: Callable[[], nn.Module], example: torch.Tensor | None) -> tuple[int, int]:
    """(parameter elements, layer-output elements per image of ``example``'s batch) of the model ``build``
    makes. Parameters are counted on the meta device (nothing allocated, no weights initialised); layer outputs
    from a forward of ``example`` in eval mode, on the CPU for a small model and image, else on the meta device."""
    outs = [0]

    def hook(module: nn.Module, inputs: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            outs[0] += out.numel()

    with torch.device("meta"):
        model = build()
    params = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    if example is None:
        return params, 0
    real = params <= _REAL_PARAMS and example[0].numel() <= _REAL_PIXELS
    if real:
        model, example = build(), example.to("cpu")
    handles = [m.register_forward_hook(hook) for m in model.modules() if not any(True for _ in m.children())]
    try:
        model.eval()  # shapes only; a training-mode BatchNorm would refuse a batch of one 1x1 map
        with torch.no_grad(), torch.device("cpu" if real else "meta"):
            model(example if real else example.to("meta"))
    finally:
        for h in handles:
            h.remove()
    images = int(example.shape[1] if example.dim() == 5 else example.shape[0])
    return params, outs[0] // max(images, 1)


def check(parts: dict[str, int], device: torch.device | str | None, what: str, fix: str) -> int:
    """Raise ``MemoryEstimateError`` when the ``parts`` ({what: bytes}) together exceed the memory free on
    ``device``; returns the total. ``fix``: what to lower or change, for the message."""
    total = int(sum(parts.values()))
    free = available_bytes(device)
    if total > free:
        detail = ", ".join(f"{k} {v / GiB:.2f}" for k, v in parts.items() if v)
        dev = torch.device(device or "cpu")
        where = "GPU memory free" if dev.type == "cuda" else "RAM available"
        raise MemoryEstimateError(
            f"{what} needs about {total / GiB:.2f} GiB ({detail} GiB) but only {free / GiB:.2f} GiB of {where} "
            f"on {dev}; {fix}")
    return total
