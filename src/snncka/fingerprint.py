"""What a result was computed from, as one short hash: the content of every file it read (checkpoints,
training logs) and the settings it was computed with. The runner saves it with each result and reuses a saved
result only when the fingerprint of its inputs is unchanged, so a rerun with other epochs, other CKA images or
retrained models never shows numbers of the old ones.

A file is hashed once per (path, size, mtime) in a process: a rerun that reads the same checkpoint for several
analyses pays for one read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["file_sha256", "fingerprint"]

_FILE_HASHES: dict[tuple[str, int, int], str] = {}
_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex), remembered by (resolved path, size, mtime_ns)."""
    p = Path(path).resolve()
    st = os.stat(p)
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                h.update(chunk)
        _FILE_HASHES[key] = h.hexdigest()
    return _FILE_HASHES[key]


def fingerprint(obj: Any, known: Callable[[Any], str | None] = lambda _: None) -> str:
    """A hash of ``obj``: numbers, strings, lists, dicts, dataclasses and arrays by value, an existing file
    (a ``Path``) by its content (not its name), a function by its qualified name. ``known(x)`` may give the
    fingerprint of an object already known (a result by the inputs it was computed from); other objects are
    hashed by their ``repr``."""
    return hashlib.sha256(json.dumps(_plain(obj, known), sort_keys=True).encode()).hexdigest()


def _plain(v: Any, known: Callable[[Any], str | None]) -> Any:
    """``v`` as plain JSON values that identify it (see ``fingerprint``)."""
    fp = known(v)
    if fp is not None:
        return {"fingerprint": fp}
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        return repr(v)  # exact, and NaN/inf are JSON strings
    if isinstance(v, Path):
        return {"file": file_sha256(v)} if v.is_file() else {"path": str(v)}
    if isinstance(v, np.ndarray | np.generic):
        a = np.ascontiguousarray(v)
        return {"array": [str(a.dtype), list(a.shape), hashlib.sha256(a.tobytes()).hexdigest()]}
    if isinstance(v, dict):
        return {"dict": sorted([str(k), _plain(x, known)] for k, x in v.items())}
    if isinstance(v, list | tuple):
        return [_plain(x, known) for x in v]
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {type(v).__qualname__: _plain({f.name: getattr(v, f.name) for f in dataclasses.fields(v)}, known)}
    if callable(v) and hasattr(v, "__qualname__"):
        return {"function": f"{getattr(v, '__module__', '')}.{v.__qualname__}"}
    return {"repr": repr(v)}
