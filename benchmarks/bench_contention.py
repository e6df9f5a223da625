"""Shared cores: each workload alone, then two copies at once, under the old and the new thread policy.

Two snncka processes on one machine (the local launcher's workers, or a researcher's two jobs) share its cores.
Each process runs one workload in a fresh interpreter and reports the seconds of the workload alone (imports,
model building and data loading excluded); the ratio is "two at once" over "alone" (2x is ideal when one
process already fills the cores, 1x when each uses only half of them).

Workloads:
  compare  ``snncka.compare`` of two random-init ResNet-20 ANNs on 512 random 3x32x32 images (batch 256)
  train    one training epoch of a ResNet-20 SNN (T = 8) on the digits data (batch 32), as ``snncka.training``

Policies (each a set of environment variables given to the child processes, plus the training threads):
  old      GNU OpenMP's default waiting (``GOMP_SPINCOUNT=300000``, exactly libgomp's default when
           ``OMP_WAIT_POLICY`` is unset) and training with every core's thread (torch's default)
  new      what snncka does now: nothing set, so ``import snncka`` picks the waiting policy and the trainer its
           thread count (``TrainConfig.threads``)
  NAME:VAR=VAL,...   any other environment, e.g. ``passive:OMP_WAIT_POLICY=PASSIVE`` or
           ``spin10k:GOMP_SPINCOUNT=10000``; ``threads=N`` in the list sets the training threads

    python benchmarks/bench_contention.py                          # old and new, both workloads, 2 repeats
    python benchmarks/bench_contention.py --policies old,new,passive:OMP_WAIT_POLICY=PASSIVE --repeats 3

Run it under the project's heavy-job lock on a machine that is otherwise quiet: other load inflates both columns.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import snncka  # noqa: F401  (before torch, as in the snncka command, so that its OpenMP policy applies)

WORKLOADS = ("compare", "train")
# libgomp's own default spin count when OMP_WAIT_POLICY is unset: setting it reproduces the old behaviour even
# where snncka would otherwise pick a waiting policy (it leaves an explicit GOMP_SPINCOUNT alone)
OLD = {"GOMP_SPINCOUNT": "300000", "threads": "all"}
OMP_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")


def child(workload: str, threads: str | None) -> None:
    """Run one workload in this process and print its seconds as JSON (the parent's measurement)."""
    import tempfile

    import torch

    from snncka import compare, create
    from snncka.training import TrainConfig, load_dataset, train

    if workload == "compare":
        torch.manual_seed(0)
        a, b = create("resnet20", spiking=False).eval(), create("resnet20", spiking=False).eval()
        x = torch.randn(512, 3, 32, 32)
        t0 = time.perf_counter()
        compare(a, b, x, batch_size=256, progress=False)
    else:
        extra = {} if threads is None else {"threads": torch.get_num_threads() if threads == "all" else int(threads)}
        cfg = TrainConfig(model="resnet20", spiking=True, T=8, data="digits", epochs=1, batch_size=32, device="cpu",
                          progress=False, **extra)
        ds = load_dataset(cfg)
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            train(cfg, out, dataset=ds)
    print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)


def parse_policy(text: str) -> tuple[str, dict[str, str]]:
    if text == "old":
        return "old", dict(OLD)
    if text == "new":
        return "new", {}
    name, _, spec = text.partition(":")
    env = dict(kv.split("=", 1) for kv in spec.split(",") if kv)
    return name, env


def launch(workload: str, env: dict[str, str], copies: int) -> list[float]:
    """Start ``copies`` children at once; the seconds each reports."""
    threads = env.get("threads")
    child_env = {k: v for k, v in os.environ.items() if k not in OMP_VARS}
    child_env.update({k: v for k, v in env.items() if k != "threads"})
    cmd = [sys.executable, __file__, "--child", workload] + (["--threads", threads] if threads else [])
    procs = [subprocess.Popen(cmd, env=child_env, stdout=subprocess.PIPE, text=True) for _ in range(copies)]
    out = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"child {cmd} failed with exit code {p.returncode}")
        out.append(json.loads(stdout.strip().splitlines()[-1])["seconds"])
    return out


def span(xs: list[float]) -> str:
    return f"{min(xs):.2f}-{max(xs):.2f}" if len(xs) > 1 else f"{xs[0]:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", default="old,new", help="comma-separated: old, new or NAME:VAR=VAL;... (see above)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--repeats", type=int, default=2, help="solo runs and pair runs per policy and workload")
    ap.add_argument("--child", choices=WORKLOADS, help=argparse.SUPPRESS)
    ap.add_argument("--threads", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.threads)
    # a policy's own list uses commas too: split the option on the commas that start a new policy
    policies, cur = [], ""
    for part in args.policies.split(","):
        if cur and (":" in part or part in ("old", "new")):
            policies.append(cur)
            cur = part
        else:
            cur = f"{cur},{part}" if cur else part
    policies.append(cur)
    print(f"cores: {len(os.sched_getaffinity(0))}, load average at the start: {os.getloadavg()[0]:.2f}, "
          f"{args.repeats} solo and {args.repeats} pair runs per row", flush=True)
    print(f"{'workload':<8} {'policy':<10} {'solo s':>12} {'two at once s':>14} {'ratio':>6} {'ratio span':>11}  "
          "environment")
    for workload in args.workloads.split(","):
        for spec in policies:
            name, env = parse_policy(spec)
            solo = [launch(workload, env, 1)[0] for _ in range(args.repeats)]
            pair = [t for _ in range(args.repeats) for t in launch(workload, env, 2)]
            base = statistics.median(solo)
            ratios = [t / base for t in pair]
            shown = " ".join(f"{k}={v}" for k, v in env.items()) or "(snncka's defaults)"
            print(f"{workload:<8} {name:<10} {span(solo):>12} {span(pair):>14} {statistics.median(ratios):>5.2f}x "
                  f"{min(ratios):>5.2f}-{max(ratios):.2f}  {shown}", flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
