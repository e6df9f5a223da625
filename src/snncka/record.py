"""Record the outputs of chosen layers of any ``nn.Module`` with forward hooks (SPEC "Representation
similarity").

Layers are chosen by *kind* -- ``conv``, ``norm``, ``act`` (ReLU, LIF and other neurons), ``block`` (residual
block output), ``pool``, ``linear`` -- or by name (exact or glob pattern); the default ``"paper"`` selects
every layer of those kinds, recorded in forward order. A module called several times in one forward pass (an
snntorch neuron stepped in a Python loop) is recorded once per call, named ``name``, ``name#2``, ...

Each recorded output becomes a *feature* ``[B, T, p]`` (``T = 1`` for a layer without time), according to the
model's time layout:

* ``None``      -- ``[B, ...]`` (an ANN);
* ``"TB"``      -- ``[T, B, ...]`` (spikingjelly multi-step, snntorch sequences);
* ``"BT"``      -- ``[B, T, ...]``;
* ``"folded"``  -- ``[T*B, ...]`` step-major, as snncka's SNNs pass between layers; each layer's T is its
  row count divided by the batch size, so a stage running with T = 1 (mixed time steps) is handled.

A spiking layer's CKA feature is ``feature.reshape(B, T*p)``: the T steps concatenated, as in the paper.
Outputs are detached and (when stored) cloned, so an inplace ReLU after a layer cannot overwrite its record.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "KINDS",
    "PAPER_KINDS",
    "Recorder",
    "TimeLayout",
    "batch_size_of",
    "kind_of",
    "parse_time",
    "record",
    "reset_states",
    "select_layers",
    "to_feature",
]

KINDS = ("conv", "norm", "act", "block", "pool", "linear", "other")
PAPER_KINDS = ("conv", "norm", "act", "block", "pool", "linear")

_CONV = (nn.modules.conv._ConvNd,)
_NORM = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
_POOL = (
    nn.modules.pooling._AvgPoolNd, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd, nn.modules.pooling._LPPoolNd,
)
_ACT_EXCLUDE = (nn.MultiheadAttention, nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.Softmax2d)
_SNNTORCH_NEURONS = {"Leaky", "Synaptic", "Alpha", "Lapicque", "RLeaky", "RSynaptic", "SLSTM", "SConv2dLSTM"}

Selection = str | Sequence[str] | Callable[[str, nn.Module], bool]


def kind_of(module: nn.Module) -> str:
    """The kind of a module: one of ``KINDS`` ("other" when it is none of the recorded kinds)."""
    cls = type(module)
    name = cls.__name__
    if isinstance(module, _CONV):
        return "conv"
    if isinstance(module, _NORM):
        return "norm"
    if isinstance(module, _POOL):
        return "pool"
    if isinstance(module, nn.Linear):
        return "linear"
    if (cls.__module__ == nn.modules.activation.__name__ and not isinstance(module, _ACT_EXCLUDE)) or (
        "LIF" in name or name.endswith("Node") and "spikingjelly" in cls.__module__
        or (cls.__module__.startswith("snntorch") and name in _SNNTORCH_NEURONS)
        or "Spik" in name or name.endswith("Neuron")
    ):
        return "act"
    if name.endswith("Block") or name.endswith("Bottleneck"):
        return "block"
    return "other"


def _matcher(layers: Selection) -> Callable[[str, nn.Module, str], bool]:
    """Turn a layer selection into a predicate on (name, module, kind)."""
    if callable(layers) and not isinstance(layers, str):
        return lambda n, m, k: bool(layers(n, m))
    items = [layers] if isinstance(layers, str) else list(layers)
    if not items:
        raise ValueError("empty layer selection; use 'paper', kinds like ['conv', 'act'], or name patterns")
    kinds: set[str] = set()
    patterns: list[str] = []
    for it in items:
        if not isinstance(it, str):
            raise TypeError(f"layer selections are strings (kinds or name patterns), got {it!r}")
        if it == "paper":
            kinds.update(PAPER_KINDS)
        elif it in KINDS:
            kinds.add(it)
        else:
            patterns.append(it)
    return lambda n, m, k: k in kinds or any(n == p or fnmatch.fnmatchcase(n, p) for p in patterns)


def select_layers(model: nn.Module, layers: Selection = "paper") -> list[tuple[str, str]]:
    """The ``(name, kind)`` of every module of ``model`` matched by ``layers``, in registration order.

    ``layers``: ``"paper"`` (all conv, norm, act, block, pool and linear layers), a kind or list of kinds,
    module names or glob patterns (``"s1.*.act?"``), or a predicate ``f(name, module) -> bool``. The order in
    which a forward pass *calls* them (and repeated calls) is what ``Recorder.names`` reports after a pass.
    """
    match = _matcher(layers)
    out = [(n, kind_of(m)) for n, m in model.named_modules() if n and match(n, m, kind_of(m))]
    if not out:
        raise ValueError(
            f"layer selection {layers!r} matched no module of {type(model).__name__}; kinds are "
            f"{KINDS[:-1]}, "
            f"names look like {[n for n, _ in model.named_modules() if n][:5]}"
        )
    return out


# --------------------------------------------------------------------------------------------------------
# Time layouts
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeLayout:
    """Where a model's outputs carry time: ``kind`` in (None, "TB", "BT", "folded"), optional fixed T."""

    kind: str | None = None
    T: int | None = None


