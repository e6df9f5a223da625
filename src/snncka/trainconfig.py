"""``TrainConfig``: every setting of a training run, typed and range-checked wherever it comes from -- code,
the CLI, a ``train --config`` TOML file or a checkpoint's stored config.

``SCHEMA`` holds one check per field (``snncka.limits`` documents the ranges and why); ``validate`` applies all
of them and reports every bad key in one line. The model's own limits (depth, classes) are checked again
where a stored model config is rebuilt (``snncka.models.from_config``).
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import limits
from .neurons import SURROGATES
from .recipes import RECIPES, Recipe
from .recipes import get as get_recipe

# Batch size per dataset when none is given: the small 8x8 digits (1,437 training images) need more than the
# 5 steps per epoch that the paper's 256 gives them; every other dataset uses the paper's 256 (App. B).
DEFAULT_BATCH = {"digits": 32, "digits-dvs": 32}
PAPER_BATCH = 256
AMP = ("auto", "bf16", "off")
# Threads a model trains with on the CPU unless its config says otherwise. Float reductions (BatchNorm statistics,
# weight gradients) split their sums over the threads, so a model's bits depend on this number: it is a fixed
# setting of the run (in the cache key and config.json), not the launcher's or the machine's core count.
TRAIN_THREADS = 1


@dataclass
class TrainConfig:
    """Everything that defines a training run (JSON-serialisable; stored in config.json and checkpoints)."""

    model: str = "resnet20"
    spiking: bool = False
    T: int = 4
    width: float = 1.0
    residual: list[bool] = field(default_factory=lambda: [True, True, True])
    stage_T: list[int] | None = None
    neuron: dict[str, Any] = field(default_factory=dict)  # LIFConfig kwargs: tau, v_th, surrogate, alpha, ...
    data: str = "digits"
    data_root: str | None = None
    download: bool = False
    frames: int | None = None  # event data: frames per sample; None = T for an SNN, 1 for an ANN
    data_seed: int = 0  # seed of generated datasets (digits-dvs); fixed so that training seeds share the data
    epochs: int = 300
    batch_size: int | None = None  # global batch (split over ranks under torchrun); None = DEFAULT_BATCH
    lr: float | None = None  # None = 0.1 * batch_size / 256
    momentum: float | None = None  # None = the recipe's (paper: 0.9)
    weight_decay: float | None = None  # None = the recipe's for this dataset (paper: 1e-4)
    recipe: str = "paper"  # "paper" (the text, App. B) or "code" (the released code): snncka.recipes
    seed: int = 0
    device: str = "auto"  # "auto" (CUDA if available), "cpu", "cuda", "cuda:1", ...
    amp: str = "auto"  # "auto" (bf16 autocast on CUDA only), "bf16", "off"
    eval_batch_size: int = 512
    threads: int = TRAIN_THREADS  # CPU threads while training: fixed, not the machine's, so every launcher agrees
    progress: bool = True

    def __post_init__(self) -> None:
        # plain lists of bools / ints, as stored; anything else is left for ``validate`` to name
        if isinstance(self.residual, list | tuple):
            self.residual = [bool(r) if isinstance(r, int) and r in (0, 1) else r for r in self.residual]
        if isinstance(self.stage_T, list | tuple):
            self.stage_T = [int(t) if isinstance(t, int) and not isinstance(t, bool) else t for t in self.stage_T]
        if isinstance(self.neuron, dict):
            self.neuron = dict(self.neuron)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, dict):
            raise ValueError(f"a training config must be a table of settings, got {type(d).__name__}")
        unknown = sorted(map(str, set(d) - names))
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; valid fields: {sorted(names)}")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """A config from a TOML file of TrainConfig fields (``[neuron]`` a table), with ``overrides`` on top."""
        return cls.from_dict({**read_toml_fields(path), **overrides})

    @property
    def resolved_recipe(self) -> Recipe:
        return get_recipe(self.recipe)

    @property
    def resolved_batch_size(self) -> int:
        return self.batch_size if self.batch_size is not None else DEFAULT_BATCH.get(self.data, PAPER_BATCH)

    @property
    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else 0.1 * self.resolved_batch_size / PAPER_BATCH

    @property
    def resolved_momentum(self) -> float:
        return self.momentum if self.momentum is not None else self.resolved_recipe.momentum(self.spiking)

    @property
    def resolved_weight_decay(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        return self.resolved_recipe.weight_decay_for(self.data, self.spiking)

    def resolved(self) -> dict[str, Any]:
        """The optimiser settings this config trains with (defaults filled in), as recorded in config.json."""
        return {"batch_size": self.resolved_batch_size, "lr": self.resolved_lr, "momentum": self.resolved_momentum,
                "weight_decay": self.resolved_weight_decay,
                "lr_schedule_step": self.resolved_recipe.lr_schedule_step}

    def validate(self) -> None:
        """Raise one ValueError naming every bad field, its valid range and how to fix it."""
        errs = []
        for name, check in SCHEMA.items():
            v = getattr(self, name)
            try:
                checked = check(name, v)
            except ValueError as e:
                errs.append(str(e))
                continue
            if name in ("residual", "stage_T"):  # stored as plain bools / ints
                setattr(self, name, checked)
        if errs:
            raise ValueError("invalid training configuration: " + "; ".join(errs))


def _optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return lambda name, v: None if v is None else check(name, v)


def _bool_list(name: str, v: Any) -> list[bool]:
    """Residual flags: a list of bools (0/1 accepted as numbers, never strings)."""
    if not isinstance(v, list | tuple) or not 1 <= len(v) <= 8:
        raise ValueError(f"{name} must be a list of 1 to 8 flags (true/false), got {v!r}")
    return [bool(r) if isinstance(r, int) and not isinstance(r, bool) and r in (0, 1)
            else limits.boolean(f"{name}[{i}]", r) for i, r in enumerate(v)]


def _int_list(name: str, v: Any) -> list[int]:
    if not isinstance(v, list | tuple) or not 1 <= len(v) <= 8:
        raise ValueError(f"{name} must be a list of 1 to 8 step counts in [1, {limits.MAX_T}], got {v!r}")
    return [limits.integer(f"{name}[{i}]", t, 1, limits.MAX_T) for i, t in enumerate(v)]


#: The LIF arguments a config may set (``[neuron]`` in TOML), each with its type and range.
NEURON_SCHEMA: dict[str, Callable[[str, Any], Any]] = {
    "tau": lambda n, v: limits.number(n, v, 0, 1, lo_open=True),
    "v_th": lambda n, v: limits.number(n, v, 0, 1e6, lo_open=True),
    "surrogate": lambda n, v: limits.choice(n, v, sorted(SURROGATES)),
    "alpha": _optional(lambda n, v: limits.number(n, v, 0, 1e6, lo_open=True)),
    "reset": lambda n, v: limits.choice(n, v, ("hard", "soft")),
    "detach_reset": limits.boolean,
    "backend": lambda n, v: limits.choice(n, v, ("fused", "reference")),
    "fire_at_threshold": limits.boolean,
}


def _neuron(name: str, v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ValueError(f"{name} must be a table of LIF arguments ({', '.join(NEURON_SCHEMA)}), got {v!r}")
    unknown = sorted(set(v) - set(NEURON_SCHEMA))
    if unknown:
        raise ValueError(f"{name}: unknown LIF argument(s) {', '.join(map(str, unknown))}; valid: "
                         f"{', '.join(NEURON_SCHEMA)}")
    return {k: NEURON_SCHEMA[k](f"{name}.{k}", x) for k, x in v.items()}


def _int(lo: int, hi: int) -> Callable[[str, Any], int]:
    return lambda n, v: limits.integer(n, v, lo, hi)


#: One typed, range-checked rule per TrainConfig field (see ``snncka.limits`` for the bounds).
SCHEMA: dict[str, Callable[[str, Any], Any]] = {
    "model": limits.string,
    "spiking": limits.boolean,
    "T": _int(1, limits.MAX_T),
    "width": lambda n, v: limits.number(n, v, *limits.WIDTH_RANGE),
    "residual": _bool_list,
    "stage_T": _optional(_int_list),
    "neuron": _neuron,
    "data": limits.string,
    "data_root": _optional(limits.string),
    "download": limits.boolean,
    "frames": _optional(_int(1, limits.MAX_T)),
    "data_seed": _int(0, limits.MAX_SEED),
    "epochs": _int(1, limits.MAX_EPOCHS),
    "batch_size": _optional(_int(1, limits.MAX_BATCH)),
    "lr": _optional(lambda n, v: limits.number(n, v, 0, 1e38, lo_open=True)),  # float32 range: divergence is caught
    "momentum": _optional(lambda n, v: limits.number(n, v, 0, 1, hi_open=True)),
    "weight_decay": _optional(lambda n, v: limits.number(n, v, 0, 1)),
    "recipe": lambda n, v: limits.choice(n, v, list(RECIPES)),
    "seed": _int(0, limits.MAX_SEED),
    "device": limits.string,
    "amp": lambda n, v: limits.choice(n, v, AMP),
    "eval_batch_size": _int(1, limits.MAX_BATCH),
    "threads": _int(1, limits.MAX_THREADS),
    "progress": limits.boolean,
}


def read_toml_fields(path: str | Path) -> dict[str, Any]:
    """The TrainConfig fields of a TOML file; an unknown key is a one-line error listing the valid ones."""
    path = Path(path)
    size = path.stat().st_size
    if size > 1 << 20:
        raise ValueError(f"{path} is {size} bytes; a training config is a short TOML file (at most 1 MiB)")
    raw = path.read_bytes()
    try:
        text = raw.decode()
        if limits.text_nesting(text) > limits.MAX_NESTING:
            raise ValueError(f"{path}: arrays or tables nest deeper than {limits.MAX_NESTING} levels; a training "
                             "config needs at most 2 (e.g. residual = [true, false, true], [neuron])")
        values = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"{path} is not valid TOML: {' '.join(str(e).split())}") from None
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(names)}")
    return values
