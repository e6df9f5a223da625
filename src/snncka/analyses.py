"""The paper's analyses as functions (SPEC "Representation similarity" and "Experiments").

Each analysis takes checkpoints (paths) or ``Subject`` objects (a model with the dataset it was trained on),
returns a result object, and each result ``save``s to ``<out>/<name>.json`` (metadata, small values) plus
``<out>/<name>.npz`` (arrays), both atomically, ``load``s back, and ``plot``s its figures (PNG + SVG):

* ``compare``     cross-layer CKA of two models (or one with itself): heatmap + diagonal curve (Fig. 2).
* ``temporal``    ``T x T`` CKA between the time steps of every SNN layer (Fig. 6, A.3, A.8, A.11, A.12).
* ``blocks``      CKA per layer type inside residual blocks and the periodic pattern along depth (Fig. 3).
* ``robustness``  PGD robust accuracy per eps and per-layer CKA clean vs adversarial (Fig. 8, A.9).
* ``probe``       linear classifiers on each block's pooled output (Fig. A.6).
* ``seeds``       CKA across seeds, every pairing (App. C).
* ``rates``       firing-rate statistics of every LIF layer.

Models see their own input for the same test images: an ANN on event data gets one integrated frame, the SNN
T frames (``data_b`` of the CKA engine). Images: the first ``n_images`` of the test split (the paper: 4096).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from .checkpoint import load_checkpoint
from .data import Dataset, to_model_input
from .data import get as get_dataset
from .files import atomic_write_bytes
from .models import SNNCKAModel
from .models import from_checkpoint as models_from_checkpoint
from .neurons import LIF
from .runtime import environment, resolve_device

__all__ = [
    "BlocksResult",
    "CompareResult",
    "ProbeResult",
    "RatesResult",
    "RobustnessResult",
    "SeedsResult",
    "Subject",
    "TemporalAnalysis",
    "accuracy",
    "blocks",
    "compare",
    "fit_linear_probe",
    "load_result",
    "probe",
    "rates",
    "robustness",
    "seeds",
    "temporal",
]

DEFAULT_EPS = (0.001, 0.005, 0.01, 0.02, 0.05)


# --------------------------------------------------------------------------------------------------------
# Subjects: a model with its data
# --------------------------------------------------------------------------------------------------------


_DATA_CACHE: dict[tuple, Dataset] = {}  # the datasets of recent checkpoints, most recent last
_DATA_CACHE_SIZE = 4  # an experiment pairs a few (e.g. event data as 1 frame for the ANN, T frames for the SNN)


def _cached_dataset(key: tuple, load: Callable[[], Dataset]) -> Dataset:
    """Load a dataset once for the checkpoints that share it, keeping only the few most recently used."""
    ds = _DATA_CACHE.pop(key, None) or load()
    _DATA_CACHE[key] = ds
    while len(_DATA_CACHE) > _DATA_CACHE_SIZE:
        _DATA_CACHE.pop(next(iter(_DATA_CACHE)))
    return ds


@dataclass
class Subject:
    """A model together with the dataset it was trained on (the test split is what analyses use)."""

    model: SNNCKAModel
    data: Dataset
    label: str = ""
    source: str | None = None

    def __post_init__(self) -> None:
        if not self.label:
            self.label = describe(self.model)
        if self.model.in_channels != self.data.in_channels:
            raise ValueError(
                f"{self.label}: the model takes {self.model.in_channels} input channels but dataset "
                f"{self.data.name!r} has {self.data.in_channels}; pair the checkpoint with its training data"
            )

    @property
    def spiking(self) -> bool:
        return bool(self.model.spiking)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        data_root: str | Path | None = None,
        label: str | None = None,
        device: str | torch.device | None = None,
    ) -> Subject:
        """Load a checkpoint (``best.pt``/``last.pt`` or a run folder) and the dataset recorded in it."""
        p, ckpt = _read_checkpoint(path)
        return cls.from_checkpoint(ckpt, p, data_root=data_root, label=label, device=device)

    @classmethod
    def from_checkpoint(
        cls,
        ckpt: dict[str, Any],
        p: Path,
        *,
        data_root: str | Path | None = None,
        label: str | None = None,
        device: str | torch.device | None = None,
    ) -> Subject:
        """A subject from a loaded checkpoint dict (``p``: where it came from)."""
        model = models_from_checkpoint(ckpt, p, resolve_device(device))
        tc = ckpt.get("train_config") or {}
        name = tc.get("data")
        if not name:
            raise ValueError(
                f"checkpoint {str(p)!r} does not record its dataset (no train_config['data']); build a "
                "Subject(model, snncka.data.get(NAME)) yourself"
            )
        frames = tc.get("frames")
        if frames is None:  # the trainer's rule: T frames for an SNN, one integrated frame for an ANN
            frames = int(tc.get("T", model.T)) if model.spiking else 1
        root = data_root if data_root is not None else tc.get("data_root")
        if root is not None and not Path(root).exists():
            raise FileNotFoundError(f"data root {str(root)!r} of {str(p)!r} does not exist; pass --data-root")
        key = (name, str(root), frames, tc.get("data_seed", 0))
        ds = _cached_dataset(key, lambda: get_dataset(name, root=root, frames=frames, seed=tc.get("data_seed", 0)))
        return cls(model, ds, label or describe(model, tc.get("seed")), str(p))


def describe(model: SNNCKAModel, seed: int | None = None) -> str:
    """A short label like ``SNN resnet20 T4`` or ``ANN resnet20 x4 seed1``."""
    c = model.config
    parts = ["SNN" if model.spiking else "ANN", c["name"]]
    if c.get("width", 1) != 1:
        parts.append(f"x{c['width']:g}")
    if model.spiking:
        parts.append(f"T{c['T']}")
    if not all(c.get("residual", (True,))):
        parts.append("res" + "".join("1" if r else "0" for r in c["residual"]))
    if seed is not None:
        parts.append(f"seed{seed}")
    return " ".join(parts)


def _read_checkpoint(path: str | Path) -> tuple[Path, dict[str, Any]]:
    p = Path(path)
    if p.is_dir():
        found = next((c for c in (p / "best.pt", p / "last.pt") if c.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"run folder {str(p)!r} has no best.pt or last.pt checkpoint")
        p = found
    return p, load_checkpoint(p)


def _subject(src: Any, data_root: str | Path | None, device: str | torch.device | None) -> Subject:
    return _subjects([src], data_root, device)[0]


def _subjects(
    sources: Sequence[Any],
    data_root: str | Path | None,
    device: str | torch.device | None,
    same_data: bool = True,
) -> list[Subject]:
    """Subjects for checkpoints / subjects; checks that all use one dataset before loading data."""
    read: list[Any] = [s if isinstance(s, Subject) else _read_checkpoint(s) for s in sources]
    names = {}
    for r in read:
        name = r.data.name if isinstance(r, Subject) else (r[1].get("train_config") or {}).get("data")
        label = r.label if isinstance(r, Subject) else str(r[0])
        names.setdefault(name, label)
    if same_data and len(names) > 1:
        desc = ", ".join(f"{lab} uses {n!r}" for n, lab in names.items())
        raise ValueError(
            f"checkpoints of different datasets: {desc}; these analyses compare models on the same images, "
            "so use models trained on one dataset"
        )
    out = []
    for r in read:
        if isinstance(r, Subject):
            r.model.to(resolve_device(device)).eval()
            out.append(r)
        else:
            out.append(Subject.from_checkpoint(r[1], r[0], data_root=data_root, device=device))
    return out


def _inputs(s: Subject, x: Tensor) -> Tensor:
    """A dataset batch as this model's input (an ANN's single event frame becomes a plain image batch)."""
    x = to_model_input(x)
    if x.dim() == 5 and not s.spiking and x.shape[0] == 1:
        x = x[0]
    return x


def _n(s: Subject, n_images: int | None) -> int:
    n = len(s.data.y_test) if n_images is None else min(int(n_images), len(s.data.y_test))
    if n < 4:
        raise ValueError(f"need at least 4 test images for (unbiased) CKA, got {n}")
    return n


def _batches(s: Subject, n: int, batch_size: int, device: torch.device) -> list[Tensor]:
    """The first ``n`` test images in batches (a last batch of < 4 images is dropped)."""
    out = []
    for i in range(0, n, batch_size):
        j = min(i + batch_size, n)
        if j - i < 4 and out:
            break
        out.append(_inputs(s, s.data.x_test[i:j]).to(device))
    return out


def _images_in(x: Tensor) -> int:
    """Number of images in a model-input batch (``[T, B, ...]`` frames or ``[B, ...]`` images)."""
    return int(x.shape[1]) if x.dim() == 5 else int(x.shape[0])


def check_same_images(a: Subject, b: Subject) -> None:
    """Raise a clear error unless ``a`` and ``b`` are evaluated on the same test images."""
    da, db = a.data, b.data
    if da.name != db.name:
        raise ValueError(
            f"checkpoints of different datasets: {a.label} uses {da.name!r}, {b.label} uses {db.name!r}; CKA "
            "compares two models' layers on the same images, so compare models trained on one dataset"
        )
    if tuple(da.x_test.shape[-3:]) != tuple(db.x_test.shape[-3:]):
        raise ValueError(
            f"incompatible input shapes: {a.label} takes images of shape {tuple(da.x_test.shape[-3:])} "
            f"(C, H, W), {b.label} {tuple(db.x_test.shape[-3:])}; both models must see the same images"
        )
    if len(da.y_test) != len(db.y_test) or not torch.equal(da.y_test.cpu(), db.y_test.cpu()):
        raise ValueError(
            f"{a.label} and {b.label} use different test splits of {da.name!r} (labels differ); load both "
            "the same data settings"
        )


@torch.no_grad()
def accuracy(
    s: Subject, n_images: int | None = None, batch_size: int = 256, device: str | torch.device | None = None
) -> float:
    """Test accuracy (%) of the subject's model on the first ``n_images`` test images (all by default)."""
    dev = resolve_device(device)
    n = len(s.data.y_test) if n_images is None else min(n_images, len(s.data.y_test))
    correct = 0
    for i in range(0, n, batch_size):
        j = min(i + batch_size, n)
        x = _inputs(s, s.data.x_test[i:j]).to(dev)
        correct += int((s.model(x).argmax(-1).cpu() == s.data.y_test[i:j].cpu()).sum())
    return 100.0 * correct / n


