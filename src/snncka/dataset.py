"""The pieces every dataset is made of: the ``Dataset`` of device-resident tensors, batched augmentation on
tensors, the loader registry, the built-in datasets' shapes, frame counts, the cache folder and per-channel
standardisation. ``snncka.data`` holds the loaders and ``get``; the file-backed loaders build on this module.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .limits import MAX_T
from .recipes import RELEASED_NORMALISATION


@dataclass(frozen=True)
class Augment:
    """Training augmentation: random crop with ``pad`` pixels of padding, optional horizontal flip.

    ``fill``: per channel, the value of a padded pixel in the normalised data: what a raw black pixel (an event
    frame: no event) becomes after normalisation, as the released code pads the raw image before normalising
    (the paper is silent). Empty: 0, the mean colour."""

    pad: int = 0
    flip: bool = False
    fill: tuple[float, ...] = ()


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
        """This dataset with its tensors on ``device`` (a new object, like ``Tensor.to``: the caller's stays)."""
        return replace(self, **{k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_test", "y_test")})


def to_model_input(x: Tensor) -> Tensor:
    """A batch from a ``Dataset`` as model input: images unchanged, frames ``[B, T, ...] -> [T, B, ...]``."""
    return x.transpose(0, 1) if x.dim() == 5 else x


def augment_draws(b: int, aug: Augment, generator: torch.Generator | None = None) -> Tensor:
    """The random draws of one batch's augmentation, on the CPU: ``[3, b]`` int64 rows dy, dx, flip (drawn
    in that order; a row is zero when its transform is off). Drawing a whole epoch's worth up front lets a
    trainer move them to the GPU in one copy instead of three synchronising copies per step."""
    out = torch.zeros(3, b, dtype=torch.int64)
    if aug.pad:
        out[0] = torch.randint(0, 2 * aug.pad + 1, (b,), generator=generator, device="cpu")
        out[1] = torch.randint(0, 2 * aug.pad + 1, (b,), generator=generator, device="cpu")
    if aug.flip:
        out[2] = torch.rand(b, generator=generator, device="cpu") < 0.5
    return out


def augment_batch(x: Tensor, aug: Augment, generator: torch.Generator | None = None,
                  draws: Tensor | None = None) -> Tensor:
    """Random crop (zero padding ``aug.pad``) and horizontal flip, per sample, batched on x's device.

    Works on ``[B, C, H, W]`` and ``[B, T, C, H, W]`` (the same crop/flip for all frames of a sample). The
    random draws come from ``generator`` on the CPU (see ``augment_draws``; or pass ``draws`` made by it),
    so a run is reproducible on any device. Crop and flip are one gather of source pixels; pixels that come
    from the padding are set to ``aug.fill`` (no padded copy of the batch is made).
    """
    if aug.pad == 0 and not aug.flip:
        return x
    b, (h, w), dev = x.shape[0], x.shape[-2:], x.device
    p = aug.pad
    d = (augment_draws(b, aug, generator) if draws is None else draws).to(dev, non_blocking=True)
    rows = torch.arange(h, device=dev).expand(b, h)
    cols = torch.arange(w, device=dev).expand(b, w)
    if p:
        rows, cols = rows + (d[0, :, None] - p), cols + (d[1, :, None] - p)
    if aug.flip:
        cols = torch.where(d[2, :, None].bool(), cols.flip(-1), cols)
    src = x.reshape(b, -1, h * w)
    k = src.shape[1]
    idx = rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]
    out = torch.gather(src, 2, idx.reshape(b, 1, h * w).expand(b, k, h * w))
    if p:
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        fill = out.new_zeros(())
        if aug.fill:  # per channel; the channels repeat over a sample's frames
            fill = torch.tensor(aug.fill, dtype=out.dtype, device=dev).repeat(k // len(aug.fill))[None, :, None]
        out = torch.where(inside.reshape(b, 1, h * w), out, fill)
    return out.reshape(x.shape)


# --------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------

Loader = Callable[..., Dataset]
DATASETS: dict[str, Loader] = {}
_READS_ROOT: set[str] = set()
_EVENTS: set[str] = set()


def register(name: str, *, reads_root: bool = False, events: bool = False) -> Callable[[Loader], Loader]:
    """Register a loader ``fn(root, frames, download, seed, normalisation) -> Dataset`` as dataset ``name``.
    ``reads_root``: its files are read from ``root`` (``get`` then checks that the folder exists); ``events``:
    it holds event-camera recordings (integrated into frames), not static images."""
    def deco(fn: Loader) -> Loader:
        DATASETS[name] = fn
        if reads_root:
            _READS_ROOT.add(name)
        if events:
            _EVENTS.add(name)
        return fn

    return deco


def is_event_data(name: str) -> bool:
    """Whether dataset ``name`` holds event-camera recordings (registered with ``events=True``)."""
    return name in _EVENTS


#: ``normalisation="fixed"``: per-channel (mean, std) of pixel values in [0, 1] from the authors' released
#: code (its CIFAR loaders' ``Normalize``), which differ from the training sets' own statistics (e.g. the
#: CIFAR-10 std there is ~0.20, the data's ~0.25). One table, kept with the recipes that choose it.
FIXED_NORMALISATION = RELEASED_NORMALISATION
NORMALISATIONS = ("dataset", "fixed")


@dataclass(frozen=True)
class DataShape:
    """A dataset's input shape, classes and split sizes (no data needed)."""

    channels: int
    height: int
    width: int
    classes: int
    n_train: int
    n_test: int
    exact: bool = True  # False: split sizes approximate (per-class rounding of a 9:1 split)


#: The built-in datasets' input shapes, classes and split sizes, known before their data is loaded.
SHAPES: dict[str, DataShape] = {
    "cifar10": DataShape(3, 32, 32, 10, 50000, 10000),
    "cifar100": DataShape(3, 32, 32, 100, 50000, 10000),
    "cifar10-dvs": DataShape(2, 48, 48, 10, 9000, 1000),  # 10000 recordings, 9:1 per class, 48x48 frames
    "ncaltech101": DataShape(2, 48, 48, 101, 7838, 871, exact=False),  # 8709 recordings, 9:1 per class
    "digits": DataShape(1, 8, 8, 10, 1437, 360),  # scikit-learn's 1797 digits, stratified 80/20
    "digits-dvs": DataShape(2, 20, 20, 10, 1437, 360),
}


def frames_for(spiking: bool, T: int, frames: int | None = None) -> int:
    """How many frames an event dataset gives a model: ``frames`` if set, else T for an SNN (one frame per
    time step) and 1 for an ANN (all events integrated into one frame), as the paper's Fig. 7 setup does.
    The trainer and the analyses load a model's data with it."""
    if frames is not None:
        return _frames_arg(frames)
    return _frames_arg(int(T)) if spiking else 1


def cache_dir() -> Path:
    """Where generated and preprocessed data are cached: ``$SNNCKA_CACHE`` or ``~/.cache/snncka``."""
    return Path(os.environ.get("SNNCKA_CACHE") or Path.home() / ".cache" / "snncka")


def _frames_arg(frames: int | None, default: int = 10) -> int:
    if frames is None:
        return default
    if isinstance(frames, bool) or not isinstance(frames, int | np.integer) or not 1 <= frames <= MAX_T:
        raise ValueError(f"frames must be a positive integer (SNN: T frames, ANN: 1), got {frames!r}; valid range "
                         f"[1, {MAX_T}]")
    return int(frames)


def _standardise(train: np.ndarray, test: np.ndarray,
                 fixed: tuple[Sequence[float], Sequence[float]] | None = None) -> tuple[Tensor, Tensor, dict]:
    """Per-channel mean/std of the training set (channel axis -3, statistics over every other axis, i.e.
    samples, frames and pixels) applied to both splits; float32 tensors plus the statistics for ``meta``.
    ``fixed``: use these (mean, std) instead (in the inputs' units; ``meta`` says which mode).

    The statistics are accumulated in float64 over chunks of samples (two passes: mean, then squared
    deviations), so large datasets need no float64 copy. Float32 inputs are standardised in place: pass
    arrays the caller owns (fresh copies). ``stats["black"]``: what a raw 0 (black, no event) becomes, per
    channel (the padding value of ``Augment.fill``).
    """
    ax, channels = train.ndim - 3, train.shape[train.ndim - 3]
    shape = [1] * train.ndim
    shape[ax] = -1

    def f(a: np.ndarray, m: np.ndarray, s: np.ndarray) -> Tensor:
        out = a.astype(np.float32, copy=False)
        out -= m.reshape(shape).astype(np.float32)
        out /= s.reshape(shape).astype(np.float32)
        return torch.from_numpy(out)

    def black(m: np.ndarray, s: np.ndarray) -> list[float]:  # a raw zero pixel per channel, normalised by f
        return f(np.zeros([channels if i == ax else 1 for i in range(train.ndim)], np.float32), m, s).flatten().tolist()

    if fixed is not None:
        mean, std = (np.asarray(v, np.float64) for v in fixed)
        if mean.shape != (channels,) or std.shape != (channels,) or not np.all(std > 0):
            raise ValueError(f"fixed normalisation needs {channels} means and {channels} positive stds, got "
                             f"{fixed}")
        return f(train, mean, std), f(test, mean, std), {"mode": "fixed", "mean": mean.tolist(),
                                                         "std": std.tolist(), "black": black(mean, std)}
    step = max(1, (1 << 22) // max(1, train[:1].size))  # ~4M values (32 MB in float64) per chunk

    def chunks():  # [channels, values] per chunk of samples
        for i in range(0, len(train), step):
            yield np.moveaxis(train[i:i + step], ax, 0).reshape(channels, -1)

    n = train.size / channels
    mean = sum(c.sum(axis=1, dtype=np.float64) for c in chunks()) / n
    sq = np.zeros(channels)
    for c in chunks():
        d = c.astype(np.float64) - mean[:, None]
        sq += np.einsum("ij,ij->i", d, d)
    std = np.sqrt(sq / n)
    return (f(train, mean, std + 1e-8), f(test, mean, std + 1e-8),
            {"mode": "dataset", "mean": mean.tolist(), "std": std.tolist(), "black": black(mean, std + 1e-8)})
