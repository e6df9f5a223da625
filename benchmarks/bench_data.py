"""Data time vs training-step time: is batched augmentation cheap enough (target: <= 5% of a step)?

One run measures, on the same machine and batch (256 x 3 x 32 x 32, CIFAR-sized):
  * data: index a batch out of a 50000-image tensor + ``augment_batch`` (crop pad 4 + flip),
  * the same augmentation as a per-sample Python loop (the pipeline this replaces),
  * one ResNet-20 training step (forward, backward, SGD) for the ANN and the SNN (T=4),
and prints the ratios. Usage: ``python benchmarks/bench_data.py [--device cuda [--amp]] [--repeats 5]``
(``--amp``: the training steps in bf16 autocast + channels_last, as ``snncka.training`` trains on CUDA).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from snncka.data import Augment, augment_batch
from snncka.models import create


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, float]:
    """(median, min) seconds of ``fn`` over ``repeats`` runs after one warm-up run."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), min(ts)


def per_sample_loop(x: torch.Tensor, aug: Augment, g: torch.Generator) -> torch.Tensor:
    """The unbatched baseline: pad, crop and flip each image in Python."""
    out = torch.empty_like(x)
    p, (h, w) = aug.pad, x.shape[-2:]
    for i in range(x.shape[0]):
        dy, dx = (int(v) for v in torch.randint(0, 2 * p + 1, (2,), generator=g))
        img = F.pad(x[i], (p, p, p, p))[..., dy:dy + h, dx:dx + w]
        out[i] = img.flip(-1) if torch.rand(1, generator=g).item() < 0.5 else img
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--T", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--data-only", action="store_true", help="skip the (slow) training steps")
    ap.add_argument("--amp", action="store_true", help="train steps in bf16 autocast + channels_last (CUDA)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as snncka.training does on CUDA
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    aug = Augment(pad=4, flip=True)
    x_train = torch.randn(50_000, 3, 32, 32, device=dev)
    y_train = torch.randint(0, 10, (50_000,), device=dev)

    def data_step() -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randperm(x_train.shape[0], generator=g)[: args.batch].to(dev)
        return augment_batch(x_train[idx], aug, g), y_train[idx]

    batch = x_train[: args.batch]
    rows = [("data: gather + augment_batch", *timed(data_step, args.repeats * 4, dev))]
    rows.append(("augment_batch only", *timed(lambda: augment_batch(batch, aug, g), args.repeats * 4, dev)))
    loop = timed(lambda: per_sample_loop(batch, aug, g), args.repeats, dev)
    rows.append(("augment per-sample loop", *loop))
    xb, yb = data_step()
    if args.amp:
        xb = xb.contiguous(memory_format=torch.channels_last)
    for spiking in () if args.data_only else (False, True):
        model = create("resnet20", spiking=spiking, num_classes=10, in_channels=3, T=args.T).to(dev)
        if args.amp:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

        def step(model: torch.nn.Module = model, opt: torch.optim.Optimizer = opt) -> None:
            opt.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16) if args.amp else nullcontext():
                logits = model(xb)
            F.cross_entropy(logits.float(), yb).backward()
            opt.step()

        name = f"ResNet-20 {'SNN T=' + str(args.T) if spiking else 'ANN'} train step"
        rows.append((name, *timed(step, max(2, args.repeats // 2) if spiking else args.repeats, dev)))

    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"device {dev} ({name}{', bf16 autocast + channels_last' if args.amp else ''}), "
          f"batch {args.batch}x3x32x32, torch threads {torch.get_num_threads()}")
    print(f"{'':34s} {'median ms':>10s} {'min ms':>10s}")
    for name, med, mn in rows:
        print(f"{name:34s} {med * 1e3:10.2f} {mn * 1e3:10.2f}")
    t = {n: m for n, m, _ in rows}
    data = t["data: gather + augment_batch"]
    print(f"per-sample loop / batched augment: {t['augment per-sample loop'] / t['augment_batch only']:.1f}x")
    for name in (r[0] for r in rows[3:]):
        print(f"data / {name}: {100 * data / t[name]:.2f}%  (target <= 5%)")


if __name__ == "__main__":
    main()
