"""What a run will cost before it starts: per model, the multiply-accumulates, GPU time, checkpoint disk and the
memory of the CKA step, from a small calibration table of measured epoch times.

Nothing here trains, loads data or needs a GPU: the models are built on PyTorch's ``meta`` device (shapes only),
their conv and linear MACs counted from the output shapes, and the dataset shapes come from ``DATASETS``.

Time model: an epoch costs ``3 * n_train + n_test`` forward passes of one image (a backward pass ~ two
forwards), each ``macs`` multiply-accumulates. A calibration entry gives the measured epoch time of one
reference model per family (ANN, SNN) on a named GPU; every other model's epoch is that time scaled by its
``macs x images`` over the reference's. An SNN's MACs include its T steps (each stage's own ``stage_T``), so T
scales the time linearly. Only the reference models themselves are *measured*; everything else is *extrapolated*
(and says so), ignoring batch-size effects, kernel-launch overheads at small sizes and VGG-vs-ResNet differences.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from .data import SHAPES, DataShape

__all__ = ["CALIBRATION", "DATASETS", "Calibration", "DataShape", "ModelCost", "cka_peak_bytes", "count_macs",
           "feature_sizes", "model_cost"]


DATASETS = SHAPES  # the built-in datasets' shapes, kept with the data (snncka.data.SHAPES)


@dataclass(frozen=True)
class Calibration:
    """A measured epoch time of one reference model (training on ``data``'s train split + evaluating its test
    split) on a named GPU."""

    family: str  # "ann" or "snn"
    gpu: str
    model: str
    T: int
    data: str
    batch_size: int
    epoch_s: float
    source: str


CALIBRATION: dict[str, Calibration] = {
    "ann": Calibration("ann", "NVIDIA H200", "resnet20", 1, "cifar10", 128, 3.249,
                       "benchmarks/RESULTS.md: bench_train.py --cifar-sized --device cuda (bf16, channels_last)"),
    "snn": Calibration("snn", "NVIDIA H200", "resnet20", 4, "cifar10", 128, 8.776,
                       "benchmarks/RESULTS.md: bench_train.py --cifar-sized --device cuda (bf16, channels_last)"),
}

_STAGE = re.compile(r"^s(\d+)\.")
_POOL = re.compile(r"^pool(\d+)$")  # VGG's pooling after stage k


def _shape(data: str) -> DataShape:
    if data not in DATASETS:
        raise ValueError(f"no shape known for dataset {data!r}; known: {', '.join(DATASETS)}")
    return DATASETS[data]


def _stage_steps(name: str, stage_T: tuple[int, ...]) -> int:
    """Time steps a module runs: its stage's (``s<k>.``), the first stage's for the stem, the last's for the
    head (as ``models.PreActResNet``/``VGG`` run them)."""
    m = _STAGE.match(name + ".") or _POOL.match(name)
    if m:
        return stage_T[int(m.group(1)) - 1]
    return stage_T[-1] if name in ("act", "pool", "fc") else stage_T[0]


@lru_cache(maxsize=256)
def _per_module(arch: str, width: float, residual: tuple[bool, ...], data: str) -> tuple[tuple[str, int, int], ...]:
    """``(name, macs, output elements)`` per image for every conv/linear module and every recorded layer of the
    ANN version (one time step), from a forward pass on the meta device."""
    from .models import create
    from .record import select_layers

    shape = _shape(data)
    with torch.device("meta"):
        model = create(arch, spiking=False, width=width, residual=residual, num_classes=shape.classes,
                       in_channels=shape.channels)
    recorded = {n for n, _ in select_layers(model, "paper")}
    rows: list[tuple[str, int, int]] = []

    def hook(name: str):
        def f(mod: nn.Module, inputs: Any, out: torch.Tensor) -> None:
            per_image = out[0].numel()
            macs = 0
            if isinstance(mod, nn.Conv2d):
                k = mod.kernel_size[0] * mod.kernel_size[1]
                macs = per_image * (mod.in_channels // mod.groups) * k
            elif isinstance(mod, nn.Linear):
                macs = per_image * mod.in_features
            rows.append((name, macs, per_image if name in recorded else 0))
        return f

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if n and (n in recorded or isinstance(m, (nn.Conv2d, nn.Linear)))]
    model.eval()
    with torch.no_grad():
        model(torch.empty(1, shape.channels, shape.height, shape.width, device="meta"))
    for h in handles:
        h.remove()
    return tuple(rows)


def _steps(cfg: Any, arch: str) -> tuple[int, ...]:
    n = 4 if arch.startswith("vgg") else 3
    if not cfg.spiking:
        return (1,) * n
    return tuple(cfg.stage_T) if cfg.stage_T else (int(cfg.T),) * n


def count_macs(cfg: Any) -> int:
    """Multiply-accumulates of one image's forward pass of the model ``cfg`` (a ``TrainConfig``) trains:
    conv and linear layers, times each stage's time steps for an SNN."""
    st = _steps(cfg, cfg.model)
    return sum(macs * _stage_steps(n, st) for n, macs, _ in
               _per_module(cfg.model, float(cfg.width), tuple(cfg.residual), cfg.data))


