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
import os
import pickle
import tarfile
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

from .cifar_batches import read_batch, read_batch_file, stream_archive
from .events import MissingExtraError
from .files import atomic_write_stream
from .readers import read_npz
from .recipes import RELEASED_NORMALISATION

__all__ = ["CIFAR", "DATASETS", "EVENT_SOURCES", "FIXED_NORMALISATION", "NORMALISATIONS", "Augment", "Dataset",
           "MissingExtraError", "augment_batch", "augment_draws", "cache_dir", "digits_dvs_events", "download_file",
           "frames_for", "get", "read_recording", "register", "split_per_class", "to_model_input"]


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
    from the padding are set to zero (no padded copy of the batch is made).
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
        out = torch.where(inside.reshape(b, 1, h * w), out, out.new_zeros(()))
    return out.reshape(x.shape)


# --------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------

Loader = Callable[..., Dataset]
DATASETS: dict[str, Loader] = {}
_READS_ROOT: set[str] = set()


def register(name: str, *, reads_root: bool = False) -> Callable[[Loader], Loader]:
    """Register a loader ``fn(root, frames, download, seed, normalisation) -> Dataset`` as dataset ``name``.
    ``reads_root``: its files are read from ``root`` (``get`` then checks that the folder exists)."""
    def deco(fn: Loader) -> Loader:
        DATASETS[name] = fn
        if reads_root:
            _READS_ROOT.add(name)
        return fn

    return deco


#: ``normalisation="fixed"``: per-channel (mean, std) of pixel values in [0, 1] from the authors' released
#: code (its CIFAR loaders' ``Normalize``), which differ from the training sets' own statistics (e.g. the
#: CIFAR-10 std there is ~0.20, the data's ~0.25). One table, kept with the recipes that choose it.
FIXED_NORMALISATION = RELEASED_NORMALISATION
NORMALISATIONS = ("dataset", "fixed")


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
    if isinstance(frames, bool) or not isinstance(frames, int | np.integer) or frames < 1:
        raise ValueError(f"frames must be a positive integer (SNN: T frames, ANN: 1), got {frames!r}")
    return int(frames)


def _standardise(train: np.ndarray, test: np.ndarray,
                 fixed: tuple[Sequence[float], Sequence[float]] | None = None) -> tuple[Tensor, Tensor, dict]:
    """Per-channel mean/std of the training set (channel axis -3, statistics over every other axis, i.e.
    samples, frames and pixels) applied to both splits; float32 tensors plus the statistics for ``meta``.
    ``fixed``: use these (mean, std) instead (in the inputs' units; ``meta`` says which mode).

    The statistics are accumulated in float64 over chunks of samples (two passes: mean, then squared
    deviations), so large datasets need no float64 copy. Float32 inputs are standardised in place: pass
    arrays the caller owns (fresh copies).
    """
    ax, channels = train.ndim - 3, train.shape[train.ndim - 3]
    shape = [1] * train.ndim
    shape[ax] = -1

    def f(a: np.ndarray, m: np.ndarray, s: np.ndarray) -> Tensor:
        out = a.astype(np.float32, copy=False)
        out -= m.reshape(shape).astype(np.float32)
        out /= s.reshape(shape).astype(np.float32)
        return torch.from_numpy(out)

    if fixed is not None:
        mean, std = (np.asarray(v, np.float64) for v in fixed)
        if mean.shape != (channels,) or std.shape != (channels,) or not np.all(std > 0):
            raise ValueError(f"fixed normalisation needs {channels} means and {channels} positive stds, got "
                             f"{fixed}")
        return f(train, mean, std), f(test, mean, std), {"mode": "fixed", "mean": mean.tolist(),
                                                         "std": std.tolist()}
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
            {"mode": "dataset", "mean": mean.tolist(), "std": std.tolist()})


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
                   augment=Augment(pad=1, flip=False),
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


@register("digits-dvs")
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
                   augment=Augment(pad=2, flip=False),
                   meta={"normalisation": stats, "sensor_size": DIGITS_DVS_SENSOR, "seed": seed,
                         "events": int(sum(len(r) for r in recs)), "split": "stratified 80/20 (as digits)"})


# --------------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100: the "python version" archives, read with a restricted unpickler
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CifarSource:
    archive: str
    folder: str
    url: str
    md5: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: bytes
    num_classes: int


