"""Training engine: the paper's recipe (App. B) as one compact, resumable loop, on one process or many.

Design (in the spirit of airbench / nanoGPT): the whole dataset lives as tensors on the compute device; every
epoch draws a random permutation from a seeded ``torch.Generator`` and slices it into batches; augmentation
(random crop + flip) runs batched on tensors with the same generator; no DataLoader, no per-sample Python.

Recipe (all overridable in ``TrainConfig``; ``recipe`` = "paper" (App. B) or "code" (the authors' released
code), see ``snncka.recipes``):

* SGD, no Nesterov; momentum 0.9 (``code``: 0.8 for an ANN); lr = 0.1 * batch_size / 256 unless given
  (linear scaling); weight decay 1e-4 (``code``: 5e-4 for a CIFAR-100 SNN) applied to every parameter (also
  norms and biases, as in the released code). Batch size per dataset unless given: 32 on the 8x8 digits
  (1,437 training images: 44 steps per epoch), the paper's 256 elsewhere.
* Cosine decay from lr to 0 (``lr_t = lr * (1 + cos(pi * t / steps)) / 2``), stepped per epoch as the
  released code does (``t`` the first step of the epoch; both recipes: the paper is silent), or per
  iteration for a recipe with ``lr_schedule_step="iteration"``; the ``lr`` in ``metrics.jsonl`` is the rate
  of the epoch's first step.
* The model is built under the recipe (``create(..., recipe=cfg.recipe)``: surrogate, firing rule, the ANN's
  shortcut).
* A non-finite loss stops the run (``TrainingDivergedError``, naming the epoch and step) before that epoch
  is written: ``last.pt`` keeps the previous epoch.
* Each epoch uses ``floor(N / batch_size)`` full batches (the last partial batch is dropped; with a fresh
  permutation every epoch every sample is still seen). Loss: cross-entropy on the time-averaged logits the
  models return. On CUDA: bf16 autocast and channels_last (``amp="auto"``); on CPU: float32 (exact) unless
  ``amp="bf16"`` asks for CPU bf16 autocast.
* Before anything is loaded or allocated, every setting is checked against its type and range
  (``snncka.trainconfig.SCHEMA``) and the run's memory is estimated against what the device has free
  (``snncka.memory``); either failing is one ``ValueError`` line.
* After every epoch: test accuracy/loss and the firing rate of every LIF layer on the test set (SNNs), by the
  evaluation loop of ``snncka.evaluation``; one JSON
  line in ``metrics.jsonl``, an atomic ``last.pt`` (model, optimizer, scheduler, every RNG state incl. the
  data generator) and ``best.pt`` when the test accuracy improved. ``resume=True`` continues from
  ``last.pt``; on CPU the final weights are bitwise identical to an uninterrupted run's.

Many processes (``torchrun --nproc_per_node N -m snncka.cli train ...``): every rank draws the same
permutation and augmentation for the global batch (``batch_size``) and trains on its contiguous 1/N shard;
DDP averages gradients, and the loss is scaled so that the averaged gradient equals the single-process one.
BatchNorm is replaced by ``SyncBatchNorm2d`` (``snncka.distributed``). Metrics are all-reduced;
only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from . import data as data_mod
from . import memory
from .checkpoint import CheckpointError, get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from .distributed import SyncBatchNorm2d, _all_reduce, _Dist, _init_distributed, convert_sync_batchnorm
from .evaluation import _autocast, evaluate, evaluate_tensors
from .files import atomic_write_text, check_writable, file_lock, lock_holder, remove_stale_temps
from .models import SNNCKAModel, create
from .runtime import environment, resolve_device
from .trainconfig import DEFAULT_BATCH, PAPER_BATCH, TrainConfig, read_toml_fields

__all__ = ["DEFAULT_BATCH", "PAPER_BATCH", "CheckpointError", "SyncBatchNorm2d", "TrainConfig",
           "TrainingDivergedError", "convert_sync_batchnorm", "evaluate", "load_checkpoint", "read_metrics",
           "read_toml_fields", "train"]

# Fields that may change when a run is resumed (they do not change what is computed on CPU).
RESUMABLE_CHANGES = ("progress", "device", "data_root", "download", "eval_batch_size")
RUN_FILES = ("config.json", "metrics.jsonl", "last.pt", "best.pt")
LOCK_FILE = ".lock"  # held by the one process writing a run folder (files.file_lock)




class TrainingDivergedError(ValueError):
    """The loss became NaN or infinite; the run stopped before writing that epoch."""



def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The epochs recorded in a run's ``metrics.jsonl``, in order.

    A torn final line (the process was killed while appending it) is ignored: that epoch's checkpoint was not
    written either. A bad line anywhere else is a one-line error naming the file and line."""
    path = Path(path)
    lines = path.read_text().split("\n") if path.exists() else []
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or not isinstance(rec.get("epoch"), int):
                raise ValueError("not an epoch record")
        except (ValueError, RecursionError):
            if i == len(lines) - 1:  # no newline after it: torn by a kill
                break
            raise ValueError(f"{path}, line {i + 1}: not a metrics record (the file is corrupt); delete the "
                             "run folder or restore the file") from None
        out.append(rec)
    return out



