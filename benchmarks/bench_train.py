"""Training throughput: epoch time, images/s and the share of time spent on data handling.

Runs ``snncka.training.train`` for a few epochs on ResNet-20 ANN and SNN (T=4) and reports the steady state
(the fastest epoch after the first, which pays torch.compile's warm-up; on a shared machine the
fastest is the least disturbed) side by side from ONE run.
"data" is the time spent in the hot loop's data handling (index the resident tensors, batched
augmentation, layout), measured inside the loop; the issue's target is <= 5% of the step time.
As an independent check the same data handling is also timed alone, without the model, for one epoch.

    python benchmarks/bench_train.py                       # digits, CPU
    python benchmarks/bench_train.py --cifar-sized --device cuda   # 50k 3x32x32 synthetic images (GPU)
    python benchmarks/bench_train.py --demo                # `snncka demo` cold (what a new user sees), then warm

``--demo`` runs ``snncka demo`` in fresh processes: first with empty torch.compile and model caches
(``TORCHINDUCTOR_CACHE_DIR``, ``SNNCKA_CACHE``), then again with both warm (the models come from the cache),
and reports the wall time of each (process start included), the load average before each and the models'
final test accuracies.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from snncka import data
from snncka.training import TrainConfig, train


def cifar_sized(seed: int = 0, n_train: int = 50000) -> data.Dataset:
    """Random tensors with CIFAR-10's shapes (50000/10000 x 3x32x32, 10 classes) and its augmentation."""
    g = torch.Generator().manual_seed(seed)
    n_test = max(1, n_train // 5)
    xtr, ytr = torch.randn(n_train, 3, 32, 32, generator=g), torch.randint(0, 10, (n_train,), generator=g)
    xte, yte = torch.randn(n_test, 3, 32, 32, generator=g), torch.randint(0, 10, (n_test,), generator=g)
    return data.Dataset("cifar10-sized", xtr, ytr, xte, yte, 10, augment=data.Augment(pad=4, flip=True))


def data_only_epoch(ds: data.Dataset, batch: int, device: torch.device) -> float:
    """Seconds for one epoch of the trainer's data handling alone (no model)."""
    g = torch.Generator().manual_seed(0)
    x, y = ds.x_train.to(device), ds.y_train.to(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    perm = torch.randperm(x.shape[0], generator=g)
    for i in range(x.shape[0] // batch):
        idx = perm[i * batch:(i + 1) * batch].to(device)
        xb = data.to_model_input(data.augment_batch(x[idx], ds.augment, g))
        yb = y[idx]
    if device.type == "cuda":
        torch.cuda.synchronize()
    del xb, yb
    return time.perf_counter() - t0


def demo_times(root: Path) -> None:
    """Wall time of ``snncka demo`` with empty caches (cold) and then warm ones, as a new user runs it."""
    env = {**os.environ, "SNNCKA_CACHE": str(root / "cache"), "TORCHINDUCTOR_CACHE_DIR": str(root / "inductor")}
    env.pop("SNNCKA_COMPILE", None)  # the default policy
    for run in ("cold", "warm"):
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "snncka.cli", "demo", "--out", str(root / run), "--no-progress"],
                       env=env, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        accs = {}
        for cfg_file in sorted((root / "cache" / "models").glob("*/config.json")):
            spiking = json.loads(cfg_file.read_text())["train"]["spiking"]
            last = (cfg_file.parent / "metrics.jsonl").read_text().splitlines()[-1]
            accs["SNN" if spiking else "ANN"] = json.loads(last)["test_acc"]
        print(f"demo {run}: {wall:.1f} s wall (load average before: {load:.2f}); test accuracy "
              + ", ".join(f"{k} {v:.2%}" for k, v in sorted(accs.items())), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cifar-sized", action="store_true", help="synthetic CIFAR-10-sized data, not digits")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--train-images", type=int, default=50000,
                    help="--cifar-sized: training images (test: a fifth of it); fewer for a smoke run")
    ap.add_argument("--demo", action="store_true", help="time `snncka demo` cold (empty caches) and warm")
    args = ap.parse_args()
    if args.demo:
        with tempfile.TemporaryDirectory() as root:
            demo_times(Path(root))
        return

    rows = []
    data_only_epoch(data.get("digits"), args.batch_size, torch.device(args.device))  # process warm-up
    for spiking in (False, True):
        ds = cifar_sized(n_train=args.train_images) if args.cifar_sized else data.get("digits")
        device = torch.device(args.device)
        d_only = min(data_only_epoch(ds, args.batch_size, device) for _ in range(3))  # first pass warms up
        cfg = TrainConfig(model="resnet20", spiking=spiking, T=4, width=args.width, epochs=args.epochs,
                          batch_size=args.batch_size, device=args.device, progress=False)
        ms: list[dict] = []
        with tempfile.TemporaryDirectory() as out:
            train(cfg, out, dataset=ds, on_epoch_end=lambda e, m, ms=ms: ms.append(m))
        steady = min(ms[1:] or ms, key=lambda m: m["seconds"])  # fastest steady epoch: least disturbed
        epoch_s, train_s, data_s = steady["seconds"], steady["train_seconds"], steady["data_seconds"]
        ips = steady["images_per_s"]
        rows.append((f"resnet20 {'SNN T=4' if spiking else 'ANN'}", ms[0]["seconds"], epoch_s, train_s, ips,
                     data_s, data_s / train_s, d_only / train_s))

    where = (torch.cuda.get_device_name(args.device) + ", bf16 autocast + channels_last"
             if torch.device(args.device).type == "cuda" else "cpu, float32")
    print(f"data: {'cifar10-sized (synthetic)' if args.cifar_sized else 'digits'}, device {args.device} ({where}), "
          f"batch {args.batch_size}, width {args.width}, {args.epochs} epochs (steady = fastest of epochs 2..), "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'model':<16} {'1st epoch s':>11} {'epoch s':>8} {'train s':>8} {'img/s':>9} {'data s':>7} "
          f"{'data share':>10} {'data-only/train':>15}")
    for name, first, ep, tr, ips, ds_, share, only in rows:
        print(f"{name:<16} {first:>11.2f} {ep:>8.3f} {tr:>8.3f} {ips:>9.0f} {ds_:>7.4f} {share:>9.1%} "
              f"{only:>15.1%}")
    ann, snn = rows
    print(f"SNN/ANN epoch-time ratio: {snn[2] / ann[2]:.2f}x; target: data share <= 5%")


if __name__ == "__main__":
    main()