# --------------------------------------------------------------------------------------------------------
# Results: common save / load
# --------------------------------------------------------------------------------------------------------

_RESULTS: dict[str, type[Result]] = {}


def _jsonable(v: Any) -> Any:
    """Plain JSON values; NaN/inf (an undefined CKA of a constant layer) become null."""
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, np.generic):
        return _jsonable(v.item())
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v


def _labelled(labels: list[str], accs: list[float | None], sources: list[str | None] | None
              ) -> list[tuple[str, float, str | None]]:
    return [(lb, a, src) for lb, a, src in zip(labels, accs, sources or [None] * len(labels), strict=False)
            if a is not None]


@dataclass
class Result:
    """Base of every analysis result: array fields go to ``.npz``, the others to ``.json``."""

    analysis: ClassVar[str] = ""
    arrays: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.analysis:
            _RESULTS[cls.analysis] = cls

    def save(self, out: str | Path, name: str | None = None) -> Path:
        """Write ``<out>/<name>.json`` and ``<out>/<name>.npz`` atomically; returns the JSON path."""
        out = Path(out)
        name = name or self.analysis
        meta = {"snncka_analysis": self.analysis, "name": name, "format_version": 1}
        arrs = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in self.arrays:
                arrs[f.name] = np.asarray(v, dtype=np.float64)
            else:
                meta[f.name] = _jsonable(v)
        import io

        buf = io.BytesIO()
        np.savez(buf, **arrs)
        atomic_write_bytes(out / f"{name}.npz", buf.getvalue())
        path = out / f"{name}.json"
        atomic_write_bytes(path, json.dumps(meta, indent=1, allow_nan=False).encode())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Result:
        return load_result(path)

    def plot(self, out: str | Path, name: str | None = None) -> list[Path]:  # pragma: no cover - abstract
        raise NotImplementedError

    def accuracies(self) -> list[tuple[str, float, str | None]]:
        """(model label, test accuracy %, checkpoint) for each model whose accuracy this analysis measured."""
        return []

    def summary(self) -> list[dict[str, Any]]:
        """Rows for the report's tables."""
        return []


