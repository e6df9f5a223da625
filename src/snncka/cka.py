"""Centered Kernel Alignment: reference formulas and a streaming all-layer-pairs engine (SPEC §3.3).

Reference functions (small and readable; the tests hold the engine to them):
``gram_linear``, ``gram_rbf``, ``center``, ``hsic_biased``, ``hsic_unbiased`` (Song et al. 2012) and
``cka(X, Y)`` on ``[n, p]`` features.

Engine (``compare``, ``temporal``): one forward pass of each model per batch; every recorded layer's output
is turned into its Gram matrix at once inside a forward hook (so memory holds one batch's Grams, never all
features of all images), then into a *prepared* matrix ``P`` such that ``HSIC(K, L) = <P(K), P(L)> / c(n)``:

* unbiased: ``P`` is the U-centred Gram (Szekely & Rizzo 2014): zero diagonal, zero row sums; with it the
  inner product equals Song et al.'s estimator exactly, ``c(n) = n (n - 3)``;
* biased: ``P = H K H``, ``c(n) = (n - 1)^2`` (Kornblith et al. 2019, Eq. 4 of the paper).

All pairs' HSIC of a batch is then ONE matrix product ``PA @ PB.T`` over the stacked (upper-triangle)
prepared matrices, accumulated in float64; minibatch CKA is ``sum_i HSIC_ab / sqrt(sum_i HSIC_aa * sum_i
HSIC_bb)`` (Nguyen, Raghu & Kornblith 2020). Feature columns are centred per batch before the float32 Gram:
both estimators are invariant to a constant shift of the features, and centring removes the large common
offset of ReLU/spike features that otherwise cancels catastrophically in float32.
Each batch's HSIC values are kept, giving a jackknife confidence interval over batches at no extra pass.
Under ``torch.distributed`` each rank takes every world-size-th batch and the per-batch HSIC are all-reduced.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .record import (
    Recorder,
    Selection,
    TimeLayout,
    batch_size_of,
    parse_time,
    reset_states,
    select_layers,
)
from .results import CKAResult, TemporalResult  # the result format shared with the analyses

__all__ = [
    "CKAResult",
    "TemporalResult",
    "center",
    "cka",
    "compare",
    "gram_linear",
    "gram_rbf",
    "hsic_biased",
    "hsic_unbiased",
    "prepare",
    "temporal",
]


# --------------------------------------------------------------------------------------------------------
# Reference functions
# --------------------------------------------------------------------------------------------------------


def gram_linear(X: Tensor) -> Tensor:
    """Linear kernel ``K = X X^T`` of features ``[n, p]``."""
    return X @ X.T


def _median(x: Tensor) -> Tensor:
    """Median as numpy defines it (mean of the two middle values for an even count)."""
    s = x.flatten().sort().values
    m = s.numel()
    return s[m // 2] if m % 2 else (s[m // 2 - 1] + s[m // 2]) / 2


def _sq_dists_from_gram(K: Tensor) -> Tensor:
    d = torch.diagonal(K)
    return (d[:, None] + d[None, :] - 2 * K).clamp_min(0)


def _rbf_from_gram(K: Tensor, threshold: float) -> Tensor:
    sq = _sq_dists_from_gram(K)
    med = _median(sq)
    if not med > 0:
        raise ValueError("RBF bandwidth undefined: the median pairwise distance of a layer's features is 0")
    return torch.exp(-sq / (2 * threshold**2 * med))


def gram_rbf(X: Tensor, threshold: float = 1.0) -> Tensor:
    """RBF kernel ``exp(-|x_i - x_j|^2 / (2 sigma^2))`` with ``sigma = threshold * sqrt(median sq. distance)``
    (Kornblith et al. 2019: the bandwidth is a fraction of the median distance)."""
    return _rbf_from_gram(gram_linear(X), threshold)


def center(K: Tensor) -> Tensor:
    """Double centring ``H K H`` with ``H = I - 11^T/n``."""
    K = K - K.mean(-2, keepdim=True)
    return K - K.mean(-1, keepdim=True)


def hsic_biased(K: Tensor, L: Tensor) -> Tensor:
    """Biased HSIC ``tr(K H L H) / (n - 1)^2`` (paper Eq. 4)."""
    n = K.shape[0]
    return torch.trace(K @ center(L)) / (n - 1) ** 2


def hsic_unbiased(K: Tensor, L: Tensor) -> Tensor:
    """Unbiased HSIC_1 of Song et al. (2012), written out as in SPEC; needs ``n >= 4``."""
    n = K.shape[0]
    if n < 4:
        raise ValueError(f"the unbiased HSIC estimator needs at least 4 samples, got {n}")
    Kt = K - torch.diag(torch.diagonal(K))
    Lt = L - torch.diag(torch.diagonal(L))
    one = torch.ones(n, 1, dtype=K.dtype, device=K.device)
    term = (
        torch.trace(Kt @ Lt)
        + (one.T @ Kt @ one) * (one.T @ Lt @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * (one.T @ Kt @ Lt @ one)
    )
    return term.squeeze() / (n * (n - 3))


def _kernel_spec(kernel: str) -> tuple[str, float]:
    """'linear', 'rbf' (threshold 1) or 'rbf:<threshold>'."""
    name, _, arg = kernel.partition(":")
    if name == "linear" and not arg:
        return "linear", 0.0
    if name == "rbf":
        try:
            thr = float(arg) if arg else 1.0
        except ValueError:
            thr = -1.0
        if thr > 0:
            return "rbf", thr
    raise ValueError(f"unknown kernel {kernel!r}; use 'linear', 'rbf' or 'rbf:<threshold>' (e.g. 'rbf:0.5')")


def cka(X: Tensor, Y: Tensor, *, kernel: str = "linear", unbiased: bool = True) -> Tensor:
    """CKA between features ``X [n, p]`` and ``Y [n, q]`` of the same n samples (reference formula)."""
    if X.dim() != 2 or Y.dim() != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(f"cka needs [n, p] and [n, q] features, same n samples: got {X.shape}, {Y.shape}")
    name, thr = _kernel_spec(kernel)
    K, L = (gram_linear(X), gram_linear(Y)) if name == "linear" else (gram_rbf(X, thr), gram_rbf(Y, thr))
    hsic = hsic_unbiased if unbiased else hsic_biased
    return hsic(K, L) / torch.sqrt(hsic(K, K) * hsic(L, L))


# --------------------------------------------------------------------------------------------------------
# Prepared Gram matrices: HSIC as an inner product
# --------------------------------------------------------------------------------------------------------


def prepare(K: Tensor, unbiased: bool = True) -> Tensor:
    """The matrix ``P(K)`` with ``HSIC(K, L) = <P(K), P(L)> / c(n)``: U-centred (unbiased) or ``H K H``."""
    n = K.shape[-1]
    if not unbiased:
        return center(K)
    Kt = K - torch.diag_embed(torch.diagonal(K, dim1=-2, dim2=-1))
    r = Kt.sum(-1)
    s = r.sum(-1)
    U = Kt - (r.unsqueeze(-1) + r.unsqueeze(-2)) / (n - 2) + (s / ((n - 1) * (n - 2)))[..., None, None]
    return U - torch.diag_embed(torch.diagonal(U, dim1=-2, dim2=-1))


def _norm_const(n: int, unbiased: bool) -> float:
    return float(n * (n - 3)) if unbiased else float((n - 1) ** 2)


_TRIU: dict[tuple[int, str], tuple[Tensor, Tensor, Tensor, Tensor]] = {}


def _triu(n: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Strict upper triangle of an ``n x n`` matrix: flat indices, row and column indices; flat diagonal."""
    key = (n, str(device))
    if key not in _TRIU:
        i, j = torch.triu_indices(n, n, 1, device=device)
        _TRIU[key] = (i * n + j, i, j, torch.arange(n, device=device) * (n + 1))
    return _TRIU[key]


