"""Reading files without trusting them: JSON, ``.npz`` and zip containers (checkpoints) are checked for
structure, integrity (zip CRC-32), declared sizes (against the file's own size and the memory this process
may still use) and nesting depth before anything is built from them.

Every rejection is a ``BadFileError``: one line that names the file and what is wrong with it, so a command
can print it as its ``Error:`` line and a report can skip the file with one warning.
"""

from __future__ import annotations

import json
import math
import os
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MAX_JSON_BYTES", "MAX_JSON_DEPTH", "BadFileError", "memory_available", "read_json", "read_npz",
           "verify_zip"]

MAX_JSON_DEPTH = 64  # snncka's own files nest at most ~8 levels
MAX_JSON_BYTES = 256 * 2**20
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")


class BadFileError(ValueError):
    """A file that is malformed, corrupt, or declares more than it holds or than memory allows."""


def _reject(path: str | Path, what: str) -> BadFileError:
    return BadFileError(f"{str(path)!r} {what}")


def _own_cgroup() -> list[tuple[Path, Path]]:
    """(limit, usage) files of this process's own cgroup (v2), where it is not the root one."""
    try:
        line = Path("/proc/self/cgroup").read_text().splitlines()[0]
        base = Path("/sys/fs/cgroup") / line.split("::", 1)[1].lstrip("/")
    except (OSError, IndexError):
        return []
    return [(base / "memory.max", base / "memory.current")]


def memory_available() -> int:
    """Bytes this process may still allocate: the smallest of the machine's available memory (MemAvailable, else
    the free pages) and what its cgroups (a container's or a batch job's memory limit, v2 or v1) have left.
    Unknown limits count as unlimited. The one reader of free RAM: ``snncka.memory`` uses it too."""
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    if not limits:
        try:
            limits.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, AttributeError):
            pass
    for cap, used in (*_own_cgroup(), (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")),
                      (Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
                       Path("/sys/fs/cgroup/memory/memory.usage_in_bytes"))):
        try:
            limits.append(int(cap.read_text()) - int(used.read_text()))
        except (OSError, ValueError):  # absent, or "max"
            continue
    return max(0, min(limits)) if limits else 2**63


def check_fits(nbytes: int, path: str | Path, what: str) -> None:
    """Refuse ``nbytes`` of ``what`` from ``path`` when they would not fit in the memory left."""
    free = memory_available()
    if nbytes > free:
        raise _reject(path, f"declares {what} of {nbytes / 2**30:.3g} GiB, more than the {free / 2**30:.3g} GiB "
                            "of memory available; it is corrupt or not meant for this machine")


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays/objects in JSON text ``raw`` (brackets inside strings do not count)."""
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", raw))
    if not brackets:
        return 0
    steps = np.frombuffer(brackets, np.uint8)
    return int(np.cumsum(np.where((steps == ord("[")) | (steps == ord("{")), 1, -1)).max())


def read_json(path: str | Path, *, max_depth: int = MAX_JSON_DEPTH, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The parsed JSON of ``path``, refused (``BadFileError``) when it is larger than ``max_bytes``, nested
    deeper than ``max_depth``, not UTF-8 or not JSON. (Python's parser recurses: a deeply nested file would
    end in a ``RecursionError``.)"""
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise _reject(path, f"is {size / 2**20:.0f} MiB, more than the {max_bytes / 2**20:.0f} MiB a snncka JSON "
                            "file may be; it is not a snncka file")
    raw = path.read_bytes()
    depth = json_depth(raw)
    if depth > max_depth:
        raise _reject(path, f"nests {depth} levels deep, more than the {max_depth} a snncka JSON file may; it is "
                            "corrupt or not a snncka file")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _reject(path, "is not UTF-8 text, so not JSON; it is corrupt or not a snncka file") from None
    except (ValueError, RecursionError) as e:
        raise _reject(path, f"is not valid JSON ({e}); it is truncated, corrupt or not a snncka file") from None


def _zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
        raise _reject(path, f"is not a readable zip file ({e}); it is truncated or corrupt") from None


def _check_members(path: Path, z: zipfile.ZipFile) -> None:
    """Declared sizes: members that inflate beyond the memory left (a zip bomb) are refused."""
    total = sum(i.file_size for i in z.infolist())
    check_fits(total, path, "contents")


def verify_zip(path: str | Path) -> None:
    """Check every member of the zip file ``path`` against its CRC-32 (a flipped bit anywhere in the data is
    found; torch's own reader does not check) and its declared sizes; ``BadFileError`` if one fails."""
    path = Path(path)
    with _zip(path) as z:
        _check_members(path, z)
        try:
            bad = z.testzip()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error, NotImplementedError) as e:
            raise _reject(path, f"is corrupt ({e})") from None
        if bad is not None:
            raise _reject(path, f"is corrupt: its member {bad!r} fails its CRC-32 check (the file was damaged "
                                "after it was written)")


def _npy_header(f: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    raise ValueError(f"unsupported .npy format version {version}")


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` file ``path`` (as ``np.load`` names them), each checked before it is
    allocated: a plain numeric dtype, a header whose shape and dtype need exactly the bytes its member holds,
    all of them within the memory left, every member's CRC-32. ``BadFileError`` for anything else."""
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    with _zip(path) as z:
        _check_members(path, z)
        try:
            for info in z.infolist():
                name = info.filename.removesuffix(".npy")
                with z.open(info) as f:
                    shape, fortran, dtype = _npy_header(f)
                    if dtype.hasobject:
                        raise _reject(path, f"holds array {name!r} of Python objects; snncka writes numbers only")
                    need = math.prod(shape) * dtype.itemsize
                    if need + f.tell() != info.file_size:
                        raise _reject(path, f"declares array {name!r} of shape {shape} and dtype {dtype} "
                                            f"({need} bytes), but holds {info.file_size - f.tell()} bytes; it is "
                                            "corrupt")
                with z.open(info) as f:
                    out[name] = np.lib.format.read_array(f, allow_pickle=False)
                    f.read()  # the end of the member: where zipfile checks its CRC-32
        except BadFileError:
            raise
        except zipfile.BadZipFile as e:
            raise _reject(path, f"is corrupt ({e}): it was damaged after it was written") from None
        except (OSError, ValueError, EOFError, zlib.error, NotImplementedError) as e:
            raise _reject(path, f"is not a readable .npz file ({e}); it is truncated or corrupt") from None
    return out