def feature_sizes(cfg: Any) -> dict[str, int]:
    """Elements of every recorded layer's CKA feature per image (an SNN's T steps concatenated, Sec. 3.3)."""
    st = _steps(cfg, cfg.model)
    return {n: feat * _stage_steps(n, st) for n, _, feat in
            _per_module(cfg.model, float(cfg.width), tuple(cfg.residual), cfg.data) if feat}


def cka_peak_bytes(cfgs: list[Any], batch: int = 256) -> int:
    """An upper bound of the CKA step's memory for comparing the models ``cfgs`` (one, or an SNN/ANN pair):
    every recorded float32 feature of one batch of ``batch`` images held at once, plus every layer's float32
    Gram matrix and its float64 centred upper triangle."""
    total = 0
    for cfg in cfgs:
        feats = feature_sizes(cfg)
        total += batch * sum(feats.values()) * 4 + len(feats) * batch * batch * (4 + 4)
    return total


def _param_bytes(cfg: Any) -> tuple[int, int]:
    """(bytes of the model's state dict, bytes of its parameters) in float32."""
    from .models import create

    shape = _shape(cfg.data)
    with torch.device("meta"):
        model = create(cfg.model, spiking=bool(cfg.spiking), width=float(cfg.width), T=int(cfg.T),
                       residual=tuple(cfg.residual), stage_T=cfg.stage_T, num_classes=shape.classes,
                       in_channels=shape.channels)
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return state, params


@dataclass(frozen=True)
class ModelCost:
    """What training one model costs, and on what basis."""

    macs: int  # per image forward pass
    epoch_s: float
    measured: bool  # True: this is the calibration's reference model itself
    basis: str
    disk_bytes: int  # last.pt (weights + momentum) + best.pt (weights)
    cka_bytes: int  # the CKA step for this model alone (see cka_peak_bytes)

    def gpu_hours(self, epochs: int) -> float:
        return epochs * self.epoch_s / 3600


def _work(macs: int, shape: DataShape) -> float:
    return float(macs) * (3 * shape.n_train + shape.n_test)


def model_cost(cfg: Any, cka_batch: int = 256) -> ModelCost:
    """The cost of one epoch of ``cfg`` (a ``TrainConfig``), extrapolated from ``CALIBRATION``."""
    from .training import TrainConfig

    family = "snn" if cfg.spiking else "ann"
    cal = CALIBRATION[family]
    ref = TrainConfig(model=cal.model, spiking=cfg.spiking, T=cal.T, data=cal.data)
    macs, ref_macs = count_macs(cfg), count_macs(ref)
    shape = _shape(cfg.data)
    ratio = _work(macs, shape) / _work(ref_macs, _shape(cal.data))
    measured = (cfg.model, float(cfg.width), cfg.data, tuple(cfg.residual), cfg.stage_T) == (
        cal.model, 1.0, cal.data, (True, True, True), None) and (not cfg.spiking or cfg.T == cal.T)
    if measured:
        basis = f"measured ({cal.gpu}, batch {cal.batch_size})"
    else:
        why = [] if cfg.model.startswith("resnet") else [f"no {cfg.model.rstrip('0123456789')} measurement"]
        if not shape.exact:
            why.append("approx. split")
        basis = (f"extrapolated: {ratio:.2f}x the measured {cal.model}{f' T={cal.T}' if cfg.spiking else ''} "
                 f"epoch by MACs x images" + (f" ({'; '.join(why)})" if why else ""))
    state, params = _param_bytes(cfg)
    return ModelCost(macs=macs, epoch_s=cal.epoch_s * ratio, measured=measured, basis=basis,
                     disk_bytes=2 * state + params, cka_bytes=cka_peak_bytes([cfg], cka_batch))


# --------------------------------------------------------------------------------------------------------
# An experiment's plan: every model, whether the cache has it, and the totals
# --------------------------------------------------------------------------------------------------------


@dataclass
class PlannedModel:
    """One model of an experiment at a scale, its cache state and cost."""

    experiment: str
    label: str  # "<model name>-<ann|snn>"
    cfg: Any  # TrainConfig
    run_dir: Any  # Path of its cache entry
    done: int  # epochs already in the cache
    cost: ModelCost
    cka_bytes: int  # the CKA step of its experiment's SNN/ANN pair (or the model alone)

    @property
    def remaining_hours(self) -> float:
        return self.cost.gpu_hours(max(0, self.cfg.epochs - self.done))