# --------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------


def _cosine(total_steps: int, steps_per_epoch: int = 1) -> Callable[[int], float]:
    """Cosine factor of step ``step``; with ``steps_per_epoch`` > 1 it changes only at epoch starts."""
    def factor(step: int) -> float:
        t = min(step, total_steps) // steps_per_epoch * steps_per_epoch
        return 0.5 * (1.0 + math.cos(math.pi * t / total_steps))

    return factor


def _check_run_dir(out: Path, resume: bool, force: bool) -> None:
    if resume:
        if not (out / "last.pt").is_file():
            raise FileNotFoundError(
                f"cannot resume: {out / 'last.pt'} does not exist (start the run without --resume)")
        return
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {str(out)!r} exists and is not a folder")
    existing = [f for f in RUN_FILES if (out / f).exists()]
    if existing and not force:
        raise FileExistsError(
            f"run folder {str(out)!r} already holds {', '.join(existing)}; pass --resume (resume=True) to "
            "continue that run, --force (force=True) to overwrite it, or choose another --out"
        )


@contextlib.contextmanager
def _one_writer(out: Path, writer: bool) -> Iterator[None]:
    """Hold the run folder's lock (the one ``launch.ensure_trained`` holds for a cache entry) while training
    into it, so two processes never write one run; a second one stops at once, saying who holds it."""
    if not writer:
        yield
        return
    created = not out.exists()
    try:
        check_writable(out, "run folder")
        with file_lock(out / LOCK_FILE, wait=False) as mine:
            if not mine:
                raise BlockingIOError(
                    f"run folder {str(out)!r} is being written by another process "
                    f"({lock_holder(out / LOCK_FILE)}); wait for it to finish, then pass --resume to continue "
                    "the run, or choose another --out")
            yield
    except BaseException:
        if created:  # a run that failed before writing anything leaves no folder behind
            with contextlib.suppress(OSError):
                (out / LOCK_FILE).unlink()
                out.rmdir()
        raise


def _check_resumable(cfg: TrainConfig, saved: dict[str, Any]) -> None:
    mine = asdict(cfg)
    saved = asdict(TrainConfig.from_dict(saved))  # typed like ``cfg`` (a bad stored value is one line)
    diff = {k: (saved.get(k), v) for k, v in mine.items() if k not in RESUMABLE_CHANGES and saved.get(k) != v}
    if diff:
        lines = ", ".join(f"{k}: run has {a!r}, asked {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"cannot resume with a different configuration ({lines}); use the run's settings "
                         "(omit them: `snncka train --resume --out DIR` reads them) or start a new run")


