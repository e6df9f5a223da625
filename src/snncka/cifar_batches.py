"""Reading a batch file of the CIFAR-10/100 "python version" archives without trusting it.

The batches are pickles (a dict with ``data``, a uint8 ``[N, 3072]`` numpy array, and a list of labels).
Unpickling runs whatever callables a file names, so a restricted unpickler admits only the few numpy and
codec globals these files use, and builds arrays through a checked stand-in: a tampered file can neither
run code nor make numpy allocate more memory than the file's own bytes (a crafted shape would otherwise ask
for terabytes). Every problem is a ``ValueError`` or ``pickle.UnpicklingError`` naming the file.
"""

from __future__ import annotations

import io
import math
import pickle
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["batch_file_limit", "read_batch", "read_batch_file", "stream_archive"]

_IMAGE_BYTES = 3072
_PER_IMAGE_EXTRA = 256  # a label or two and a file name per image, pickled
_OTHER_BYTES = 1 << 20  # the archives' small files (batches.meta, readme.html)


def batch_file_limit(name: str) -> int:
    """The most bytes a batch file of the "python version" archives may have: CIFAR-100's ``train`` holds
    50,000 images, every other batch file 10,000 (3,072 bytes each, plus labels and file names)."""
    images = 50_000 if name == "train" else 10_000
    return images * (_IMAGE_BYTES + _PER_IMAGE_EXTRA) + _OTHER_BYTES


def read_batch_file(path: Path) -> bytes:
    """The bytes of an extracted batch file, refused (``ValueError``) if larger than such a file can be."""
    size, limit = path.stat().st_size, batch_file_limit(path.name)
    if size > limit:
        raise ValueError(f"{path} is {size / 2**20:.0f} MiB, more than a CIFAR batch file can be "
                         f"({limit / 2**20:.0f} MiB)")
    return path.read_bytes()


def stream_archive(archive: Path, folder: str, names: tuple[str, ...]) -> Iterator[tuple[str, bytes]]:
    """``(name, bytes)`` of each batch file ``folder/<name>`` of a ``.tar.gz`` archive, read as one stream.

    Every member's declared size is checked before it is read: a wanted batch file may be as large as
    ``batch_file_limit`` says, and the archive as a whole may inflate to those plus a little for its other
    files. A crafted archive (a "bomb" that inflates to gigabytes) is a ``ValueError`` before it is inflated
    into memory; missing members are a ``KeyError``."""
    wanted = {f"{folder}/{n}": n for n in names}
    budget = sum(batch_file_limit(n) for n in names) + _OTHER_BYTES
    found: set[str] = set()
    with tarfile.open(archive, "r|gz") as tar:
        for member in tar:
            name = wanted.get(member.name)
            limit = batch_file_limit(name) if name is not None else _OTHER_BYTES
            if member.size > min(limit, budget):
                raise ValueError(f"member {member.name} declares {member.size / 2**20:.0f} MiB, more than a "
                                 f"CIFAR archive's file can be ({min(limit, budget) / 2**20:.0f} MiB)")
            budget -= member.size
            if name is None or not member.isfile() or name in found:
                continue
            f = tar.extractfile(member)
            if f is None:
                continue
            yield name, f.read(member.size)
            found.add(name)
            if len(found) == len(wanted):
                return
    missing = [n for n in names if n not in found]
    if missing:
        raise KeyError(f"{folder}/{missing[0]}")


class _PickledArray:
    """Stands in for a pickled numpy array while a CIFAR batch is unpickled: numpy's reduction creates an
    empty array (``_reconstruct(ndarray, (0,), ...)``) and then sets its shape, dtype and bytes. Here the
    state is checked first (a plain numeric dtype, at most 4 dimensions, exactly as many bytes as the shape
    needs), so the array can only be built from bytes that are in the file: a crafted shape cannot make
    numpy allocate terabytes."""

    array: np.ndarray | None = None

    def __setstate__(self, state: object) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("malformed numpy array state in a CIFAR batch")
        _, shape, dtype, fortran, data = state
        if isinstance(data, str):
            data = data.encode("latin1")
        if not (isinstance(shape, tuple) and len(shape) <= 4 and all(type(n) is int and n >= 0 for n in shape)):
            raise pickle.UnpicklingError(f"a CIFAR batch holds an array of shape {shape!r}")
        dtype = _plain_dtype(dtype)
        if not isinstance(data, bytes) or len(data) != math.prod(shape) * dtype.itemsize:
            size = len(data) if isinstance(data, bytes | bytearray) else type(data).__name__
            raise pickle.UnpicklingError(f"a CIFAR batch's array of shape {shape} and dtype {dtype} comes with "
                                         f"{size} bytes of data, not {math.prod(shape) * dtype.itemsize}")
        self.array = np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")


