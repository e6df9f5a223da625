"""Writing files so that nothing is lost: atomic replaces, a clear error on a full disk, stale temp clean-up,
and an OS file lock where two processes could write the same place.

Every writer in snncka (checkpoints, results, figures, caches, reports) goes through this module.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["DiskFullError", "atomic_link_or_copy", "atomic_write", "atomic_write_bytes", "atomic_write_stream",
           "atomic_write_text", "check_writable", "file_lock", "lock_holder", "remove_stale_temps"]

_TMP_SUFFIX = ".tmp"


class DiskFullError(OSError):
    """The disk filled up while writing; the previous version of the file is untouched."""


@functools.cache
def _umask() -> int:
    """The process umask (read once), read without changing it (Linux: /proc; elsewhere assume the usual 022)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _is_disk_full(e: BaseException) -> bool:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    # torch.save's zip writer reports a short write as "unexpected pos" / "PytorchStreamWriter failed"
    text = str(e)
    return isinstance(e, RuntimeError) and ("unexpected pos" in text or "PytorchStreamWriter failed" in text)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` atomically: ``write(tmp)`` on a temp file beside it, fsync, ``os.replace`` onto it.

    Readers see either the old file or the complete new one, never a partial write (also after a crash).
    A full disk raises ``DiskFullError`` naming the file and the free space; the old file stays intact.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        # renaming a hard link onto another link of the same file does nothing (POSIX): the temp name stays
        Path(tmp).unlink(missing_ok=True)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if _is_disk_full(e):
            free = shutil.disk_usage(path.parent).free
            raise DiskFullError(
                errno.ENOSPC,
                f"the disk is full while writing {str(path)!r} ({free / 2**20:.0f} MiB free); the previous "
                "version of the file is intact: free some space and run again",
            ) from e
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_stream(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """``atomic_write`` with ``write`` given the temp file opened for binary writing; creates the folder.

    (Writers such as ``np.savez`` would add ``.npz`` to a temp file's name if given a path.)"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def to_file(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            write(f)

    atomic_write(path, to_file)


def check_writable(folder: str | Path, what: str = "output folder", option: str = "--out") -> Path:
    """Create ``folder`` (with its parents) if missing and really write and remove a file in it, so that a
    read-only folder or file system fails at once, as one line, not after hours of work. (A permission check
    such as ``os.access`` says yes to root, and knows nothing of read-only mounts.)"""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".snncka-write-test.", suffix=_TMP_SUFFIX, dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise PermissionError(f"cannot write into the {what} {str(folder)!r} ({reason}); make it writable or "
                              f"choose another {option}") from None
    return folder


def atomic_link_or_copy(src: str | Path, dst: str | Path) -> None:
    """Make ``dst`` the file ``src`` atomically: a hard link where the file system allows (no disk used), else
    a copy. Nothing to do when ``dst`` already is ``src`` (the same file), and no temp file is left either way.

    Only for files that are replaced, never rewritten in place (as every snncka writer does): a link shares
    the bytes."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and os.path.samefile(src, dst):
        return

    def link(tmp: Path) -> None:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)

    atomic_write(dst, link)


def remove_stale_temps(folder: str | Path, older_than_s: float = 60.0) -> list[Path]:
    """Delete temp files that ``atomic_write`` left behind in ``folder`` when a process was killed.

    Only ``.<name>.*.tmp`` files older than ``older_than_s`` go (a live writer's temp file is younger)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now, gone = time.time(), []
    for p in folder.glob(f".*{_TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime > older_than_s:
                p.unlink()
                gone.append(p)
    return gone


_held = threading.local()  # the lock files this thread holds (file_lock is re-entrant within a thread)


def lock_holder(path: str | Path) -> str:
    """Who holds (or last held) the lock file ``path``, as ``file_lock`` records it: "pid N on HOST since
    TIME", or "an unknown process" when nothing is recorded."""
    try:
        text = Path(path).read_text(errors="replace").strip()
    except OSError:
        text = ""
    return text.splitlines()[0][:200] if text else "an unknown process"


@contextlib.contextmanager
def file_lock(path: str | Path, *, wait: bool = True, on_wait: Callable[[], None] | None = None) -> Iterator[bool]:
    """Hold an exclusive OS lock on ``path`` (created if missing) for the ``with`` block.

    The OS frees the lock when its process dies, so a killed run never leaves a cache entry locked.
    ``wait=False`` yields ``False`` at once when another process holds it; ``on_wait`` is called once before
    blocking (e.g. to say what is being waited for). The holder writes its pid, host and start time into the
    file (``lock_holder`` reads them). Re-entrant: a thread already holding ``path`` gets it again at once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(path)
    held: dict[str, int] = _held.__dict__.setdefault("paths", {})
    if key in held:
        held[key] += 1
        try:
            yield True
        finally:
            held[key] -= 1
        return
    with open(path, "a+b") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            if on_wait is not None:
                on_wait()
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        held[key] = 1
        try:
            with contextlib.suppress(OSError):  # who holds it, for the message of a process that finds it held
                f.truncate(0)
                f.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                        f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
                f.flush()
            yield True
        finally:
            del held[key]
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
