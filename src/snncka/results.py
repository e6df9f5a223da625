"""One result format for the CKA engine (``snncka.compare``/``temporal``) and the paper's analyses.

Every result is a dataclass written as two files with one stem: ``<stem>.json`` (its type, the format version
and every non-array field, strict JSON: NaN and inf become null) and ``<stem>.npz`` (its array fields), both
atomically. A result holding another (an analysis result holds the engine's ``CKAResult``) stores it as a
nested JSON object and its arrays as ``<field>.<array>`` in the same ``.npz``.

* ``res.save(path)``: a ``path`` ending in ``.json``/``.npz`` names the files; any other path is a folder and
  the files are ``<folder>/<name>.json`` + ``.npz`` (``name`` defaults to the result's type).
* ``load_result(path)`` (either file) reads any result; ``SomeResult.load(path)`` reads a result of that
  class, or the one of that class inside the saved result: ``CKAResult.load("runs/x/compare.json")`` returns
  the engine result of a ``snncka compare`` run.
* ``res.plot(folder)`` draws the result's figures (PNG + SVG) into ``folder`` and returns their paths;
  ``iter_results(folder)`` finds every result below a folder (what ``snncka report`` shows).

A result type is known once the module defining its class is imported (``snncka.analyses`` for the built-in
ones; a plugin's own for its results).
"""

from __future__ import annotations

import hashlib
import json
import math
import types
import typing
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from .files import atomic_write_bytes, atomic_write_stream, check_writable
from .readers import BadFileError, read_json, read_npz

__all__ = ["CKAResult", "Measured", "Result", "TemporalResult", "check_output_dir", "iter_results", "load_result",
           "record_figures", "result_paths", "saved_figures", "saved_inputs"]

FORMAT_VERSION = 2
TYPE_KEY = "snncka_result"
INPUTS_KEY = "computed_from"  # the head's fingerprint of a result's inputs (not a field: any result may have it)
FIGURES_KEY = "figures_drawn"  # the head's {PNG file name: sha256} of the figures drawn from this very result
_REGISTRY: dict[str, type[Result]] = {}
R = TypeVar("R", bound="Result")


def jsonable(v: Any) -> Any:
    """Plain JSON values; NaN/inf (an undefined CKA of a constant layer) become null."""
    if isinstance(v, np.ndarray):
        return jsonable(v.tolist())
    if isinstance(v, np.generic):
        return jsonable(v.item())
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    return v


def result_paths(path: str | Path, name: str | None = None) -> tuple[Path, Path]:
    """``(<stem>.json, <stem>.npz)`` of a result: ``path`` is a folder when ``name`` is given or when it does
    not end in ``.json``/``.npz``."""
    p = Path(path)
    if name is None and p.suffix in (".json", ".npz"):
        stem = p.with_suffix("")
    else:
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise ValueError(f"a result name must be a plain file name stem without a folder, got {name!r}")
        stem = p / name
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".npz")


def check_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """``path`` if it is, or can be created as, a writable folder; else a one-line error. Commands call it
    before computing, so a bad ``--out`` fails at once instead of after the work."""
    p = Path(path)
    existing = p
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "is a file" if existing == p else f"cannot be created: {str(existing)!r} is a file"
        raise ValueError(f"{what} {str(p)!r} {where}, not a folder; choose another path")
    if existing.exists():
        check_writable(existing, what if existing == p else f"folder above the {what}")
    return p