def parse_time(time: Any, model: nn.Module | None = None) -> TimeLayout:
    """Normalise a time-layout argument: None, "TB", "BT", "folded", or a pair like ``("folded", 4)``.

    When ``time`` is None and ``model`` carries a ``time_layout`` attribute (snncka models do), that is used.
    """
    if time is None and model is not None:
        time = getattr(model, "time_layout", None)
    if isinstance(time, TimeLayout):
        return time
    T = None
    if isinstance(time, tuple | list):
        if len(time) != 2:
            raise ValueError(f"a time layout with fixed T is a pair like ('TB', 4), got {time!r}")
        time, T = time
        T = int(T)
        if T < 1:
            raise ValueError(f"T in a time layout must be >= 1, got {T}")
    if time not in (None, "TB", "BT", "folded"):
        raise ValueError(
            f"unknown time layout {time!r}; use None ([B, ...]), 'TB' ([T, B, ...]), 'BT' ([B, T, ...]) or "
            "'folded' ([T*B, ...], step-major)"
        )
    return TimeLayout(time, T)


def to_feature(out: Tensor, B: int, layout: TimeLayout, name: str = "?") -> Tensor:
    """View one recorded output as ``[B, T, p]`` (T = 1 for a layer without a time axis)."""
    shape = tuple(out.shape)
    kind, T = layout.kind, layout.T
    if out.dim() == 0:
        raise ValueError(f"layer {name!r} returned a scalar; it cannot be recorded")
    if kind == "TB":
        if out.dim() >= 2 and shape[1] == B and (T is None or shape[0] == T) and not (
            T is None and shape[0] == B and out.dim() == 2
        ):
            return out.reshape(shape[0], B, -1).transpose(0, 1)
        kind = "folded" if shape[0] != B else None
    elif kind == "BT":
        if shape[0] != B:
            raise ValueError(f"layer {name!r}: layout 'BT' expects [B={B}, T, ...] outputs, got {shape}")
        if out.dim() >= 3 and (T is None or shape[1] == T):
            return out.reshape(B, shape[1], -1)
        return out.reshape(B, 1, -1)
    if kind == "folded":
        if shape[0] % B:
            raise ValueError(
                f"layer {name!r}: a time-folded output [T*B, ...] needs a multiple of the batch size {B} "
                "rows, "
                f"got shape {shape}"
            )
        steps = shape[0] // B
        return out.reshape(steps, B, -1).transpose(0, 1)
    if shape[0] != B:
        raise ValueError(
            f"layer {name!r} returned shape {shape} for a batch of {B} images; if the model carries time, "
            "pass its layout (time='TB' for [T, B, ...], 'BT' for [B, T, ...], 'folded' for [T*B, ...])"
        )
    return out.reshape(B, 1, -1)