def plan(exp_ids: list[str | Any], scale: Any = "smoke", cache: Any = None, epochs: int | None = None,
         seeds: int | None = None) -> list[PlannedModel]:
    """The models of the experiments ``exp_ids`` (registered IDs or TOML files) at ``scale`` (a scale's name,
    or a run's ``snncka.options.RunOptions``, which then gives the cache, epochs and seeds), every seed of the
    run, with their costs; nothing is trained or loaded."""
    from .experiment import load_experiment, model_jobs
    from .launch import trained_epochs
    from .options import RunOptions, seed_suffix

    opts = scale if isinstance(scale, RunOptions) else RunOptions(scale=scale, cache=cache, epochs=epochs,
                                                                  seeds=seeds)
    out = []
    for exp_id in exp_ids:
        exp = load_experiment(exp_id)
        settings = opts.settings(exp)
        batch = min(256, int(settings.get("cka_images", 4096)))
        seen = set()
        for k in range(int(settings["seeds"])):  # every seed trains its own models
            jobs, runs = model_jobs(exp, opts.scale, settings, opts.cache, seed=k, recipe=opts.recipe_name)
            by_dir = {j.run_dir: j for j in jobs}
            for job in (j for j in jobs if j.run_dir not in seen):  # the CKA step of the pair it was listed for
                seen.add(job.run_dir)
                pair = runs[job.label.rsplit("-", 1)[0].removesuffix(seed_suffix(k))]
                cfgs = [by_dir[d].cfg for d in pair.values()]
                out.append(PlannedModel(exp.id, job.label, job.cfg, job.run_dir, trained_epochs(job.run_dir),
                                        model_cost(job.cfg, batch), cka_peak_bytes(cfgs, batch)))
    return out


def _human(n: float, unit: str = "B") -> str:
    for prefix in ("", "K", "M", "G", "T"):
        if abs(n) < 1000 or prefix == "T":
            return f"{n:.3g} {prefix}{unit}" if prefix else f"{n:.0f} {unit}"
        n /= 1000
    return ""  # pragma: no cover


def format_plan(models: list[PlannedModel], scale: str) -> str:
    """The plan as text: one table per experiment, then the totals (models shared by experiments once)."""
    lines: list[str] = []
    for exp_id in dict.fromkeys(m.experiment for m in models):
        rows = [m for m in models if m.experiment == exp_id]
        todo = [m for m in rows if m.done < m.cfg.epochs]
        lines.append(f"{exp_id} at {scale} scale: {len(rows)} models, {len(rows) - len(todo)} already in the cache, "
                     f"{sum(m.remaining_hours for m in rows):.1f} GPU-h to train")
        lines.append(f"  {'model':<34} {'data':<11} {'T':>4} {'ep':>4} {'MACs/img':>9} {'epoch s':>8} "
                     f"{'GPU-h':>7} {'disk':>8} {'CKA mem':>8}  status; basis")
        for m in rows:
            status = ("cached" if m.done >= m.cfg.epochs else
                      f"resume from epoch {m.done}" if m.done else "to train")
            T = "-".join(map(str, m.cfg.stage_T)) if m.cfg.spiking and m.cfg.stage_T else (
                m.cfg.T if m.cfg.spiking else 1)
            lines.append(f"  {m.label:<34} {m.cfg.data:<11} {T!s:>4} {m.cfg.epochs:>4} "
                         f"{_human(m.cost.macs, ''):>9} {m.cost.epoch_s:>8.1f} {m.remaining_hours:>7.2f} "
                         f"{_human(m.cost.disk_bytes):>8} {_human(m.cka_bytes):>8}  {status}; {m.cost.basis}")
        lines.append("")
    unique = {m.run_dir: m for m in models}
    todo = [m for m in unique.values() if m.done < m.cfg.epochs]
    lines.append(f"total: {len(unique)} distinct models ({len(unique) - len(todo)} cached), "
                 f"{sum(m.remaining_hours for m in unique.values()):.1f} GPU-hours to train, "
                 f"{_human(sum(m.cost.disk_bytes for m in unique.values()))} of checkpoints, "
                 f"CKA step peak {_human(max(m.cka_bytes for m in models))} (one SNN/ANN pair, batch of 256)")
    lines.append("")
    lines.append("GPU time: measured epoch times (train + test) on one GPU, scaled by MACs x images for every "
                 "other model (an SNN's MACs include its T steps):")
    for cal in CALIBRATION.values():
        lines.append(f"  measured: {cal.family.upper()} {cal.model}{f' T={cal.T}' if cal.family == 'snn' else ''} "
                     f"{cal.data}, batch {cal.batch_size}: {cal.epoch_s} s/epoch on {cal.gpu} ({cal.source})")
    lines.append("  extrapolated: every other row (other depths, widths, T, data; VGGs from the ResNet numbers; "
                 "batch-size and launch-overhead effects ignored). Disk: last.pt + best.pt per model (float32). "
                 "CKA mem: upper bound, all recorded features of one batch of both models plus every layer's Gram.")
    return "\n".join(lines)