CIFAR: dict[str, CifarSource] = {
    "cifar10": CifarSource("cifar-10-python.tar.gz", "cifar-10-batches-py",
                           "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                           "c58f30108f718f92721af3b95e74349a",
                           tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), b"labels", 10),
    "cifar100": CifarSource("cifar-100-python.tar.gz", "cifar-100-python",
                            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                            "eb9058c3a382ffc7106e4002c42a8d85", ("train",), ("test",), b"fine_labels", 100),
}


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def download_file(url: str, dest: Path, md5: str) -> Path:
    """Download ``url`` to ``dest``, verifying its MD5, atomically: on any failure (network, checksum) no
    file is left behind."""
    from urllib.error import URLError
    from urllib.request import urlopen

    from tqdm.auto import tqdm

    def write(f: BinaryIO) -> None:
        h = hashlib.md5(usedforsecurity=False)
        with urlopen(url, timeout=60) as r:
            size = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=size, unit="B", unit_scale=True, desc=f"download {dest.name}") as bar:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
        if h.hexdigest() != md5:
            raise ValueError(f"downloaded {url} but its MD5 is {h.hexdigest()}, expected {md5}: the file "
                             f"is corrupt and was not kept; retry, or put a verified {dest.name} into "
                             f"{dest.parent}")

    try:
        atomic_write_stream(dest, write)
    except URLError as e:
        raise RuntimeError(f"could not download {url} ({e.reason}); without a network, copy {dest.name} "
                           f"into {dest.parent} yourself") from e
    return dest


def _cifar_help(src: CifarSource, root: Path | None) -> str:
    where = str(root) if root is not None else "DIR"
    return (f"put {src.archive} (from {src.url}, MD5 {src.md5}) or its extracted folder {src.folder}/ into "
            f"{where} and pass root={where!r} (--data-root {where}), or pass download=True (--download) on a "
            "machine with a network")


def _load_cifar(name: str, root, download: bool, normalisation: str = "dataset") -> Dataset:
    src = CIFAR[name]
    if root is None:
        raise ValueError(f"{name} needs a data folder: {_cifar_help(src, None)}")
    root = Path(root).expanduser()
    files = src.train + src.test
    folder = next((d for d in (root / src.folder, root) if all((d / f).is_file() for f in files)), None)
    archive = root / src.archive
    if folder is None and not archive.is_file():
        if not download:
            raise FileNotFoundError(f"{name} not found in {root}: {_cifar_help(src, root)}")
        download_file(src.url, archive, src.md5)
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if folder is not None:
        for f in files:
            try:
                parts[f] = read_batch(read_batch_file(folder / f), src.label_key, src.num_classes,
                                      str(folder / f))
            except (EOFError, OSError, ValueError, pickle.UnpicklingError) as e:
                raise ValueError(f"{folder / f} is corrupt ({type(e).__name__}: {e}); extract {src.folder}/ "
                                 f"again from {src.archive} (MD5 {src.md5}, from {src.url})") from e
    else:
        try:
            for f, raw in stream_archive(archive, src.folder, files):  # bounded: no archive bomb
                parts[f] = read_batch(raw, src.label_key, src.num_classes, f"{archive}:{src.folder}/{f}")
        except (tarfile.TarError, EOFError, OSError, KeyError, ValueError, pickle.UnpicklingError) as e:
            raise ValueError(f"{archive} is corrupt or incomplete ({type(e).__name__}: {e}; its MD5 is "
                             f"{_md5(archive)}, the published one {src.md5}); delete it and "
                             f"{_cifar_help(src, root)}") from e
    xtr = np.concatenate([parts[f][0] for f in src.train])
    ytr = np.concatenate([parts[f][1] for f in src.train])
    xte = np.concatenate([parts[f][0] for f in src.test])
    yte = np.concatenate([parts[f][1] for f in src.test])
    fixed = None
    if normalisation == "fixed":  # the constants are for pixels in [0, 1]; the arrays hold 0..255
        fixed = tuple(tuple(255.0 * v for v in vs) for vs in FIXED_NORMALISATION[name])
    xtr_t, xte_t, stats = _standardise(xtr, xte, fixed)
    return Dataset(name, xtr_t, torch.from_numpy(ytr), xte_t, torch.from_numpy(yte), src.num_classes,
                   augment=Augment(pad=4, flip=True),
                   meta={"normalisation": stats, "source": str(folder or archive), "split": "official"})