@dataclass
class Result:
    """Base of every result: array fields (``arrays``) go to ``.npz``, the others to ``.json``.

    ``analysis`` is the result's type (its name in the files and in the report); subclasses register by it.
    """

    analysis: ClassVar[str] = ""
    arrays: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.__dict__.get("analysis"):
            _REGISTRY[cls.analysis] = cls

    def save(self, path: str | Path, name: str | None = None, *, inputs: str | None = None) -> Path:
        """Write ``<stem>.json`` and ``<stem>.npz`` atomically (see the module doc for ``path``/``name``);
        returns the JSON path. ``inputs``: the fingerprint of what the result was computed from
        (``snncka.fingerprint``), kept in the JSON head for ``saved_inputs``."""
        if name is None and Path(path).suffix not in (".json", ".npz"):
            name = self.analysis
        js, npz = result_paths(path, name)
        meta, arrays = _encode(self)
        head = {TYPE_KEY: meta.pop(TYPE_KEY), "format_version": FORMAT_VERSION, "name": js.stem}
        if inputs is not None:
            head[INPUTS_KEY] = inputs
        atomic_write_stream(npz, lambda f: np.savez(f, **arrays))
        atomic_write_bytes(js, json.dumps({**head, **meta}, indent=1, allow_nan=False).encode())
        return js

    @classmethod
    def load(cls: type[R], path: str | Path) -> R:
        """A saved result of this class, or the result of this class held by the saved result."""
        res = load_result(path)
        if isinstance(res, cls):
            return res
        inner = [getattr(res, f.name) for f in fields(res) if isinstance(getattr(res, f.name), cls)]
        if len(inner) == 1:
            return inner[0]
        raise ValueError(f"{str(path)!r} holds a {res.analysis!r} result, not a {cls.__name__}")

    def plot(self, out: str | Path, name: str | None = None) -> list[Path]:
        """Draw the figures into folder ``out`` as ``<name>_<figure>.png``/``.svg``; returns the paths."""
        return []

    def accuracies(self) -> list[tuple[str, float, str | None]]:
        """(model label, test accuracy %, checkpoint) for each model whose accuracy this result measured."""
        return []

    def summary(self) -> list[dict[str, Any]]:
        """Rows for the report's tables."""
        return []

    def inconsistency(self) -> str | None:
        """What is inconsistent between the fields of a loaded result (e.g. a matrix whose shape does not
        match its layer lists), or None."""
        return None


@dataclass(kw_only=True)
class Measured(Result):
    """A result measured by an analysis: how long it took and on what machine (shown in the report)."""

    seconds: float = 0.0
    environment: dict = field(default_factory=dict)


def _encode(res: Result, prefix: str = "") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    meta: dict[str, Any] = {TYPE_KEY: res.analysis}
    arrays: dict[str, np.ndarray] = {}
    for f in fields(res):
        v = getattr(res, f.name)
        if isinstance(v, Result):
            meta[f.name], inner = _encode(v, f"{prefix}{f.name}.")
            arrays.update(inner)
        elif f.name in res.arrays:
            arrays[prefix + f.name] = np.asarray(v)
        else:
            meta[f.name] = jsonable(v)
    return meta, arrays


def _decode(meta: dict[str, Any], arrays: dict[str, np.ndarray], js: str, npz: str, prefix: str = "") -> Result:
    """The result ``meta`` (a ``.json``'s fields) with ``arrays`` (its ``.npz``'s); a problem names the file
    that holds the bad part: ``js`` or ``npz`` (both quoted)."""
    cls = _REGISTRY[meta[TYPE_KEY]]
    hints = typing.get_type_hints(cls)
    kw: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in cls.arrays:
            if prefix + f.name not in arrays:
                if f.default_factory is not MISSING:  # an optional array a result saved before it existed
                    continue
                raise ValueError(f"{npz}: its .npz lacks array {prefix + f.name!r}; the result is incomplete")
            v = arrays[prefix + f.name]
            if v.dtype.kind not in "biuf":
                raise ValueError(f"{npz}: its .npz array {prefix + f.name!r} holds {v.dtype}, not numbers")
            kw[f.name] = v
        elif f.name in meta:
            v = meta[f.name]
            if isinstance(v, dict) and v.get(TYPE_KEY) in _REGISTRY:
                v = _decode(v, arrays, js, npz, f"{prefix}{f.name}.")
            if not _conforms(v, hints[f.name]):
                raise ValueError(f"{js}: field {prefix + f.name!r} of the {cls.analysis!r} result should be "
                                 f"{_hint_name(hints[f.name])}, got {type(v).__name__} {_short(v)}")
            kw[f.name] = v
    try:
        res = cls(**kw)
    except TypeError as e:  # a required field is missing
        raise ValueError(f"{js} is not a complete {cls.__name__} ({e})") from None
    problem = res.inconsistency()
    if problem:
        raise ValueError(f"{js} and its .npz: {problem}; the result is corrupt")
    return res