def _flatten_sym(P: Tensor, unbiased: bool) -> Tensor:
    """Vectorise symmetric ``P [..., n, n]`` so that a dot product of two vectors is ``<P, P'>``: the strict
    upper triangle times sqrt(2) (plus the diagonal for the biased estimator) -- half the product's work."""
    n = P.shape[-1]
    up, _, _, dg = _triu(n, P.device)
    flat = P.reshape(*P.shape[:-2], n * n)
    v = flat[..., up] * math.sqrt(2.0)
    return v if unbiased else torch.cat([flat[..., dg], v], -1)


def _u_rows(K: Tensor, tol: Tensor) -> Tensor:
    """``_flatten_sym(prepare(K))`` for linear Grams ``K [m, n, n]`` and the unbiased estimator, built from
    the strict upper triangles alone: ``U_ij = K_ij - (r_i + r_j) / (n - 2) + s / ((n - 1)(n - 2))`` with
    ``r`` the row sums of ``K`` without its diagonal and ``s`` their total. Half the entries and no
    ``n x n`` float64 temporaries: this step was a fifth of the engine's time on the full-matrix path.
    Degenerate Grams (see ``_prepared``) become zero rows."""
    m, n = K.shape[0], K.shape[-1]
    up, i, j, _ = _triu(n, K.device)
    d = K.diagonal(dim1=-2, dim2=-1).double()
    r = K.sum(-1, dtype=torch.float64) - d
    v = torch.index_select(K.reshape(m, n * n), 1, up).double()
    k_norm2 = 2 * (v * v).sum(-1) + (d * d).sum(-1)
    w = r / (n - 2) - r.sum(-1, keepdim=True) / (2 * (n - 1) * (n - 2))
    v -= w[:, i]
    v -= w[:, j]
    v *= math.sqrt(2.0)
    bad = (v * v).sum(-1) <= tol.square() * k_norm2
    return v.masked_fill_(bad[:, None], 0.0)


