"""Where a run executes and what produced it: device resolution and the environment written beside results."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["environment", "resolve_device"]


def resolve_device(device: str | torch.device | None = None, local_rank: int = 0) -> torch.device:
    """``None``/``"auto"``: this process's GPU if CUDA is available, else the CPU; otherwise the device named,
    with a clear error when it names CUDA on a machine without it (a bare ``"cuda"`` means this rank's GPU)."""
    if device is None or device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {str(device)!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} requested but CUDA is not available; use 'cpu' or 'auto'")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
        if dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} requested but this machine has "
                             f"{torch.cuda.device_count()} GPU(s): use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    elif dev.type not in ("cpu", "mps", "xpu"):
        raise ValueError(f"device {str(device)!r} is not supported; use auto, cpu, cuda or cuda:N")
    return dev


@cache  # one git call per process: every saved result asks for the environment
def _git_commit() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                           capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return (r.stdout.strip() or None) if r.returncode == 0 else None


def environment(device: str | torch.device | None = None, **extra: Any) -> dict[str, Any]:
    """Versions, hardware, commit and command behind a result (written beside it, shown in the report)."""
    from ._version import __version__

    dev = resolve_device(device)
    return {
        "snncka": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "numpy": np.__version__, "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "cpu_threads": torch.get_num_threads(), "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor(),
        "git_commit": _git_commit(), "command": sys.argv,
        "date": datetime.now(UTC).isoformat(timespec="seconds"), **extra,
    }
