"""The CKA engine's minibatch arithmetic (Sec. 3.3): features -> Grams -> HSIC per batch -> CKA.

A layer's feature ``[B, T, p]`` becomes the linear Gram of its batch-centred columns (``_gram_of_feature``),
and a Gram becomes a vector whose dot products are HSIC (``_u_rows``, ``_flatten_sym``): fast forms of
``snncka.cka.gram_linear`` and ``snncka.cka.center_gram``, held to them by the tests. The per-batch HSIC of
every process are gathered (``_all_ranks``) into the CKA matrix and its jackknife interval over batches.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

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
    """``_flatten_sym(center_gram(K))`` for linear Grams ``K [m, n, n]`` and the unbiased estimator, built from
    the strict upper triangles alone: ``U_ij = K_ij - (r_i + r_j) / (n - 2) + s / ((n - 1)(n - 2))`` with
    ``r`` the row sums of ``K`` without its diagonal and ``s`` their total. Half the entries and no
    ``n x n`` float64 temporaries: this step was a fifth of the engine's time on the full-matrix path.
    Degenerate Grams (see ``snncka.cka_stream._prepared``) become zero rows."""
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


# --------------------------------------------------------------------------------------------------------
# Per-batch HSIC -> CKA
# --------------------------------------------------------------------------------------------------------


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _all_ranks(batches: list[list[Tensor]], device: torch.device) -> list[Tensor]:
    """Per-batch tensors of this rank -> of every rank, stacked rank after rank (under torch.distributed:
    an all-reduce of zero-padded buffers, which gloo and NCCL both offer)."""
    rank, world = _dist()
    if world == 1:
        if not batches:
            raise ValueError("no batch: the data stream is empty (or update() was never called); CKA needs a "
                             "batch of at least 4 images (2 for the biased estimator)")
        return [torch.stack(ts) for ts in zip(*batches, strict=True)]
    dist = torch.distributed
    counts = torch.zeros(world, dtype=torch.int64, device=device)
    counts[rank] = len(batches)
    dist.all_reduce(counts)
    if int(counts.min()) == 0:
        raise ValueError(f"some of the {world} processes got no batch; use fewer processes or more batches")
    k, sizes = int(counts.max()), counts.tolist()
    out = []
    for ts in zip(*batches, strict=True):
        buf = torch.zeros((world, k, *ts[0].shape), dtype=ts[0].dtype, device=device)
        buf[rank, : len(ts)] = torch.stack(ts).to(device)
        dist.all_reduce(buf)
        out.append(torch.cat([buf[r, : sizes[r]] for r in range(world)]))
    return out


def _jackknife(hab: Tensor, haa: Tensor, hbb: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """95% jackknife interval over batches (leave one batch out), Student t with k - 1 degrees of freedom."""
    from .stats import jackknife_interval

    loo_ab = hab.sum(0) - hab
    loo_aa = haa.sum(0) - haa
    loo_bb = hbb.sum(0) - hbb
    theta = loo_ab / torch.sqrt(loo_aa[:, :, None] * loo_bb[:, None, :])
    full = hab.sum(0) / torch.sqrt(haa.sum(0)[:, None] * hbb.sum(0)[None, :])
    return jackknife_interval(full.cpu().numpy(), theta.cpu().numpy())


def _cka_matrix(sab: Tensor, saa: Tensor, sbb: Tensor) -> Tensor:
    den = torch.sqrt(saa[:, None] * sbb[None, :])
    m = sab / den
    return torch.where(den > 0, m, torch.full_like(m, float("nan")))


def cka_from_sums(hab: np.ndarray, haa: np.ndarray, hbb: np.ndarray) -> np.ndarray:
    """The CKA matrix ``HSIC_ab / sqrt(HSIC_aa HSIC_bb)`` from summed HSIC (NaN where a side has no variance),
    by the engine's own formula: the form of a ``snncka.stats.cka_interval`` statistic's input."""
    return _cka_matrix(*(torch.as_tensor(np.asarray(a, dtype=float)) for a in (hab, haa, hbb))).numpy()


def _collective_device() -> torch.device:
    """Where a rank without batches puts its collective buffers (NCCL needs the GPU)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