def _plain_dtype(dtype: object) -> np.dtype:
    """``dtype`` if it is a plain numeric numpy dtype (bool, integer, float of at most 8 bytes)."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf" or dtype.itemsize > 8 or dtype.shape:
        raise pickle.UnpicklingError(f"a CIFAR batch holds an array of dtype {dtype!r}; expected plain numbers")
    return dtype


def _new_array(cls: object, shape: object, code: object) -> _PickledArray:
    if cls is not np.ndarray or shape != (0,):
        raise pickle.UnpicklingError(f"unexpected array construction ({shape!r}) in a CIFAR batch")
    return _PickledArray()


def _scalar(dtype: object, data: object) -> np.generic:
    dtype = _plain_dtype(dtype)
    if isinstance(data, str):
        data = data.encode("latin1")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("malformed numpy scalar in a CIFAR batch")
    return np.frombuffer(data, dtype)[0]


def _latin1(text: object, encoding: object = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("unexpected encoding call in a CIFAR batch")
    return text.encode("latin1")


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches (dicts of numpy arrays, lists, bytes) and refuses any other global, so a
    tampered archive cannot run code; arrays and scalars are built by checked stand-ins, so it cannot make
    numpy allocate more than the file holds either."""

    _allowed = {("numpy.core.multiarray", "_reconstruct"): _new_array,
                ("numpy._core.multiarray", "_reconstruct"): _new_array,
                ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                ("numpy.core.multiarray", "scalar"): _scalar, ("numpy._core.multiarray", "scalar"): _scalar,
                ("_codecs", "encode"): _latin1}

    def find_class(self, module: str, name: str):  # noqa: ANN201
        try:
            return self._allowed[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR batch") from None


def _as_array(v: object) -> object:
    if isinstance(v, _PickledArray):
        if v.array is None:
            raise pickle.UnpicklingError("a CIFAR batch holds an array without data")
        return v.array
    return v


def read_batch(raw: bytes, label_key: bytes, num_classes: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch file of the "python version" archives: ``data`` uint8 ``[N, 3072]`` (3 x 32 x 32, channel
    planes) and N labels in ``label_key``, checked against that format."""
    try:
        d = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError):
        raise
    except Exception as e:  # a malformed stream can fail in many ways (TypeError, IndexError, ...)
        raise pickle.UnpicklingError(f"malformed pickle ({type(e).__name__}: {e})") from e
    if not isinstance(d, dict) or b"data" not in d or label_key not in d:
        raise ValueError(f"{what} is not a CIFAR batch (needs keys b'data' and {label_key!r})")
    x, labels = _as_array(d[b"data"]), _as_array(d[label_key])
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        got = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"{what}: expected uint8 data [N, 3072], got {got}")
    if not isinstance(labels, list | np.ndarray) or len(labels) != len(x):
        n = len(labels) if isinstance(labels, list | np.ndarray) else type(labels).__name__
        raise ValueError(f"{what}: expected {len(x)} labels (one per image), got {n}")
    if isinstance(labels, np.ndarray) and (labels.dtype.kind not in "iu" or labels.ndim != 1):
        raise ValueError(f"{what}: labels must be a flat list of integers, got {labels.dtype} {labels.shape}")
    y = labels.astype(np.int64) if isinstance(labels, np.ndarray) else None
    if y is None:
        if not all(type(v) is int and 0 <= v < num_classes for v in labels):
            raise ValueError(f"{what}: labels must be integers in 0..{num_classes - 1}")
        y = np.array(labels, np.int64)
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{what}: labels outside 0..{num_classes - 1}")
    return x.reshape(-1, 3, 32, 32), y
