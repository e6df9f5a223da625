"""Model zoo: pre-activation CIFAR ResNets and VGGs (paper App. D), artificial or spiking from ONE definition.

``create("resnet20", spiking=True, width=4, T=4)`` builds a network; with ``spiking=False`` the same code
builds the ANN, so both have identical ``named_modules()`` and parameter names (BatchNorm2d <-> tdBN,
ReLU <-> LIF). Layer names follow the paper's figures: ``conv1``, ``s1.b0.conv1``, ``s2.b0.ds.1``, ``fc``.

``recipe="code"`` builds the authors' released networks instead of the paper's text (released DSpike surrogate,
spikes at ``u >= v_th``, an ANN whose identity shortcut carries the activated input); parameter names and order
stay the same, so ``load_released_state_dict`` loads the released checkpoints by order (see ``snncka.recipes``).

Spiking models carry time-folded tensors ``[T*B, ...]`` between layers (see ``snncka.layers``). Forward takes
``[B, C, H, W]`` images (direct encoding) or ``[T, B, C, H, W]`` frames and returns time-averaged logits
``[B, K]``; ``model(x, per_step=True)`` returns the per-step logits ``[T, B, K]`` (``[1, B, K]`` for an ANN).
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import limits, recipes, registry
from .layers import TDBatchNorm2d, change_steps, encode_direct, encode_frames
from .neurons import LIF, LIFConfig, recompute_spikes
from .recipes import Recipe

__all__ = ["NAMES", "SNNCKAModel", "PreActResNet", "VGG", "create", "from_checkpoint", "from_config", "list_models",
           "load", "load_released_state_dict"]

VGG_BLOCKS: dict[str, tuple[int, int, int, int]] = {
    # Table D.2: number of 3x3 conv layers in each of the 4 blocks (64/128/256/512 channels).
    "vgg13": (1, 1, 2, 4),
    "vgg19": (2, 2, 3, 8),
    "vgg25": (2, 3, 4, 12),
    "vgg31": (2, 4, 5, 16),
    "vgg43": (2, 5, 6, 24),
}
RESNET_DEPTHS = (20, 38, 56, 110, 164)  # Table D.1; any depth 6n+2 is accepted
NAMES = tuple(f"resnet{d}" for d in RESNET_DEPTHS) + tuple(VGG_BLOCKS)


class _Parts:
    """Builds the layers that differ between the ANN and the SNN; everything else is shared code.

    ``activated_identity``: the identity shortcut carries the block's activated input (the released ANN,
    whose in-place ReLU overwrites the block input) instead of the input itself. ``shortcut_first``: a block
    computes its shortcut right after its first activation (the released order) instead of after ``bn2``.
    """

    def __init__(self, spiking: bool, lif: LIFConfig, activated_identity: bool = False,
                 shortcut_first: bool = False) -> None:
        self.spiking, self.lif = spiking, lif
        self.activated_identity, self.shortcut_first = activated_identity, shortcut_first

    def act(self, T: int) -> nn.Module:
        return LIF(T=T, cfg=self.lif) if self.spiking else nn.ReLU()

    def norm(self, c: int) -> nn.Module:
        return TDBatchNorm2d(c) if self.spiking else nn.BatchNorm2d(c)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class SNNCKAModel(nn.Module):
    """Common input/output handling; subclasses define ``features`` (folded in, folded out) and ``fc``."""

    min_size: int = 1
    stage_T: tuple[int, ...]

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = config
        self.spiking: bool = config["spiking"]
        self.in_channels: int = config["in_channels"]
        self.num_classes: int = config["num_classes"]

    @property
    def T(self) -> int:
        """Number of input time steps (1 for an ANN)."""
        return self.stage_T[0] if self.spiking else 1

    @property
    def time_layout(self) -> str | None:
        """How recorded activations carry time: "folded" ``[T*B, ...]`` for SNNs, None for ANNs."""
        return "folded" if self.spiking else None

    def _encode(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            self._check_image(x.shape[1:], x.shape)
            return encode_direct(x, self.T) if self.spiking else x
        if x.dim() == 5:
            self._check_image(x.shape[2:], x.shape)
            if not self.spiking:
                if x.shape[0] != 1:
                    raise ValueError(
                        "an ANN takes [B, C, H, W] images or a single frame [1, B, C, H, W]; got "
                        f"{x.shape[0]} frames -- integrate the events into one frame for the ANN (as the "
                        "paper does)"
                    )
                return x[0]
            if x.shape[0] != self.T:
                raise ValueError(
                    f"expected {self.T} frames [T, B, C, H, W] for this model, got {tuple(x.shape)}"
                )
            return encode_frames(x)
        raise ValueError(
            f"expected input of shape [B, {self.in_channels}, H, W] (images) or "
            f"[T, B, {self.in_channels}, H, W] (frames), got a tensor of rank {x.dim()} and shape "
            f"{tuple(x.shape)}"
        )

    def _check_image(self, chw: Sequence[int], shape: torch.Size) -> None:
        c, h, w = chw
        if c != self.in_channels:
            raise ValueError(
                f"expected {self.in_channels} input channels ([.., {self.in_channels}, H, W]), got shape "
                f"{tuple(shape)}"
            )
        if h < self.min_size or w < self.min_size:
            raise ValueError(
                f"input images must be at least {self.min_size}x{self.min_size} for "
                f"{self.config['name']}, got {h}x{w} (shape {tuple(shape)})"
            )

    def features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor, per_step: bool = False) -> Tensor:
        if self.spiking:
            with recompute_spikes():  # spikes saved for backward are rebuilt from the LIF membrane (exact)
                out = self.fc(self.features(self._encode(x)))
        else:
            out = self.fc(self.features(self._encode(x)))
        steps = out.reshape(self.stage_T[-1] if self.spiking else 1, -1, out.shape[-1])
        return steps if per_step else steps.mean(0)


class BasicBlock(nn.Module):
    """Pre-activation basic block: act -> conv3x3 -> norm -> act -> conv3x3 -> norm, plus the shortcut
    (identity, or avg-pool(stride) -> conv1x1 -> norm on the activated input when the shape changes).

    Recipe ``code`` (the authors' released ANN): the identity carries the activated input ``act(x)``, and the
    shortcut is computed right after the first activation, so its layers run (and are recorded) there.
    """

    def __init__(self, cin: int, cout: int, stride: int, residual: bool, parts: _Parts, T: int) -> None:
        super().__init__()
        self.residual = residual
        self.activated_identity, self.shortcut_first = parts.activated_identity, parts.shortcut_first
        self.act1 = parts.act(T)
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = parts.norm(cout)
        self.act2 = parts.act(T)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = parts.norm(cout)
        self.ds: nn.Sequential | None = None
        if residual and (stride != 1 or cin != cout):
            pool = (
                nn.AvgPool2d(stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
            )
            self.ds = nn.Sequential(pool, nn.Conv2d(cin, cout, 1, bias=False), parts.norm(cout))

    def _shortcut(self, x: Tensor, a: Tensor) -> Tensor:
        if self.ds is not None:
            return self.ds(a)
        return a if self.activated_identity else x

    def forward(self, x: Tensor) -> Tensor:
        a = self.act1(x)
        short = self._shortcut(x, a) if self.residual and self.shortcut_first else None
        out = self.bn2(self.conv2(self.act2(self.bn1(self.conv1(a)))))
        if not self.residual:
            return out
        return out + (short if short is not None else self._shortcut(x, a))


class PreActResNet(SNNCKAModel):
    """CIFAR pre-activation ResNet-(6n+2): stem conv + norm, 3 stages of n basic blocks, act -> GAP -> fc."""

    min_size = 4

    def __init__(
        self,
        config: dict[str, Any],
        blocks: int,
        width: float,
        residual: Sequence[bool],
        stage_T: tuple[int, int, int],
        parts: _Parts,
    ) -> None:
        super().__init__(config)
        self.stage_T = stage_T
        c = [int(round(16 * width * m)) for m in (1, 2, 4)]
        self.conv1 = _conv3x3(config["in_channels"], c[0])
        self.bn1 = parts.norm(c[0])
        cin = c[0]
        for s in range(3):
            stage = nn.Sequential(
                OrderedDict(
                    (f"b{b}", BasicBlock(cin if b == 0 else c[s], c[s], 2 if (s > 0 and b == 0) else 1,
                                         residual[s], parts, stage_T[s]))
                    for b in range(blocks)
                )
            )
            self.add_module(f"s{s + 1}", stage)
            cin = c[s]
        self.act = parts.act(stage_T[2])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c[2], config["num_classes"])
        _init(self)

    def features(self, x: Tensor) -> Tensor:
        x = self.bn1(self.conv1(x))
        T_prev = self.stage_T[0]
        for s, stage in enumerate((self.s1, self.s2, self.s3)):
            x = stage(change_steps(x, T_prev, self.stage_T[s]))
            T_prev = self.stage_T[s]
        return self.pool(self.act(x)).flatten(1)


class ConvUnit(nn.Module):
    """conv3x3 -> norm -> act."""

    def __init__(self, cin: int, cout: int, parts: _Parts, T: int) -> None:
        super().__init__()
        self.conv = _conv3x3(cin, cout)
        self.bn = parts.norm(cout)
        self.act = parts.act(T)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class VGG(SNNCKAModel):
    """VGG of Table D.2: 4 blocks of conv-norm-act (64/128/256/512 x width), avg-pool s2 between blocks,
    global average pool, linear classifier."""

    min_size = 8

    def __init__(
        self,
        config: dict[str, Any],
        blocks: tuple[int, int, int, int],
        width: float,
        stage_T: tuple[int, int, int, int],
        parts: _Parts,
    ) -> None:
        super().__init__(config)
        self.stage_T = stage_T
        cin = config["in_channels"]
        for s, n in enumerate(blocks):
            cout = int(round((64 << s) * width))
            units = OrderedDict(
                (f"l{i}", ConvUnit(cin if i == 0 else cout, cout, parts, stage_T[s])) for i in range(n)
            )
            self.add_module(f"s{s + 1}", nn.Sequential(units))
            if s < 3:
                self.add_module(f"pool{s + 1}", nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False))
            cin = cout
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, config["num_classes"])
        _init(self)

    def features(self, x: Tensor) -> Tensor:
        T_prev = self.stage_T[0]
        for s in range(4):
            x = getattr(self, f"s{s + 1}")(change_steps(x, T_prev, self.stage_T[s]))
            T_prev = self.stage_T[s]
            if s < 3:
                x = getattr(self, f"pool{s + 1}")(x)
        return self.pool(x).flatten(1)


def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            if not m.weight.is_meta:  # meta = shapes only (memory.model_footprint); its normal_ imports the compiler
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _builder(name: str) -> Callable[..., SNNCKAModel]:
    if not isinstance(name, str):
        raise ValueError(f"model must be a model name such as resnet20, got {name!r} ({type(name).__name__})")
    m = re.fullmatch(r"resnet(\d{1,6})", name)
    if m and int(m.group(1)) > limits.MAX_RESNET_DEPTH:
        raise ValueError(f"{name}: a ResNet's depth must be 6n+2 in [8, {limits.MAX_RESNET_DEPTH}], got "
                         f"{int(m.group(1))}")
    if m and (int(m.group(1)) - 2) % 6 == 0 and int(m.group(1)) >= 8:
        n = (int(m.group(1)) - 2) // 6
        return lambda cfg, width, residual, stage_T, parts: PreActResNet(
            cfg, n, width, residual, stage_T, parts
        )
    if name in VGG_BLOCKS:
        def build(cfg, width, residual, stage_T, parts):
            if not all(residual):
                raise ValueError(f"{name} has no residual connections to switch off (residual={residual})")
            return VGG(cfg, VGG_BLOCKS[name], width, stage_T, parts)

        return build
    raise ValueError(
        f"unknown model {name!r}; available: {', '.join(NAMES)} (and any resnet<6n+2>, e.g. resnet32)"
    )


_NEURON_ARGS = tuple(f.name for f in fields(LIFConfig))
_CONFIG_KEYS = ("name", "spiking", "num_classes", "in_channels", "width", "T", "residual", "stage_T")
_SHORTCUTS = ("identity", "activated")


def create(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name`` (``snncka.register_model``; the zoo's ResNets, any
    ``resnet<6n+2>``, and VGGs are registered here) with ``_zoo``'s keyword arguments (see there). A model
    from another factory gets the attributes the trainer and the analyses read (``config``, ``spiking``,
    ``in_channels``, ``num_classes``, ``T``) unless it sets them itself."""
    check_name(name)
    factory = registry.get_model(name)
    if factory is None:
        return _zoo(name, **kwargs)
    model = factory(**{k: v for k, v in kwargs.items() if v is not None or k == "stage_T"})
    if not isinstance(model, SNNCKAModel):
        _describe(model, name, kwargs)
    return model


def check_name(name: str) -> None:
    """A one-line error unless ``name`` is a registered model (or a ``resnet<6n+2>`` of the zoo)."""
    if registry.get_model(name) is None and not _RESNET.fullmatch(str(name)):
        raise ValueError(f"unknown model {name!r}; available: {', '.join(registry.models())} (and any "
                         "resnet<6n+2>, e.g. resnet32; add your own with @snncka.register_model)")


def _describe(model: nn.Module, name: str, kw: dict[str, Any]) -> None:
    """Give a registered model the attributes a zoo model has (what ``from_config`` rebuilds it from)."""
    spiking = bool(kw.get("spiking"))
    neuron = {k: v for k, v in kw.items() if k in _NEURON_ARGS}
    config = dict(name=name, spiking=spiking, num_classes=int(kw.get("num_classes", 10)),
                  in_channels=int(kw.get("in_channels", 3)), width=kw.get("width", 1),
                  T=int(kw.get("T", 4)) if spiking else 1, residual=list(kw.get("residual", (True, True, True))),
                  stage_T=kw.get("stage_T"), neuron=neuron, recipe=_recipe(kw.get("recipe", "paper")).name)
    for key, value in (("config", config), ("spiking", spiking), ("in_channels", config["in_channels"]),
                       ("num_classes", config["num_classes"]), ("T", config["T"])):
        if not hasattr(model, key):
            setattr(model, key, value)


_RESNET = re.compile(r"resnet\d+")


def _zoo(
    name: str,
    *,
    spiking: bool,
    num_classes: int = 10,
    in_channels: int = 3,
    width: float = 1,
    T: int = 4,
    residual: Sequence[bool] = (True, True, True),
    stage_T: Sequence[int] | None = None,
    recipe: str | Recipe = "paper",
    ann_shortcut: str | None = None,
    shortcut_first: bool | None = None,
    **neuron_kwargs: Any,
) -> SNNCKAModel:
    """Build a model of the zoo. ``neuron_kwargs`` go to ``LIFConfig`` (tau, v_th, surrogate, alpha, reset,
    detach_reset, fire_at_threshold, backend). ``stage_T`` gives each stage its own number of steps (default:
    T everywhere).

    ``recipe`` (``"paper"`` or ``"code"``, see ``snncka.recipes``) sets the neuron's surrogate and firing rule
    and the ResNet block's topology: ``"code"`` builds the authors' released networks (DSpike, spikes at
    ``u_pre >= v_th``; an ANN whose identity shortcut carries ``relu(x)``; shortcut computed right after the
    block's first activation). Explicit arguments (``surrogate=``, ``fire_at_threshold=``, ``ann_shortcut=``
    (``"identity"``/``"activated"``), ``shortcut_first=``) override the recipe's choice. Parameter names and
    order do not depend on the recipe.
    """
    build = _builder(name)
    rec = _recipe(recipe)
    spiking = limits.boolean("spiking", spiking)
    if isinstance(T, int) and not isinstance(T, bool) and T < 1:
        raise ValueError(f"T (number of time steps) must be >= 1, got {T}")
    if isinstance(width, int | float) and not isinstance(width, bool) and not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    limits.integer("T (time steps)", T, 1, limits.MAX_T)  # the values stay as given (they are in the config)
    limits.number("width", width, *limits.WIDTH_RANGE)
    limits.integer("num_classes", num_classes, 1, limits.MAX_CLASSES)
    limits.integer("in_channels", in_channels, 1, limits.MAX_IN_CHANNELS)
    if stage_T is not None:
        stage_T = [limits.integer("stage_T", t, 1, limits.MAX_T) for t in stage_T]
    n_stages = 4 if name in VGG_BLOCKS else 3
    if not isinstance(residual, Sequence) or isinstance(residual, str) or len(residual) != 3:
        raise ValueError(f"residual needs one flag per ResNet stage (3), got {residual}")
    residual = tuple(bool(r) if isinstance(r, int | bool) and r in (0, 1) else limits.boolean("residual", r)
                     for r in residual)
    st = tuple(int(t) for t in stage_T) if stage_T is not None else (T,) * n_stages
    if len(st) != n_stages or min(st) < 1:
        raise ValueError(f"stage_T needs {n_stages} step counts >= 1 for {name}, got {stage_T}")
    for a, b in zip(st, st[1:], strict=False):
        if a != b and 1 not in (a, b):
            raise ValueError(f"stage_T={st}: between stages a step count can only go from 1 to T or T to 1")
    if not spiking:
        st = (1,) * n_stages
    unknown = sorted(set(neuron_kwargs) - set(_NEURON_ARGS))
    if unknown:
        raise ValueError(f"unknown neuron argument(s) {', '.join(unknown)}; choose from {', '.join(_NEURON_ARGS)}")
    lif = LIFConfig(**{"surrogate": rec.surrogate, "fire_at_threshold": rec.fire_at_threshold, **neuron_kwargs})
    shortcut = rec.ann_shortcut if ann_shortcut is None else ann_shortcut
    if shortcut not in _SHORTCUTS:
        raise ValueError(f"ann_shortcut must be one of {', '.join(_SHORTCUTS)}, got {shortcut!r}")
    first = rec.shortcut_first if shortcut_first is None else bool(shortcut_first)
    config = dict(
        name=name, spiking=bool(spiking), num_classes=num_classes, in_channels=in_channels, width=width,
        T=T if spiking else 1, residual=list(residual), stage_T=list(st) if spiking and stage_T else None,
        neuron=dict(neuron_kwargs), recipe=rec.name,
    )
    if ann_shortcut is not None:
        config["ann_shortcut"] = shortcut
    if shortcut_first is not None:
        config["shortcut_first"] = first
    parts = _Parts(bool(spiking), lif, activated_identity=not spiking and shortcut == "activated",
                   shortcut_first=first)
    return build(config, width, residual, st, parts)


def _recipe(recipe: str | Recipe) -> Recipe:
    """A registered recipe (by name, or the registered object itself): checkpoints store only its name."""
    rec = recipes.get(recipe)
    if recipes.RECIPES.get(rec.name) != rec:
        raise ValueError(f"recipe {rec.name!r} is not registered in snncka.recipes.RECIPES (checkpoints store "
                         f"only the recipe's name); use one of: {', '.join(recipes.RECIPES)}")
    return rec


def from_config(config: dict[str, Any]) -> SNNCKAModel:
    """Rebuild a model from its ``model.config`` (as stored in checkpoints), every value checked against
    ``snncka.limits`` before anything is allocated."""
    if not isinstance(config, dict):
        raise ValueError(f"a model config must be a dict (model.config), got {type(config).__name__}")
    missing = [k for k in (*_CONFIG_KEYS, "recipe") if k not in config]
    if missing:
        raise ValueError(f"the model config lacks {', '.join(missing)} (keys needed: {', '.join(_CONFIG_KEYS)}, "
                         "recipe)")
    c = dict(config)
    neuron = c.get("neuron") or {}
    if not isinstance(neuron, dict):
        raise ValueError(f"the model config's 'neuron' must be a dict of LIF arguments, got {neuron!r}")
    return create(
        c["name"], spiking=c["spiking"], num_classes=c["num_classes"], in_channels=c["in_channels"],
        width=c["width"], T=c["T"], residual=c["residual"], stage_T=c["stage_T"],
        recipe=limits.string("recipe", c["recipe"]), ann_shortcut=c.get("ann_shortcut"),
        shortcut_first=c.get("shortcut_first"), **neuron,
    )


BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")  # a BatchNorm's running state


def load_released_state_dict(model: SNNCKAModel, state_dict: Mapping[str, Tensor]) -> None:
    """Load a state dict of the authors' released ResNets into ``model`` by order (their names differ).

    The released networks register their tensors in the same order as snncka's (stem conv, norm; per block
    conv1, bn1, conv2, bn2, projection; fc). Their tdBN registers each BatchNorm twice (``bn`` and
    ``seqbn.module``); the second copy is skipped. Shapes are checked pair by pair; build ``model`` with
    ``recipe="code"`` to get the released computation.
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"a released state dict must be a mapping of names to tensors, got "
                         f"{type(state_dict).__name__}")
    bad = [str(k) for k, v in state_dict.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"the released state dict holds non-tensor values at {', '.join(bad[:3])}"
                         f"{' ...' if len(bad) > 3 else ''}; pass the network's state_dict (name -> tensor)")
    theirs = [(k, v) for k, v in state_dict.items()
              if not ("seqbn.module." in k and k.replace("seqbn.module.", "bn.") in state_dict)]
    ours = list(model.state_dict().items())
    if len(theirs) != len(ours):
        raise ValueError(f"the state dict has {len(theirs)} tensors, {model.config['name']} (width "
                         f"{model.config['width']}, {model.config['num_classes']} classes) has {len(ours)}; "
                         "build the model that matches the released network")
    mapped = {}
    for (k_ours, v_ours), (k, v) in zip(ours, theirs, strict=True):
        if tuple(v.shape) != tuple(v_ours.shape) or (k.rsplit(".", 1)[-1] in BN_BUFFERS) != (
                k_ours.rsplit(".", 1)[-1] in BN_BUFFERS):
            raise ValueError(f"released tensor {k!r} {tuple(v.shape)} does not fit {k_ours!r} "
                             f"{tuple(v_ours.shape)}; build the model that matches the released network")
        mapped[k_ours] = v
    model.load_state_dict(mapped)


def list_models() -> list[str]:
    """Every registered model name: the zoo's and those added with ``snncka.register_model``."""
    return registry.models()


for _name in NAMES:  # the zoo registers itself as a user's models do
    registry.register_model(_name)(functools.partial(_zoo, _name))


def load(path: str | Path, map_location: str | torch.device = "cpu") -> SNNCKAModel:
    """The model stored in a snncka checkpoint (``<run>/best.pt`` or ``last.pt``), with its weights, in eval
    mode. A corrupt or foreign file raises ``snncka.checkpoint.CheckpointError``."""
    from .checkpoint import load_checkpoint

    return from_checkpoint(load_checkpoint(path, map_location=map_location), path, map_location)


def from_checkpoint(ckpt: dict[str, Any], source: str | Path = "checkpoint",
                    map_location: str | torch.device = "cpu") -> SNNCKAModel:
    """The model of an already loaded checkpoint dict, with its weights, in eval mode on ``map_location``;
    a model description snncka cannot build, or weights that don't fit it, raise ``CheckpointError`` naming
    ``source``."""
    from .checkpoint import CheckpointError
    from .memory import check, model_footprint

    where = str(source)
    try:
        config = ckpt["model_config"]
        params, _ = model_footprint(lambda: from_config(config), None)  # limits checked, nothing allocated
    except (KeyError, TypeError, ValueError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        raise CheckpointError(f"{where!r} describes a model snncka cannot build ({msg}); it was not written by "
                              "this snncka version or was edited: use another checkpoint or retrain") from e
    check({"parameters (model and loaded weights)": 2 * 4 * params}, map_location, f"the model in {where!r}",
          "the model itself does not fit: use a device with more memory")
    model = from_config(config)
    weights = ckpt.get("model")
    if not isinstance(weights, Mapping):
        raise CheckpointError(f"the weights ('model') in {where!r} are a {type(weights).__name__}, not a state "
                              "dict; use another checkpoint or retrain")
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as e:
        msg = " ".join(str(e).split())
        raise CheckpointError(f"the weights in {where!r} do not fit the model they describe: {msg}") from e
    return model.to(map_location).eval()
