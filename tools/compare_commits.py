"""Run every experiment at one epoch on two commits and compare their results bitwise.

For each commit: a ``git worktree`` of it, a fresh ``SNNCKA_CACHE`` and torch.compile cache, a fixed
``OMP_NUM_THREADS``, and ``snncka reproduce ID --epochs 1`` for every experiment file the commit has (each run
under ``flock LOCK`` when ``--lock`` is given, so heavy jobs run one at a time). Then every ``.npz`` array of
every result (same file names) must be equal bitwise (dtype, shape, bytes; NaN where NaN), and every finding's
verdict the same. A commit's outputs are kept in ``--work/<sha>``, so a rerun compares without running again.

    python tools/compare_commits.py 293f9cf HEAD --work /tmp/cmp --lock /tmp/snncka-heavy.lock
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

EXPERIMENT_DIRS = ("src/snncka/experiments", "src/snncka/paper/experiments")


def sha_of(repo: Path, rev: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "rev-parse", rev], check=True, capture_output=True,
                          text=True).stdout.strip()


def experiment_ids(tree: Path) -> list[str]:
    ids = []
    for d in EXPERIMENT_DIRS:
        ids += [p.stem for p in sorted((tree / d).glob("*.toml")) if not p.name.startswith("_")]
    return ids


def run_commit(repo: Path, sha: str, work: Path, lock: str | None, threads: int, python: str) -> Path:
    """Every experiment of commit ``sha`` at one epoch into ``work/<sha>/runs/<ID>``; returns that folder."""
    base = work / sha
    tree, runs = base / "tree", base / "runs"
    if not tree.exists():
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(tree), sha], check=True,
                       capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "SNNCKA_CACHE": str(base / "cache"),
           "TORCHINDUCTOR_CACHE_DIR": str(base / "inductor"), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    for exp in experiment_ids(tree):
        out = runs / exp
        if (out / "report.html").is_file():
            continue
        cmd = [python, "-m", "snncka.cli", "reproduce", exp, "--epochs", "1", "--out", str(out), "--no-progress"]
        if lock:
            cmd = ["flock", lock, *cmd]
        print(f"[{sha[:7]}] {exp} ...", flush=True)
        r = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True)
        if r.returncode:
            print(f"[{sha[:7]}] {exp} FAILED:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}", flush=True)
    return runs


def verdicts(path: Path) -> dict[str, str]:
    """``{"<recipe>/<finding>": verdict}`` of a saved findings result."""
    meta = json.loads(path.read_text())
    return {f"{rec}/{row['finding']}": row["verdict"] for rec, rows in meta["verdicts"].items() for row in rows}


def compare(a: Path, b: Path) -> list[str]:
    """Every difference between two commits' run folders (empty: identical)."""
    diffs: list[str] = []
    done = {side: {p.name for p in d.iterdir() if (p / "report.html").is_file()} if d.is_dir() else set()
            for side, d in (("before", a), ("after", b))}
    exps = sorted(done["before"] & done["after"])
    missing = sorted(done["before"] ^ done["after"])
    if missing:
        print(f"not finished on both commits (not compared): {', '.join(missing)}")
    n_arrays = n_verdicts = 0
    for exp in exps:
        fa = {p.relative_to(a / exp) for p in (a / exp).rglob("results/*.npz")}
        fb = {p.relative_to(b / exp) for p in (b / exp).rglob("results/*.npz")}
        for p in sorted(fa ^ fb):
            diffs.append(f"{exp}: {p} only in {'before' if p in fa else 'after'}")
        for p in sorted(fa & fb):
            za, zb = np.load(a / exp / p), np.load(b / exp / p)
            for k in sorted(set(za.files) ^ set(zb.files)):
                diffs.append(f"{exp}: {p}: array {k} only in {'before' if k in za.files else 'after'}")
            for k in sorted(set(za.files) & set(zb.files)):
                x, y = za[k], zb[k]
                n_arrays += 1
                if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
                    err = (float(np.nanmax(np.abs(x.astype(float) - y.astype(float))))
                           if x.shape == y.shape and x.dtype.kind == "f" else "shape/dtype")
                    diffs.append(f"{exp}: {p}: array {k} differs (max abs diff {err})")
        for p in sorted({q.relative_to(a / exp) for q in (a / exp).rglob("results/findings.json")}):
            if not (b / exp / p).is_file():
                diffs.append(f"{exp}: {p} only in before")
                continue
            va, vb = verdicts(a / exp / p), verdicts(b / exp / p)
            n_verdicts += len(va)
            for k in sorted(set(va) | set(vb)):
                if va.get(k) != vb.get(k):
                    diffs.append(f"{exp}: {p}: {k}: {va.get(k)} -> {vb.get(k)}")
    print(f"compared {len(exps)} experiments, {n_arrays} arrays, {n_verdicts} verdicts")
    return diffs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--repo", default=".")
    ap.add_argument("--work", default="/tmp/snncka-compare")
    ap.add_argument("--lock", default=None, help="flock this file around each experiment run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--only", choices=("before", "after"), default=None, help="run one commit, compare nothing")
    ap.add_argument("--no-run", action="store_true", help="compare what has been run so far, run nothing")
    args = ap.parse_args()
    repo, work = Path(args.repo).resolve(), Path(args.work).resolve()
    shas = {"before": sha_of(repo, args.before), "after": sha_of(repo, args.after)}
    folders = {}
    for side, sha in shas.items():
        if args.no_run:
            folders[side] = work / sha / "runs"
        elif args.only in (None, side):
            folders[side] = run_commit(repo, sha, work, args.lock, args.threads, args.python)
    if args.only:
        return 0
    print(f"before {shas['before'][:10]}  after {shas['after'][:10]}")
    diffs = compare(folders["before"], folders["after"])
    print("\n".join(diffs) if diffs else "no differences: every array and every verdict is bitwise identical")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
