"""Record the outputs of chosen layers of any ``nn.Module`` with forward hooks (the representations CKA
compares, Sec. 3.3).

Layers are chosen by *kind* -- ``conv``, ``norm``, ``act`` (ReLU, LIF and other neurons), ``block`` (residual
block output), ``pool``, ``linear`` -- or by name (exact or glob pattern); the default ``"paper"`` selects
every layer of those kinds, recorded in forward order. A module called several times in one forward pass is
recorded once per call, named ``name``, ``name#2``, ... -- unless the model steps time in a Python loop
(layout ``"loop"`` below), where a module's calls are its time steps.

Each recorded output becomes a *feature* ``[B, T, p]`` (``T = 1`` for a layer without time), according to the
model's time layout:

* ``None``      -- ``[B, ...]`` (an ANN);
* ``"TB"``      -- ``[T, B, ...]`` (spikingjelly multi-step, snntorch sequences);
* ``"BT"``      -- ``[B, T, ...]``;
* ``"folded"``  -- ``[T*B, ...]`` step-major, as snncka's SNNs pass between layers; each layer's T is its
  row count divided by the batch size, so a stage running with T = 1 (mixed time steps) is handled;
* ``"loop"``    -- ``[B, ...]`` per call, one call per time step: SNNs with a Python time loop (snntorch,
  spikingjelly single-step, norse, any ``for t in range(T)`` model). A module's calls within one forward
  pass are stacked into its ``[B, T, p]`` time series (a module called once, e.g. a readout after the loop,
  gets T = 1).

A fixed T (``("TB", 4)``, ``("loop", 4)``) is checked against every layer. A layout that does not apply to
the model (no recorded output has a time axis, or modules run several times per forward under a layout that
expects all steps in one call) is an error, not silently ignored.

A spiking layer's CKA feature is ``feature.reshape(B, T*p)``: the T steps concatenated, as in the paper.
Outputs are detached and (when stored) cloned, so an inplace ReLU after a layer cannot overwrite its record.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
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
    """Where a model's outputs carry time: ``kind`` in (None, "TB", "BT", "folded", "loop"), optional fixed T."""

    kind: str | None = None
    T: int | None = None


