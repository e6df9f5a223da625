"""Checkpoint files: validated reads, and the RNG state that makes a resumed run bitwise exact.

A snncka checkpoint is a ``torch.save``'d dict with ``format == "snncka-checkpoint"`` and at least
``model_config`` (``model.config``, enough to rebuild the network) and ``model`` (its state dict). The trainer
adds ``train_config``, ``optimizer``, ``scheduler``, ``epoch``, ``rng``, ``best_acc`` and ``metrics``.
Everything in it is a tensor or a plain Python container, so it loads with ``weights_only=True`` (no
arbitrary code runs when a checkpoint is opened).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .files import atomic_write_stream
from .readers import BadFileError, verify_zip

__all__ = ["FORMAT", "CheckpointError", "get_rng_state", "load_checkpoint", "resolve_checkpoint", "save_checkpoint",
           "set_rng_state"]

FORMAT = "snncka-checkpoint"
VERSION = 1
REQUIRED = ("model_config", "model")


class CheckpointError(ValueError):
    """A file that cannot be used as a snncka checkpoint (missing, truncated, corrupt, or something else)."""


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> None:
    """Write checkpoint dict ``obj`` to ``path`` atomically (tags it with the snncka format)."""
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        raise ValueError(f"a checkpoint needs the keys {REQUIRED}; missing {missing}")
    obj = {"format": FORMAT, "version": VERSION, **obj}
    # to an open file, so that the zip names its records "archive/...", not after the temporary file
    atomic_write_stream(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device | None = "cpu",
                    mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` (e.g. a run's ``last.pt``/``best.pt``).

    ``mmap=True`` maps the tensors instead of reading them: cheap when only the metadata is wanted.

    Raises ``CheckpointError`` with a message saying what is wrong for a missing, truncated or corrupt file,
    or for a file that is not a snncka checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        hint = " (it is a folder: pass the run's last.pt or best.pt)" if path.is_dir() else ""
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist{hint}")
    if _check_torch_file(path):
        try:
            verify_zip(path)  # torch's zip reader does not check CRCs: a flipped bit would load silently
        except BadFileError as e:
            raise CheckpointError(f"cannot use checkpoint: {e}; use another checkpoint (best.pt/last.pt) or "
                                  "retrain") from None
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # zip/pickle errors come in many types
        text = str(e)
        if "Unsupported global" in text or "Unsupported class" in text:  # a torch file with arbitrary objects
            raise CheckpointError(
                f"{str(path)!r} is a torch file holding Python objects other than tensors and plain "
                "containers, so it is not a snncka checkpoint (snncka does not run code stored in files); "
                "snncka writes checkpoints as <run>/last.pt and best.pt"
            ) from e
        text = text.split("WeightsUnpickler error:", 1)[-1]  # not torch's advice to load with weights_only=False
        first = " ".join(text.split(". ")[0].split())
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r}: the file is truncated or corrupt ({type(e).__name__}: "
            f"{first}); use another checkpoint (best.pt/last.pt) or retrain"
        ) from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or any(k not in obj for k in REQUIRED):
        raise CheckpointError(
            f"{str(path)!r} is a readable torch file but not a snncka checkpoint (expected a dict with "
            f"format={FORMAT!r} and keys {REQUIRED}); snncka writes checkpoints as <run>/last.pt and best.pt"
        )
    if obj.get("version", 0) > VERSION:
        raise CheckpointError(
            f"{str(path)!r} has checkpoint format version {obj['version']}, newer than this snncka supports "
            f"({VERSION}); upgrade snncka"
        )
    return obj


_PICKLE_PROTOCOLS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")  # legacy torch.save: a pickle


def _as_text(head: bytes) -> str | None:
    """The stripped text of a file's first bytes if they are UTF-8 text (the last character may be cut)."""
    for cut in range(4):
        try:
            text = head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return text.strip() if all(c.isprintable() or c.isspace() for c in text) else None
    return None


def _check_torch_file(path: Path) -> bool:
    """A one-line ``CheckpointError`` for an empty file or one that is not a torch.save file at all; True for
    a zip (torch.save's format since 1.6), False for a legacy pickle."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty (truncated); use another checkpoint "
                              "(best.pt/last.pt) or retrain")
    if head.startswith(b"PK") or head[:2] in _PICKLE_PROTOCOLS:  # a zip (torch.save since 1.6) or a pickle
        return head.startswith(b"PK")
    text = _as_text(head)
    if text is None:  # binary, but no torch file header: damaged, or some other binary format
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r}: the file is truncated or corrupt, or not a torch checkpoint "
            f"file at all (it begins with {head[:12]!r}); use another checkpoint (best.pt/last.pt) or retrain"
        )
    kind = "JSON" if text[:1] and text[:1] in "{[" else "text"
    raise CheckpointError(
        f"{str(path)!r} is not a torch checkpoint file (it holds {kind}, beginning {head[:12]!r}); pass a run's "
        "last.pt or best.pt, written by snncka train"
    )


def resolve_checkpoint(path: str | Path, which: str = "last") -> Path:
    """The checkpoint file a path means: a file is itself; a run folder (as ``snncka train`` writes it) means
    its ``last.pt`` (``which="last"``: the final weights) or its ``best.pt`` (``which="best"``: the epoch of
    highest test accuracy, falling back to ``last.pt`` for a run that never evaluated). The one place that
    decides which checkpoint of a run folder is used."""
    if which not in ("last", "best"):
        raise ValueError(f"which checkpoint of a run folder: 'last' or 'best', got {which!r}")
    p = Path(path)
    if not p.is_dir():
        return p
    order = ("best.pt", "last.pt") if which == "best" else ("last.pt",)
    for name in order:
        if (p / name).is_file():
            return p / name
    raise CheckpointError(f"run folder {str(p)!r} has no {' or '.join(order)} checkpoint; pass a checkpoint file "
                          "or the folder of a finished snncka train run")


def get_rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every random state a training run consumes (torch CPU, CUDA, numpy, python, and a data generator)."""
    np_state = np.random.get_state()  # noqa: NPY002 - the global state is what we save
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "key": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["data"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Restore what ``get_rng_state`` captured (CUDA states only where the same devices exist)."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["name"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],  # noqa: NPY002
                         n["cached_gaussian"]))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if generator is not None:
        if "data" not in state:
            raise CheckpointError("the checkpoint has no data-generator state; it cannot resume exactly")
        generator.set_state(state["data"].cpu())


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, tuple | list) else x


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x
