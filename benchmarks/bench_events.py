"""Event-dataset preparation speed: recordings/s for a whole dataset, start-up included, new vs old path.

Writes two synthetic datasets in tonic's folder layout (10 classes each, ``--n`` recordings per dataset):
  * N-Caltech101-sized: ``.bin`` recordings of ``--events`` events on 240x180 over 300 ms (3 saccades),
  * CIFAR10-DVS-sized: uncompressed AEDAT4 recordings of ``--events`` events on 128x128 over 1.3 s,
then prepares each (``snncka.data.get(name, root=..., frames=10)`` with an empty cache: find, read,
integrate, resize, cache, standardise) in a fresh Python process, for this checkout's code ("new") and for
the code at ``--old-rev`` ("old": tonic's readers and ToFrame, a BLAS matmul resize, a process pool whose
workers import torch and tonic), first on a quiet machine, then with a busy neighbour: one process running
float64 matrix products with its default BLAS threads, like another training job sharing the cores.

Prints, per dataset and condition, the process wall time (interpreter, imports and preparation: what a user
waits for) and the recordings/s it implies, side by side for old and new. A run over ``--timeout`` s is
stopped; its rate is then the recordings its progress bar had reached by then.

Usage: ``flock /tmp/heavy.lock python benchmarks/bench_events.py [--n 600] [--events 120000]
[--old-rev 1509f1f] [--timeout 150]`` (run it from the repository; it needs git and the dev extra).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the format writers the tests use

from test_data import write_aedat4, write_ncaltech_bin  # noqa: E402

CLASSES = [f"class{i}" for i in range(10)]


def make_datasets(root: Path, n: int, events: int, seed: int = 0) -> None:
    """n recordings per dataset, in tonic's layouts under ``root``."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        c = CLASSES[i % len(CLASSES)]
        t = np.sort(rng.integers(0, 300_000, events))
        path = root / "NCALTECH101" / "Caltech101" / c / f"image_{i:04d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_ncaltech_bin(path, rng.integers(0, 240, events), rng.integers(0, 180, events), t,
                           rng.random(events) < 0.5)
        t = np.sort(rng.integers(0, 1_300_000, events)) + 1_600_000_000_000_000
        cls = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
        path = root / "CIFAR10DVS" / cls[i % 10] / f"cifar10_{i:04d}.aedat4"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_aedat4(path, t, rng.integers(0, 128, events), rng.integers(0, 128, events), rng.random(events) < 0.5,
                     packets=max(1, events // 5000))


def old_source(rev: str, dest: Path) -> Path:
    """``src/`` of the repository at ``rev``, extracted into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest / "src"


PREPARE = ("import sys, time, snncka.data as D; t = time.perf_counter(); "
           "d = D.get(sys.argv[1], root=sys.argv[2], frames=10); "
           "print(time.perf_counter() - t, len(d.x_train) + len(d.x_test))")


def prepare(src: Path, name: str, root: Path, timeout: float) -> tuple[float, float, int, bool]:
    """Prepare dataset ``name`` in a fresh process with ``src`` on the path and an empty cache: (wall s,
    s inside ``data.get``, recordings done, finished)."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "PYTHONPATH": str(src), "SNNCKA_CACHE": cache, "PYTHONWARNINGS": "ignore"}
        t = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-c", PREPARE, name, str(root)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = p.communicate(timeout=timeout)
            wall = time.perf_counter() - t
            if p.returncode:
                raise RuntimeError(f"{name} with {src} failed:\n{err[-2000:]}")
            return wall, float(out.split()[-2]), int(out.split()[-1]), True
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)  # the process and its pool workers
            out, err = p.communicate()
            done = [int(m) for m in re.findall(r"\| *(\d+)/\d+ \[", err)]
            wall = time.perf_counter() - t
            return wall, wall, max(done, default=0), False


NEIGHBOUR = "import numpy as np\na = np.random.rand(1500, 1500)\nwhile True:\n    a @ a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600, help="recordings per dataset")
    ap.add_argument("--events", type=int, default=120_000, help="events per recording")
    ap.add_argument("--old-rev", default="1509f1f", help="git revision of the old path (empty: skip it)")
    ap.add_argument("--timeout", type=float, default=150.0, help="seconds before a run is stopped")
    ap.add_argument("--conditions", default="quiet,busy")
    ap.add_argument("--datasets", default="ncaltech101,cifar10-dvs")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        make_datasets(tmp / "data", args.n, args.events)
        sizes = {name: sum(f.stat().st_size for f in (tmp / "data" / folder).rglob("*.*")) / args.n / 1e6
                 for name, folder in (("ncaltech101", "NCALTECH101"), ("cifar10-dvs", "CIFAR10DVS"))}
        print(f"{args.n} recordings per dataset, {args.events} events each (.bin {sizes['ncaltech101']:.2f} MB, "
              f"AEDAT4 {sizes['cifar10-dvs']:.2f} MB per file), written in {time.perf_counter() - t:.0f} s; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
        paths = {"new": REPO / "src"}
        if args.old_rev:
            paths["old"] = old_source(args.old_rev, tmp / "old")
        rows = []
        for cond in args.conditions.split(","):
            neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR]) if cond == "busy" else None
            try:
                if neighbour:
                    time.sleep(2)
                for name in args.datasets.split(","):
                    for label, src in paths.items():
                        wall, inside, done, finished = prepare(src, name, tmp / "data", args.timeout)
                        rows.append((name, cond, label, wall, inside, done, finished))
                        print(f"  {name:12s} {cond:5s} {label}: {wall:7.1f} s ({inside:.1f} s in data.get), "
                              f"{done} recordings{'' if finished else ' (stopped)'}", flush=True)
            finally:
                if neighbour:
                    neighbour.kill()
                    neighbour.wait()
    print("\nrec/s: recordings / process wall time (interpreter, imports, preparation); "
          "in get(): / time inside data.get")
    print(f"\n| dataset | condition | {' | '.join(f'{k} s | {k} rec/s | {k} in get()' for k in paths)} |")
    print(f"|---|---|{'---|---|---|' * len(paths)}")
    for name in args.datasets.split(","):
        for cond in args.conditions.split(","):
            cells = []
            for label in paths:
                _, _, _, wall, inside, done, fin = next(r for r in rows if r[:3] == (name, cond, label))
                cells += [f"{wall:.1f}" if fin else f"> {wall:.0f} (stopped)",
                          f"{done / wall:.1f}" if fin else f"{done / wall:.2f} ({done} done)",
                          f"{done / inside:.1f}" if fin else "n/a"]
            print(f"| {name} | {cond} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