@register("cifar10", reads_root=True)
def load_cifar10(root=None, frames=None, download=False, seed=0, normalisation="dataset") -> Dataset:
    """CIFAR-10: 50000/10000 32x32 RGB images, 10 classes, the official split.

    Read from ``cifar-10-python.tar.gz`` or ``cifar-10-batches-py/`` in ``root``; per-channel standardised
    with the training mean/std, or the released code's constants (``normalisation="fixed"``)."""
    return _load_cifar("cifar10", root, download, normalisation)


@register("cifar100", reads_root=True)
def load_cifar100(root=None, frames=None, download=False, seed=0, normalisation="dataset") -> Dataset:
    """CIFAR-100: 50000/10000 32x32 RGB images, 100 (fine) classes, the official split.

    Read from ``cifar-100-python.tar.gz`` or ``cifar-100-python/`` in ``root``, standardised like CIFAR-10."""
    return _load_cifar("cifar100", root, download, normalisation)


# --------------------------------------------------------------------------------------------------------
# CIFAR10-DVS and N-Caltech101: event recordings in tonic's layout, integrated into frames
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventSource:
    """Where tonic keeps an event dataset (``root/<tonic_folder>/<subfolder>/<class>/<recording>``), its
    recordings' file type and sensor (tonic's ``(width, height, polarities)``), and the frame size."""

    name: str
    tonic_folder: str
    subfolder: str
    suffix: str
    sensor: tuple[int, int, int]
    size: tuple[int, int]
    help: str


EVENT_SOURCES: dict[str, EventSource] = {
    "cifar10-dvs": EventSource(
        "cifar10-dvs", "CIFAR10DVS", "", ".aedat4", (128, 128, 2), (48, 48),
        "the CIFAR10-DVS recordings as AEDAT4 files in class folders airplane/ .. truck/ (tonic's layout: "
        "ROOT/CIFAR10DVS/<class>/*.aedat4 -- unpack CIFAR10DVS.zip from https://figshare.com/ndownloader/"
        "files/38023437 and the per-class zips inside it)"),
    "ncaltech101": EventSource(
        "ncaltech101", "NCALTECH101", "Caltech101", ".bin", (240, 180, 2), (48, 48),
        "the N-Caltech101 recordings as .bin files in class folders (tonic's layout: "
        "ROOT/NCALTECH101/Caltech101/<class>/image_*.bin -- unpack Caltech101.zip from the N-Caltech101 "
        "archive at https://data.mendeley.com/datasets/cy6cvx3ryv)"),
}
CIFAR10_DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                       "truck")
_EVENT_VERSION = 1  # frames are unchanged by the numpy readers and the area pool: old caches stay valid


def read_recording(name: str, path: str | Path) -> np.ndarray:
    """One recording of event dataset ``name`` as a structured array in ``events.EVENT_DTYPE`` (x, y,
    t [us], p), as tonic's dataset classes return it.

    CIFAR10-DVS: ``events.read_aedat4`` (needs the ``aedat`` package: ``pip install 'snncka[events]'``).
    N-Caltech101: ``events.read_nmnist_bin``, then shifted so the smallest x and y are 0 (as tonic's
    NCALTECH101 does).
    """
    from .events import read_aedat4, read_nmnist_bin

    if name == "cifar10-dvs":
        try:
            return read_aedat4(path)[0]
        except MissingExtraError as e:
            raise MissingExtraError(f"{name} needs the aedat package to read its AEDAT4 recordings: pip "
                                    "install 'snncka[events]'") from e
    if name == "ncaltech101":
        ev = read_nmnist_bin(path)
        if ev.size:
            ev["x"] -= ev["x"].min()
            ev["y"] -= ev["y"].min()
        return ev
    raise ValueError(f"no event reader for {name!r}; known: {', '.join(EVENT_SOURCES)}")


def _recording_frames(args: tuple[str, str, int]) -> tuple[np.ndarray, int]:
    """One recording -> ``[T, 2, H, W]`` float32 frames at the dataset's frame size, and the number of its
    events that fell outside the sensor and were dropped (also the worker function of the process pool)."""
    from .events import event_frames

    name, path, T = args
    src = EVENT_SOURCES[name]
    try:
        ev = read_recording(name, path)
    except MissingExtraError:
        raise
    except Exception as e:
        raise ValueError(f"cannot read {path} as a {name} recording ({type(e).__name__}: {e}); replace the "
                         "file with an intact copy") from e
    w, h, _ = src.sensor
    inside = (ev["x"] < w) & (ev["y"] < h)
    n_inside = int(np.count_nonzero(inside))
    if n_inside < ev.size:
        ev = ev[inside]
    return event_frames(ev, src.sensor, T, src.size), int(inside.size - n_inside)


