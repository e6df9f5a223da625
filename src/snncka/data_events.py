"""CIFAR10-DVS and N-Caltech101: event recordings in tonic's layout, read with numpy and integrated into frames
(cached), with a fixed 9:1 split per class. Registered on import."""


from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .dataset import Augment, Dataset, _frames_arg, _standardise, cache_dir, register
from .events import MissingExtraError
from .files import atomic_write_stream
from .readers import read_npz


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
                   augment=Augment(pad=4, flip=True, fill=tuple(norm["black"])),
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


@register("cifar10-dvs", reads_root=True, events=True)
def load_cifar10_dvs(root=None, frames=None, download=False, seed=0, normalisation="dataset") -> Dataset:
    """CIFAR10-DVS: 10000 DVS recordings (128x128), 10 classes, AEDAT4 files in tonic's folder layout.

    Read from ``root`` (AEDAT4 needs the ``snncka[events]`` extra) into ``frames`` equal-duration frames
    (default 10; 1 for an ANN: all events), area-resized to 48x48, standardised per polarity channel with
    the training statistics; fixed 9:1 per-class split. Integrated frames are cached."""
    return _load_events("cifar10-dvs", root, frames, download)


@register("ncaltech101", reads_root=True, events=True)
def load_ncaltech101(root=None, frames=None, download=False, seed=0, normalisation="dataset") -> Dataset:
    """N-Caltech101: 8709 ATIS recordings, 101 class folders, .bin files in tonic's folder layout.

    Read from ``root``. All 101 folders (incl. BACKGROUND_Google) are classes, in sorted order. Events are
    shifted to start at (0, 0) (as tonic does) and integrated on a fixed 240x180 sensor (N-Caltech101's image
    size bound), then like CIFAR10-DVS: ``frames`` frames area-resized to 48x48, standardised, 9:1 split."""
    return _load_events("ncaltech101", root, frames, download)