class _Workspace:
    """A reusable buffer for centred features, so each layer's centring does not allocate (and page-fault)
    a fresh tensor of the layer's size."""

    def __init__(self) -> None:
        self.buf: Tensor | None = None

    def get(self, shape: torch.Size, like: Tensor) -> Tensor:
        n = math.prod(shape)
        if self.buf is None or self.buf.numel() < n or self.buf.dtype != like.dtype or self.buf.device != like.device:
            self.buf = torch.empty(n, dtype=like.dtype, device=like.device)
        return self.buf[:n].view(shape)


def _column_mean(feat: Tensor) -> Tensor:
    """Mean over the batch of a ``[B, T, p]`` feature as ``[1, T, p]``, by a matrix-vector product over the
    feature's storage order (time-major for snncka's folded SNN outputs, batch-major otherwise)."""
    B, T, p = feat.shape
    tm = feat.transpose(0, 1)
    if tm.is_contiguous():  # [T, B, p] storage
        w = torch.full((T, 1, B), 1.0 / B, dtype=feat.dtype, device=feat.device)
        return torch.bmm(w, tm).transpose(0, 1)
    if feat.is_contiguous():
        w = torch.full((1, B), 1.0 / B, dtype=feat.dtype, device=feat.device)
        return (w @ feat.view(B, T * p)).view(1, T, p)
    return feat.mean(0, keepdim=True)


def _gram_of_feature(feat: Tensor, per_step: bool, ws: _Workspace | None = None) -> tuple[Tensor, float]:
    """Column-centred linear Gram(s) of one layer's feature ``[B, T, p]`` and the relative rounding
    tolerance of the dtype it was computed in.

    ``per_step=False``: one Gram ``[B, B]`` of the concatenated ``[B, T*p]`` feature; ``True``: ``[T, B, B]``.
    The product runs in float32 (float64 if the feature is float64) on features centred over the batch.
    """
    if feat.dtype not in (torch.float32, torch.float64):
        feat = feat.float()
    B = feat.shape[0]
    mean = _column_mean(feat)
    if per_step:
        Xc = (feat - mean).transpose(0, 1)  # [T, B, p]
        K = torch.bmm(Xc, Xc.transpose(1, 2))
    else:
        Xc = (ws or _Workspace()).get(feat.shape, feat)
        torch.sub(feat, mean, out=Xc)  # also lays a time-major view out as [B, T*p] in the same pass
        K = _sym_gram(Xc.view(B, -1))
    return K, 64 * torch.finfo(feat.dtype).eps


