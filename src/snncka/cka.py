"""Centered Kernel Alignment: reference formulas, a streaming accumulator and an all-layer-pairs engine
(SPEC §3.3).

Reference functions (small and readable, in the style of Kornblith et al. 2019; the tests hold the engine to
them): ``gram_linear``, ``gram_rbf``, ``center_gram``, ``hsic_biased``, ``hsic_unbiased`` (Song et al. 2012)
and ``cka(X, Y)`` on ``[n, p]`` features.

Engine (``MinibatchCKA``, ``compare``, ``temporal``): every layer's feature of a batch is turned into its Gram
matrix at once (inside a forward hook for ``compare``, so memory holds one batch's Grams, never all features of
all images), then into its centred Gram ``P = center_gram(K)``, for which ``HSIC(K, L) = <P(K), P(L)> / c(n)``:

* unbiased: ``P`` is the U-centred Gram (Szekely & Rizzo 2014): zero diagonal, zero row sums; with it the
  inner product equals Song et al.'s estimator exactly, ``c(n) = n (n - 3)``;
* biased: ``P = H K H``, ``c(n) = (n - 1)^2`` (Kornblith et al. 2019, Eq. 4 of the paper).

All pairs' HSIC of a batch is then ONE matrix product ``PA @ PB.T`` over the stacked (upper-triangle)
centred Grams, accumulated in float64; minibatch CKA is ``sum_i HSIC_ab / sqrt(sum_i HSIC_aa * sum_i
HSIC_bb)`` (Nguyen, Raghu & Kornblith 2020). Feature columns are centred per batch before the float32 Gram:
both estimators are invariant to a constant shift of the features, and centring removes the large common
offset of ReLU/spike features that otherwise cancels catastrophically in float32.
An SNN layer's T time steps become one feature by concatenation (paper Sec. 3.3; ``time_reduce="concat"``)
or, as an alternative, by their mean over time (``time_reduce="mean"``).
Each batch's HSIC values are kept, giving a jackknife confidence interval over batches at no extra pass.
Under ``torch.distributed`` each rank takes every world-size-th batch and the per-batch HSIC are all-reduced.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .cka_math import (
    _all_ranks,
    _cka_matrix,
    _collective_device,
    _dist,
    _flatten_sym,
    _gram_of_feature,
    _jackknife,
    _u_rows,
    _Workspace,
)
from .record import (
    ModelState,
    Recorder,
    Selection,
    TimeLayout,
    batch_input,
    batches_of,
    images_in,
    model_device,
    parse_time,
    reset_states,
    select_layers,
    to_feature,
    zip_streams,
)
from .results import CKAResult, TemporalResult  # the result format shared with the analyses

__all__ = [
    "CKAResult",
    "MinibatchCKA",
    "TemporalResult",
    "center_gram",
    "cka",
    "compare",
    "gram_linear",
    "gram_rbf",
    "hsic_biased",
    "hsic_unbiased",
    "temporal",
]

TIME_REDUCE = ("concat", "mean")


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


def center_gram(K: Tensor, unbiased: bool = True) -> Tensor:
    """Centred Gram ``P(K)`` with ``HSIC(K, L) = <P(K), P(L)> / c(n)`` (Kornblith et al. 2019's
    ``center_gram``), batched over leading dims.

    ``unbiased=False``: double centring ``H K H`` with ``H = I - 11^T/n``. ``unbiased=True``: the U-centred Gram
    (zero diagonal, zero row sums; Szekely & Rizzo 2014), whose inner product is Song et al.'s HSIC_1.
    """
    n = K.shape[-1]
    if not unbiased:
        K = K - K.mean(-2, keepdim=True)
        return K - K.mean(-1, keepdim=True)
    Kt = K - torch.diag_embed(torch.diagonal(K, dim1=-2, dim2=-1))
    r = Kt.sum(-1)
    s = r.sum(-1)
    U = Kt - (r.unsqueeze(-1) + r.unsqueeze(-2)) / (n - 2) + (s / ((n - 1) * (n - 2)))[..., None, None]
    return U - torch.diag_embed(torch.diagonal(U, dim1=-2, dim2=-1))


def hsic_biased(K: Tensor, L: Tensor) -> Tensor:
    """Biased HSIC ``tr(K H L H) / (n - 1)^2`` (paper Eq. 4)."""
    n = K.shape[0]
    return torch.trace(K @ center_gram(L, unbiased=False)) / (n - 1) ** 2


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
    """CKA between features ``X [n, p]`` and ``Y [n, q]`` of the same n samples (reference formula).

    The columns are centred in float64 first (CKA is invariant to a shift of the features): a float32 Gram of
    raw ReLU features with a common offset loses every digit to cancellation. A NaN or Inf is an error naming
    where it is, not a NaN result.
    """
    if X.dim() != 2 or Y.dim() != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(f"cka needs [n, p] and [n, q] features, same n samples: got {X.shape}, {Y.shape}")
    name, thr = _kernel_spec(kernel)
    for which, F in (("X", X), ("Y", Y)):
        bad = ~torch.isfinite(F)
        if bool(bad.any()):
            i, j = (int(v) for v in bad.nonzero()[0])
            raise ValueError(
                f"cka: {which} holds {int(bad.sum())} non-finite value(s) (NaN or Inf), the first at sample {i}, "
                f"column {j}; CKA of such features is undefined -- check the data and the model (NaN weights)"
            )
    X, Y = X.double(), Y.double()
    X, Y = X - X.mean(0), Y - Y.mean(0)
    K, L = (gram_linear(X), gram_linear(Y)) if name == "linear" else (gram_rbf(X, thr), gram_rbf(Y, thr))
    hsic = hsic_unbiased if unbiased else hsic_biased
    return hsic(K, L) / torch.sqrt(hsic(K, K) * hsic(L, L))


# --------------------------------------------------------------------------------------------------------
# Centred Grams of a batch
# --------------------------------------------------------------------------------------------------------


def _norm_const(n: int, unbiased: bool) -> float:
    return float(n * (n - 3)) if unbiased else float((n - 1) ** 2)


def _prepared(K: Tensor, tol: float | Tensor, kernel: tuple[str, float], unbiased: bool) -> tuple[Tensor, Tensor]:
    """Centred Grams of linear Grams ``K [..., n, n]`` (through the RBF kernel if asked) and a mask of
    degenerate ones.

    A Gram whose centred part vanishes relative to itself (a constant layer: every pairwise distance equal) is
    set to exactly zero, so its self-HSIC is 0 and its CKA NaN instead of rounding noise.
    """
    P = center_gram(K, unbiased)
    bad = P.flatten(-2).norm(dim=-1) <= tol * K.flatten(-2).norm(dim=-1)
    if kernel[0] == "rbf":
        Kr = torch.stack([_rbf_from_gram(k, kernel[1]) if not b else torch.zeros_like(k)
                          for k, b in zip(K.reshape(-1, *K.shape[-2:]), bad.reshape(-1), strict=True)])
        P = center_gram(Kr.reshape(K.shape), unbiased)
    return torch.where(bad[..., None, None], torch.zeros_like(P), P), bad


# --------------------------------------------------------------------------------------------------------
# Streaming engine
# --------------------------------------------------------------------------------------------------------


def _check_reduce(time_reduce: str) -> str:
    if time_reduce not in TIME_REDUCE:
        raise ValueError(
            f"unknown time_reduce {time_reduce!r}; use 'concat' (an SNN layer's T steps side by side, paper "
            "Sec. 3.3) or 'mean' (their average over time)"
        )
    return time_reduce


class _Grams:
    """One side's centred Grams of the current batch, built layer by layer as its features ``[B, T, p]``
    arrive, as rows whose dot products are ``c(n)`` times HSIC. The first batch fixes the layer names."""

    def __init__(self, kernel: tuple[str, float], unbiased: bool, *, per_step: bool = False,
                 time_reduce: str = "concat") -> None:
        self.kernel, self.unbiased, self.per_step = kernel, unbiased, per_step
        self.time_reduce = _check_reduce(time_reduce)
        self.names: list[str] | None = None
        self.kinds: list[str] = []
        self.steps: list[int] = []  # per layer, its time steps (per-step mode)
        self.workspace = _Workspace()
        self._clear()

    def _clear(self) -> None:
        self.grams: list[Tensor] = []  # this batch's Grams not yet centred
        self.tols: list[float] = []
        self.flats: list[Tensor] = []  # this batch's rows, in groups
        self.finite: list[Tensor] = []  # per Gram: all entries finite
        self.layer_steps: list[int] = []  # Grams per recorded layer this batch (T in per-step mode, else 1)
        self.batch_names: list[str] = []
        self.batch_kinds: list[str] = []

    def add(self, name: str, kind: str, feat: Tensor) -> None:
        """One layer's feature ``[B, T, p]`` of this batch (the recorder's ``on_output``)."""
        if self.time_reduce == "mean" and feat.shape[1] > 1 and not self.per_step:
            feat = feat.mean(1, keepdim=True)
        K, tol = _gram_of_feature(feat, self.per_step, self.workspace)
        ks = K.unbind(0) if self.per_step else (K,)
        self.grams.extend(ks)
        self.tols.extend([tol] * len(ks))
        self.layer_steps.append(len(ks))
        self.batch_names.append(name)
        self.batch_kinds.append(kind)
        n = K.shape[-1]
        if len(self.grams) >= max(1, (1 << 20) // (n * n)):
            self._flush()

    def _flush(self) -> None:
        """Centre the pending Grams as one group: few batched ops (many small ops per layer cost more than
        the work on a busy CPU), and the group bounds the float64 temporaries (8 MB) and the float32 Grams
        held at once, so memory stays at the rows plus one group."""
        if not self.grams:
            return
        K = torch.stack(self.grams)
        finite = torch.isfinite(K).flatten(1).all(1)  # no host sync here: checked once per batch in take()
        self.finite.append(finite)
        # one tolerance per dtype; a float avoids a host-to-device copy (a GPU sync) per group
        tol = (torch.full((len(self.tols),), self.tols[0], dtype=torch.float64, device=K.device)
               if len(set(self.tols)) == 1 else torch.tensor(self.tols, dtype=torch.float64).to(K.device))
        self.grams, self.tols = [], []
        if self.unbiased and self.kernel[0] == "linear":
            self.flats.append(_u_rows(K, tol))
        else:
            P, _ = _prepared(K.double().masked_fill(~finite[:, None, None], 0.0), tol, self.kernel, self.unbiased)
            self.flats.append(_flatten_sym(P, self.unbiased))

    def take(self, where: str, batch: int) -> Tensor | list[Tensor]:
        """This batch's rows: one ``[L, D]`` matrix, or per layer ``[T, D]`` in per-step mode. Non-finite
        features are an error naming the layer (they would turn every CKA value NaN)."""
        self._flush()
        if not self.layer_steps:
            raise RuntimeError(f"no selected layer of {where} ran in the forward")
        flat = self.flats[0] if len(self.flats) == 1 else torch.cat(self.flats)
        finite = self.finite[0] if len(self.finite) == 1 else torch.cat(self.finite)
        names, kinds, counts = self.batch_names, self.batch_kinds, self.layer_steps
        self._clear()
        if not bool(finite.all()):
            bad = names[[bool(f.all()) for f in finite.split(counts)].index(False)]
            raise ValueError(
                f"non-finite features (NaN or Inf) in layer {bad!r} of {where}, batch {batch}; check the "
                "input data for NaN/Inf and the model for NaN weights (a diverged training run), or for "
                "values beyond ~1e18, whose float32 Gram overflows"
            )
        if self.names is None:
            self.names, self.kinds = names, kinds
            self.steps = list(counts) if self.per_step else []
        elif names != self.names:
            raise RuntimeError(
                f"the recorded layers of {where} changed between batches ({len(self.names)} then {len(names)} "
                "calls); the model must call the same layers for every batch"
            )
        return list(flat.split(counts)) if self.per_step else flat


def _check_n(n: int, unbiased: bool, i: int) -> None:
    need = 4 if unbiased else 2
    if n < need:
        raise ValueError(
            f"batch {i} has {n} images; the {'unbiased' if unbiased else 'biased'} HSIC estimator needs at "
            f"least {need} per batch -- use a larger batch size or drop the last incomplete batch "
            "(drop_last=True)"
        )


def _warn_constant(names_bad: list[str], which: str) -> None:
    if names_bad:
        warnings.warn(
            f"{which}: layer(s) {', '.join(names_bad)} are constant over the data (zero variance); their CKA is "
            "undefined (0/0) and set to NaN",
            RuntimeWarning,
            stacklevel=4,
        )


def _named(feats: Mapping[str, Any] | Sequence[Any], which: str) -> list[tuple[str, Any]]:
    if isinstance(feats, Mapping):
        items = [(str(k), v) for k, v in feats.items()]
    elif isinstance(feats, Sequence) and not isinstance(feats, str | Tensor):
        items = [(str(i), v) for i, v in enumerate(feats)]
    else:
        raise TypeError(f"{which}: pass a dict {{layer: tensor}} or a list of tensors, got {type(feats).__name__}")
    if not items:
        raise ValueError(f"{which}: no features")
    return items


def _images_of(v: Any, layout: TimeLayout, which: str) -> int:
    """Number of images in a layer's feature under a time layout (``update`` without ``batch_size``)."""
    if layout.kind == "loop" and isinstance(v, list | tuple):
        v = v[0]
    if not isinstance(v, Tensor) or v.dim() == 0:
        raise TypeError(f"{which}: a feature must be a tensor [B, ...], got {type(v).__name__}")
    if layout.kind == "TB" and v.dim() >= 2:
        return int(v.shape[1])
    if layout.kind == "folded":
        if layout.T is None:
            raise ValueError(f"{which}: time-folded features [T*B, ...] need batch_size=B or a layout with T "
                             "like ('folded', 4)")
        return int(v.shape[0]) // layout.T
    return int(v.shape[0])


