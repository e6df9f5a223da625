"""Datasets as device-resident tensors, and batched augmentation on tensors.

Every dataset loads into a ``Dataset``: normalised float32 inputs and int64 labels with a fixed train/test
split. Static images are ``[N, C, H, W]``; event data integrated into frames is ``[N, T, C, H, W]``
(``to_model_input`` turns a batch into the ``[T, B, C, H, W]`` that the models take).

Datasets (``get(name, root=, frames=, download=, seed=, normalisation=)``):

* ``digits`` (embedded, scikit-learn) and ``digits-dvs`` (its simulated event-camera recording, generated
  once per seed and cached): stratified 80/20 split.
* ``cifar10``, ``cifar100``: the "python version" archives (or their extracted folders) in ``root``, read
  by a restricted unpickler; ``download=True`` fetches them with the published MD5 checked.
* ``cifar10-dvs``, ``ncaltech101``: recordings in ``root`` in tonic's layout, read with numpy (AEDAT4:
  the ``aedat`` package of the ``snncka[events]`` extra; ``download=True``: tonic, same extra); 9:1 split
  per class (seed 0, the same for every run).

Normalisation: per channel (image channel or event polarity). ``normalisation="dataset"`` (the default)
uses the mean and std of the training set over samples, frames and pixels; ``"fixed"`` uses the constants
of the authors' released code (CIFAR-10/100 only, ``FIXED_NORMALISATION``). The mode and the statistics
(in the raw data's units) are in ``Dataset.meta["normalisation"]``. Event frames hold event counts per pixel
before normalisation. Caches (generated events, integrated frames: both before normalisation) live in
``cache_dir()`` (``$SNNCKA_CACHE`` or ``~/.cache/snncka``) and are written atomically.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import torch

from .data_cifar import CIFAR, CifarSource, download_file  # registers cifar10, cifar100
from .data_events import (  # registers cifar10-dvs, ncaltech101
    CIFAR10_DVS_CLASSES,
    EVENT_SOURCES,
    EventSource,
    read_recording,
    split_per_class,
)
from .dataset import (
    _READS_ROOT,
    DATASETS,
    FIXED_NORMALISATION,
    NORMALISATIONS,
    SHAPES,
    Augment,
    Dataset,
    DataShape,
    _frames_arg,
    _standardise,
    augment_batch,
    augment_draws,
    cache_dir,
    frames_for,
    is_event_data,
    register,
    to_model_input,
)
from .events import MissingExtraError
from .files import atomic_write_stream
from .readers import read_npz

__all__ = ["CIFAR", "CIFAR10_DVS_CLASSES", "DATASETS", "EVENT_SOURCES", "FIXED_NORMALISATION", "NORMALISATIONS",
           "SHAPES", "Augment", "CifarSource", "DataShape", "Dataset", "EventSource",
           "MissingExtraError", "augment_batch", "augment_draws", "cache_dir", "digits_dvs_events", "download_file",
           "frames_for", "get", "is_event_data", "read_recording", "register", "split_per_class", "to_model_input"]



def get(name: str, *, root: str | Path | None = None, frames: int | None = None, download: bool = False,
        seed: int = 0, normalisation: str = "dataset") -> Dataset:
    """Load dataset ``name``. ``root``: folder with the real dataset's files; ``frames``: number of event
    frames per sample for event datasets (SNN: T, ANN: 1; see ``frames_for``); ``seed``: for generated
    datasets; ``normalisation``: ``"dataset"`` (the training set's per-channel mean and std) or ``"fixed"``
    (the released code's constants, ``FIXED_NORMALISATION``; CIFAR only)."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}") from None
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {', '.join(NORMALISATIONS)}, got {normalisation!r}")
    if normalisation == "fixed" and name not in FIXED_NORMALISATION:
        raise ValueError(f"normalisation='fixed' (the released code's constants) is defined for "
                         f"{', '.join(FIXED_NORMALISATION)} only, not {name}; use normalisation='dataset' "
                         "(the training set's statistics)")
    if root is not None and not download and name in _READS_ROOT:
        root = Path(root).expanduser()
        if not root.is_dir():
            what = "is not a folder" if root.exists() else "does not exist"
            raise FileNotFoundError(f"data folder {str(root)!r} {what}; pass the folder that holds the {name} "
                                    f"files as root= (--data-root), or download=True (--download)")
    return loader(root=root, frames=frames, download=download, seed=seed, normalisation=normalisation)


# --------------------------------------------------------------------------------------------------------
# digits and digits-dvs (embedded: scikit-learn ships the images)
# --------------------------------------------------------------------------------------------------------


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits as intensities in [0, 1] ``[N, 8, 8]``, labels, and the fixed stratified 80/20
    split (train and test indices) that ``digits`` and ``digits-dvs`` share."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    y = d.target.astype(np.int64)
    tr, te = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=0)
    return d.images.astype(np.float64) / 16.0, y, tr, te


@register("digits")
def load_digits(root=None, frames=None, download=False, seed=0, normalisation="dataset") -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), a fixed stratified 80/20 split.

    The embedded default: ships with scikit-learn, so every command runs without a network. Intensities
    are standardised with the training set's mean and std. ``frames`` is ignored (static images: an SNN
    repeats the image at every step).
    """
    x, y, tr, te = _digits()
    xtr, xte, stats = _standardise(x[tr, None], x[te, None])
    return Dataset("digits", xtr, torch.from_numpy(y[tr]), xte, torch.from_numpy(y[te]), 10,
                   augment=Augment(pad=1, flip=False, fill=tuple(stats["black"])),
                   meta={"normalisation": stats, "split": "stratified 80/20"})


#: digits-dvs recording setup: the 8x8 digit, bilinearly upsampled x2 to 16x16, moves by up to 4 px along
#: three saccades (``events.Saccades`` defaults: 3 x 100 ms) in front of a 20x20 DVS.
DIGITS_DVS_UPSAMPLE = 2
DIGITS_DVS_SENSOR = (20, 20, 2)
_DIGITS_DVS_VERSION = 1


def digits_dvs_events(seed: int = 0, cache: Path | None = None, progress: bool = True) -> list[np.ndarray]:
    """The digits-dvs recordings for ``seed``: one event array (tonic's dtype) per scikit-learn digit, in
    the dataset's order. Simulated once (``events.simulate_saccades``) and cached atomically as ``.npz``."""
    from . import events as ev

    pixel, sacc = ev.PixelModel(), ev.Saccades()
    params = (_DIGITS_DVS_VERSION, DIGITS_DVS_UPSAMPLE, DIGITS_DVS_SENSOR, pixel, sacc)
    key = hashlib.sha1(repr(params).encode()).hexdigest()[:12]
    path = (cache or cache_dir()) / "digits-dvs" / f"events-seed{seed}-{key}.npz"
    if path.exists():
        try:
            z = read_npz(path)
            flat, offsets = z["events"], z["offsets"]
            return [flat[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # unreadable cache (e.g. from an older numpy): simulate again and overwrite it
    images, _, _, _ = _digits()
    up = torch.nn.functional.interpolate(torch.from_numpy(images).float()[:, None], mode="bilinear",
                                         scale_factor=DIGITS_DVS_UPSAMPLE, align_corners=False)
    recs = ev.simulate_saccades(up[:, 0].clamp(0, 1).numpy(), DIGITS_DVS_SENSOR[:2], seed, pixel, sacc,
                                progress=progress)
    offsets = np.cumsum([0] + [len(r) for r in recs])
    flat = np.concatenate(recs)
    atomic_write_stream(path, lambda f: np.savez(f, events=flat, offsets=offsets))
    return recs


def _frames_of(recordings: list[np.ndarray], sensor: tuple[int, int, int], T: int) -> np.ndarray:
    from .events import events_to_frames

    return np.stack([events_to_frames(r, sensor, T) for r in recordings])


@register("digits-dvs", events=True)
def load_digits_dvs(root=None, frames=None, download=False, seed=0, normalisation="dataset") -> Dataset:
    """Synthetic event-camera digits: scikit-learn's digits recorded by a simulated DVS (embedded).

    Every digit, upsampled to 16x16, moves along three saccades in front of a simulated 20x20 DVS (see
    ``events``); its events are integrated into ``frames`` equal-duration frames (default 10; 1 for an
    ANN: all events in one frame) of 2 polarity channels.

    Frames hold event counts, standardised per polarity channel with the training set's mean and std
    (over samples, frames and pixels). Same train/test split as ``digits``. ``seed`` draws the sensor and
    its noise; events are cached under ``root`` if given, else ``cache_dir()``.
    """
    T = _frames_arg(frames)
    recs = digits_dvs_events(seed, Path(root) if root is not None else None)
    _, y, tr, te = _digits()
    x = _frames_of(recs, DIGITS_DVS_SENSOR, T)
    xtr, xte, stats = _standardise(x[tr], x[te])
    return Dataset("digits-dvs", xtr, torch.from_numpy(y[tr]), xte, torch.from_numpy(y[te]), 10,
                   augment=Augment(pad=2, flip=False, fill=tuple(stats["black"])),
                   meta={"normalisation": stats, "sensor_size": DIGITS_DVS_SENSOR, "seed": seed,
                         "events": int(sum(len(r) for r in recs)), "split": "stratified 80/20 (as digits)"})
