"""Centered Kernel Alignment between every layer of two models (Sec. 3.3): ``compare`` and ``temporal``.

The reference formulas live in ``snncka.cka_kernels``, the streaming accumulator in ``snncka.cka_stream``; all
are importable from here. Reference functions (small and readable, in the style of Kornblith et al. 2019; the
tests hold the engine to them): ``gram_linear``, ``gram_rbf``, ``center_gram``, ``hsic_biased``,
``hsic_unbiased`` (Song et al. 2012) and ``cka(X, Y)`` on ``[n, p]`` features.

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
from collections.abc import Iterable
from contextlib import ExitStack
from typing import Any

import torch
from torch import Tensor, nn

from . import memory
from .cka_kernels import _kernel_spec, center_gram, cka, gram_linear, gram_rbf, hsic_biased, hsic_unbiased
from .cka_math import (
    _all_ranks,
    _dist,
)
from .cka_stream import MinibatchCKA, _check_n, _Grams, _norm_const, _warn_constant
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


def _check_gram_memory(n: int, sides: list[_Side], dev: torch.device) -> None:
    """Refuse, in one line, a batch whose Gram matrices (a float32 Gram and a float64 centred Gram of
    ``n x n`` per recorded layer) exceed the device's free memory."""
    layers = sum(len(select_layers(sd.model, sd.layers)) for sd in sides)
    memory.check({"Gram matrices of one batch": layers * n * n * 12}, dev,
                  f"CKA over {layers} layers on batches of {n} images", "lower the batch size (--batch-size)")


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
            if i == rank:  # this rank's first batch: will its layers' Grams fit?
                _check_gram_memory(n, sides, dev)
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
    per_batch, ns = _all_ranks(batches, dev)
    H, ns = per_batch.sum(0), ns.sum(0)
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
        steps=list(steps), batch_hsic=per_batch.cpu().numpy(),
    )