class MinibatchCKA:
    """Streaming minibatch CKA between every layer of side A and every layer of side B (torchmetrics style).

    ``update(feats_a, feats_b)`` adds one batch of the same images: dicts ``{layer: tensor}`` or lists of
    tensors ``[B, ...]``, in the time layout ``time_a``/``time_b`` as in ``compare`` (under ``"loop"`` a
    layer's value is the list of its per-step ``[B, ...]`` tensors). ``compute()`` returns the ``CKAResult``;
    under ``torch.distributed`` it all-reduces the batches of every process (each calls it). ``merge(other)``
    adds another accumulator's batches (e.g. a worker's); ``reset()`` starts over. An SNN layer's T steps
    become one feature as ``time_reduce`` says: "concat" (paper Sec. 3.3) or "mean" over time. Memory: per
    batch, the HSIC of every layer pair (float64), never the features.
    """

    def __init__(self, *, unbiased: bool = True, kernel: str = "linear", time_a: Any = None, time_b: Any = None,
                 time_reduce: str = "concat") -> None:
        self.unbiased, self.kernel = unbiased, kernel
        self._kernel = _kernel_spec(kernel)
        self.time_reduce = _check_reduce(time_reduce)
        self.time_a, self.time_b = parse_time(time_a), parse_time(time_b)
        self._which = ("features_a", "features_b")
        self.reset()

    def reset(self) -> None:
        """Forget every batch (the layer names too)."""
        self.layers_a: list[str] | None = None
        self.layers_b: list[str] | None = None
        self.kinds_a: list[str] = []
        self.kinds_b: list[str] = []
        self._batches: list[list[Tensor]] = []  # per batch: HSIC_ab [La, Lb], HSIC_aa [La], HSIC_bb [Lb], n
        self._grams = [self._new_grams(), self._new_grams()]

    def _new_grams(self) -> _Grams:
        return _Grams(self._kernel, self.unbiased, time_reduce=self.time_reduce)

    def update(self, feats_a: Mapping[str, Any] | Sequence[Any], feats_b: Mapping[str, Any] | Sequence[Any], *,
               batch_size: int | None = None) -> None:
        """Add one batch: the features of the same ``B`` images on side A and side B."""
        i = len(self._batches)
        rows, ns = [], []
        for side, feats, layout in ((0, feats_a, self.time_a), (1, feats_b, self.time_b)):
            which = self._which[side]
            if side == 1 and feats_b is feats_a and self.time_a == self.time_b:
                rows.append(rows[0])  # one set of features on both sides: its Grams once
                ns.append(ns[0])
                continue
            items = _named(feats, which)
            n = batch_size or _images_of(items[0][1], layout, which)
            _check_n(n, self.unbiased, i)
            grams = self._grams[side]
            grams._clear()  # nothing left from an update that raised
            with torch.no_grad():
                for name, v in items:
                    if layout.kind == "loop":
                        steps = list(v) if isinstance(v, list | tuple) else [v]
                        feat = torch.stack([s.detach() for s in steps], 1).reshape(n, len(steps), -1)
                    else:
                        feat = to_feature(v.detach(), n, layout, name)
                    grams.add(name, "other", feat)
                rows.append(grams.take(which, i))
            ns.append(n)
        if ns[0] != ns[1]:
            raise ValueError(f"batch {i}: features_a hold {ns[0]} images but features_b {ns[1]}; both sides "
                             "must be the same images")
        if self.layers_a is None:
            g0, g1 = self._grams
            self._set_layers(g0.names or [], g0.kinds, (g1.names or g0.names or []), g1.kinds or g0.kinds)
        self._add(rows[0], rows[1], ns[0])

    def _set_layers(self, names_a: list[str], kinds_a: list[str], names_b: list[str], kinds_b: list[str]) -> None:
        self.layers_a, self.kinds_a, self.layers_b, self.kinds_b = (
            list(names_a), list(kinds_a), list(names_b), list(kinds_b))

    def _add(self, PA: Tensor, PB: Tensor, n: int) -> None:
        """One batch's centred-Gram rows ``PA [La, D]``, ``PB [Lb, D]`` of ``n`` images."""
        c = _norm_const(n, self.unbiased)
        self._batches.append([
            (PA @ PB.T) / c, (PA * PA).sum(1) / c, (PB * PB).sum(1) / c,
            torch.full((1,), float(n), dtype=torch.float64, device=PA.device),
        ])

    def merge(self, other: MinibatchCKA) -> MinibatchCKA:
        """Add ``other``'s batches (same estimator, kernel, time_reduce and layers) to this one; returns self."""
        mine = (self.unbiased, self.kernel, self.time_reduce)
        theirs = (other.unbiased, other.kernel, other.time_reduce)
        if mine != theirs:
            raise ValueError(f"cannot merge a MinibatchCKA with (unbiased, kernel, time_reduce) = {theirs} into "
                             f"one with {mine}")
        if other.layers_a is None:
            return self
        if self.layers_a is None:
            self._set_layers(other.layers_a, other.kinds_a, other.layers_b or [], other.kinds_b)
        elif (self.layers_a, self.layers_b) != (other.layers_a, other.layers_b):
            raise ValueError("cannot merge MinibatchCKA accumulators over different layers")
        dev = self._batches[0][0].device if self._batches else None
        self._batches.extend([t.to(dev) if dev is not None else t for t in b] for b in other._batches)
        return self

    def batch_hsic(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-batch HSIC ``(hab [k, La, Lb], haa [k, La], hbb [k, Lb])`` of every process's batches: the
        samples for intervals over test images of any CKA statistic (``snncka.stats.cka_interval``)."""
        dev = self._batches[0][0].device if self._batches else _collective_device()
        hab, haa, hbb, _ = _all_ranks(self._batches, dev)
        return hab.cpu().numpy(), haa.cpu().numpy(), hbb.cpu().numpy()

    def compute(self) -> CKAResult:
        """The CKA matrix of all batches so far (of every process under torch.distributed) with its
        jackknife interval; layers with zero variance get NaN and one warning."""
        dev = self._batches[0][0].device if self._batches else _collective_device()
        hab, haa, hbb, ns = _all_ranks(self._batches, dev)
        saa, sbb = haa.sum(0), hbb.sum(0)
        matrix = _cka_matrix(hab.sum(0), saa, sbb)
        names_a, names_b = self.layers_a or [], self.layers_b or []
        bad_a = [nm for nm, v in zip(names_a, saa.tolist(), strict=True) if not v > 0]
        bad_b = [nm for nm, v in zip(names_b, sbb.tolist(), strict=True) if not v > 0]
        if len(set(self._which)) == 1:
            _warn_constant(list(dict.fromkeys(bad_a + bad_b)), self._which[0])
        else:
            _warn_constant(bad_a, self._which[0])
            _warn_constant(bad_b, self._which[1])
        lo, hi = _jackknife(hab, haa, hbb)
        counts = ns[:, 0].cpu().numpy()
        return CKAResult(
            matrix=matrix.cpu().numpy(), layers_a=list(names_a), layers_b=list(names_b),
            kinds_a=list(self.kinds_a), kinds_b=list(self.kinds_b), n_images=int(counts.sum()),
            batch_size=int(counts.max()), estimator="unbiased" if self.unbiased else "biased", kernel=self.kernel,
            ci_low=lo, ci_high=hi, n_batches=int(len(counts)), meta=dict(time_reduce=self.time_reduce),
        )


# --------------------------------------------------------------------------------------------------------
# Models over a data stream
# --------------------------------------------------------------------------------------------------------


def _progress(it: Iterable[Any], progress: bool, desc: str) -> Iterable[Any]:
    if not progress or _dist()[0] != 0:
        return it
    from tqdm.auto import tqdm

    total = len(it) if hasattr(it, "__len__") else None  # type: ignore[arg-type]
    return tqdm(it, total=total, desc=desc, unit="batch", dynamic_ncols=True)


class _Len:
    """An iterator with a length (for the progress bar)."""

    def __init__(self, it: Iterable[Any], n: int | None) -> None:
        self.it, self.n = it, n

    def __iter__(self) -> Any:
        return iter(self.it)

    def __len__(self) -> int:
        return self.n or 0


class _Side:
    """One model on one input stream: per batch, its recorded layers' centred-Gram rows."""

    def __init__(self, model: nn.Module, layers: Selection, time: Any, grams: _Grams, which: str) -> None:
        self.model, self.layers, self.time, self.grams = model, layers, time, grams
        self.layout: TimeLayout = parse_time(time, model)
        self.which = f"{which} ({type(model).__name__})"
        self.time_arg = "time"  # the argument that sets this side's layout (named in warnings)

    def recorder(self) -> Recorder:
        rec = Recorder(self.model, self.layers, time=self.time, on_output=self.grams.add)
        rec.time_arg = self.time_arg
        return rec

    def run(self, rec: Recorder, x: Tensor, n: int, i: int, stream: str = "") -> Any:
        rec.reset()
        self.grams._clear()
        rec.batch_size = n
        reset_states(self.model)
        self.model(x)
        rec.finish()
        return self.grams.take(self.which + stream, i)

    def images(self, batch: Any, x: Tensor, i: int) -> int:
        return images_in(batch, x, self.model, self.layout, i)


def compare(
    model_a: nn.Module,
    model_b: nn.Module,
    data: Iterable[Any] | Tensor,
    *,
    data_b: Iterable[Any] | Tensor | None = None,
    layers_a: Selection = "paper",
    layers_b: Selection = "paper",
    unbiased: bool = True,
    kernel: str = "linear",
    time_a: Any = None,
    time_b: Any = None,
    time_reduce: str = "concat",
    batch_size: int = 256,
    device: Any = None,
    progress: bool = True,
) -> CKAResult:
    """Minibatch CKA between every selected layer of ``model_a`` and every selected layer of ``model_b``.

    ``data``: iterable of batches (a tensor, or a tuple/list whose first item is the input), or one input
    tensor, split into near-equal batches of at most ``batch_size`` images; ``data_b``: an aligned stream of
    model_b's inputs (e.g. adversarial versions of the same images). ``time_a``/``time_b``: time layout of
    non-snncka models (None, "TB", "BT", "folded", "loop" for a Python time loop, or a pair like ("TB", 4));
    snncka models declare theirs. ``time_reduce``: an SNN layer's T steps become one feature by "concat" (paper
    Sec. 3.3) or "mean" over time. One pass over the data; the same model compared with itself records its
    Grams once. ``kernel``: "linear", "rbf" or "rbf:<threshold>". ``device``: where to run (models are moved
    there and back); default: where model_a's parameters are. Built on ``MinibatchCKA``.
    """
    acc = MinibatchCKA(unbiased=unbiased, kernel=kernel, time_reduce=time_reduce)
    shared = model_a is model_b  # one model: one recorder over the union of both selections
    if shared and parse_time(time_a, model_a) != parse_time(time_b, model_b):
        raise ValueError("one model cannot have two time layouts (time_a != time_b)")
    sides = [_Side(model_a, layers_a, time_a, acc._new_grams(), "model" if shared else "model_a")]
    if shared:
        base_a = {n for n, _ in select_layers(model_a, layers_a)}
        base_b = {n for n, _ in select_layers(model_b, layers_b)}
        sides[0].layers = sorted(base_a | base_b)
        acc._which = ("model", "model") if data_b is None else ("model (data)", "model (data_b)")
    else:
        sides.append(_Side(model_b, layers_b, time_b, acc._new_grams(), "model_b"))
        acc._which = ("model_a", "model_b")
        sides[1].time_arg = "time_b"
    sides[0].time_arg = "time_a/time_b" if shared else "time_a"
    dev = torch.device(device) if device is not None else model_device(model_a)
    data = batches_of(data, batch_size, model_a, sides[0].layout)
    data_b = batches_of(data_b, batch_size, model_b, sides[-1].layout)
    rank, world = _dist()
    ia: list[int] = []
    ib: list[int] = []
    n_total = len(data) if hasattr(data, "__len__") else None  # type: ignore[arg-type]
    with ModelState([model_a, model_b], device), torch.no_grad(), ExitStack() as stack:
        recs = [stack.enter_context(sd.recorder()) for sd in sides]
        for i, (batch, batch_b) in enumerate(_progress(_Len(zip_streams(data, data_b), n_total), progress, "CKA")):
            if i % world != rank:
                continue
            xa = batch_input(batch).to(dev)
            n = sides[0].images(batch, xa, i)
            _check_n(n, unbiased, i)
            PA = sides[0].run(recs[0], xa, n, i)
            if batch_b is None and shared:
                PB = PA
            else:
                xb = xa if batch_b is None else batch_input(batch_b).to(dev)
                nb = sides[-1].images(batch_b if batch_b is not None else batch, xb, i)
                if nb != n:
                    raise ValueError(
                        f"batch {i}: model_a got {n} images but model_b got {nb}; both streams must hold "
                        "the same images in the same batches (same batch size)"
                    )
                PB = sides[-1].run(recs[-1], xb, n, i, " on data_b" if shared else "")
            ga, gb = sides[0].grams, sides[-1].grams
            if acc.layers_a is None:
                names, kinds = ga.names or [], ga.kinds
                if shared:
                    ia = [j for j, nm in enumerate(names) if nm.split("#")[0] in base_a]
                    ib = [j for j, nm in enumerate(names) if nm.split("#")[0] in base_b]
                    acc._set_layers([names[j] for j in ia], [kinds[j] for j in ia],
                                    [names[j] for j in ib], [kinds[j] for j in ib])
                else:
                    acc._set_layers(names, kinds, gb.names or [], gb.kinds)
            if shared:
                PA, PB = PA[ia], PB[ib]
            acc._add(PA, PB, n)
    res = acc.compute()
    res.meta.update(_meta(model_a=model_a, model_b=model_b))
    return res


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
    data: Iterable[Any] | Tensor,
    *,
    layers: Selection = "paper",
    unbiased: bool = True,
    kernel: str = "linear",
    time: Any = None,
    batch_size: int = 256,
    device: Any = None,
    progress: bool = True,
) -> TemporalResult:
    """For every selected layer, the ``T x T`` minibatch CKA between its time steps, all layers in one pass.

    Each step's feature is ``[B, p]``; a layer running with fewer steps (mixed time steps) gets a smaller
    matrix, NaN-padded to the largest T in ``matrices [L, T, T]`` (its own count is in ``steps``). ``data``,
    ``time`` and ``batch_size`` as in ``compare``.
    """
    side = _Side(model, layers, time, _Grams(_kernel_spec(kernel), unbiased, per_step=True), "model")
    dev = torch.device(device) if device is not None else model_device(model)
    data = batches_of(data, batch_size, model, side.layout)
    rank, world = _dist()
    batches: list[list[Tensor]] = []
    n_total = len(data) if hasattr(data, "__len__") else None  # type: ignore[arg-type]
    with ModelState([model], device), torch.no_grad(), side.recorder() as rec:
        for i, batch in enumerate(_progress(_Len(data, n_total), progress, "temporal CKA")):
            if i % world != rank:
                continue
            x = batch_input(batch).to(dev)
            n = side.images(batch, x, i)
            _check_n(n, unbiased, i)
            rows = side.run(rec, x, n, i)
            c = _norm_const(n, unbiased)
            Tm = max(side.grams.steps)
            H = torch.full((len(rows), Tm, Tm), 0.0, dtype=torch.float64, device=dev)
            for j, P in enumerate(rows):
                H[j, : P.shape[0], : P.shape[0]] = P @ P.T / c
            batches.append([H, torch.full((1,), float(n), dtype=torch.float64, device=dev)])
    H, ns = (t.sum(0) for t in _all_ranks(batches, dev))
    steps = side.grams.steps
    d = torch.diagonal(H, dim1=1, dim2=2)
    den = torch.sqrt(d[:, :, None] * d[:, None, :])
    mats = torch.where(den > 0, H / den, torch.full_like(H, float("nan")))
    for j, s in enumerate(steps):
        mats[j, s:, :] = float("nan")
        mats[j, :, s:] = float("nan")
    names = list(side.grams.names or [])
    bad = [nm for j, nm in enumerate(names) if not bool((d[j, : steps[j]] > 0).all())]
    _warn_constant(bad, "temporal")
    return TemporalResult(
        layers=names, kinds=list(side.grams.kinds), matrices=mats.cpu().numpy(), T=int(mats.shape[1]),
        n_images=int(ns.item()), estimator="unbiased" if unbiased else "biased", kernel=kernel,
        steps=list(steps),
    )