def _sym_gram(X: Tensor) -> Tensor:
    """``X X^T`` from its lower block triangle (row blocks of 256, or two halves for a smaller n), the upper
    blocks copied as transposes: ``(k + 1) / 2k`` of the multiply for k blocks (3/4 at n = 256, 5/8 at 1024).
    On CPU this pays for the centring pass (measured: benchmarks/RESULTS.md); on a GPU one product of the
    full size is faster, so it is used there."""
    n = X.shape[0]
    if X.device.type != "cpu" or n < 64:
        return X @ X.T
    h = 256 if n >= 768 else n // 2
    K = torch.empty(n, n, dtype=X.dtype, device=X.device)
    for i in range(0, n, h):
        e = min(i + h, n)
        K[i:e, :e] = X[i:e] @ X[:e].T
    for i in range(h, n, h):
        e = min(i + h, n)
        K[:i, i:e] = K[i:e, :i].T
    return K


def _prepared(K: Tensor, tol: float | Tensor, kernel: tuple[str, float], unbiased: bool) -> tuple[Tensor, Tensor]:
    """Prepared matrices of linear Grams ``K [..., n, n]`` and a mask of degenerate ones.

    A Gram whose U-centred (or centred) part vanishes relative to itself (a constant layer: every pairwise
    distance equal) is set to exactly zero, so its self-HSIC is 0 and its CKA NaN instead of rounding noise.
    """
    P = prepare(K, unbiased)
    bad = P.flatten(-2).norm(dim=-1) <= tol * K.flatten(-2).norm(dim=-1)
    if kernel[0] == "rbf":
        Kr = torch.stack([_rbf_from_gram(k, kernel[1]) if not b else torch.zeros_like(k)
                          for k, b in zip(K.reshape(-1, *K.shape[-2:]), bad.reshape(-1), strict=True)])
        P = prepare(Kr.reshape(K.shape), unbiased)
    return torch.where(bad[..., None, None], torch.zeros_like(P), P), bad


# --------------------------------------------------------------------------------------------------------
# Streaming engine
# --------------------------------------------------------------------------------------------------------


def _input_of(batch: Any) -> Tensor:
    x = batch[0] if isinstance(batch, tuple | list) else batch
    if not isinstance(x, Tensor):
        raise TypeError(f"a data batch must be a tensor or a tuple/list starting with one, got {type(x)}")
    return x


def _images_in(batch: Any, x: Tensor, model: nn.Module, layout: TimeLayout, i: int) -> int:
    """Number of images in a batch: its label count when it has labels, else read from the input's layout.
    With labels and no time layout, an input whose dim 0 is not the image count (a time-first tensor read as
    batch-first) is an error, not a silent wrong result."""
    n = batch_size_of(x, model, layout)
    if isinstance(batch, tuple | list) and len(batch) > 1 and isinstance(batch[1], Tensor) and batch[1].dim():
        if len(batch[1]) != n and layout.kind is None:
            raise ValueError(
                f"batch {i}: the input {tuple(x.shape)} has {n} rows but there are {len(batch[1])} labels; "
                "if "
                "the model takes time-first or time-folded input, pass its time layout (time='TB' for "
                "[T, B, ...], 'BT' for [B, T, ...], 'folded' for [T*B, ...])"
            )
        n = len(batch[1])
    return n


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


