"""Datasets as device-resident tensors, and batched augmentation on tensors.

Every dataset loads into a ``Dataset``: normalised float32 inputs and int64 labels with a fixed train/test
split. Static images are ``[N, C, H, W]``; event data integrated into frames is ``[N, T, C, H, W]``
(``to_model_input`` turns a batch into the ``[T, B, C, H, W]`` that the models take).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["DATASETS", "Augment", "Dataset", "augment_batch", "get", "to_model_input"]


@dataclass(frozen=True)
class Augment:
    """Training augmentation: random crop with ``pad`` pixels of zero padding, optional horizontal flip."""

    pad: int = 0
    flip: bool = False


@dataclass
class Dataset:
    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    augment: Augment = field(default_factory=Augment)
    meta: dict = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[-3])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.x_train.shape[-2]), int(self.x_train.shape[-1])

    @property
    def frames(self) -> int | None:
        """Number of event frames per sample, or None for static images."""
        return int(self.x_train.shape[1]) if self.x_train.dim() == 5 else None

    def to(self, device: torch.device | str) -> Dataset:
        for k in ("x_train", "y_train", "x_test", "y_test"):
            setattr(self, k, getattr(self, k).to(device))
        return self


def to_model_input(x: Tensor) -> Tensor:
    """A batch from a ``Dataset`` as model input: images unchanged, frames ``[B, T, ...] -> [T, B, ...]``."""
    return x.transpose(0, 1) if x.dim() == 5 else x


def augment_batch(x: Tensor, aug: Augment, generator: torch.Generator | None = None) -> Tensor:
    """Random crop (zero padding ``aug.pad``) and horizontal flip, per sample, batched on x's device.

    Works on ``[B, C, H, W]`` and ``[B, T, C, H, W]`` (the same crop/flip for all frames of a sample).
    """
    if aug.pad == 0 and not aug.flip:
        return x
    b, (h, w), dev = x.shape[0], x.shape[-2:], x.device
    if aug.pad:
        p = aug.pad
        xp = torch.nn.functional.pad(x.reshape(b, -1, h, w), (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (b,), generator=generator, device="cpu").to(dev)
        dx = torch.randint(0, 2 * p + 1, (b,), generator=generator, device="cpu").to(dev)
        rows = (dy[:, None] + torch.arange(h, device=dev)[None])  # [B, H]
        cols = (dx[:, None] + torch.arange(w, device=dev)[None])  # [B, W]
        idx_b = torch.arange(b, device=dev)[:, None, None]
        out = xp.permute(0, 2, 3, 1)[idx_b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        x = out.reshape(x.shape)
    if aug.flip:
        flip = torch.rand(b, generator=generator, device="cpu").to(dev) < 0.5
        x = torch.where(flip.view(b, *([1] * (x.dim() - 1))), x.flip(-1), x)
    return x


# --------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------

Loader = Callable[..., Dataset]
DATASETS: dict[str, Loader] = {}


def register(name: str) -> Callable[[Loader], Loader]:
    def deco(fn: Loader) -> Loader:
        DATASETS[name] = fn
        return fn

    return deco


def get(name: str, *, root: str | Path | None = None, frames: int | None = None, download: bool = False,
        seed: int = 0) -> Dataset:
    """Load dataset ``name``. ``root``: folder with the real dataset's files; ``frames``: number of event
    frames per sample for event datasets (SNN: T, ANN: 1); ``seed``: for generated datasets."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}") from None
    return loader(root=root, frames=frames, download=download, seed=seed)


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[Tensor, Tensor]:
    """Per-channel mean/std of the training set applied to both splits (channel axis -3)."""
    axes = tuple(i for i in range(train.ndim) if i != train.ndim - 3)
    mean = train.mean(axis=axes, keepdims=True)
    std = train.std(axis=axes, keepdims=True) + 1e-8
    f = lambda a: torch.from_numpy(((a - mean) / std).astype(np.float32))  # noqa: E731
    return f(train), f(test)


@register("digits")
def load_digits(root=None, frames=None, download=False, seed=0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), a fixed stratified 80/20 split.

    The embedded default: ships with scikit-learn, so every command runs without a network.
    """
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    x = (d.images.astype(np.float64) / 16.0)[:, None]  # [N, 1, 8, 8]
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    xtr_t, xte_t = _standardise(xtr, xte)
    return Dataset("digits", xtr_t, torch.from_numpy(ytr), xte_t, torch.from_numpy(yte), 10,
                   augment=Augment(pad=1, flip=False))
