"""CIFAR-10 and CIFAR-100: the "python version" archives (or their extracted folders), read with a restricted
unpickler; ``download_file`` fetches them with the published MD5 checked. Registered on import (``snncka.data``
imports this module)."""


from __future__ import annotations

import hashlib
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from .cifar_batches import read_batch, read_batch_file, stream_archive
from .dataset import FIXED_NORMALISATION, Augment, Dataset, _standardise, register
from .files import atomic_write_stream


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
                   augment=Augment(pad=4, flip=True, fill=tuple(stats["black"])),
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

