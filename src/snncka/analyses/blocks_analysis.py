"""``blocks``: CKA per layer type inside residual blocks and the periodic jagged pattern along depth (Fig. 3)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..registry import register_analysis
from ..results import curve_ylim
from .compare_analysis import CompareAnalysis, compare_checkpoints, compared_pairs
from .subjects import RecipeMeasured

__all__ = ["BLOCK_NAME", "TYPE_LABELS", "BlocksResult", "block_subset", "blocks", "blocks_from", "check_block_names"]

_BLOCK_RE = re.compile(r"^(s\d+\.b\d+)(?:\.(.+))?$")
TYPE_LABELS = {"block": "residual output", "act": "LIF/ReLU", "conv": "conv", "norm": "BN"}


def _position(rest: str | None, kind: str) -> str:
    if rest is None:
        return "output"
    return "ds." + kind if rest.startswith("ds.") else rest


@dataclass
class BlocksResult(RecipeMeasured):
    """CKA of corresponding layers grouped by residual block: per layer type and per position in the block.

    ``periodic`` says whether the curve has the paper's periodic jagged shape: the block outputs restore the
    similarity lost inside the blocks (``restore_fraction`` of blocks whose output CKA exceeds the mean of
    their inner conv/act layers >= 0.5) and the curve's autocorrelation peaks at the block length (``period``
    within 1 of ``block_length``).
    """

    analysis: ClassVar[str] = "blocks"
    arrays: ClassVar[tuple[str, ...]] = ("curve",)

    curve: np.ndarray
    layers: list[str]
    kinds: list[str]
    label: str
    type_means: dict[str, float]
    positions: list[str]
    position_means: list[float]
    block_names: list[str]
    block_output: list[float]
    block_inner_mean: list[float]
    restore_fraction: float
    block_length: int
    period: int | None
    periodic: bool

    def plot(self, out: str | Path, name: str | None = None) -> list[Path]:
        from .. import plots

        name = name or self.analysis
        paths = plots.curves(
            {self.label: self.curve},
            self.layers,
            Path(out) / f"{name}_curve",
            kinds=self.kinds,
            title="CKA curve by layer type" + (" (periodic)" if self.periodic else ""),
            ylim=curve_ylim(self.curve),
        )
        paths += plots.block_profile(
            self.positions,
            {self.label: self.position_means},
            Path(out) / f"{name}_profile",
            title="Mean CKA at each position inside residual blocks",
        )
        return paths

    def summary(self) -> list[dict[str, Any]]:
        row = {
            "models": self.label,
            **{f"mean CKA {k}": v for k, v in self.type_means.items()},
            "restore fraction": self.restore_fraction,
            "block length": self.block_length,
            "period": self.period,
            "periodic": self.periodic,
        }
        return [row]


def _dominant_period(y: np.ndarray, max_lag: int) -> int | None:
    """Lag (>= 2) of the highest autocorrelation of the de-meaned sequence ``y``; None if too short/flat."""
    y = np.asarray(y, dtype=float)
    y = y[np.isfinite(y)]
    y = y - y.mean()
    if len(y) < 6 or not np.any(np.abs(y) > 1e-9):
        return None
    denom = float(np.dot(y, y))
    best, best_lag = -np.inf, None
    for lag in range(2, min(max_lag, len(y) // 2) + 1):
        r = float(np.dot(y[:-lag], y[lag:])) / denom * len(y) / (len(y) - lag)
        if r > best + 1e-12:
            best, best_lag = r, lag
    return best_lag if best > 0 else None


def blocks_from(
    curve: Sequence[float], layers: Sequence[str], kinds: Sequence[str], label: str = ""
) -> BlocksResult:
    """Group a CKA curve (one value per layer, named like ``s2.b1.conv1``) by residual block and type."""
    curve = np.asarray(curve, dtype=float)
    if not (len(curve) == len(layers) == len(kinds)):
        raise ValueError(
            f"curve, layers and kinds must have one entry per layer ({len(curve)}, {len(layers)}, "
            f"{len(kinds)})"
        )
    by_type: dict[str, list[float]] = {}
    by_pos: dict[str, list[float]] = {}
    per_block: dict[str, list[tuple[str, float]]] = {}
    order: list[str] = []
    in_block = []
    for v, n, k in zip(curve, layers, kinds, strict=True):
        m = _BLOCK_RE.match(n)
        if not m:
            continue
        in_block.append(v)
        blk, rest = m.group(1), m.group(2)
        if blk not in per_block:
            per_block[blk] = []
            order.append(blk)
        per_block[blk].append((k, v))
        if k in TYPE_LABELS:
            by_type.setdefault(TYPE_LABELS[k], []).append(v)
        pos = _position(rest, k)
        if pos not in by_pos:
            by_pos[pos] = []
        by_pos[pos].append(v)
    if not per_block:
        raise ValueError(
            "no residual-block layers (named like 's1.b0.conv1') here; the blocks analysis needs a ResNet"
        )
    outs, inner = [], []
    for blk in order:
        items = per_block[blk]
        outs.append(
            float(np.mean([v for k, v in items if k == "block"]))
            if any(k == "block" for k, _ in items)
            else float("nan")
        )
        iv = [v for k, v in items if k in ("conv", "act")]
        inner.append(float(np.mean(iv)) if iv else float("nan"))
    valid = [(o, i) for o, i in zip(outs, inner, strict=True) if math.isfinite(o) and math.isfinite(i)]
    restore = float(np.mean([o > i for o, i in valid])) if valid else 0.0
    blen = int(np.median([len(per_block[b]) for b in order]))
    period = _dominant_period(np.asarray(in_block), max_lag=2 * blen + 1)
    periodic = bool(restore >= 0.5 and period is not None and abs(period - blen) <= 1 and len(order) >= 3)
    pos_order = list(by_pos)
    if "output" in pos_order:
        pos_order.remove("output")
        pos_order.append("output")
    return BlocksResult(
        curve=curve,
        layers=list(layers),
        kinds=list(kinds),
        label=label,
        type_means={k: float(np.mean(v)) for k, v in by_type.items()},
        positions=pos_order,
        position_means=[float(np.mean(by_pos[p])) for p in pos_order],
        block_names=order,
        block_output=outs,
        block_inner_mean=inner,
        restore_fraction=restore,
        block_length=blen,
        period=period,
        periodic=periodic,
    )


def blocks(a: Any, b: Any | None = None, **compare_kwargs: Any) -> tuple[BlocksResult, CompareAnalysis]:
    """Per-layer-type CKA inside residual blocks (Fig. 3) from two checkpoints (or a ``CompareAnalysis``);
    ``compare_kwargs`` (``recipe=``, ``n_images=``, ...) go to ``compare_checkpoints``.

    Returns the blocks result (recording the comparison's recipe) and the comparison it was computed from.
    """
    t0 = time.perf_counter()
    cmp = a if isinstance(a, CompareAnalysis) else compare_checkpoints(a, b, **compare_kwargs)
    names, d = cmp.corresponding()
    kinds = dict(zip(cmp.layers_a, cmp.kinds_a, strict=False))
    res = blocks_from(d, names, [kinds[n] for n in names], f"{cmp.label_a} vs {cmp.label_b}")
    res.seconds = time.perf_counter() - t0
    for f in fields(RecipeMeasured):  # the comparison's recipe and environment (not its run time)
        if f.name != "seconds":
            setattr(res, f.name, getattr(cmp, f.name))
    return res, cmp


_blocks = blocks  # the analysis function, under a name the runner's ``blocks=`` setting does not hide




#: a residual block's name as the models record it: stage s (1-based), block b (0-based) -> ``s<s>.b<b>``
BLOCK_NAME = re.compile(r"^s(\d+)\.b(\d+)$")


def block_subset(cmp: Any, block: str) -> BlocksResult:
    """Fig. 3's per-layer-type CKA of one residual block (e.g. ``"s1.b9"``) of a ``compare`` result (Fig. A.5)."""
    names, curve = cmp.corresponding()
    kinds = dict(zip(cmp.layers_a, cmp.kinds_a, strict=False))
    keep = [i for i, n in enumerate(names) if n == block or n.startswith(block + ".")]
    if not keep:
        blocks = sorted({".".join(n.split(".")[:2]) for n in names if BLOCK_NAME.match(".".join(n.split(".")[:2]))})
        raise ValueError(f"no layers of block {block!r} in {cmp.label_a} vs {cmp.label_b}; its blocks: "
                         f"{', '.join(blocks) or 'none'}")
    res = blocks_from([float(curve[i]) for i in keep], [names[i] for i in keep], [kinds[names[i]] for i in keep],
                      f"{cmp.label_a} vs {cmp.label_b}, block {block}")
    res.seconds = 0.0
    return res


def check_block_names(blocks: Sequence[str], arch: str, where: str) -> None:
    """Fail before training when a block name can't exist in a ResNet ``arch`` (``resnet<6n+2>``: 3 stages of
    n blocks)."""
    m = re.fullmatch(r"resnet(\d+)", arch)
    if m is None or (int(m.group(1)) - 2) % 6:
        raise ValueError(f"{where}: 'blocks' needs a ResNet (resnet<6n+2>), got {arch!r}")
    n = (int(m.group(1)) - 2) // 6
    for b in blocks:
        bm = BLOCK_NAME.match(str(b))
        if bm is None or not (1 <= int(bm.group(1)) <= 3 and int(bm.group(2)) < n):
            raise ValueError(f"{where}: block {b!r} is not in {arch} (names s1.b0 .. s3.b{n - 1})")


def _check_blocks(specs: Sequence[Any], *, blocks: Sequence[str] = (), **_: Any) -> None:
    for s in specs if blocks else []:
        check_block_names(blocks, s.arch, f"model {s.id}")


@register_analysis("blocks", needs="all", on_checkpoints=True, check=_check_blocks)
def blocks_of_pairs(run: Any, *, models: list[str] | None = None, layers: Any = None,
                    blocks: Sequence[str] = (), unbiased: bool = True, kernel: str = "linear",
                    time_reduce: str = "concat") -> None:
    """Fig. 3: per-layer-type CKA inside the residual blocks, from each pair's comparison; ``blocks``: also
    single blocks alone (Fig. A.5: the 10th and 34th of ResNet-110). ``unbiased``, ``kernel``,
    ``time_reduce``: the comparison's CKA estimator (as ``compare``'s)."""
    for s, cmp in compared_pairs(run, models, layers, unbiased=unbiased, kernel=kernel, time_reduce=time_reduce):
        run.cached(f"blocks-{s.name}", _blocks, cmp, model=s.name)
        for blk in blocks:
            run.cached(f"blocks-{s.name}-{blk}", block_subset, cmp, blk)