def _build(cfg: TrainConfig, ds: data_mod.Dataset) -> SNNCKAModel:
    """The run's model, built under the run's recipe: the one place a TrainConfig becomes a model."""
    return create(cfg.model, spiking=cfg.spiking, num_classes=ds.num_classes, in_channels=ds.in_channels,
                  width=cfg.width, T=cfg.T, residual=cfg.residual, stage_T=cfg.stage_T, recipe=cfg.recipe,
                  **cfg.neuron)


def load_dataset(cfg: TrainConfig) -> data_mod.Dataset:
    """The run's dataset (frames: ``cfg.frames``, or T for an SNN / 1 for an ANN on event data): the one place
    a TrainConfig becomes data, normalised as the recipe says (Sec. 4; docs/FIDELITY.md)."""
    if cfg.data_root is not None and not cfg.download and not Path(cfg.data_root).exists():
        raise FileNotFoundError(
            f"--data-root {cfg.data_root!r} does not exist; point it at the folder that holds the "
            f"{cfg.data!r} files (or pass --download where a network exists)"
        )
    return data_mod.get(cfg.data, root=cfg.data_root, frames=data_mod.frames_for(cfg.spiking, cfg.T, cfg.frames),
                        download=cfg.download, seed=cfg.data_seed,
                        normalisation=cfg.resolved_recipe.normalisation_for(cfg.data))


EVENT_DATA = ("digits-dvs", *data_mod.EVENT_SOURCES)  # one frame per time step (``data.frames_for``)


def memory_parts(cfg: Any, shape: tuple[int, int, int, int, bool, int] | None = None) -> dict[str, int] | None:
    """The memory a training run of ``TrainConfig`` ``cfg`` needs, by part, in bytes; None for a dataset of
    unknown shape. ``shape``: ``(images, channels, height, width, event data, classes)`` of its dataset (default: the
    built-in dataset's, from ``snncka.data.SHAPES``, known before its data is loaded)."""
    if shape is None:
        known = data_mod.SHAPES.get(cfg.data)
        if known is None:
            return None
        shape = (known.n_train + known.n_test, known.channels, known.height, known.width, cfg.data in EVENT_DATA,
                 known.classes)
    n, c, h, w, events, classes = shape
    frames = data_mod.frames_for(cfg.spiking, cfg.T, cfg.frames) if events else 1
    # the ANN twin has the SNN's layers and shapes; an SNN keeps them for each of its (at most T) steps
    params, per_image = memory.model_footprint(
        lambda: create(cfg.model, spiking=False, num_classes=classes, in_channels=c, width=cfg.width,
                       residual=cfg.residual, recipe=cfg.recipe),
        torch.zeros(1, c, h, w))
    steps = max(cfg.stage_T or [cfg.T]) if cfg.spiking else 1
    return {"parameters and optimizer": 3 * params * memory.FLOAT,
            "activations of one batch": per_image * steps * cfg.resolved_batch_size * memory.FLOAT,
            "data": n * frames * c * h * w * memory.FLOAT}


def check_memory(cfg: TrainConfig, dataset: data_mod.Dataset | None = None) -> None:
    """Refuse, in one line, a run whose estimated memory (``snncka.memory``) exceeds what its device has free,
    before its data is loaded or its model built."""
    shape = None
    if dataset is not None:
        x = dataset.x_train
        shape = (int(x.shape[0] + dataset.x_test.shape[0]), *map(int, x.shape[-3:]), x.dim() == 5,
                 dataset.num_classes)
    parts = memory_parts(cfg, shape)
    if parts is not None:
        memory.check(parts, resolve_device(cfg.device), f"training {cfg.model} (width {cfg.width:g}, "
                     f"T {cfg.T if cfg.spiking else 1}, batch {cfg.resolved_batch_size}) on {cfg.data}",
                     "lower --batch-size, --T, --width or --frames (or use a larger machine)")