def _conforms(v: Any, hint: Any) -> bool:
    """Whether the JSON value ``v`` has the type ``hint`` of a result's field (a float may be null: NaN)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(v, a) for a in args)
    if hint is type(None):
        return v is None
    if hint is float:
        return v is None or (isinstance(v, int | float) and not isinstance(v, bool))
    if hint in (int, bool):
        return type(v) is hint
    if hint is str:
        return isinstance(v, str)
    if hint is dict or origin is dict:
        return isinstance(v, dict) and (not args or all(_conforms(x, args[1]) for x in v.values()))
    if hint is list or origin is list:
        return isinstance(v, list) and (not args or all(_conforms(x, args[0]) for x in v))
    if isinstance(hint, type) and issubclass(hint, Result | np.ndarray):
        return isinstance(v, hint)
    return True


def _hint_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def _short(v: Any) -> str:
    text = json.dumps(jsonable(v)) if not isinstance(v, Result) else v.analysis
    return text if len(text) <= 40 else text[:37] + "..."


def _type_of(head: Any) -> str | None:
    """The registered result type a JSON head declares, or None."""
    rtype = head.get(TYPE_KEY) if isinstance(head, dict) else None
    return rtype if isinstance(rtype, str) and rtype in _REGISTRY else None


def load_result(path: str | Path) -> Result:
    """Load any saved result from its ``.json`` or ``.npz`` (the other file must lie beside it)."""
    p = Path(path)
    if p.suffix not in (".json", ".npz"):
        if p.is_dir():
            raise FileNotFoundError(f"{str(p)!r} is a folder; pass a result's <name>.json (or .npz)")
        p = p.with_name(p.name + ".json")
    js, npz = result_paths(p)
    if not js.is_file():
        raise FileNotFoundError(f"no saved result at {str(js)!r} (a result is <name>.json + <name>.npz)")
    return _from_meta(js, npz, read_json(js))


def _saved_head(path: str | Path) -> dict[str, Any] | None:
    """The parsed ``<stem>.json`` of a saved result whose ``.npz`` is there too; None when either is missing or
    the JSON is unreadable."""
    js, npz = result_paths(path)
    try:
        head = read_json(js)
    except (OSError, BadFileError):
        return None
    return head if isinstance(head, dict) and npz.is_file() else None


def saved_inputs(path: str | Path) -> str | None:
    """The fingerprint of the inputs a saved result (``<stem>.json``) was computed from; None when the file or
    its ``.npz`` is missing or unreadable, or it was saved without one (then it can't be trusted to be current).
    """
    fp = (_saved_head(path) or {}).get(INPUTS_KEY)
    return fp if isinstance(fp, str) else None


def record_figures(path: str | Path, figures: Sequence[str | Path]) -> None:
    """Name in the saved result ``path``'s head the PNGs among ``figures`` that ``plot`` drew from it, with their
    hashes, so that a report shows them as drawn instead of drawing them again (``saved_figures``). Only the
    JSON is rewritten; the arrays stay as saved."""
    js, _ = result_paths(path)
    head = _saved_head(js)
    pngs = {q.name: hashlib.sha256(q.read_bytes()).hexdigest() for q in map(Path, figures) if q.suffix == ".png"}
    if head is not None and pngs:
        atomic_write_bytes(js, json.dumps({**head, FIGURES_KEY: pngs}, indent=1, allow_nan=False).encode())


def saved_figures(path: str | Path, folder: str | Path) -> list[Path] | None:
    """The PNGs in ``folder`` that were drawn from the saved result ``path`` (``record_figures``), in the order
    drawn; None when the result names none or any of them is missing or has changed since (then draw them
    again)."""
    drawn = (_saved_head(path) or {}).get(FIGURES_KEY)
    if not isinstance(drawn, dict) or not drawn:
        return None
    out = []
    for name, digest in drawn.items():
        q = Path(folder) / str(name)
        if Path(str(name)).name != name or not q.is_file() or hashlib.sha256(q.read_bytes()).hexdigest() != digest:
            return None
        out.append(q)
    return out


def _from_meta(js: Path, npz: Path, meta: Any) -> Result:
    """The result whose parsed ``.json`` is ``meta``, with the arrays of its ``.npz``."""
    rtype = _type_of(meta)
    if rtype is None:
        tag = meta.get(TYPE_KEY) if isinstance(meta, dict) else None
        if isinstance(tag, str):
            raise ValueError(f"{str(js)!r} holds a {tag!r} result, a type no imported module defines; import "
                             "the module that registers it (e.g. the experiment's plugins) first")
        raise ValueError(f"{str(js)!r} is not a snncka result (no {TYPE_KEY!r} tag)")
    arrays = read_npz(npz) if npz.is_file() else {}
    return _decode(meta, arrays, repr(str(js)), repr(str(npz)))


def iter_results(root: str | Path) -> Iterator[tuple[Path, Result]]:
    """Every saved result below ``root`` (sorted by path); a file that cannot be read is skipped with a
    warning, so one bad file does not hide the others."""
    for p in sorted(Path(root).rglob("*.json")):
        try:
            head = read_json(p)
        except BadFileError as e:
            if p.name != "config.json":  # a training run's config is the report's to judge
                warnings.warn(f"skipped {e}", UserWarning, stacklevel=2)
            continue
        except OSError:
            continue
        if _type_of(head) is None:
            continue
        try:
            yield p, _from_meta(p, result_paths(p)[1], head)  # the JSON is read once
        except (OSError, ValueError) as e:
            warnings.warn(f"skipped {p}: {e}", UserWarning, stacklevel=2)


# --------------------------------------------------------------------------------------------------------
# Engine results and the figures / summaries they share with the analyses that hold them
# --------------------------------------------------------------------------------------------------------


def curve_ylim(values: Any) -> tuple[float, float]:
    """y range of a CKA curve: 0..1.05, extended below 0 if a value is (the unbiased estimator allows it)."""
    v = np.asarray(values, dtype=float)
    lo = float(np.min(v[np.isfinite(v)])) if np.isfinite(v).any() else 0.0
    return min(0.0, lo - 0.05), 1.05


def finite_mean(values: Any) -> float:
    """Mean of the finite values; NaN (shown as missing) if there are none, without numpy's warning."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _label(cfg: Any, default: str) -> str:
    if isinstance(cfg, dict) and "name" in cfg:
        return f"{'SNN' if cfg.get('spiking') else 'ANN'} {cfg['name']}"
    return f"{default} ({cfg})" if isinstance(cfg, str) else default


@dataclass
class CKAResult(Result):
    """Minibatch CKA between every recorded layer of model A (rows) and of model B (columns) (Sec. 3.3)."""

    analysis: ClassVar[str] = "cka"
    arrays: ClassVar[tuple[str, ...]] = ("matrix", "ci_low", "ci_high", "batch_ab", "batch_aa", "batch_bb")

    matrix: np.ndarray
    layers_a: list[str]
    layers_b: list[str]
    kinds_a: list[str]
    kinds_b: list[str]
    n_images: int
    batch_size: int
    estimator: str
    kernel: str
    ci_low: np.ndarray
    ci_high: np.ndarray
    n_batches: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    # per batch of test images, the HSIC sums behind the corresponding layers' CKA (intervals over test images,
    # ``batch_samples``): HSIC(a, b) of the pairs of ``corresponding()`` [k, pairs], HSIC(a, a) [k, La] and
    # HSIC(b, b) [k, Lb]; empty for results computed elsewhere or saved before they were kept
    batch_ab: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    batch_aa: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    batch_bb: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    def inconsistency(self) -> str | None:
        want = (len(self.layers_a), len(self.layers_b))
        if np.size(self.batch_ab):
            k = np.shape(self.batch_ab)[0]
            shapes = {"batch_ab": (k, len(self.corresponding()[0])), "batch_aa": (k, want[0]),
                      "batch_bb": (k, want[1])}
            for name, shape in shapes.items():
                if np.shape(getattr(self, name)) != shape:
                    return f"{name} has shape {np.shape(getattr(self, name))}, expected {shape}"
        for name in ("matrix", "ci_low", "ci_high"):
            shape = np.shape(getattr(self, name))
            if shape != want:
                return f"{name} has shape {shape}, but there are {want[0]} x {want[1]} layers"
        if len(self.kinds_a) != want[0] or len(self.kinds_b) != want[1]:
            return (f"{len(self.kinds_a)} x {len(self.kinds_b)} layer kinds for {want[0]} x {want[1]} layers")
        return None

    def diagonal(self) -> np.ndarray:
        """The matrix's diagonal: layer i of A vs layer i of B (the lists must have equal length)."""
        if self.matrix.shape[0] != self.matrix.shape[1]:
            raise ValueError(
                f"diagonal() needs as many layers in A as in B, got {self.matrix.shape}; "
                "select matching layers, or use corresponding() for the same-named layers"
            )
        return np.diagonal(self.matrix).copy()

    def corresponding(self) -> tuple[list[str], np.ndarray]:
        """The paper's "CKA curve": CKA between same-named layers of A and B, in A's order: (names, values)."""
        jb = {n: j for j, n in enumerate(self.layers_b)}
        ia = {n: i for i, n in enumerate(self.layers_a)}
        names = [n for n in self.layers_a if n in jb]
        return names, np.array([self.matrix[ia[n], jb[n]] for n in names], dtype=float)

    def batch_samples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Per batch, the HSIC sums of the corresponding layers (``corresponding()``'s order): ``(ab, aa, bb)``,
        each ``[k batches, pairs]``, whose sums over batches give their CKA ``ab / sqrt(aa * bb)``; None
        when the result kept none."""
        if not np.size(self.batch_ab):
            return None
        names, _ = self.corresponding()
        ia = {n: i for i, n in enumerate(self.layers_a)}
        jb = {n: j for j, n in enumerate(self.layers_b)}
        aa = np.asarray(self.batch_aa, dtype=float)[:, [ia[n] for n in names]]
        bb = np.asarray(self.batch_bb, dtype=float)[:, [jb[n] for n in names]]
        return np.asarray(self.batch_ab, dtype=float), aa, bb

    def curve_missing(self) -> str | None:
        """Why there is no CKA curve of corresponding layers (None: there is one). Same-named layers
        correspond only within one architecture: the same layer list in the same order, or two snncka models
        of one registered architecture (an ANN and its SNN, Fig. 2). Between unrelated models, names like
        ``conv1`` or ``fc`` match by accident, and a curve over them would mean nothing."""
        names, _ = self.corresponding()
        if not names:
            return "model A and model B have no layer name in common"
        if self.layers_a == self.layers_b:
            return None
        archs = [cfg.get("name") if isinstance(cfg, dict) else None
                 for cfg in (self.meta.get("model_a"), self.meta.get("model_b"))]
        if archs[0] is not None and archs[0] == archs[1]:
            return None
        return (f"the layers of model A ({len(self.layers_a)}) and model B ({len(self.layers_b)}) are not the "
                f"same list and the models are not one architecture, so the {len(names)} same-named layers "
                "need not correspond; read the heatmap")

    def plot(self, out: str | Path, name: str | None = None, *, label_a: str | None = None,
             label_b: str | None = None, snn_on_x: bool = False) -> list[Path]:
        """Cross-layer heatmap (``<name>_heatmap``) and CKA curve (``<name>_curve``; only where the layers
        correspond, see ``curve_missing``, else a warning says why). By the paper's convention
        (Fig. 2) ``snn_on_x`` puts model A (an SNN) on x; otherwise model B's layers are on x."""
        from . import plots

        name = name or self.analysis
        la = label_a or _label(self.meta.get("model_a"), "model A")
        lb = label_b or _label(self.meta.get("model_b"), "model B")
        if snn_on_x:
            m, xl, yl, xlab, ylab = self.matrix.T, self.layers_a, self.layers_b, la, lb
        else:
            m, xl, yl, xlab, ylab = self.matrix, self.layers_b, self.layers_a, lb, la
        paths = plots.heatmap(m, xl, yl, Path(out) / f"{name}_heatmap", x_label=xlab, y_label=ylab,
                              title=f"CKA ({self.n_images} test images)")
        names, d = self.corresponding()
        missing = self.curve_missing()
        if missing:
            warnings.warn(f"{name}: no curve of corresponding layers drawn: {missing}", UserWarning, stacklevel=2)
        else:
            kinds = dict(zip(self.layers_a, self.kinds_a, strict=False))
            paths += plots.curves({f"{la} vs {lb}": d}, names, Path(out) / f"{name}_curve",
                                  kinds=[kinds[n] for n in names], title="CKA of corresponding layers",
                                  ylim=curve_ylim(d))
        return paths

    def summary(self, same_model: bool = False) -> list[dict[str, Any]]:
        """One row: size, images, mean CKA; and the corresponding layers' CKA unless ``same_model`` (a model
        against itself, whose corresponding layers have CKA 1 by construction: not a measurement)."""
        names, d = self.corresponding()
        row: dict[str, Any] = {
            "layers": f"{len(self.layers_a)} x {len(self.layers_b)}",
            "images": self.n_images,
            "mean CKA (matrix)": finite_mean(self.matrix),
        }
        missing = self.curve_missing()
        if missing:
            row["corresponding layers"] = f"none: {missing}"
        elif np.isfinite(d).any() and not same_model:
            k = int(np.nanargmin(d))
            row.update({
                "mean CKA (diagonal)": finite_mean(d),
                "min diagonal": f"{d[k]:.3f} ({names[k]})",
                "last layer": f"{d[-1]:.3f} ({names[-1]})" if np.isfinite(d[-1]) else f"- ({names[-1]})",
            })
        if np.isnan(self.matrix).any():
            row["undefined entries"] = int(np.isnan(self.matrix).sum())
        return [row]


@dataclass
class TemporalResult(Result):
    """Per layer, the ``T x T`` CKA between its time steps (NaN-padded to the largest T) (Fig. 6)."""

    analysis: ClassVar[str] = "temporal-cka"
    arrays: ClassVar[tuple[str, ...]] = ("matrices", "batch_hsic")

    layers: list[str]
    kinds: list[str]
    matrices: np.ndarray
    T: int
    n_images: int
    estimator: str = "unbiased"
    kernel: str = "linear"
    steps: list[int] = field(default_factory=list)
    # per batch of test images, the HSIC between the time steps of every layer [k, L, T, T] (their sums over
    # batches give ``matrices``; intervals over test images); empty where not kept
    batch_hsic: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 0)))

    def inconsistency(self) -> str | None:
        shape = np.shape(self.matrices)
        if len(shape) != 3 or shape[0] != len(self.layers) or shape[1] != shape[2]:
            return f"matrices has shape {shape}, expected [{len(self.layers)} layers, T, T]"
        if np.size(self.batch_hsic) and np.shape(self.batch_hsic)[1:] != shape:
            return f"batch_hsic has shape {np.shape(self.batch_hsic)}, expected [batches, {', '.join(map(str, shape))}]"
        if len(self.kinds) != len(self.layers):
            return f"{len(self.kinds)} layer kinds for {len(self.layers)} layers"
        return None

    def off_diagonal_mean(self) -> np.ndarray:
        """Mean CKA between different time steps, per layer (1 = the layer is static in time)."""
        m = np.asarray(self.matrices, dtype=float)
        T = m.shape[-1]
        if T < 2:
            return np.full(m.shape[0], np.nan)
        mask = ~np.eye(T, dtype=bool)
        out = np.full(m.shape[0], np.nan)
        for i, x in enumerate(m):
            v = x[mask]
            v = v[np.isfinite(v)]
            if v.size:
                out[i] = v.mean()
        return out

    def plot(self, out: str | Path, name: str | None = None, *, label: str = "") -> list[Path]:
        """A grid of the residual-block outputs' ``T x T`` matrices (or the first 36 layers) and the mean CKA
        across time steps per layer."""
        from . import plots

        name = name or self.analysis
        idx = [i for i, k in enumerate(self.kinds) if k == "block"] or list(range(min(len(self.layers), 36)))
        if not idx:
            return []
        paths = plots.temporal_grid(np.asarray(self.matrices)[idx], [self.layers[i] for i in idx],
                                    Path(out) / f"{name}_grid",
                                    title="CKA across time steps" + (f": {label}" if label else ""))
        od = self.off_diagonal_mean()
        paths += plots.curves({label or "model": od}, self.layers, Path(out) / f"{name}_curve", kinds=self.kinds,
                              ylabel="mean CKA between time steps", ylim=curve_ylim(od),
                              title="Similarity across time steps (1 = static in time)")
        return paths

    def summary(self, label: str = "") -> list[dict[str, Any]]:
        od = self.off_diagonal_mean()
        rows = []
        for i, (n, k) in enumerate(zip(self.layers, self.kinds, strict=False)):
            if k == "block":
                m = np.asarray(self.matrices[i], dtype=float)
                rows.append({**({"model": label} if label else {}), "layer": n, "T": self.T,
                             "mean CKA across steps": float(od[i]),
                             "min": float(np.min(m[np.isfinite(m)])) if np.isfinite(m).any() else None})
        return rows


def labelled(labels: Sequence[str], accs: Sequence[float | None], sources: Sequence[str | None] | None
             ) -> list[tuple[str, float, str | None]]:
    """(label, accuracy, source) triples of the models whose accuracy was measured."""
    srcs = list(sources) if sources else [None] * len(labels)
    return [(lb, a, src) for lb, a, src in zip(labels, accs, srcs, strict=False) if a is not None]