def parse_time(time: Any, model: nn.Module | None = None) -> TimeLayout:
    """Normalise a time-layout argument: None, "TB", "BT", "folded", "loop", or a pair like ``("TB", 4)``.

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
    if time not in (None, "TB", "BT", "folded", "loop"):
        raise ValueError(
            f"unknown time layout {time!r}; use None ([B, ...]), 'TB' ([T, B, ...]), 'BT' ([B, T, ...]), "
            "'folded' ([T*B, ...], step-major) or 'loop' (one call per time step)"
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
        if T is not None and steps not in (1, T):
            raise ValueError(
                f"layer {name!r}: time=('folded', {T}) expects [{T}*{B}, ...] rows, got shape {shape} "
                f"({steps} steps); pass the model's T, or 'folded' alone"
            )
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


def _batch_dim(x: Tensor, model: nn.Module, layout: TimeLayout) -> int:
    """The images' axis of an input: 1 for time-first input (``[T, B, C, H, W]`` frames, ``[T, B, p]``
    sequences), else 0."""
    if layout.kind == "TB" and x.dim() in (3, 5):
        return 1
    if layout.kind == "folded" and x.dim() == 5 and hasattr(model, "time_layout"):
        return 1
    return 0


def batch_size_of(x: Tensor, model: nn.Module, layout: TimeLayout) -> int:
    """Number of images in an input batch: dim 1 of time-first input, else dim 0."""
    return int(x.shape[_batch_dim(x, model, layout)])


# --------------------------------------------------------------------------------------------------------
# Recorder
# --------------------------------------------------------------------------------------------------------


class Recorder:
    """Context manager hooking the selected layers of ``model``.

    Without ``on_output`` each forward pass stores ``features[name] = [B, T, p]`` tensors (cloned, so later
    inplace ops cannot alter them) in forward order; ``names``/``kinds`` list what was recorded. With
    ``on_output(name, kind, feature)`` the feature is handed over at once instead of stored, so memory holds
    one layer's output at a time (how the CKA engine turns each into a Gram matrix immediately). Under the
    ``"loop"`` layout a module's steps are held until ``finish()`` stacks them (its calls interleave with
    the other modules').

    Set ``batch_size`` (number of images) before each forward pass and call ``finish()`` after it, or call
    ``recorder(x)``, which infers the batch size from the input and does both. Use under ``torch.no_grad()``
    for analysis.
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
        # a layout the caller chose (not the one an snncka model declares) is checked against the outputs
        self._explicit = time is not None and getattr(model, "time_layout", None) != self.layout.kind
        self.selected = select_layers(model, layers)
        self.on_output = on_output
        self.batch_size: int | None = None
        self.features: dict[str, Tensor] = {}
        self.names: list[str] = []
        self.kinds: list[str] = []
        self._calls: dict[str, int] = {}
        self._steps: dict[str, tuple[str, list[Tensor]]] = {}  # "loop": a module's outputs so far
        self._max_T = 1
        self._checked = False
        self._handles: list[Any] = []
        self.time_arg = "time"  # the argument that sets the layout, named in a warning (compare: time_a/time_b)

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
        self._steps = {}

    def __call__(self, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        """Run the model on ``x`` after resetting; the batch size is read from ``x``."""
        self.reset()
        self.batch_size = batch_size_of(x, self.model, self.layout)
        reset_states(self.model)
        out = self.model(x, *args, **kwargs)
        self.finish()
        return out

    def _emit(self, name: str, kind: str, feat: Tensor) -> None:
        self.names.append(name)
        self.kinds.append(kind)
        self._max_T = max(self._max_T, int(feat.shape[1]))
        if self.on_output is not None:
            self.on_output(name, kind, feat)
        else:
            self.features[name] = feat if self.layout.kind == "loop" else feat.clone()

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
            if self.layout.kind == "loop":  # a step of this module's time series (cloned: inplace ops follow)
                self._steps.setdefault(name, (kind, []))[1].append(out.detach().clone())
                return
            key = name if n == 1 else f"{name}#{n}"
            self._emit(key, kind, to_feature(out.detach(), self.batch_size, self.layout, key))

        return hook

    def finish(self) -> None:
        """End a forward pass: under ``"loop"``, emit each module's stacked steps (in first-call order);
        after the first pass, check that the time layout applies to the model."""
        steps, self._steps = self._steps, {}
        for name, (kind, outs) in steps.items():
            self._emit(name, kind, self._stack_steps(name, outs))
        if not self._checked and self.names:
            self._checked = True
            self._check_layout()

    def _stack_steps(self, name: str, outs: list[Tensor]) -> Tensor:
        B, T = self.batch_size or 0, self.layout.T
        if T is not None and len(outs) not in (1, T):
            raise ValueError(
                f"layer {name!r} ran {len(outs)} times in one forward, but time=('loop', {T}) expects {T} calls "
                f"(or 1 for a layer outside the time loop); pass the model's T, or 'loop' alone"
            )
        shapes = {tuple(o.shape) for o in outs}
        if len(shapes) > 1 or outs[0].dim() == 0 or outs[0].shape[0] != B:
            raise ValueError(
                f"layer {name!r}: under time='loop' every call must return [B={B}, ...] for the batch's {B} "
                f"images, got shapes {sorted(shapes)}; for time-first input [T, B, ...] give labels with each "
                "batch (or batches of the right size)"
            )
        return torch.stack(outs, 1).reshape(B, len(outs), -1)

    def _check_layout(self) -> None:
        kind, model = self.layout.kind, type(self.model).__name__
        calls = max(self._calls.values(), default=1)
        if kind is None:
            self._warn_time_loop()
        if kind == "loop" and calls == 1:
            raise ValueError(
                f"time='loop' does not apply to {model}: every recorded module ran once in the forward (no "
                "Python time loop); use time=None, or the layout of its outputs ('TB', 'BT', 'folded')"
            )
        if not self._explicit or kind not in ("TB", "BT", "folded") or self.layout.T == 1:
            return
        if calls > 1:
            many = next(n for n, c in self._calls.items() if c == calls)
            raise ValueError(
                f"time layout {kind!r} does not apply to {model}: module {many!r} ran {calls} times in one "
                "forward (a Python time loop); use time='loop'"
            )
        if self._max_T == 1:
            raise ValueError(
                f"time layout {kind!r} does not apply to {model}: no recorded layer's output has a time axis "
                f"(e.g. {self.names[0]!r}); use time=None"
            )

    def _warn_time_loop(self) -> None:
        """Warn when a model without a time layout looks like a Python time loop: at least two recorded
        modules, and at least half of them, ran the same number of times k > 1 in one forward. A module reused
        now and then (a shared ReLU) does not trigger it; a loop over T steps records every layer as ``name``,
        ``name#2``, ..., ``name#T`` -- T times as many rows as layers, silently."""
        counts = [c for c in self._calls.values() if c > 1]
        if not counts:
            return
        k = max(set(counts), key=counts.count)
        looped = [n for n, c in self._calls.items() if c == k]
        if len(looped) < 2 or 2 * len(looped) < len(self._calls):
            return
        fix = ", ".join(f"{a}='loop'" for a in self.time_arg.split("/"))
        rows = [looped[0]] + [f"{looped[0]}#{i}" for i in range(2, k + 1)]
        shown = ", ".join(map(repr, rows if k <= 3 else [*rows[:2], "...", rows[-1]])).replace("'...'", "...")
        warnings.warn(
            f"{type(self.model).__name__}: {len(looped)} of its {len(self._calls)} recorded modules ran {k} times "
            f"in one forward (e.g. {looped[0]!r}), as in a Python time loop, so each call is recorded as its own "
            f"layer ({shown}); if the calls are time steps, pass "
            f"{fix} to record each module once with its {k} steps",
            UserWarning,
            stacklevel=2,
        )


def record(
    model: nn.Module, data: Iterable[Any], layers: Selection = "paper", *, time: Any = None
) -> dict[str, Tensor]:
    """All selected layers' features ``[N, T*p]`` over a (small) data stream, concatenated over batches.

    Holds every feature of every image in memory: meant for small analyses (linear probes), not for CKA.
    """
    chunks: dict[str, list[Tensor]] = {}
    with torch.no_grad(), ModelState([model], None), Recorder(model, layers, time=time) as rec:
        for batch in data:
            rec(batch_input(batch))
            for k, v in rec.features.items():
                chunks.setdefault(k, []).append(v.reshape(v.shape[0], -1))
    return {k: torch.cat(v) for k, v in chunks.items()}


# --------------------------------------------------------------------------------------------------------
# Driving models over a data stream
# --------------------------------------------------------------------------------------------------------


def batch_input(batch: Any) -> Tensor:
    """The input of a data batch: the batch itself (a tensor) or the first item of a tuple/list."""
    x = batch[0] if isinstance(batch, tuple | list) else batch
    if not isinstance(x, Tensor):
        raise TypeError(f"a data batch must be a tensor or a tuple/list starting with one, got {type(x)}")
    return x


def images_in(batch: Any, x: Tensor, model: nn.Module, layout: TimeLayout, i: int) -> int:
    """Number of images in a batch: its label count when it has labels, else read from the input's layout.
    With labels and no time layout, an input whose dim 0 is not the image count (a time-first tensor read as
    batch-first) is an error, not a silent wrong result."""
    n = batch_size_of(x, model, layout)
    if isinstance(batch, tuple | list) and len(batch) > 1 and (
        isinstance(batch[1], int) or isinstance(batch[1], Tensor) and not batch[1].dim()
    ):
        raise ValueError(
            f"batch {i} is one sample (input {tuple(x.shape)}, a single label): the data yields samples, not "
            "batches; wrap it in a DataLoader(dataset, batch_size=256), or pass one input tensor [N, ...]"
        )
    if isinstance(batch, tuple | list) and len(batch) > 1 and isinstance(batch[1], Tensor) and batch[1].dim():
        if len(batch[1]) != n and layout.kind is None:
            raise ValueError(
                f"batch {i}: the input {tuple(x.shape)} has {n} rows but there are {len(batch[1])} labels; if "
                "the model takes time-first or time-folded input, pass its time layout (time='TB' for "
                "[T, B, ...], 'BT' for [B, T, ...], 'folded' for [T*B, ...], 'loop' for a Python time loop)"
            )
        n = len(batch[1])
    return n


def batches_of(data: Any, batch_size: int, model: nn.Module, layout: TimeLayout) -> Any:
    """A data stream as batches: a single input tensor is split along its images' axis into
    ``ceil(N / batch_size)`` batches of near-equal size (no small last batch); anything else is returned."""
    if not isinstance(data, Tensor):
        return data
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if data.dim() == 0:
        raise ValueError("data is a scalar tensor; pass a batch of inputs [N, ...] or an iterable of batches")
    dim = _batch_dim(data, model, layout)
    n = data.shape[dim]
    return list(data.tensor_split(max(1, -(-n // batch_size)), dim))


def model_device(model: nn.Module) -> torch.device:
    """Where a model's parameters (or buffers) are; CPU for a model without either."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


class ModelState:
    """Eval mode (and optionally a device) for the duration of recording; restores both afterwards."""

    def __init__(self, models: list[nn.Module], device: Any) -> None:
        self.models = list({id(m): m for m in models}.values())
        self.device = torch.device(device) if device is not None else None

    def __enter__(self) -> ModelState:
        self.modes = [m.training for m in self.models]
        self.devices = [model_device(m) for m in self.models]
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


def zip_streams(data: Iterable[Any], data_b: Iterable[Any] | None) -> Iterator[tuple[Any, Any]]:
    """Pairs of aligned batches of two streams (the second None when there is no second stream)."""
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
