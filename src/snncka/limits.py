"""Hard limits on what a model or a run may ask for, and the typed checks that apply them at the edge.

Every setting that reaches a model, a training run or an evaluation (from the CLI, a TOML file or a
checkpoint's stored config) goes through one of the checks below, so that a wrong type or an absurd size is
one ``ValueError`` naming the key and its valid range -- before anything is allocated. The ranges are wide
enough for any study of the paper's kind (its models: ResNet-20..110 and VGG, widths 1/4..4, T <= 16):

================  ==========================  ==================================================
setting           valid                       why this bound
================  ==========================  ==================================================
``T``, frames     1 .. 1024                   time steps / event frames per sample
``width``         1/16 .. 64                  channel multiplier (64 x the ResNet's 16 channels)
``num_classes``   1 .. 100,000                output classes
``in_channels``   1 .. 1024                   input channels
ResNet depth      8 .. 1202 (6n + 2)          He et al.'s deepest CIFAR ResNet
batch sizes       1 .. 65,536                 images per step
epochs            1 .. 100,000
seeds             0 .. 2**63 - 1              what torch's generators accept
nesting           <= 16 levels                TOML arrays and tables
================  ==========================  ==================================================

A bool is only ``True``/``False`` (never the string ``"false"``, never 0/1); an integer setting is never a
float (``seed = 1.5`` is an error); numbers are finite.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

MAX_T = 1024
WIDTH_RANGE = (0.0625, 64.0)
MAX_CLASSES = 100_000
MAX_IN_CHANNELS = 1024
MAX_RESNET_DEPTH = 1202
MAX_BATCH = 65_536
MAX_EPOCHS = 100_000
MAX_SEED = 2**63 - 1
MAX_NESTING = 16
MAX_THREADS = 1024  # CPU threads a training run may use (a fixed setting of the run, see TrainConfig.threads)


def _kind(v: Any) -> str:
    return type(v).__name__


def boolean(name: str, v: Any) -> bool:
    """``v`` if it is a bool; anything else (a string such as ``"false"``, a number) is an error."""
    if not isinstance(v, bool | np.bool_):
        raise ValueError(f"{name} must be true or false, got {v!r} ({_kind(v)})")
    return bool(v)


def integer(name: str, v: Any, lo: int, hi: int) -> int:
    """``v`` if it is an integer (not a bool, not a float) in ``[lo, hi]``."""
    what = "a positive integer" if lo == 1 else "a non-negative integer" if lo == 0 else "an integer"
    wrong_type = isinstance(v, bool | np.bool_) or not isinstance(v, int | np.integer)
    if wrong_type or not lo <= v <= hi:
        kind = f" ({_kind(v)})" if wrong_type else ""
        raise ValueError(f"{name} must be {what}, got {v!r}{kind}; valid range [{lo}, {hi}]")
    return int(v)


def number(name: str, v: Any, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> float:
    """``v`` if it is a finite real number (int or float, not a bool) in the interval from ``lo`` to ``hi``
    (open at an end where asked)."""
    rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    what = f"a finite number {'>' if lo_open else '>='} {lo:g}"
    wrong_type = isinstance(v, bool | np.bool_) or not isinstance(v, int | float | np.integer | np.floating)
    if not wrong_type:
        f = float(v)
        if math.isfinite(f) and (f > lo if lo_open else f >= lo) and (f < hi if hi_open else f <= hi):
            return f
    kind = f" ({_kind(v)})" if wrong_type else ""
    raise ValueError(f"{name} must be {what}, got {v!r}{kind}; valid range {rng}")


def choice(name: str, v: Any, choices: Sequence[str]) -> str:
    """``v`` if it is one of the strings ``choices``."""
    if not isinstance(v, str) or v not in choices:
        raise ValueError(f"unknown {name} {v!r}; choose one of: {', '.join(map(str, choices))}")
    return v


def string(name: str, v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"{name} must be a string, got {v!r} ({_kind(v)})")
    return v


def text_nesting(text: str) -> int:
    """Upper bound of the bracket nesting of a TOML/JSON text (brackets inside strings count too), found
    without parsing: a parser recurses once per level, so this is checked first."""
    best = d = 0
    for ch in text:
        if ch in "[{":
            d += 1
            best = max(best, d)
        elif ch in "]}":
            d = max(0, d - 1)
    return best