def load_result(path: str | Path) -> Result:
    """Load any saved analysis result from its ``.json`` (its ``.npz`` must lie beside it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved result at {str(path)!r}")
    meta = json.loads(path.read_text())
    kind = meta.get("snncka_analysis")
    if kind not in _RESULTS:
        raise ValueError(f"{str(path)!r} is not a snncka analysis result (analysis={kind!r})")
    cls = _RESULTS[kind]
    npz = path.with_suffix(".npz")
    arrays = dict(np.load(npz)) if npz.is_file() else {}
    kw = {}
    for f in fields(cls):
        if f.name in cls.arrays:
            if f.name not in arrays:
                raise ValueError(f"{str(npz)!r} lacks array {f.name!r}; the result is incomplete")
            kw[f.name] = arrays[f.name]
        elif f.name in meta:
            kw[f.name] = meta[f.name]
    return cls(**kw)


# --------------------------------------------------------------------------------------------------------
# compare
# --------------------------------------------------------------------------------------------------------


@dataclass
class CompareResult(Result):
    """Cross-layer CKA ``matrix[i, j]`` = CKA(layer i of model a, layer j of model b)."""

    analysis: ClassVar[str] = "compare"
    arrays: ClassVar[tuple[str, ...]] = ("matrix", "ci_low", "ci_high")

    matrix: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    layers_a: list[str]
    layers_b: list[str]
    kinds_a: list[str]
    kinds_b: list[str]
    label_a: str
    label_b: str
    spiking_a: bool
    spiking_b: bool
    accuracy_a: float | None = None
    accuracy_b: float | None = None
    source_a: str | None = None
    source_b: str | None = None
    n_images: int = 0
    batch_size: int = 0
    estimator: str = "unbiased"
    kernel: str = "linear"
    seconds: float = 0.0
    environment: dict = field(default_factory=dict)

    def diagonal(self) -> tuple[list[str], np.ndarray]:
        """CKA between same-named layers (the paper's "CKA curve"), in model a's order."""
        jb = {n: j for j, n in enumerate(self.layers_b)}
        names = [n for n in self.layers_a if n in jb]
        ia = {n: i for i, n in enumerate(self.layers_a)}
        return names, np.array([self.matrix[ia[n], jb[n]] for n in names], dtype=float)

    def oriented(self) -> tuple[np.ndarray, list[str], list[str], str, str]:
        """(matrix [y, x], x layers, y layers, x label, y label) with the SNN on x and the ANN on y."""
        if self.spiking_a and not self.spiking_b:
            return self.matrix.T, self.layers_a, self.layers_b, self.label_a, self.label_b
        return self.matrix, self.layers_b, self.layers_a, self.label_b, self.label_a

    def plot(self, out: str | Path, name: str | None = None) -> list[Path]:
        from . import plots

        name = name or self.analysis
        m, xl, yl, xlab, ylab = self.oriented()
        paths = plots.heatmap(
            m,
            xl,
            yl,
            Path(out) / f"{name}_heatmap",
            x_label=xlab,
            y_label=ylab,
            title=f"CKA ({self.n_images} test images)",
        )
        names, d = self.diagonal()
        if names:
            kinds = dict(zip(self.layers_a, self.kinds_a, strict=False))
            paths += plots.curves(
                {f"{self.label_a} vs {self.label_b}": d},
                names,
                Path(out) / f"{name}_curve",
                kinds=[kinds[n] for n in names],
                title="CKA of corresponding layers",
                ylim=(min(0.0, float(np.nanmin(d)) - 0.05), 1.05),
            )
        return paths

    def accuracies(self) -> list[tuple[str, float, str | None]]:
        pairs = [(self.label_a, self.accuracy_a, self.source_a), (self.label_b, self.accuracy_b, self.source_b)]
        return [p for p in pairs if p[1] is not None]

    def summary(self) -> list[dict[str, Any]]:
        names, d = self.diagonal()
        row = {
            "model a": self.label_a,
            "model b": self.label_b,
            "layers": f"{len(self.layers_a)} x {len(self.layers_b)}",
            "images": self.n_images,
            "mean CKA (matrix)": float(np.nanmean(self.matrix)),
        }
        if names:
            k = int(np.nanargmin(d))
            row.update(
                {
                    "mean CKA (diagonal)": float(np.nanmean(d)),
                    "min diagonal": f"{d[k]:.3f} ({names[k]})",
                    "last layer": f"{d[-1]:.3f} ({names[-1]})",
                }
            )
        return [row]


def _cka_engine():
    try:
        from .cka import compare as cka_compare
    except ImportError as e:  # pragma: no cover - only while the engine is missing
        raise RuntimeError("the CKA engine (snncka.cka) is not available") from e
    return cka_compare


def _as_array(v: Any, shape: tuple[int, ...]) -> np.ndarray:
    return np.full(shape, np.nan) if v is None else np.asarray(v, dtype=np.float64)


def compare(
    a: Any,
    b: Any | None = None,
    *,
    n_images: int | None = 4096,
    batch_size: int = 256,
    layers: Any = "paper",
    unbiased: bool = True,
    kernel: str = "linear",
    data_root: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> CompareResult:
    """Cross-layer CKA between the models of checkpoints ``a`` and ``b`` (``b=None``: ``a`` with itself)."""
    t0 = time.perf_counter()
    dev = resolve_device(device)
    if b is None:
        sa = sb = _subject(a, data_root, dev)
    else:
        sa, sb = _subjects([a, b], data_root, dev)
    check_same_images(sa, sb)
    n = _n(sa, n_images)
    da = _batches(sa, n, batch_size, dev)
    db = None if sb is sa else _batches(sb, n, batch_size, dev)
    res = _cka_engine()(
        sa.model,
        sb.model,
        da,
        data_b=db,
        layers_a=layers,
        layers_b=layers,
        unbiased=unbiased,
        kernel=kernel,
        device=dev,
        progress=progress,
    )
    shape = np.asarray(res.matrix).shape
    return CompareResult(
        matrix=np.asarray(res.matrix, dtype=np.float64),
        ci_low=_as_array(getattr(res, "ci_low", None), shape),
        ci_high=_as_array(getattr(res, "ci_high", None), shape),
        layers_a=list(res.layers_a),
        layers_b=list(res.layers_b),
        kinds_a=list(res.kinds_a),
        kinds_b=list(res.kinds_b),
        label_a=sa.label,
        label_b=sb.label if sb is not sa else sa.label,
        spiking_a=sa.spiking,
        spiking_b=sb.spiking,
        accuracy_a=accuracy(sa, device=dev),
        accuracy_b=accuracy(sb, device=dev) if sb is not sa else None,
        source_a=sa.source,
        source_b=sb.source,
        n_images=int(res.n_images),
        batch_size=int(res.batch_size),
        estimator=str(res.estimator),
        kernel=str(res.kernel),
        seconds=time.perf_counter() - t0,
        environment=environment(),
    )


# --------------------------------------------------------------------------------------------------------
# temporal
# --------------------------------------------------------------------------------------------------------


@dataclass
class TemporalAnalysis(Result):
    """``matrices[l]`` = the ``T x T`` CKA between the time steps of layer ``l`` of one SNN."""

    analysis: ClassVar[str] = "temporal"
    arrays: ClassVar[tuple[str, ...]] = ("matrices",)

    matrices: np.ndarray
    layers: list[str]
    kinds: list[str]
    T: int
    label: str
    source: str | None = None
    n_images: int = 0
    seconds: float = 0.0
    environment: dict = field(default_factory=dict)

    def off_diagonal_mean(self) -> np.ndarray:
        """Mean CKA between different time steps, per layer (1 = the layer is static in time)."""
        m = np.asarray(self.matrices, dtype=float)
        T = m.shape[-1]
        if T < 2:
            return np.full(m.shape[0], np.nan)
        mask = ~np.eye(T, dtype=bool)
        return np.array([np.nanmean(x[mask]) for x in m])

    def plot(self, out: str | Path, name: str | None = None) -> list[Path]:
        from . import plots

        name = name or self.analysis
        idx = [i for i, k in enumerate(self.kinds) if k == "block"] or list(range(min(len(self.layers), 36)))
        paths = plots.temporal_grid(
            np.asarray(self.matrices)[idx],
            [self.layers[i] for i in idx],
            Path(out) / f"{name}_grid",
            title=f"CKA across time steps: {self.label}",
        )
        paths += plots.curves(
            {self.label: self.off_diagonal_mean()},
            self.layers,
            Path(out) / f"{name}_curve",
            kinds=self.kinds,
            ylabel="mean CKA between time steps",
            title="Similarity across time steps (1 = static in time)",
        )
        return paths

    def summary(self) -> list[dict[str, Any]]:
        od = self.off_diagonal_mean()
        rows = []
        for i, (n, k) in enumerate(zip(self.layers, self.kinds, strict=False)):
            if k == "block":
                rows.append(
                    {
                        "model": self.label,
                        "layer": n,
                        "T": self.T,
                        "mean CKA across steps": float(od[i]),
                        "min": float(np.nanmin(self.matrices[i])),
                    }
                )
        return rows


def temporal(
    a: Any,
    *,
    n_images: int | None = 4096,
    batch_size: int = 256,
    layers: Any = "paper",
    unbiased: bool = True,
    data_root: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> TemporalAnalysis:
    """``T x T`` CKA between time steps for every recorded layer of an SNN checkpoint (Fig. 6)."""
    from .cka import temporal as cka_temporal

    t0 = time.perf_counter()
    dev = resolve_device(device)
    s = _subject(a, data_root, dev)
    if not s.spiking:
        raise ValueError(f"temporal CKA needs a spiking model; {s.label} is an ANN (it has no time steps)")
    if s.model.T < 2 and max(s.model.stage_T) < 2:
        raise ValueError(f"temporal CKA needs T >= 2; {s.label} runs with T = 1")
    n = _n(s, n_images)
    res = cka_temporal(
        s.model,
        _batches(s, n, batch_size, dev),
        layers=layers,
        unbiased=unbiased,
        device=dev,
        progress=progress,
    )
    return TemporalAnalysis(
        matrices=np.asarray(res.matrices, dtype=np.float64),
        layers=list(res.layers),
        kinds=list(res.kinds),
        T=int(res.T),
        label=s.label,
        source=s.source,
        n_images=n,
        seconds=time.perf_counter() - t0,
        environment=environment(),
    )


# --------------------------------------------------------------------------------------------------------
# blocks (Fig. 3)
# --------------------------------------------------------------------------------------------------------

_BLOCK_RE = re.compile(r"^(s\d+\.b\d+)(?:\.(.+))?$")
TYPE_LABELS = {"block": "residual output", "act": "LIF/ReLU", "conv": "conv", "norm": "BN"}


def _position(rest: str | None, kind: str) -> str:
    if rest is None:
        return "output"
    return "ds." + kind if rest.startswith("ds.") else rest


@dataclass
class BlocksResult(Result):
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
    seconds: float = 0.0

    def plot(self, out: str | Path, name: str | None = None) -> list[Path]:
        from . import plots

        name = name or self.analysis
        paths = plots.curves(
            {self.label: self.curve},
            self.layers,
            Path(out) / f"{name}_curve",
            kinds=self.kinds,
            title="CKA curve by layer type" + (" (periodic)" if self.periodic else ""),
            ylim=(min(0.0, float(np.nanmin(self.curve)) - 0.05), 1.05),
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


def blocks(a: Any, b: Any | None = None, **compare_kwargs: Any) -> tuple[BlocksResult, CompareResult]:
    """Per-layer-type CKA inside residual blocks (Fig. 3) from two checkpoints (or a saved ``CompareResult``).

    Returns the blocks result and the comparison it was computed from.
    """
    t0 = time.perf_counter()
    cmp = a if isinstance(a, CompareResult) else compare(a, b, **compare_kwargs)
    names, d = cmp.diagonal()
    kinds = dict(zip(cmp.layers_a, cmp.kinds_a, strict=False))
    res = blocks_from(d, names, [kinds[n] for n in names], f"{cmp.label_a} vs {cmp.label_b}")
    res.seconds = time.perf_counter() - t0
    return res, cmp


# --------------------------------------------------------------------------------------------------------
# robustness (Fig. 8)
# --------------------------------------------------------------------------------------------------------


@dataclass
class RobustnessResult(Result):
    """PGD robust accuracy (%) ``accuracy[m, e]`` of model m at ``eps[e]`` and per-layer CKA between the clean
    and the adversarial features of each model ``cka[m][e]`` (over ``layers[m]``)."""

    analysis: ClassVar[str] = "robustness"

    eps: list[float]
    labels: list[str]
    clean_accuracy: list[float]
    accuracy: list[list[float]]
    layers: list[list[str]]
    kinds: list[list[str]]
    cka: list[list[list[float]]]
    steps: int
    step_size: str
    random_start: bool
    space: str
    n_images: int
    sources: list[str | None] = field(default_factory=list)
    seconds: float = 0.0
    environment: dict = field(default_factory=dict)

    def plot(self, out: str | Path, name: str | None = None) -> list[Path]:
        from . import plots

        name = name or self.analysis
        acc = {
            lab: [c, *a] for lab, c, a in zip(self.labels, self.clean_accuracy, self.accuracy, strict=True)
        }
        paths = plots.robustness_bars([0.0, *self.eps], acc, Path(out) / f"{name}_accuracy")
        for m, lab in enumerate(self.labels):
            series = {
                f"eps={e:g}": np.asarray(c, dtype=float) for e, c in zip(self.eps, self.cka[m], strict=True)
            }
            slug = re.sub(r"[^A-Za-z0-9]+", "_", lab).strip("_").lower()
            allv = (
                np.concatenate([np.asarray(c, dtype=float) for c in self.cka[m]])
                if self.cka[m]
                else np.zeros(1)
            )
            paths += plots.curves(
                series,
                self.layers[m],
                Path(out) / f"{name}_cka_{m}_{slug}",
                title=f"CKA clean vs adversarial: {lab}",
                ylim=(min(0.0, float(np.nanmin(allv)) - 0.05), 1.05),
            )
        return paths

    def accuracies(self) -> list[tuple[str, float, str | None]]:
        return _labelled(self.labels, self.clean_accuracy, self.sources)

    def summary(self) -> list[dict[str, Any]]:
        rows = []
        for m, lab in enumerate(self.labels):
            row: dict[str, Any] = {"model": lab, "clean": self.clean_accuracy[m]}
            for e, a, c in zip(self.eps, self.accuracy[m], self.cka[m], strict=True):
                row[f"acc eps={e:g}"] = a
                row[f"mean CKA eps={e:g}"] = float(np.nanmean(c))
            rows.append(row)
        return rows


def robustness(
    sources: Sequence[Any],
    *,
    eps: Sequence[float] = DEFAULT_EPS,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = False,
    pixel_std: Sequence[float] | None = None,
    n_images: int | None = 4096,
    batch_size: int = 256,
    layers: Any = "paper",
    seed: int = 0,
    data_root: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> RobustnessResult:
    """PGD (SPEC Eq. 5, L-inf) against each model: robust accuracy per eps, CKA clean vs adversarial.

    eps is in the normalised input space the models receive, unless ``pixel_std`` (the per-channel std used
    to standardise the data) is given, in which case eps is a fraction of the [0, 1] pixel range. Default
    step size: ``2.5 * eps / steps`` (see ``snncka.attacks``). An example that fooled the model at a smaller
    eps lies inside every larger ball, so it is kept where the larger-eps attack did not succeed: robust
    accuracy is the worst case over the attacks run, hence never increases with eps.
    """
    from tqdm.auto import tqdm

    from .attacks import pgd, to_normalised_eps

    t0 = time.perf_counter()
    dev = resolve_device(device)
    eps = [float(e) for e in eps]
    if not eps or any(e < 0 for e in eps):
        raise ValueError(f"eps must be a non-empty list of values >= 0, got {eps}")
    if list(eps) != sorted(eps):
        raise ValueError(f"eps must be in increasing order, got {eps}")
    subs = _subjects(list(sources), data_root, dev)
    if not subs:
        raise ValueError("robustness needs at least one checkpoint")
    for s in subs[1:]:
        check_same_images(subs[0], s)
    g = torch.Generator().manual_seed(seed)
    cka_compare = _cka_engine()
    out = dict(labels=[], clean_accuracy=[], accuracy=[], layers=[], kinds=[], cka=[], sources=[])
    for s in subs:
        n = _n(s, n_images)
        clean = _batches(s, n, batch_size, dev)
        labels = [
            s.data.y_test[i : i + _images_in(x)].to(dev)
            for i, x in zip(range(0, n, batch_size), clean, strict=False)
        ]
        with torch.no_grad():
            pred_clean = [s.model(x).argmax(-1) for x in clean]
        ok_clean = torch.cat([p == y for p, y in zip(pred_clean, labels, strict=True)])
        best_adv = [x.clone() for x in clean]  # the worst example found so far for each image
        fooled = [~(p == y) for p, y in zip(pred_clean, labels, strict=True)]
        accs, ckas, lay, kin = [], [], None, None
        bar = tqdm(total=len(eps) * len(clean), desc=f"PGD {s.label}", disable=not progress, unit="batch")
        for e in eps:
            e_t: float | Tensor = e if pixel_std is None else to_normalised_eps(e, pixel_std).to(dev)
            advs = []
            for bi, (x, y) in enumerate(zip(clean, labels, strict=True)):
                xa = pgd(
                    s.model,
                    x,
                    y,
                    eps=e_t,
                    steps=steps,
                    step_size=step_size,
                    random_start=random_start,
                    generator=g,
                )
                with torch.no_grad():
                    wrong = s.model(xa).argmax(-1) != y
                keep = fooled[bi] & ~wrong  # fooled at a smaller eps but not now: keep the earlier example
                if keep.any():
                    bdim = 1 if xa.dim() == 5 else 0
                    mask = keep.view([-1 if d == bdim else 1 for d in range(xa.dim())])
                    xa = torch.where(mask, best_adv[bi], xa)
                    wrong = wrong | keep
                fooled[bi] = wrong
                best_adv[bi] = xa
                advs.append(xa)
                bar.update(1)
            accs.append(100.0 * float((~torch.cat(fooled)).float().mean()))
            res = cka_compare(
                s.model,
                s.model,
                clean,
                data_b=advs,
                layers_a=layers,
                layers_b=layers,
                device=dev,
                progress=False,
            )
            mat = np.asarray(res.matrix, dtype=float)
            jb = {nm: j for j, nm in enumerate(res.layers_b)}
            lay, kin = list(res.layers_a), list(res.kinds_a)
            ckas.append([float(mat[i, jb[nm]]) for i, nm in enumerate(res.layers_a)])
        bar.close()
        out["labels"].append(s.label)
        out["clean_accuracy"].append(100.0 * float(ok_clean.float().mean()))
        out["accuracy"].append(accs)
        out["layers"].append(lay)
        out["kinds"].append(kin)
        out["cka"].append(ckas)
        out["sources"].append(s.source)
    return RobustnessResult(
        eps=eps,
        steps=steps,
        step_size="2.5*eps/steps" if step_size is None else f"{step_size:g}",
        random_start=random_start,
        space="pixel" if pixel_std is not None else "normalised",
        n_images=_n(subs[0], n_images),
        seconds=time.perf_counter() - t0,
        environment=environment(),
        **out,
    )


# --------------------------------------------------------------------------------------------------------
# probe (Fig. A.6)
# --------------------------------------------------------------------------------------------------------


def fit_linear_probe(
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    *,
    num_classes: int,
    l2: float = 1e-4,
    max_iter: int = 100,
) -> tuple[float, float]:
    """Multinomial logistic regression on standardised features (full-batch L-BFGS, L2 ``l2/2 ||W||^2`` on the
    weights, mean cross-entropy); returns (train accuracy %, test accuracy %).

    The objective equals scikit-learn's ``LogisticRegression(C=1/(n*l2))`` up to a constant factor, so both
    reach the same optimum; it runs on the features' device (GPU for the paper's scale).
    """
    dt = torch.float64 if x_train.device.type == "cpu" else torch.float32
    xtr, xte = x_train.to(dt), x_test.to(dt)
    mu, sd = xtr.mean(0), xtr.std(0)
    sd = torch.where(sd > 1e-8, sd, torch.ones_like(sd))
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    ytr = y_train.to(xtr.device).long()
    W = torch.zeros(xtr.shape[1], num_classes, dtype=dt, device=xtr.device, requires_grad=True)
    b = torch.zeros(num_classes, dtype=dt, device=xtr.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [W, b],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(xtr @ W + b, ytr) + 0.5 * l2 * (W * W).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        tr = float(((xtr @ W + b).argmax(1) == ytr).double().mean()) * 100
        te = float(((xte @ W + b).argmax(1) == y_test.to(xte.device)).double().mean()) * 100
    return tr, te


def probe_layers(model: nn.Module) -> list[str]:
    """Names of the blocks a probe is trained on: residual blocks ``sX.bY`` (ResNet) or conv units ``sX.lY``
    (VGG), in forward order."""
    names = [n for n, _ in model.named_modules() if re.fullmatch(r"s\d+\.[bl]\d+", n)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no blocks named like 's1.b0' or 's1.l0' to probe")
    return names


@torch.no_grad()
def pooled_features(
    s: Subject,
    x_all: Tensor,
    names: Sequence[str],
    batch_size: int,
    device: torch.device,
    progress: bool = False,
    desc: str = "",
) -> dict[str, Tensor]:
    """Global-average-pooled outputs ``[N, C]`` of the named modules, averaged over time steps for an SNN."""
    from tqdm.auto import tqdm

    feats: dict[str, list[Tensor]] = {n: [] for n in names}
    mods = dict(s.model.named_modules())
    state = {"B": 0}

    def hook(name: str) -> Callable[..., None]:
        def f(module: nn.Module, inputs: Any, out: Tensor) -> None:
            pooled = out.detach().float().mean(dim=tuple(range(2, out.dim())))  # [T_l*B, C]
            B = state["B"]
            feats[name].append(pooled.reshape(pooled.shape[0] // B, B, -1).mean(0).cpu())

        return f

    handles = [mods[n].register_forward_hook(hook(n)) for n in names]
    try:
        for i in tqdm(range(0, len(x_all), batch_size), desc=desc, disable=not progress, unit="batch"):
            x = x_all[i : i + batch_size]
            state["B"] = len(x)
            s.model(_inputs(s, x).to(device))
    finally:
        for h in handles:
            h.remove()
    return {n: torch.cat(v) for n, v in feats.items()}


@dataclass
class ProbeResult(Result):
    """Linear-probe test accuracy (%) ``accuracy[m][k]`` on block ``blocks[m][k]`` of model m."""

    analysis: ClassVar[str] = "probe"

    labels: list[str]
    blocks: list[list[str]]
    accuracy: list[list[float]]
    train_accuracy: list[list[float]]
    model_accuracy: list[float]
    n_train: int
    n_test: int
    l2: float
    sources: list[str | None] = field(default_factory=list)
    seconds: float = 0.0
    environment: dict = field(default_factory=dict)

    def plot(self, out: str | Path, name: str | None = None) -> list[Path]:
        from . import plots

        name = name or self.analysis
        longest = max(self.blocks, key=len)
        acc = {
            lab: list(a) + [float("nan")] * (len(longest) - len(a))
            for lab, a in zip(self.labels, self.accuracy, strict=True)
        }
        return plots.probe_curves(
            longest,
            acc,
            Path(out) / f"{name}_accuracy",
            model_accuracy=dict(zip(self.labels, self.model_accuracy, strict=True)),
        )

    def accuracies(self) -> list[tuple[str, float, str | None]]:
        return _labelled(self.labels, self.model_accuracy, self.sources)

    def summary(self) -> list[dict[str, Any]]:
        return [
            {
                "model": lab,
                "model accuracy": ma,
                "best probe": f"{max(a):.2f} ({b[int(np.argmax(a))]})",
                "last block probe": a[-1],
                **{f"probe {n}": v for n, v in zip(b, a, strict=True)},
            }
            for lab, b, a, ma in zip(
                self.labels, self.blocks, self.accuracy, self.model_accuracy, strict=True
            )
        ]


def probe(
    sources: Sequence[Any],
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    l2: float = 1e-4,
    batch_size: int = 256,
    data_root: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> ProbeResult:
    """Train a linear classifier on every block's pooled (for an SNN also time-averaged) output on the
    training split and report its test accuracy (Fig. A.6). ``n_train``/``n_test`` limit the images
    (default: all)."""
    t0 = time.perf_counter()
    dev = resolve_device(device)
    subs = _subjects(list(sources), data_root, dev, same_data=False)
    if not subs:
        raise ValueError("probe needs at least one checkpoint")
    out = dict(labels=[], blocks=[], accuracy=[], train_accuracy=[], model_accuracy=[], sources=[])
    ntr = nte = 0
    for s in subs:
        d = s.data
        ntr = len(d.y_train) if n_train is None else min(n_train, len(d.y_train))
        nte = len(d.y_test) if n_test is None else min(n_test, len(d.y_test))
        names = probe_layers(s.model)
        ftr = pooled_features(
            s, d.x_train[:ntr], names, batch_size, dev, progress, f"features {s.label} (train)"
        )
        fte = pooled_features(
            s, d.x_test[:nte], names, batch_size, dev, progress, f"features {s.label} (test)"
        )
        tr_acc, te_acc = [], []
        for nme in names:
            a, b = fit_linear_probe(
                ftr[nme].to(dev),
                d.y_train[:ntr],
                fte[nme].to(dev),
                d.y_test[:nte],
                num_classes=d.num_classes,
                l2=l2,
            )
            tr_acc.append(a)
            te_acc.append(b)
        out["labels"].append(s.label)
        out["blocks"].append(names)
        out["accuracy"].append(te_acc)
        out["train_accuracy"].append(tr_acc)
        out["model_accuracy"].append(accuracy(s, nte, batch_size, dev))
        out["sources"].append(s.source)
    return ProbeResult(
        n_train=ntr, n_test=nte, l2=l2, seconds=time.perf_counter() - t0, environment=environment(), **out
    )


# --------------------------------------------------------------------------------------------------------
# seeds (App. C)
# --------------------------------------------------------------------------------------------------------


@dataclass
class SeedsResult(Result):
    """Cross-layer CKA for every pairing of the given models (App. C): ``pairs[k] = (i, j)`` -> ``pair_k``."""

    analysis: ClassVar[str] = "seeds"
    arrays: ClassVar[tuple[str, ...]] = ("matrices",)

    matrices: np.ndarray  # [P, L, L] (all models share one topology)
    pairs: list[list[int]]
    labels: list[str]
    spiking: list[bool]
    layers: list[str]
    n_images: int
    sources: list[str | None] = field(default_factory=list)
    seconds: float = 0.0
    environment: dict = field(default_factory=dict)

    def _panel(self, k: int):
        i, j = self.pairs[k]
        m = np.asarray(self.matrices[k])
        if self.spiking[i] and not self.spiking[j]:  # SNN on x, ANN on y
            return (
                m.T,
                self.layers,
                self.layers,
                f"{self.labels[j]}\nvs {self.labels[i]}",
                self.labels[i],
                self.labels[j],
            )
        return (
            m,
            self.layers,
            self.layers,
            f"{self.labels[i]}\nvs {self.labels[j]}",
            self.labels[j],
            self.labels[i],
        )

    def plot(self, out: str | Path, name: str | None = None) -> list[Path]:
        from . import plots

        name = name or self.analysis
        panels = [self._panel(k) for k in range(len(self.pairs))]
        paths = plots.heatmap_grid(
            panels, Path(out) / f"{name}_heatmaps", title="CKA across seeds and pairings"
        )
        series = {
            f"{self.labels[i]} vs {self.labels[j]}": np.diagonal(self.matrices[k])
            for k, (i, j) in enumerate(self.pairs)
            if i != j
        }
        if series:
            lo = min(float(np.nanmin(v)) for v in series.values())
            paths += plots.curves(
                series,
                self.layers,
                Path(out) / f"{name}_curves",
                title="CKA curves per pairing",
                ylim=(min(0.0, lo - 0.05), 1.05),
            )
        return paths

    def summary(self) -> list[dict[str, Any]]:
        return [
            {
                "model a": self.labels[i],
                "model b": self.labels[j],
                "mean CKA (diagonal)": float(np.nanmean(np.diagonal(self.matrices[k]))),
                "mean CKA (matrix)": float(np.nanmean(self.matrices[k])),
            }
            for k, (i, j) in enumerate(self.pairs)
        ]


def seeds(sources: Sequence[Any], *, include_self: bool = True, **compare_kwargs: Any) -> SeedsResult:
    """CKA heatmaps for every pair of the given checkpoints (e.g. ANN and SNN, two seeds each: App. C).

    ``include_self`` adds each model against itself (Fig. C.1's first columns).
    """
    t0 = time.perf_counter()
    dev = resolve_device(compare_kwargs.pop("device", None))
    data_root = compare_kwargs.pop("data_root", None)
    subs = _subjects(list(sources), data_root, dev)
    if len(subs) < 2:
        raise ValueError(f"seeds needs at least two checkpoints, got {len(subs)}")
    for s in subs[1:]:
        check_same_images(subs[0], s)
    topo = [s.model.config["name"] for s in subs]
    if len(set(topo)) != 1:
        raise ValueError(f"seeds compares models of one topology; got {sorted(set(topo))}")
    pairs = [[i, j] for i in range(len(subs)) for j in range(i if include_self else i + 1, len(subs))]
    mats, layers, n = [], None, 0
    for i, j in pairs:
        r = compare(subs[i], subs[j] if j != i else None, device=dev, **compare_kwargs)
        if layers is not None and (r.layers_a != layers or r.layers_b != layers):
            raise ValueError("the models record different layers; seeds needs identical topologies")
        layers, n = r.layers_a, r.n_images
        mats.append(r.matrix)
    return SeedsResult(
        matrices=np.stack(mats),
        pairs=pairs,
        labels=[s.label for s in subs],
        spiking=[s.spiking for s in subs],
        layers=layers,
        n_images=n,
        sources=[s.source for s in subs],
        seconds=time.perf_counter() - t0,
        environment=environment(),
    )


# --------------------------------------------------------------------------------------------------------
# firing rates
# --------------------------------------------------------------------------------------------------------


@dataclass
class RatesResult(Result):
    """Firing-rate statistics of every LIF layer over the test images.

    ``mean``: fraction of (neuron, step, image) that spike; ``per_step[l, t]``: the rate at step t (NaN
    past the layer's own T); ``dead``: fraction of neurons that never spike on any image; ``saturated``:
    fraction that spike at every step of every image; ``neuron_std``: spread of the per-neuron rates.
    """

    analysis: ClassVar[str] = "rates"
    arrays: ClassVar[tuple[str, ...]] = ("mean", "per_step", "dead", "saturated", "neuron_std")

    mean: np.ndarray
    per_step: np.ndarray
    dead: np.ndarray
    saturated: np.ndarray
    neuron_std: np.ndarray
    layers: list[str]
    T: list[int]
    label: str
    n_images: int
    source: str | None = None
    seconds: float = 0.0
    environment: dict = field(default_factory=dict)

    def plot(self, out: str | Path, name: str | None = None) -> list[Path]:
        from . import plots

        name = name or self.analysis
        return plots.rate_bars(
            self.layers,
            self.mean,
            Path(out) / f"{name}_bars",
            per_step=self.per_step,
            title=f"Firing rate per LIF layer: {self.label}",
        )

    def summary(self) -> list[dict[str, Any]]:
        return [
            {
                "model": self.label,
                "layer": n,
                "T": t,
                "rate": float(m),
                "dead": float(d),
                "saturated": float(sa),
            }
            for n, t, m, d, sa in zip(self.layers, self.T, self.mean, self.dead, self.saturated, strict=True)
        ]


@torch.no_grad()
def rates(
    a: Any,
    *,
    n_images: int | None = None,
    batch_size: int = 256,
    data_root: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> RatesResult:
    """Firing-rate statistics per LIF layer of a spiking checkpoint on the first ``n_images`` test images."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    dev = resolve_device(device)
    s = _subject(a, data_root, dev)
    lifs = [(n, m) for n, m in s.model.named_modules() if isinstance(m, LIF)]
    if not lifs:
        raise ValueError(f"{s.label} has no LIF layers: firing rates need a spiking checkpoint")
    n = len(s.data.y_test) if n_images is None else min(n_images, len(s.data.y_test))
    step_sum: dict[str, Tensor] = {}
    neuron_sum: dict[str, Tensor] = {}
    steps_of: dict[str, int] = {}
    state = {"B": 0}

    def hook(name: str) -> Callable[..., None]:
        def f(module: LIF, inputs: Any, out: Tensor) -> None:
            B = state["B"]
            T = out.shape[0] // B
            spikes = out.detach().reshape(T, B, -1).double()
            steps_of[name] = T
            step_sum[name] = step_sum.get(name, 0) + spikes.sum(dim=(1, 2))
            neuron_sum[name] = neuron_sum.get(name, 0) + spikes.sum(dim=(0, 1))

        return f

    mods = dict(lifs)
    handles = [mods[nm].register_forward_hook(hook(nm)) for nm in mods]
    try:
        for i in tqdm(range(0, n, batch_size), desc=f"rates {s.label}", disable=not progress, unit="batch"):
            x = s.data.x_test[i : min(i + batch_size, n)]
            state["B"] = len(x)
            s.model(_inputs(s, x).to(dev))
    finally:
        for h in handles:
            h.remove()
    names = [nm for nm in mods if nm in steps_of]
    Tmax = max(steps_of.values())
    per_step = np.full((len(names), Tmax), np.nan)
    mean, dead, sat, nstd, Ts = [], [], [], [], []
    for k, nm in enumerate(names):
        T = steps_of[nm]
        p = neuron_sum[nm].numel()
        per_step[k, :T] = (step_sum[nm] / (n * p)).cpu().numpy()
        counts = neuron_sum[nm].cpu().numpy()
        mean.append(float(counts.sum() / (n * p * T)))
        dead.append(float(np.mean(counts == 0)))
        sat.append(float(np.mean(counts == n * T)))
        nstd.append(float(np.std(counts / (n * T))))
        Ts.append(T)
    return RatesResult(
        mean=np.array(mean),
        per_step=per_step,
        dead=np.array(dead),
        saturated=np.array(sat),
        neuron_std=np.array(nstd),
        layers=names,
        T=Ts,
        label=s.label,
        n_images=n,
        source=s.source,
        seconds=time.perf_counter() - t0,
        environment=environment(),
    )


def iter_results(root: str | Path) -> Iterator[tuple[Path, Result]]:
    """Every saved analysis result below ``root`` (sorted by path)."""
    for p in sorted(Path(root).rglob("*.json")):
        try:
            head = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(head, dict) and head.get("snncka_analysis") in _RESULTS:
            yield p, load_result(p)