def reset_states(model: nn.Module) -> None:
    """Reset the membrane state of spikingjelly / snntorch neurons so each batch starts from rest
    (snncka's neurons keep no state between calls)."""
    for m in model.modules():
        mod = type(m).__module__
        if mod.startswith("spikingjelly") and callable(getattr(m, "reset", None)):
            m.reset()
        elif mod.startswith("snntorch") and callable(getattr(m, "reset_mem", None)):
            m.reset_mem()


def batch_size_of(x: Tensor, model: nn.Module, layout: TimeLayout) -> int:
    """Number of images in an input batch: dim 1 of time-first input (``[T, B, C, H, W]`` frames,
    ``[T, B, p]`` sequences), else dim 0."""
    if layout.kind == "TB" and x.dim() in (3, 5):
        return int(x.shape[1])
    if layout.kind == "folded" and x.dim() == 5 and hasattr(model, "time_layout"):
        return int(x.shape[1])
    return int(x.shape[0])


# --------------------------------------------------------------------------------------------------------
# Recorder
# --------------------------------------------------------------------------------------------------------


class Recorder:
    """Context manager hooking the selected layers of ``model``.

    Without ``on_output`` each forward pass stores ``features[name] = [B, T, p]`` tensors (cloned, so later
    inplace ops cannot alter them) in forward order; ``names``/``kinds`` list what was recorded. With
    ``on_output(name, kind, feature)`` the feature is handed over at once instead of stored, so memory holds
    one layer's output at a time (how the CKA engine turns each into a Gram matrix immediately).

    Set ``batch_size`` (number of images) before each forward pass, or call ``recorder(x)`` which infers it
    from the input and runs the model. Use under ``torch.no_grad()`` for analysis.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Selection = "paper",
        *,
        time: Any = None,
        on_output: Callable[[str, str, Tensor], None] | None = None,
    ) -> None:
        self.model = model
        self.layout = parse_time(time, model)
        self.selected = select_layers(model, layers)
        self.on_output = on_output
        self.batch_size: int | None = None
        self.features: dict[str, Tensor] = {}
        self.names: list[str] = []
        self.kinds: list[str] = []
        self._calls: dict[str, int] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> Recorder:
        modules = dict(self.model.named_modules())
        for name, kind in self.selected:
            self._handles.append(modules[name].register_forward_hook(self._hook(name, kind)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def reset(self) -> None:
        """Forget the previous pass (called automatically by ``__call__``)."""
        self.features = {}
        self.names, self.kinds = [], []
        self._calls = {}

    def __call__(self, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        """Run the model on ``x`` after resetting; the batch size is read from ``x``."""
        self.reset()
        self.batch_size = batch_size_of(x, self.model, self.layout)
        reset_states(self.model)
        return self.model(x, *args, **kwargs)

    def _hook(self, name: str, kind: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            out = output
            while isinstance(out, tuple | list):  # snntorch neurons return (spikes, membrane)
                if not out:
                    return
                out = out[0]
            if not isinstance(out, Tensor):
                return
            if self.batch_size is None:
                raise RuntimeError("Recorder.batch_size is unset: call recorder(x) or set batch_size first")
            n = self._calls.get(name, 0) + 1
            self._calls[name] = n
            key = name if n == 1 else f"{name}#{n}"
            feat = to_feature(out.detach(), self.batch_size, self.layout, key)
            self.names.append(key)
            self.kinds.append(kind)
            if self.on_output is not None:
                self.on_output(key, kind, feat)
            else:
                self.features[key] = feat.clone()

        return hook


def record(
    model: nn.Module, data: Iterable[Any], layers: Selection = "paper", *, time: Any = None
) -> dict[str, Tensor]:
    """All selected layers' features ``[N, T*p]`` over a (small) data stream, concatenated over batches.

    Holds every feature of every image in memory: meant for small analyses (linear probes), not for CKA.
    """
    chunks: dict[str, list[Tensor]] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), Recorder(model, layers, time=time) as rec:
            for batch in data:
                x = batch[0] if isinstance(batch, tuple | list) else batch
                rec(x)
                for k, v in rec.features.items():
                    chunks.setdefault(k, []).append(v.reshape(v.shape[0], -1))
    finally:
        model.train(was_training)
    return {k: torch.cat(v) for k, v in chunks.items()}
