"""Spiking ResNet-20 training step: snncka's fused LIF vs its reference loop vs spikingjelly vs snntorch, and
the ANN ResNet-20 on T*B images (the same convolution work: the lower bound).

    python benchmarks/bench_snn_step.py [--rounds 7] [--batch 64] [--T 4] [--threads N]

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


def _build(variant: str, batch: int, T: int):
    """Model, optimizer, and one training-step closure for a variant."""
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
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def step() -> float:
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        return time.perf_counter() - t0

    return step


def memory_worker(variant: str, batch: int, T: int) -> dict:
    import gc

    import torch

    step = _build(variant, batch, T)
    first = step()
    again = step()
    gc.collect()
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set (VmHWM) to the current one
    step()
    return {"first_s": first, "second_s": again, "peak_mb": _status("VmHWM") - before,
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def timing_worker(rounds: int, batch: int, T: int) -> dict:
    import statistics

    steps = {}
    first = {}
    for v in VARIANTS.values():
        steps[v] = _build(v, batch, T)
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
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    if a.worker == "timing":
        print(json.dumps(timing_worker(a.rounds, a.batch, a.T)))
        return
    if a.worker:
        print(json.dumps(memory_worker(a.worker, a.batch, a.T)))
        return

    from tqdm import tqdm

    cache = tempfile.mkdtemp(prefix="snncka-bench-inductor-")
    timing_env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache, SNNCKA_COMPILE="1")  # default allocator
    env = dict(timing_env, MALLOC_MMAP_THRESHOLD_="65536")  # memory workers: RSS follows live tensor bytes
    common = ["--batch", str(a.batch), "--T", str(a.T), "--threads", str(a.threads), "--rounds", str(a.rounds)]
    mem: dict[str, dict] = {}
    timing: dict = {}
    for job in tqdm([*VARIANTS.values(), "timing"], desc="worker processes", unit="proc"):
        out = subprocess.run([sys.executable, __file__, "--worker", job, *common], capture_output=True,
                             text=True, env=timing_env if job == "timing" else env, check=False)
        if out.returncode:
            raise SystemExit(f"worker {job} failed:\n{out.stderr}")
        res = json.loads(out.stdout.strip().splitlines()[-1])
        if job == "timing":
            timing = res
        else:
            mem[job] = res

    base_ms, base_mb = timing["median_ms"]["ann"], mem["ann"]["peak_mb"]
    r0 = mem["ann"]
    print(f"\nspiking ResNet-20, T={a.T}, batch {a.batch}, 3x32x32, rect surrogate; full SGD training step; "
          f"torch {r0['torch']}, {r0['threads']} threads; median of {a.rounds} round-robin steps")
    print(f"{'variant':<34} {'ms/step':>9} {'x ANN':>7} {'peak MiB':>9} {'x ANN':>7}")
    for label, v in VARIANTS.items():
        ms, mb = timing["median_ms"][v], mem[v]["peak_mb"]
        print(f"{label:<34} {ms:>9.1f} {ms / base_ms:>7.2f} {mb:>9.0f} {mb / base_mb:>7.2f}")
    cold = mem["fused"]["first_s"] - mem["fused"]["second_s"]
    warm = timing["first_s"]["fused"] - timing["median_ms"]["fused"] / 1000
    print(f"first-call overhead of the fused LIF (torch.compile of its kernels): {cold:.1f} s with an empty "
          f"inductor cache, {warm:.1f} s with a filled one")


if __name__ == "__main__":
    main()