def train(cfg: TrainConfig, out: str | Path, resume: bool = False, *, force: bool = False,
          on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
          dataset: data_mod.Dataset | None = None) -> dict[str, Any]:
    """Train ``cfg`` into the run folder ``out``; returns the final epoch's metrics (plus ``best_acc``).

    ``resume``: continue from ``out/last.pt`` (the configuration must match the run's, except
    ``RESUMABLE_CHANGES``). ``force``: overwrite an existing run. ``on_epoch_end(epoch, metrics)`` is called
    after each epoch's files are written (tests use it to interrupt a run). ``dataset``: a preloaded
    ``Dataset`` to train on instead of loading ``cfg.data`` (custom data, benchmarks; pass the same one to
    resume). Under torchrun every rank calls this; only rank 0 writes.
    """
    cfg.validate()
    check_memory(cfg, dataset)
    out = Path(out)
    d = _init_distributed(cfg.device)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)  # this run's, whoever launched it; the caller's again afterwards
    try:
        _check_run_dir(out, resume, force)
        with _one_writer(out, d.rank == 0):
            _check_run_dir(out, resume, force)  # again: the folder is ours now
            ckpt = None
            if resume:
                ckpt = load_checkpoint(out / "last.pt")
                if "train_config" not in ckpt or "optimizer" not in ckpt:
                    raise CheckpointError(
                        f"{out / 'last.pt'} is a model-only checkpoint; it cannot resume training")
                _check_resumable(cfg, ckpt["train_config"])
            if d.world > 1:
                dist.barrier()  # every rank has checked the folder before rank 0 writes into it
            return _Run(cfg, out, d, ckpt, force, on_epoch_end, dataset).run()
    finally:
        torch.set_num_threads(threads)
        if d.owned:
            dist.destroy_process_group()