def _find_recordings(src: EventSource, root: Path) -> tuple[Path, list[Path]]:
    for base in (root / src.tonic_folder / src.subfolder, root / src.subfolder, root):
        if base.is_dir():
            files = sorted(p for p in base.rglob(f"*{src.suffix}") if p.is_file() and p.parent != base)
            if files:
                return base, files
    return root, []


def split_per_class(labels: np.ndarray, test_fraction: float = 0.1,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fixed train/test indices: in every class, a seeded random ``test_fraction`` (rounded, at least one
    when the class has two or more recordings) goes to the test set (the paper's 9:1 convention)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(test_fraction * len(idx)))
        k = max(k, 1) if len(idx) >= 2 else 0
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _load_events(name: str, root, frames: int | None, download: bool, workers: int | None = None) -> Dataset:
    src = EVENT_SOURCES[name]
    T = _frames_arg(frames)
    if root is None:
        raise ValueError(f"{name} needs a data folder: put {src.help.replace('ROOT', 'DIR')} and pass "
                         "root=DIR (--data-root DIR)")
    root = Path(root).expanduser()
    base, files = _find_recordings(src, root)
    if not files and download:
        try:
            import tonic.datasets
        except ImportError as e:
            raise MissingExtraError(f"downloading {name} needs tonic: pip install 'snncka[events]'") from e

        {"cifar10-dvs": tonic.datasets.CIFAR10DVS, "ncaltech101": tonic.datasets.NCALTECH101}[name](str(root))
        base, files = _find_recordings(src, root)
    if not files:
        raise FileNotFoundError(f"no {name} recordings ({src.suffix} files in class folders) under {root}: "
                                f"put {src.help.replace('ROOT', str(root))}, or pass download=True "
                                "(--download) to let tonic fetch them")
    class_names = [p.parent.name for p in files]
    if name == "cifar10-dvs":
        unknown = sorted(set(class_names) - set(CIFAR10_DVS_CLASSES))
        if unknown:
            raise ValueError(f"unexpected CIFAR10-DVS class folders {unknown} in {base}; expected "
                             f"{', '.join(CIFAR10_DVS_CLASSES)}")
        classes = list(CIFAR10_DVS_CLASSES)
    else:
        classes = sorted(set(class_names))
    labels = np.array([classes.index(c) for c in class_names], np.int64)

    stats = [(str(p.relative_to(base)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    key = hashlib.sha1(repr((_EVENT_VERSION, src, T, str(base.resolve()), stats)).encode()).hexdigest()[:16]
    path = cache_dir() / name / f"frames-T{T}-{key}.npz"
    x = None
    if path.exists():
        try:
            z = read_npz(path)
            x, outside = z["x"], int(z["outside"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            x = None
        if x is not None and x.shape != (len(files), T, src.sensor[2], *src.size):
            x = None
    if x is None:
        x, outside = _integrate_all(name, files, T, workers)
        atomic_write_stream(path, lambda f, x=x, n=outside: np.savez(f, x=x, outside=n))
    if outside:
        warnings.warn(f"{outside} {name} events lay outside the {src.sensor[0]}x{src.sensor[1]} sensor and "
                      "were dropped", stacklevel=3)
    tr, te = split_per_class(labels)
    xtr_raw, xte_raw = x[tr], x[te]
    del x  # peak memory: one copy of the frames besides the split
    xtr, xte, norm = _standardise(xtr_raw, xte_raw)
    return Dataset(name, xtr, torch.from_numpy(labels[tr]), xte, torch.from_numpy(labels[te]), len(classes),
                   augment=Augment(pad=4, flip=True),
                   meta={"normalisation": norm, "classes": classes, "source": str(base),
                         "sensor_size": src.sensor, "split": "9:1 per class (seed 0)", "cache": str(path),
                         "events_outside_sensor": outside})


def _pool_context():
    """How pool workers start: ``fork`` where the OS has it (instant, nothing re-imported; the workers run
    numpy only, never torch, as PyTorch's own DataLoader workers fork), else ``spawn`` (each worker imports
    snncka and torch, ~1.5 s, and the main script needs an ``if __name__ == "__main__"`` guard)."""
    import multiprocessing

    return multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")


def _default_workers(n_recordings: int) -> int:
    """Worker processes for integrating ``n_recordings``: one per core available to this process (at most
    8) when there are enough recordings to repay starting them, else 1 (in-process; several hundred
    recordings/s)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    enough = _MIN_PARALLEL if _pool_context().get_start_method() == "fork" else 10 * _MIN_PARALLEL
    return min(8, cores) if cores >= 2 and n_recordings >= enough else 1


_MIN_PARALLEL = 256  # fewer recordings than this are integrated in-process (10x that where workers spawn)


def _keep_freed_memory() -> None:
    """Let the allocator keep a recording's temporaries between recordings.

    Integrating one recording allocates ~10-20 MB of event-sized temporaries. glibc's malloc hands blocks
    over its mmap threshold (128 KiB at start) back to the system when they are freed, so every recording
    page-faults them in again: that tripled the time per recording. Freeing one block of 24 MiB makes glibc
    raise its mmap and trim thresholds to that size (its documented dynamic threshold, mallopt(3)), after
    which freed temporaries stay in the heap for the next recording. The block is never touched (no
    memory is used), and other allocators simply ignore it. Any large numpy temporary has the same effect.
    """
    block = np.empty(3 << 20)
    del block


def _worker_setup() -> None:
    """Pool worker set-up: one BLAS/OpenMP thread, so the workers do not oversubscribe the cores."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    _keep_freed_memory()


def _integrate_all(name: str, files: list[Path], T: int, workers: int | None) -> tuple[np.ndarray, int]:
    """All recordings -> ``[N, T, 2, H, W]`` and the number of dropped out-of-sensor events; in this
    process, or in ``workers`` processes (default: ``_default_workers``; see ``_pool_context``), each with
    one BLAS/OpenMP thread so that they never oversubscribe the cores."""
    from tqdm.auto import tqdm

    src = EVENT_SOURCES[name]
    jobs = [(name, str(p), T) for p in files]
    workers = _default_workers(len(jobs)) if workers is None else workers
    out = np.empty((len(jobs), T, src.sensor[2], *src.size), np.float32)
    outside = 0
    bar = tqdm(total=len(jobs), desc=f"{name}: events -> {T} frames", unit="rec")
    with bar:
        if workers <= 1:
            _keep_freed_memory()
            results = map(_recording_frames, jobs)
            pool = None
        else:
            from concurrent.futures import ProcessPoolExecutor

            pool = ProcessPoolExecutor(workers, mp_context=_pool_context(), initializer=_worker_setup)
            results = pool.map(_recording_frames, jobs, chunksize=max(1, min(64, len(jobs) // (4 * workers))))
        try:
            for i, (frames, n) in enumerate(results):
                out[i] = frames
                outside += n
                bar.update()
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    return out, outside


@register("cifar10-dvs", reads_root=True)
def load_cifar10_dvs(root=None, frames=None, download=False, seed=0, normalisation="dataset") -> Dataset:
    """CIFAR10-DVS: 10000 DVS recordings (128x128), 10 classes, AEDAT4 files in tonic's folder layout.

    Read from ``root`` (AEDAT4 needs the ``snncka[events]`` extra) into ``frames`` equal-duration frames
    (default 10; 1 for an ANN: all events), area-resized to 48x48, standardised per polarity channel with
    the training statistics; fixed 9:1 per-class split. Integrated frames are cached."""
    return _load_events("cifar10-dvs", root, frames, download)


@register("ncaltech101", reads_root=True)
def load_ncaltech101(root=None, frames=None, download=False, seed=0, normalisation="dataset") -> Dataset:
    """N-Caltech101: 8709 ATIS recordings, 101 class folders, .bin files in tonic's folder layout.

    Read from ``root``. All 101 folders (incl. BACKGROUND_Google) are classes, in sorted order. Events are
    shifted to start at (0, 0) (as tonic does) and integrated on a fixed 240x180 sensor (N-Caltech101's image
    size bound), then like CIFAR10-DVS: ``frames`` frames area-resized to 48x48, standardised, 9:1 split."""
    return _load_events("ncaltech101", root, frames, download)
