"""Spiking ResNet-20 training step: snncka's fused LIF vs its reference loop vs spikingjelly vs snntorch, and
the ANN ResNet-20 on T*B images (the same convolution work: the lower bound).

    python benchmarks/bench_snn_step.py [--rounds 7] [--batch 64] [--T 4] [--threads N] [--device cuda] [--amp]

One full training step = forward, cross-entropy, backward, SGD (momentum 0.9) step; CIFAR-sized input
3x32x32, T = 4, batch 64, rectangular surrogate (paper Eq. 3, alpha 1).

Method
* Time: one fresh process builds all five models, warms each up with two steps, then runs ``--rounds``
  rounds in which every variant does one step in turn (round robin), so that load from other processes on
  a shared machine hits all variants alike. Reported: the median step time of each variant. This process
  uses the default allocator settings (not the memory workers' mmap threshold, whose page faults would
  charge each variant for the bytes it allocates).
* Peak memory: each variant in its own fresh process. The increase of the process's peak resident set
  (``VmHWM``, reset through ``/proc/self/clear_refs``) during one training step over the resident set just
  before it (model, gradients, optimizer state and input already allocated). The workers run with
  ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc serves every tensor buffer by mmap and unmaps it on free:
  the resident set then follows the bytes of live tensors rather than the allocator's cache. This counts
  all memory of the step: saved activations, gradients, temporaries, compiled-kernel buffers.
* First-call cost of the fused LIF (torch.compile of its two kernels): the first step minus a later step,
  in the memory worker, with an empty inductor cache; and again in the timing process, whose inductor cache
  the memory worker has filled.
* ``--device cuda``: the step is timed between two ``torch.cuda.synchronize()`` calls, and peak memory is the
  rise of ``torch.cuda.max_memory_allocated()`` during the step (reset by ``reset_peak_memory_stats``) over
  the memory allocated before it. ``--amp``: bf16 autocast and channels_last, as ``snncka.training`` trains
  on CUDA. A variant whose library is not importable (spikingjelly, snntorch) is skipped; ``--variants``
  picks a subset (fused, reference, spikingjelly, snntorch, ann).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

VARIANTS = {
    "snncka fused LIF": "fused",
    "snncka reference loop": "reference",
    "spikingjelly LIFNode (m, torch)": "spikingjelly",
    "snntorch Leaky": "snntorch",
    "ANN ResNet-20 on T*B images": "ann",
}


def _status(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # MiB
    raise RuntimeError(f"{key} not found in /proc/self/status")


def _build(variant: str, batch: int, T: int, device: str = "cpu", amp: bool = False):
    """Model, optimizer, and one training-step closure for a variant."""
    from contextlib import nullcontext

    import torch
    from torch import nn

    from snncka.models import create
    from snncka.peers import SnnTorchLeaky, SpikingJellyLIF, swap_neurons

    torch.manual_seed(0)
    if variant == "ann":
        model = create("resnet20", spiking=False)
        x = torch.randn(T * batch, 3, 32, 32)
        y = torch.randint(0, 10, (T * batch,))
    else:
        model = create("resnet20", spiking=True, T=T, surrogate="rect",
                       backend="reference" if variant == "reference" else "fused")
        if variant == "spikingjelly":  # its built-in Rect (same window) lets it choose its own CPU path
            swap_neurons(model, lambda lif: SpikingJellyLIF(lif.T, surrogate="builtin"))
        elif variant == "snntorch":
            swap_neurons(model, lambda lif: SnnTorchLeaky(lif.T))
        x = torch.randn(batch, 3, 32, 32)
        y = torch.randint(0, 10, (batch,))
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    model, x, y = model.to(dev), x.to(dev), y.to(dev)
    if amp:  # as snncka.training on CUDA: channels_last and bf16 autocast
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def step() -> float:
        if cuda:
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16) if amp else nullcontext():
            logits = model(x)
        nn.functional.cross_entropy(logits.float(), y).backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize(dev)
        return time.perf_counter() - t0

    return step


def memory_worker(variant: str, batch: int, T: int, device: str = "cpu", amp: bool = False) -> dict:
    import gc

    import torch

    step = _build(variant, batch, T, device, amp)
    first = step()
    again = step()
    gc.collect()
    if torch.device(device).type == "cuda":  # GPU memory: rise of the allocator's peak during one step
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        peak = (torch.cuda.max_memory_allocated(device) - before) / 2**20
        name = torch.cuda.get_device_name(device)
    else:
        before = _status("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak resident set (VmHWM) to the current one
        step()
        peak = _status("VmHWM") - before
        name = "cpu"
    return {"first_s": first, "second_s": again, "peak_mb": peak, "device": name,
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def timing_worker(rounds: int, batch: int, T: int, device: str = "cpu", amp: bool = False,
                  variants: list[str] | None = None) -> dict:
    import statistics

    steps = {}
    first = {}
    for v in variants or VARIANTS.values():
        steps[v] = _build(v, batch, T, device, amp)
        first[v] = steps[v]()
        steps[v]()
    times: dict[str, list[float]] = {v: [] for v in steps}
    for _ in range(rounds):
        for v, step in steps.items():
            times[v].append(step())
    return {"median_ms": {v: 1000 * statistics.median(t) for v, t in times.items()},
            "first_s": first, "times_ms": {v: [round(1000 * x, 1) for x in t] for v, t in times.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--T", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast + channels_last (the trainer's CUDA path)")
    ap.add_argument("--variants", default=",".join(VARIANTS.values()),
                    help="comma-separated subset of " + ", ".join(VARIANTS.values()) + " (ann is always run)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    wanted = [v for v in VARIANTS.values() if v in a.variants.split(",") or v == "ann"]
    if a.worker == "timing":
        print(json.dumps(timing_worker(a.rounds, a.batch, a.T, a.device, a.amp, wanted)))
        return
    if a.worker:
        print(json.dumps(memory_worker(a.worker, a.batch, a.T, a.device, a.amp)))
        return

    from tqdm import tqdm

    cache = tempfile.mkdtemp(prefix="snncka-bench-inductor-")
    timing_env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache, SNNCKA_COMPILE="1")  # default allocator
    env = dict(timing_env, MALLOC_MMAP_THRESHOLD_="65536")  # memory workers: RSS follows live tensor bytes
    common = ["--batch", str(a.batch), "--T", str(a.T), "--threads", str(a.threads), "--rounds", str(a.rounds),
              "--device", a.device] + (["--amp"] if a.amp else [])
    mem: dict[str, dict] = {}
    timing: dict = {}
    skipped: dict[str, str] = {}
    for job in tqdm([*wanted, "timing"], desc="worker processes", unit="proc", disable=not sys.stderr.isatty()):
        if job == "timing":
            common += ["--variants", ",".join(mem)]  # only the variants that ran
        out = subprocess.run([sys.executable, __file__, "--worker", job, *common], capture_output=True,
                             text=True, env=timing_env if job == "timing" else env, check=False)
        if out.returncode:
            err = (out.stderr.strip().splitlines() or ["?"])[-1]
            if job in ("spikingjelly", "snntorch"):  # a peer library that is missing or fails: skip it
                skipped[job] = err[:150]
                print(f"  {job}: skipped ({err[:150]})", flush=True)
                continue
            raise SystemExit(f"worker {job} failed:\n{out.stderr}")
        res = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  worker {job}: done", flush=True)
        if job == "timing":
            timing = res
        else:
            mem[job] = res

    base_ms, base_mb = timing["median_ms"]["ann"], mem["ann"]["peak_mb"]
    r0 = mem["ann"]
    unit = "GPU MiB" if a.device.startswith("cuda") else "peak MiB"
    print(f"\nspiking ResNet-20, T={a.T}, batch {a.batch}, 3x32x32, rect surrogate; full SGD training step; "
          f"torch {r0['torch']}, device {r0['device']}, {r0['threads']} threads"
          f"{', bf16 autocast + channels_last' if a.amp else ''}; median of {a.rounds} round-robin steps")
    print(f"{'variant':<34} {'ms/step':>9} {'x ANN':>7} {unit:>9} {'x ANN':>7}")
    for label, v in VARIANTS.items():
        if v not in mem:
            continue
        ms, mb = timing["median_ms"][v], mem[v]["peak_mb"]
        print(f"{label:<34} {ms:>9.1f} {ms / base_ms:>7.2f} {mb:>9.0f} {mb / base_mb:>7.2f}")
    for v, why in skipped.items():
        print(f"{v}: skipped ({why})")
    if "fused" in mem:
        cold = mem["fused"]["first_s"] - mem["fused"]["second_s"]
        warm = timing["first_s"]["fused"] - timing["median_ms"]["fused"] / 1000
        print(f"first-call overhead of the fused LIF (torch.compile of its kernels): {cold:.1f} s with an empty "
              f"inductor cache, {warm:.1f} s with a filled one")


if __name__ == "__main__":
    main()
