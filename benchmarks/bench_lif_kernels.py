"""The fused LIF's kernels per call (forward + BPTT backward, T steps): eager vs compiled vs the reference loop
vs an earlier revision's eager kernels vs ReLU (the lower bound), at the sizes snncka's runs call them with.

    python benchmarks/bench_lif_kernels.py [--T 4] [--rounds 15] [--previous c2c5a2f^] [--threads N]

Why: on a CPU the demo's SNN calls the eager kernels (compiling does not pay at its sizes, see
``snncka.neurons._CPU_COMPILE_MIN_NUMEL``), so their per-call time is what a new user waits on. Small tensors
are bound by the per-op overhead, so the number of ops per time step is what matters.

Method: one process; each variant gets a ``[T, N]`` float32 input that requires a gradient and a fixed
upstream gradient; one call = forward + ``backward``. Every variant is warmed up (the compiled one compiles
then), then ``--rounds`` rounds run each variant in turn (round robin, so load from other processes hits all
alike), each round timing a batch of calls sized to ~20 ms. Reported: the median time per call, and ratios
to ReLU's forward + backward on the same input (one read and one write each way: the floor for any neuron).
``--previous REV`` loads ``src/snncka/neurons.py`` of that git revision (the kernels before the per-step op
count was cut) and times its eager kernels too; the values of every variant are checked equal first.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from snncka import neurons
from snncka.neurons import LIFConfig, lif_fused, lif_reference

SIZES = (2**14, 2**16, 2**17, 2**18, 2**20, 2**22)  # elements per call (T x N); the demo's largest is 2^17


def _previous(rev: str):
    """``snncka.neurons`` as of git revision ``rev`` (its relative imports resolve in today's package)."""
    root = Path(__file__).resolve().parents[1]
    src = subprocess.run(["git", "show", f"{rev}:src/snncka/neurons.py"], cwd=root, check=True,
                         capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("snncka._neurons_previous", loader=None)
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "snncka"
    sys.modules[spec.name] = mod
    exec(compile(src, f"{rev}:src/snncka/neurons.py", "exec"), mod.__dict__)
    return mod


def _variants(previous) -> dict[str, Callable]:
    cfg = LIFConfig()  # tau 0.5, v_th 1, hard reset, rect surrogate: the paper's neuron
    out = {
        "fused, eager (snncka on CPU below 2^21)": lambda x: lif_fused(x, cfg, compiled=False),
        "fused, compiled": lambda x: lif_fused(x, cfg, compiled=True),
        "reference loop (autograd per step)": lambda x: lif_reference(x, cfg),
    }
    if previous is not None:
        out["previous eager kernels"] = lambda x: previous.lif_fused(x, previous.LIFConfig(), compiled=False)
    out["ReLU fwd+bwd (lower bound)"] = torch.relu
    return out


def _call(fn: Callable, x: torch.Tensor, gy: torch.Tensor) -> None:
    x.grad = None
    fn(x).backward(gy)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--T", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--previous", default="", help="a git revision whose eager kernels to time too")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    previous = _previous(args.previous) if args.previous else None
    variants = _variants(previous)
    names = list(variants)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, T={args.T}, {args.rounds} rounds")
    print("| elements per call | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for n in SIZES:
        g = torch.Generator().manual_seed(n)
        x0 = torch.randn(args.T, n // args.T, generator=g) * 1.5 + 0.5
        gy = torch.randn(args.T, n // args.T, generator=g)
        xs = {k: x0.clone().requires_grad_() for k in names}
        grads = {}
        for k in names:  # warm-up (compiles) and the values check
            _call(variants[k], xs[k], gy)
            grads[k] = xs[k].grad.clone()
        lif = [k for k in names if not k.startswith("ReLU")]
        for k in lif[1:]:
            torch.testing.assert_close(grads[k], grads[lif[0]], rtol=1e-5, atol=1e-6, msg=f"{k} at {n}")
        reps = {}
        for k in names:  # calls per timed batch: ~20 ms
            t0 = time.perf_counter()
            _call(variants[k], xs[k], gy)
            reps[k] = max(1, int(0.02 / max(time.perf_counter() - t0, 1e-6)))
        times: dict[str, list[float]] = {k: [] for k in names}
        for _ in range(args.rounds):
            for k in names:
                t0 = time.perf_counter()
                for _ in range(reps[k]):
                    _call(variants[k], xs[k], gy)
                times[k].append((time.perf_counter() - t0) / reps[k])
        med = {k: 1000 * statistics.median(t) for k, t in times.items()}
        floor = med[names[-1]]
        cells = [f"{med[k]:.3f} ms ({med[k] / floor:.1f}x)" for k in names]
        print(f"| 2^{n.bit_length() - 1} | " + " | ".join(cells) + " |", flush=True)
    print(f"(compile policy on this machine: eager below {neurons._CPU_COMPILE_MIN_NUMEL} elements per call)")


if __name__ == "__main__":
    main()