class _Side:
    """One model on one input stream: per batch, the stacked prepared Gram matrices of its recorded layers."""

    def __init__(self, model: nn.Module, layers: Selection, time: Any, kernel: tuple[str, float],
                 unbiased: bool, per_step: bool = False) -> None:
        self.model, self.kernel, self.unbiased, self.per_step = model, kernel, unbiased, per_step
        self.layout: TimeLayout = parse_time(time, model)
        self.layers = layers
        self.names: list[str] | None = None
        self.kinds: list[str] = []
        self.grams: list[Tensor] = []  # this batch's Grams not yet prepared
        self.tols: list[float] = []
        self.flats: list[Tensor] = []  # this batch's prepared rows, in groups
        self.layer_steps: list[int] = []  # Grams per recorded call this batch (T in per-step mode, else 1)
        self.steps: list[int] = []
        self.workspace = _Workspace()

    def _on_output(self, name: str, kind: str, feat: Tensor) -> None:
        K, tol = _gram_of_feature(feat, self.per_step, self.workspace)
        ks = K.unbind(0) if self.per_step else (K,)
        self.grams.extend(ks)
        self.tols.extend([tol] * len(ks))
        self.layer_steps.append(len(ks))
        n = K.shape[-1]
        if len(self.grams) >= max(1, (1 << 20) // (n * n)):
            self._flush()

    def _flush(self) -> None:
        """Prepare the pending Grams as one group: few batched ops (many small ops per layer cost more than
        the work on a busy CPU), and the group bounds the float64 temporaries (8 MB) and the float32 Grams
        held at once, so memory stays at the prepared rows plus one group."""
        if not self.grams:
            return
        K = torch.stack(self.grams)
        # one tolerance per dtype; a float avoids a host-to-device copy (a GPU sync) per group
        tol = (torch.full((len(self.tols),), self.tols[0], dtype=torch.float64, device=K.device)
               if len(set(self.tols)) == 1 else torch.tensor(self.tols, dtype=torch.float64).to(K.device))
        self.grams, self.tols = [], []
        if self.unbiased and self.kernel[0] == "linear":
            self.flats.append(_u_rows(K, tol))
        else:
            P, _ = _prepared(K.double(), tol, self.kernel, self.unbiased)
            self.flats.append(_flatten_sym(P, self.unbiased))

    def _prepare_all(self) -> list[Tensor]:
        """This batch's prepared rows: one ``[L, D]`` matrix, or per layer ``[T, D]`` in per-step mode."""
        self._flush()
        flat = self.flats[0] if len(self.flats) == 1 else torch.cat(self.flats)
        self.flats = []
        return list(flat.split(self.layer_steps)) if self.per_step else [flat]

    def run(self, rec: Recorder, x: Tensor, n: int) -> list[Tensor] | Tensor:
        rec.reset()
        rec.batch_size = n
        self.grams, self.tols, self.flats, self.layer_steps = [], [], [], []
        reset_states(self.model)
        self.model(x)
        if not self.layer_steps:
            raise RuntimeError(f"no selected layer of {type(self.model).__name__} ran in the forward")
        prepared = self._prepare_all()
        if self.names is None:
            if not rec.names:
                raise RuntimeError(f"no selected layer of {type(self.model).__name__} ran in the forward")
            self.names, self.kinds = list(rec.names), list(rec.kinds)
            self.steps = [r.shape[0] for r in prepared] if self.per_step else []
        elif rec.names != self.names:
            raise RuntimeError(
                f"the recorded layers changed between batches ({len(self.names)} then {len(rec.names)} "
                "calls); "
                "the model must call the same layers for every batch"
            )
        return prepared if self.per_step else prepared[0]


def _check_n(n: int, unbiased: bool, i: int) -> None:
    need = 4 if unbiased else 2
    if n < need:
        raise ValueError(
            f"batch {i} has {n} images; the {'unbiased' if unbiased else 'biased'} HSIC estimator needs "
            "at least "
            f"{need} per batch -- use a larger batch size or drop the last incomplete batch (drop_last=True)"
        )


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _progress(it: Iterable[Any], progress: bool, desc: str) -> Iterable[Any]:
    if not progress or _dist()[0] != 0:
        return it
    from tqdm.auto import tqdm

    total = len(it) if hasattr(it, "__len__") else None  # type: ignore[arg-type]
    return tqdm(it, total=total, desc=desc, unit="batch", dynamic_ncols=True)


class _ModelState:
    """Eval mode (and optionally a device) for the duration of recording; restores both afterwards."""

    def __init__(self, models: list[nn.Module], device: Any) -> None:
        self.models = list({id(m): m for m in models}.values())
        self.device = torch.device(device) if device is not None else None

    def __enter__(self) -> _ModelState:
        self.modes = [m.training for m in self.models]
        self.devices = [_model_device(m) for m in self.models]
        for m in self.models:
            m.eval()
            if self.device is not None:
                m.to(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        for m, mode, dev in zip(self.models, self.modes, self.devices, strict=True):
            m.train(mode)
            if self.device is not None:
                m.to(dev)


def _zip_streams(data: Iterable[Any], data_b: Iterable[Any] | None) -> Iterator[tuple[Any, Any]]:
    if data_b is None:
        for b in data:
            yield b, None
        return
    it_b = iter(data_b)
    for i, b in enumerate(data):
        try:
            yield b, next(it_b)
        except StopIteration:
            raise ValueError(f"data_b ended after {i} batches, before data; the streams must align") from None
    if next(it_b, None) is not None:
        raise ValueError("data_b has more batches than data; the two streams must align batch for batch")


class _Len:
    """An iterator with a length (for the progress bar)."""

    def __init__(self, it: Iterable[Any], n: int | None) -> None:
        self.it, self.n = it, n

    def __iter__(self) -> Iterator[Any]:
        return iter(self.it)

    def __len__(self) -> int:
        return self.n or 0


def _gather_batches(values: dict[int, list[Tensor]], device: torch.device) -> list[Tensor]:
    """Per-batch tensors of this rank -> every batch of every rank, ordered by batch index (all-reduce)."""
    rank, world = _dist()
    idx = sorted(values)
    if world == 1:
        return [torch.stack([values[i][k] for i in idx]) for k in range(len(values[idx[0]]))]
    dist = torch.distributed
    mine = torch.tensor([idx[-1] + 1 if idx else 0, 1 if idx else 0], device=device)
    count = mine.clone()
    dist.all_reduce(count[:1], op=dist.ReduceOp.MAX)
    dist.all_reduce(count[1:], op=dist.ReduceOp.MIN)
    if int(count[1]) == 0:
        raise ValueError(f"some of the {world} processes got no batch; use fewer processes or more batches")
    k = int(count[0])
    out = []
    for j, ref in enumerate(values[idx[0]]):
        buf = torch.zeros((k, *ref.shape), dtype=ref.dtype, device=device)
        for i in idx:
            buf[i] = values[i][j]
        dist.all_reduce(buf)
        out.append(buf)
    return out


def _jackknife(hab: Tensor, haa: Tensor, hbb: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """95% jackknife interval over batches (leave one batch out), Student t with k - 1 degrees of freedom."""
    k = hab.shape[0]
    shape = hab.shape[1:]
    if k < 2:
        nan = np.full(tuple(shape), np.nan)
        return nan, nan.copy()
    from scipy.stats import t as student_t

    loo_ab = hab.sum(0) - hab
    loo_aa = haa.sum(0) - haa
    loo_bb = hbb.sum(0) - hbb
    theta = loo_ab / torch.sqrt(loo_aa[:, :, None] * loo_bb[:, None, :])
    full = hab.sum(0) / torch.sqrt(haa.sum(0)[:, None] * hbb.sum(0)[None, :])
    var = (k - 1) / k * ((theta - theta.mean(0)) ** 2).sum(0)
    half = float(student_t.ppf(0.975, k - 1)) * torch.sqrt(var)
    return (full - half).cpu().numpy(), (full + half).cpu().numpy()


def _cka_matrix(sab: Tensor, saa: Tensor, sbb: Tensor) -> Tensor:
    den = torch.sqrt(saa[:, None] * sbb[None, :])
    m = sab / den
    return torch.where(den > 0, m, torch.full_like(m, float("nan")))


def _warn_constant(names_bad: list[str], which: str) -> None:
    if names_bad:
        warnings.warn(
            f"{which}: layer(s) {', '.join(names_bad)} are constant over the data (zero variance); "
            "their CKA is "
            "undefined (0/0) and set to NaN",
            RuntimeWarning,
            stacklevel=3,
        )


def compare(
    model_a: nn.Module,
    model_b: nn.Module,
    data: Iterable[Any],
    *,
    data_b: Iterable[Any] | None = None,
    layers_a: Selection = "paper",
    layers_b: Selection = "paper",
    unbiased: bool = True,
    kernel: str = "linear",
    time_a: Any = None,
    time_b: Any = None,
    device: Any = None,
    progress: bool = True,
) -> CKAResult:
    """Minibatch CKA between every selected layer of ``model_a`` and every selected layer of ``model_b``.

    ``data``: iterable of batches (a tensor, or a tuple/list whose first item is the input); ``data_b``: an
    aligned stream of model_b's inputs (e.g. adversarial versions of the same images). ``time_a``/``time_b``:
    time layout of non-snncka models (None, "TB", "BT", "folded", or a pair like ("TB", 4)); snncka models
    declare theirs. One pass over the data; the same model compared with itself records its Grams once.
    ``kernel``: "linear", "rbf" or "rbf:<threshold>". ``device``: where to run (models are moved there and
    back); default: where model_a's parameters are.
    """
    kern = _kernel_spec(kernel)
    shared = model_a is model_b  # one model: one recorder over the union of both selections
    if shared and parse_time(time_a, model_a) != parse_time(time_b, model_b):
        raise ValueError("one model cannot have two time layouts (time_a != time_b)")
    sides = [_Side(model_a, layers_a, time_a, kern, unbiased)]
    if shared:
        base_a = {n for n, _ in select_layers(model_a, layers_a)}
        base_b = {n for n, _ in select_layers(model_b, layers_b)}
        sides[0].layers = sorted(base_a | base_b)
    else:
        sides.append(_Side(model_b, layers_b, time_b, kern, unbiased))
    dev = torch.device(device) if device is not None else _model_device(model_a)
    rank, world = _dist()
    per_batch: dict[int, list[Tensor]] = {}
    ia: list[int] | None = None
    ib: list[int] | None = None
    n_total = len(data) if hasattr(data, "__len__") else None  # type: ignore[arg-type]
    with _ModelState([model_a, model_b], device), torch.no_grad(), ExitStack() as stack:
        recs = [stack.enter_context(Recorder(sd.model, sd.layers, time=sd.layout, on_output=sd._on_output))
                for sd in sides]
        stream = _progress(_Len(_zip_streams(data, data_b), n_total), progress, "CKA")
        for i, (batch, batch_b) in enumerate(stream):
            if i % world != rank:
                continue
            xa = _input_of(batch).to(dev)
            n = _images_in(batch, xa, model_a, sides[0].layout, i)
            _check_n(n, unbiased, i)
            PA = sides[0].run(recs[0], xa, n)
            if batch_b is None and shared:
                PB = PA
            else:
                xb = xa if batch_b is None else _input_of(batch_b).to(dev)
                nb = _images_in(batch_b if batch_b is not None else batch, xb, model_b, sides[-1].layout, i)
                if nb != n:
                    raise ValueError(
                        f"batch {i}: model_a got {n} images but model_b got {nb}; both streams must hold "
                        "the same images in the same batches (same batch size)"
                    )
                PB = sides[-1].run(recs[-1], xb, n)
            if shared:
                if ia is None:
                    names = sides[0].names or []
                    ia = [j for j, nm in enumerate(names) if nm.split("#")[0] in base_a]
                    ib = [j for j, nm in enumerate(names) if nm.split("#")[0] in base_b]
                PA, PB = PA[ia], PB[ib]
            c = _norm_const(n, unbiased)
            hab = (PA @ PB.T) / c
            haa = (PA * PA).sum(1) / c
            hbb = (PB * PB).sum(1) / c
            per_batch[i] = [hab, haa, hbb, torch.full((1,), float(n), dtype=torch.float64, device=dev)]
    if not per_batch and world == 1:
        raise ValueError("the data stream is empty; CKA needs at least one batch of at least 4 images")
    names_a, kinds_a = list(sides[0].names or []), list(sides[0].kinds)
    names_b, kinds_b = list(sides[-1].names or []), list(sides[-1].kinds)
    if shared and ia is not None and ib is not None:
        names_a, kinds_a, names_b, kinds_b = (
            [names_a[j] for j in ia], [kinds_a[j] for j in ia],
            [names_b[j] for j in ib], [kinds_b[j] for j in ib],
        )
    hab, haa, hbb, ns = _gather_batches(per_batch, dev)
    saa, sbb = haa.sum(0), hbb.sum(0)
    matrix = _cka_matrix(hab.sum(0), saa, sbb)
    bad_a = [nm for nm, v in zip(names_a, saa.tolist(), strict=True) if not v > 0]
    bad_b = [nm for nm, v in zip(names_b, sbb.tolist(), strict=True) if not v > 0]
    if shared and data_b is None:
        _warn_constant(list(dict.fromkeys(bad_a + bad_b)), "model")
    else:
        _warn_constant(bad_a, "model_a")
        _warn_constant(bad_b, "model_b")
    lo, hi = _jackknife(hab, haa, hbb)
    counts = ns[:, 0].cpu().numpy()
    return CKAResult(
        matrix=matrix.cpu().numpy(), layers_a=names_a, layers_b=names_b, kinds_a=kinds_a, kinds_b=kinds_b,
        n_images=int(counts.sum()), batch_size=int(counts.max()),
        estimator="unbiased" if unbiased else "biased", kernel=kernel, ci_low=lo, ci_high=hi,
        n_batches=int(len(counts)), meta=_meta(model_a=model_a, model_b=model_b),
    )


def _meta(**models: nn.Module) -> dict[str, Any]:
    """The snncka ``config`` of each model (JSON-able), so a saved result says what was compared."""
    out: dict[str, Any] = {}
    for key, m in models.items():
        cfg = getattr(m, "config", None)
        try:
            json.dumps(cfg)
        except (TypeError, ValueError):
            cfg = None
        out[key] = cfg if cfg is not None else type(m).__name__
    return out


def temporal(
    model: nn.Module,
    data: Iterable[Any],
    *,
    layers: Selection = "paper",
    unbiased: bool = True,
    kernel: str = "linear",
    time: Any = None,
    device: Any = None,
    progress: bool = True,
) -> TemporalResult:
    """For every selected layer, the ``T x T`` minibatch CKA between its time steps, all layers in one pass.

    Each step's feature is ``[B, p]``; a layer running with fewer steps (mixed time steps) gets a smaller
    matrix, NaN-padded to the largest T in ``matrices [L, T, T]`` (its own count is in ``steps``).
    """
    kern = _kernel_spec(kernel)
    side = _Side(model, layers, time, kern, unbiased, per_step=True)
    dev = torch.device(device) if device is not None else _model_device(model)
    rank, world = _dist()
    sums: dict[int, list[Tensor]] = {}
    n_total = len(data) if hasattr(data, "__len__") else None  # type: ignore[arg-type]
    with (
        _ModelState([model], device),
        torch.no_grad(),
        Recorder(model, layers, time=side.layout, on_output=side._on_output) as rec,
    ):
        for i, batch in enumerate(_progress(_Len(data, n_total), progress, "temporal CKA")):
            if i % world != rank:
                continue
            x = _input_of(batch).to(dev)
            n = _images_in(batch, x, model, side.layout, i)
            _check_n(n, unbiased, i)
            rows = side.run(rec, x, n)
            c = _norm_const(n, unbiased)
            Tm = max(side.steps)
            H = torch.full((len(rows), Tm, Tm), 0.0, dtype=torch.float64, device=dev)
            for j, P in enumerate(rows):
                H[j, : P.shape[0], : P.shape[0]] = P @ P.T / c
            sums[i] = [H, torch.full((1,), float(n), dtype=torch.float64, device=dev)]
    if not sums and world == 1:
        raise ValueError("the data stream is empty; temporal CKA needs a batch of at least 4 images")
    H, ns = (t.sum(0) for t in _gather_batches(sums, dev))
    d = torch.diagonal(H, dim1=1, dim2=2)
    den = torch.sqrt(d[:, :, None] * d[:, None, :])
    mats = torch.where(den > 0, H / den, torch.full_like(H, float("nan")))
    for j, s in enumerate(side.steps):
        mats[j, s:, :] = float("nan")
        mats[j, :, s:] = float("nan")
    names = list(side.names or [])
    bad = [nm for j, nm in enumerate(names) if not bool((d[j, : side.steps[j]] > 0).all())]
    _warn_constant(bad, "temporal")
    return TemporalResult(
        layers=names, kinds=list(side.kinds), matrices=mats.cpu().numpy(), T=int(mats.shape[1]),
        n_images=int(ns.item()), estimator="unbiased" if unbiased else "biased", kernel=kernel,
        steps=list(side.steps),
    )