class _Run:
    def __init__(self, cfg: TrainConfig, out: Path, d: _Dist, ckpt: dict | None, force: bool,
                 on_epoch_end: Callable | None, dataset: data_mod.Dataset | None = None) -> None:
        self.cfg, self.out, self.d, self.ckpt, self.on_epoch_end = cfg, out, d, ckpt, on_epoch_end
        batch = cfg.resolved_batch_size
        if batch % d.world:
            raise ValueError(f"batch_size {batch} must be divisible by the number of processes {d.world}")
        self.device = resolve_device(cfg.device, d.local_rank)
        # what runs is what is recorded: bf16 autocast on CUDA ("auto"/"bf16") or on the CPU ("bf16" only)
        self.amp = cfg.amp == "bf16" or (cfg.amp == "auto" and self.device.type == "cuda")
        self.channels_last = self.device.type == "cuda"
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)  # noqa: NPY002 - seed the global state user code may use
        random.seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)  # permutations and augmentation

        # errors (unknown dataset, bad root) come before anything is written
        self.ds = dataset if dataset is not None else load_dataset(cfg)
        model = _build(cfg, self.ds)
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
        self.model_config = model.config
        if d.world > 1:
            convert_sync_batchnorm(model)
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.ds = self.ds.to(self.device)

        n = self.ds.x_train.shape[0]
        self.batch = min(batch, n - n % d.world) if n >= d.world else n
        self.steps = max(1, n // self.batch)
        self.opt = torch.optim.SGD(model.parameters(), lr=cfg.resolved_lr, momentum=cfg.resolved_momentum,
                                   weight_decay=cfg.resolved_weight_decay, nesterov=False)
        per_epoch = cfg.resolved_recipe.lr_schedule_step == "epoch"
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, _cosine(cfg.epochs * self.steps, self.steps if per_epoch else 1))
        self.start_epoch, self.best_acc, self.last_metrics = 0, -1.0, None
        if ckpt is not None:
            self.opt.load_state_dict(ckpt["optimizer"])
            self.sched.load_state_dict(ckpt["scheduler"])
            self.start_epoch, self.best_acc = int(ckpt["epoch"]), float(ckpt["best_acc"])
            self.last_metrics = ckpt.get("metrics")
            set_rng_state(ckpt["rng"], self.gen)
        self.ddp = (nn.parallel.DistributedDataParallel(model, device_ids=[self.device.index]
                                                        if self.device.type == "cuda" else None)
                    if d.world > 1 else model)
        if d.main:
            self._prepare_files(force)

    # ---- files --------------------------------------------------------------------------------------
    def _prepare_files(self, force: bool) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.out, older_than_s=0)  # a killed run's half-written checkpoints (this run owns out)
        if self.ckpt is None:
            if force:
                for f in RUN_FILES:
                    (self.out / f).unlink(missing_ok=True)
            ds = self.ds
            info = {"train": {**asdict(self.cfg), **self.cfg.resolved(),
                              "recipe_settings": self.cfg.resolved_recipe.as_dict()},
                    "model": self.model_config,
                    "data": {"name": ds.name, "n_train": int(ds.x_train.shape[0]),
                             "n_test": int(ds.x_test.shape[0]),
                             "input_shape": list(ds.x_train.shape[1:]), "frames": ds.frames,
                             "num_classes": ds.num_classes, "augment": asdict(ds.augment)},
                    "schedule": {"steps_per_epoch": self.steps, "batch_size": self.batch,
                                 "amp_bf16": self.amp,
                                 "channels_last": self.channels_last},
                    "environment": environment(self.device, world_size=self.d.world)}
            atomic_write_text(self.out / "config.json", json.dumps(info, indent=2, default=str) + "\n")
            atomic_write_text(self.out / "metrics.jsonl", "")
        else:  # drop lines of epochs after the checkpoint (a run killed between the two writes)
            path = self.out / "metrics.jsonl"
            keep = [m for m in read_metrics(path) if m["epoch"] <= self.start_epoch]  # (a torn line goes too)
            atomic_write_text(path, "".join(json.dumps(m) + "\n" for m in keep))

    def _checkpoint(self, epoch: int, metrics: dict[str, Any], best: bool) -> None:
        state = {"model_config": self.model_config, "train_config": asdict(self.cfg),
                 "model": self.model.state_dict(), "epoch": epoch, "best_acc": self.best_acc,
                 "metrics": metrics}
        if best:
            save_checkpoint(state, self.out / "best.pt")
        save_checkpoint({**state, "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                         "rng": get_rng_state(self.gen)}, self.out / "last.pt")

    # ---- loop ---------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        cfg, d = self.cfg, self.d
        per_epoch = self.steps * self.batch
        label = f"{cfg.model}{f' x{cfg.width:g}' if cfg.width != 1 else ''} {'SNN' if cfg.spiking else 'ANN'}"
        bar = tqdm(total=cfg.epochs * per_epoch, initial=self.start_epoch * per_epoch, unit="img",
                   unit_scale=True,
                   disable=not (cfg.progress and d.main), dynamic_ncols=True, mininterval=0.5, desc=label)
        try:
            for epoch in range(self.start_epoch + 1, cfg.epochs + 1):
                bar.set_description(f"{label} epoch {epoch}/{cfg.epochs}")
                metrics = self._epoch(epoch, bar)
                improved = metrics["test_acc"] > self.best_acc
                self.best_acc = max(self.best_acc, metrics["test_acc"])
                metrics["best_acc"] = self.best_acc
                self.last_metrics = metrics
                if d.main:
                    with open(self.out / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(metrics) + "\n")
                        f.flush()
                        os.fsync(f.fileno())
                    self._checkpoint(epoch, metrics, improved)
                    bar.write(f"{label} epoch {epoch}/{cfg.epochs}: loss {metrics['loss']:.4f} "
                              f"train {100 * metrics['train_acc']:.2f} % test {100 * metrics['test_acc']:.2f} % "
                              f"lr {metrics['lr']:.4g} ({metrics['seconds']:.1f}s)")
                if self.on_epoch_end is not None:
                    self.on_epoch_end(epoch, metrics)
        finally:
            bar.close()
        if d.world > 1:
            dist.barrier()
        return {**(self.last_metrics or {}), "best_acc": self.best_acc, "out": str(self.out)}

    def _epoch(self, epoch: int, bar: Any) -> dict[str, Any]:
        cfg, d, ds, dev = self.cfg, self.d, self.ds, self.device
        model = self.ddp
        model.train()
        lr0 = self.opt.param_groups[0]["lr"]
        sums = torch.zeros(3, dtype=torch.float64, device=dev)  # loss sum, correct, count (this rank)
        t0 = time.perf_counter()
        data_s = 0.0
        # the epoch's order and augmentation draws, made on the CPU in the generator's order and moved to the
        # device in one copy each (per-step copies from pageable memory would each wait for the GPU)
        perm = torch.randperm(ds.x_train.shape[0], generator=self.gen)[: self.steps * self.batch]
        draws = torch.stack([data_mod.augment_draws(self.batch, ds.augment, self.gen) for _ in range(self.steps)])
        if dev.type == "cuda":
            perm, draws = perm.pin_memory(), draws.pin_memory()
        perm, draws = perm.to(dev, non_blocking=True), draws.to(dev, non_blocking=True)
        n_seen = 0
        first_bad = torch.full((), self.steps, dtype=torch.int64, device=dev)  # first non-finite step (no sync)
        lo, hi = self.batch * d.rank // d.world, self.batch * (d.rank + 1) // d.world
        for i in range(self.steps):
            td = time.perf_counter()
            idx = perm[i * self.batch:(i + 1) * self.batch]
            x = data_mod.augment_batch(ds.x_train[idx], ds.augment, draws=draws[i])
            y = ds.y_train[idx]
            if d.world > 1:  # same global batch and augmentation on every rank; train on this rank's shard
                x, y = x[lo:hi], y[lo:hi]
            x = data_mod.to_model_input(x)
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            data_s += time.perf_counter() - td
            with _autocast(dev, self.amp):
                logits = model(x)
            loss_sum = F.cross_entropy(logits.float(), y, reduction="sum")
            # Mean over the global batch; DDP averages over ranks, hence the factor world.
            loss = loss_sum * (d.world / self.batch) if d.world > 1 else loss_sum / self.batch
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.sched.step()
            with torch.no_grad():
                first_bad = torch.where(torch.isfinite(loss_sum) | (first_bad < self.steps), first_bad, i)
                sums[0] += loss_sum.detach().double()
                sums[1] += (logits.argmax(1) == y).sum()
            n_seen += y.numel()
            bar.update(self.batch)
        sums[2] = n_seen
        if d.world > 1:
            dist.all_reduce(first_bad, op=dist.ReduceOp.MIN)
        if int(first_bad) < self.steps:
            raise TrainingDivergedError(
                f"the loss became non-finite at epoch {epoch}, step {int(first_bad) + 1} of {self.steps} "
                f"(lr {cfg.resolved_lr:g}); the run stopped"
                + (f" and {self.out / 'last.pt'} keeps epoch {epoch - 1}" if epoch > 1 else ", nothing was saved")
                + ": lower --lr or check the data")
        _all_reduce(sums, d)
        loss_total, correct, count = sums.tolist()
        train_s = time.perf_counter() - t0
        ev = evaluate_tensors(self.model, ds.x_test, ds.y_test, cfg.eval_batch_size, dev, self.amp, d,
                              self.channels_last)
        m: dict[str, Any] = {
            "epoch": epoch, "loss": loss_total / count, "train_acc": correct / count, "test_acc": ev["acc"],
            "test_loss": ev["loss"], "lr": lr0, "seconds": time.perf_counter() - t0, "train_seconds": train_s,
            "data_seconds": data_s, "images_per_s": count / train_s,
        }
        if "firing_rates" in ev:
            m["firing_rates"] = ev["firing_rates"]
        return m


