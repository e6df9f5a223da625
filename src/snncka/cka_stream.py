"""Streaming minibatch CKA: every layer's centred Grams of a batch, accumulated as HSIC over batches
(``MinibatchCKA``); the machinery ``snncka.cka.compare`` and ``temporal`` run models through."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .cka_kernels import _kernel_spec, _rbf_from_gram, center_gram
from .cka_math import (
    _all_ranks,
    _cka_matrix,
    _collective_device,
    _flatten_sym,
    _gram_of_feature,
    _jackknife,
    _u_rows,
    _Workspace,
)
from .record import (
    TimeLayout,
    parse_time,
    to_feature,
)
from .results import CKAResult

TIME_REDUCE = ("concat", "mean")


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
        ia = {n: i for i, n in enumerate(names_a)}
        pairs = [(ia[n], j) for j, n in enumerate(names_b) if n in ia]  # corresponding layers
        pairs.sort()  # in A's order, as CKAResult.corresponding
        ab = hab[:, [i for i, _ in pairs], [j for _, j in pairs]] if pairs else hab[:, 0, :0]
        return CKAResult(
            matrix=matrix.cpu().numpy(), layers_a=list(names_a), layers_b=list(names_b),
            kinds_a=list(self.kinds_a), kinds_b=list(self.kinds_b), n_images=int(counts.sum()),
            batch_size=int(counts.max()), estimator="unbiased" if self.unbiased else "biased", kernel=self.kernel,
            ci_low=lo, ci_high=hi, n_batches=int(len(counts)), meta=dict(time_reduce=self.time_reduce),
            batch_ab=ab.cpu().numpy(), batch_aa=haa.cpu().numpy(),
            batch_bb=hbb.cpu().numpy(),
        )
