"""CKA engine benchmark: snncka vs the floor, a naive float64 reference, the paper's own formula and PyPI peers.

Two workloads, 1024 random 3x32x32 images in batches of 256, every recorded layer pair (74 x 74):
  W1  two ANN ResNet-20s from different seeds (every peer can run it);
  W2  ANN ResNet-20 vs SNN ResNet-20 (T=4) from snncka.models (the paper's workload).
Rows (each in its own subprocess, so peak memory is per row):
  floor      both forward passes + one float32 Gram per layer per batch, nothing else
  ours       snncka.compare
  reference  Grams once per layer per batch in float64, Python double loop over pairs (SPEC formula);
             its matrix is the float64 reference every row's max |difference| is measured against
  paper@256  the paper authors' method (uncentred float32 Grams, trace(K @ L) per pair) at batch 256
  paper@1024 / ours@1024  the same at the paper's default batch 1024 on 4096 images (W1); the paper row is
             timed on one batch of 1024 with its pair loop on a sample of 40 pairs, projected to all pairs
             and the 4 batches
  ours@4096  snncka at its default batch of 256 on the same 4096 images: what a user of each tool waits for
  peers      pytorch-cka; torch-cka (it recomputes Grams per pair: timed on every 4th layer and 1 of the 4
             batches, projected); repsim with --rows repsim (full-batch CKA of all features held in memory;
             compared with ours on one batch of 1024)
Then "below the floor": the Gram work alone on W2 with exploited symmetry and exact 0/1 spike Grams.

Run: ``flock /tmp/snncka-bench.lock python benchmarks/bench_cka.py`` (add ``--quick`` for a smoke run).
``--device cuda``: models and batches live on the GPU, clocks are read after ``torch.cuda.synchronize()``,
and "peak MB" is the rise of ``torch.cuda.max_memory_allocated()`` (GPU memory) instead of peak RSS. Every
row first runs once on a batch of 32 images, outside the timing (CUDA context, cuBLAS/cuDNN handles,
compiled LIF kernels; on CPU the BLAS threads): floor and ours alike.
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

import numpy as np
import torch

N_IMAGES, BATCH = 1024, 256
ROWS_W1 = ["floor", "ours", "reference", "paper@256", "pytorch-cka", "torch-cka", "ours@4096", "ours@1024",
           "paper@1024"]
ROWS_W2 = ["floor", "ours", "reference", "paper@256"]
OPTIONAL = ["floor#2", "ours#2", "repsim"]  # --rows floor#2,ours#2 repeats (keeps the faster run); repsim: slow


# ------------------------------------------------------------------------------------------------ setup


def _models(workload: str):
    import snncka

    torch.manual_seed(0)
    a = snncka.create("resnet20", spiking=False)
    torch.manual_seed(1)
    b = snncka.create("resnet20", spiking=workload == "W2", T=4)
    return a.eval(), b.eval()


def _images(n: int) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(123))


def _batches(n: int, bs: int) -> list[torch.Tensor]:
    x = _images(n)
    return [x[i:i + bs] for i in range(0, n, bs)]


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (peak RSS)
    except OSError:
        pass
    return _rss_mb("VmRSS")


def _peak(device: torch.device) -> float:
    """Peak since ``_reset_peak``: GPU memory allocated on CUDA, the process's peak RSS on CPU (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _rss_mb("VmHWM")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _grams_hook(store: list, dtype=torch.float32, zero_diag: bool = False):
    """on_output callback: one uncentred Gram of the [B, T*p] feature per layer."""
    def cb(name, kind, feat):
        F = feat.reshape(feat.shape[0], -1).to(dtype)
        K = F @ F.T
        if zero_diag:
            K.fill_diagonal_(0)
        store.append(K)
    return cb


def _forward_all(models, batch, recs):
    from snncka.record import batch_size_of, parse_time

    for m, r in zip(models, recs, strict=True):
        r.reset()
        r.batch_size = batch_size_of(batch, m, parse_time(None, m))
        m(batch)


# ------------------------------------------------------------------------------------------------ rows


def row_floor(a, b, data):
    from snncka.record import Recorder

    ga, gb = [], []
    with torch.no_grad(), Recorder(a, on_output=_grams_hook(ga)) as ra, Recorder(b, on_output=_grams_hook(gb)) as rb:
        for x in data:
            ga.clear(), gb.clear()
            _forward_all((a, b), x, (ra, rb))
    return None


def row_ours(a, b, data):
    from snncka import compare

    return compare(a, b, data, progress=False).matrix


def _hsic_spec(K, L, n):
    """SPEC's unbiased HSIC, O(n^2): tr(K~L~) = sum(K~ * L~), 1^T K~ L~ 1 = (K~ 1) . (L~ 1)."""
    return ((K * L).sum() + K.sum() * L.sum() / ((n - 1) * (n - 2)) - 2 / (n - 2) * (K.sum(0) @ L.sum(0))) / (
        n * (n - 3))


def row_reference(a, b, data, per_batch_out: str | None = None):
    from snncka.record import Recorder

    ga, gb = [], []
    sab = saa = sbb = 0
    first = None
    with torch.no_grad(), Recorder(a, on_output=_grams_hook(ga, torch.float64, True)) as ra, \
            Recorder(b, on_output=_grams_hook(gb, torch.float64, True)) as rb:
        for x in data:
            ga.clear(), gb.clear()
            _forward_all((a, b), x, (ra, rb))
            n = x.shape[0]
            hab = np.zeros((len(ga), len(gb)))
            for i, K in enumerate(ga):  # the naive double loop over pairs
                for j, L in enumerate(gb):
                    hab[i, j] = _hsic_spec(K, L, n).item()
            haa = np.array([_hsic_spec(K, K, n).item() for K in ga])
            hbb = np.array([_hsic_spec(L, L, n).item() for L in gb])
            sab, saa, sbb = sab + hab, saa + haa, sbb + hbb
            if first is None:
                first = hab / np.sqrt(np.outer(haa, hbb))
    if per_batch_out:
        np.save(per_batch_out, first)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sab / np.sqrt(np.outer(saa, sbb))


def _paper_hsic(K, L, n, ones):
    """The paper authors' per-pair formula: trace(K @ L) (O(n^3)) on diagonal-masked float32 Grams."""
    return 1 / n / (n - 3) * (torch.trace(K @ L) + (ones.T @ K @ ones @ ones.T @ L @ ones) / (n - 1) / (n - 2)
                              - 2 * (ones.T @ K @ L @ ones) / (n - 2))


def row_paper(a, b, data, sample_pairs: int | None = None):
    """Returns (matrix or None, projected seconds of the pair loop for all pairs or None)."""
    from snncka.record import Recorder

    ga, gb = [], []
    sab = saa = sbb = 0
    projected = 0.0
    rng = np.random.default_rng(0)
    with torch.no_grad(), Recorder(a, on_output=_grams_hook(ga, zero_diag=True)) as ra, \
            Recorder(b, on_output=_grams_hook(gb, zero_diag=True)) as rb:
        for x in data:
            ga.clear(), gb.clear()
            _forward_all((a, b), x, (ra, rb))
            n = x.shape[0]
            ones = torch.ones(n, 1, device=x.device)
            if sample_pairs is None:
                hk = torch.stack([_paper_hsic(K, K, n, ones) for K in ga]).flatten()
                hl = torch.stack([_paper_hsic(L, L, n, ones) for L in gb]).flatten()
                hkl = torch.stack([torch.stack([_paper_hsic(K, L, n, ones) for L in gb]) for K in ga]).squeeze()
                sab, saa, sbb = sab + hkl, saa + hk, sbb + hl
            else:  # time a sample of pairs, project to all La*Lb + La + Lb HSIC evaluations
                pairs = [(int(i), int(j)) for i, j in zip(rng.integers(0, len(ga), sample_pairs),
                                                          rng.integers(0, len(gb), sample_pairs), strict=True)]
                _sync(x.device)
                t0 = time.perf_counter()
                for i, j in pairs:
                    _paper_hsic(ga[i], gb[j], n, ones)
                _sync(x.device)
                per = (time.perf_counter() - t0) / sample_pairs
                projected += per * (len(ga) * len(gb) + len(ga) + len(gb) - sample_pairs)
    if sample_pairs is not None:
        return None, projected
    return (sab / torch.sqrt(torch.outer(saa, sbb))).double().cpu().numpy(), None


def row_pytorch_cka(a, b, data):
    import cka as peer  # pytorch-cka

    from snncka.record import select_layers

    names = [n for n, _ in select_layers(a)]
    dev = data[0].device
    (m,) = peer.compute_cka(a, b, [data], layers=names, model2_layers=names, device=dev, progress=False)
    return _to_forward_order(a, data, names, m.double().cpu().numpy())


def _to_forward_order(model, data, names, m):
    """Peers index layers by registration order; put rows/columns into the engine's forward order."""
    from snncka.record import Recorder

    with torch.no_grad(), Recorder(model) as rec:
        rec(data[0][:4])
    idx = [names.index(n) for n in rec.names]
    return m[np.ix_(idx, idx)]


TORCH_CKA_STRIDE = 4  # torch-cka recomputes a Gram per pair: timed on every 4th layer, projected to all


def row_torch_cka(a, b, data):
    import warnings

    from torch.utils.data import DataLoader, TensorDataset
    from torch_cka import CKA

    from snncka.record import Recorder

    with torch.no_grad(), Recorder(a) as rec:
        rec(data[0][:4])
    names = rec.names[::TORCH_CKA_STRIDE]
    loader = DataLoader(TensorDataset(data[0], torch.zeros(len(data[0]))), batch_size=len(data[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = CKA(a, b, model1_layers=names, model2_layers=names, device=data[0].device)
        try:
            c.compare(loader)  # features are recorded in forward order
        except AssertionError:  # "HSIC computation resulted in NANs" (float32 cancellation): keep its matrix
            pass
    return c.hsic_matrix.double().cpu().numpy()


def row_repsim(a, b, data):
    import repsim

    from snncka.record import record

    fa = record(a, data)
    fb = record(b, data)
    mats = [v.cpu().numpy() for v in fa.values()] + [v.cpu().numpy() for v in fb.values()]
    full = repsim.cka(mats, kernel_type="linear", estimator="song")
    return np.asarray(full)[: len(fa), len(fa):]


# ------------------------------------------------------------------------------------------------ below the floor


def gram_variants(workload: str, quick: bool, device: str | torch.device = "cpu") -> dict:
    """Gram work alone on one batch of the workload: float32 GEMM (the floor's), ours (centred), half the
    blocks via symmetry (2x2 block lower triangle: 3/4 of the flops), and exact int8 GEMM for 0/1 spikes."""
    from snncka.record import Recorder

    device = torch.device(device)
    a, b = (m.to(device) for m in _models(workload))
    x = _images(BATCH).to(device)
    feats: list[torch.Tensor] = []
    spikes: list[bool] = []

    def keep(name, kind, feat):
        F = feat.reshape(feat.shape[0], -1).contiguous()
        feats.append(F)
        spikes.append(kind == "act" and bool(((F == 0) | (F == 1)).all()))

    with torch.no_grad():
        for m in (a, b):
            with Recorder(m, on_output=keep) as rec:
                rec(x)
    if quick:
        feats, spikes = feats[::8], spikes[::8]

    def t(fn, fs):
        fn(fs[0])
        _sync(device)
        t0 = time.perf_counter()
        for F in fs:
            fn(F)
        _sync(device)
        return time.perf_counter() - t0

    def full(F):
        return F @ F.T

    from snncka.cka_math import _gram_of_feature, _Workspace

    ws = _Workspace()

    def ours(F):  # the engine's own Gram: centred columns; symmetric blocks on CPU, one GEMM on a GPU
        return _gram_of_feature(F.view(F.shape[0], 1, -1), False, ws)[0]

    def centred(F):
        Xc = F - F.mean(0, keepdim=True)
        return Xc @ Xc.T

    def centred_sym(F):
        return sym(F - F.mean(0, keepdim=True))

    def sym(F):
        h = F.shape[0] // 2
        top, bot = F[:h], F[h:]
        K = torch.empty(F.shape[0], F.shape[0], device=F.device)
        K[:h, :h] = top @ top.T
        K[h:, :h] = bot @ top.T
        K[:h, h:] = K[h:, :h].T
        K[h:, h:] = bot @ bot.T
        return K

    def int8(F):
        Fi = F.to(torch.int8)
        return torch._int_mm(Fi, Fi.T.contiguous())

    out = {"layers": len(feats), "spike_layers": int(sum(spikes))}
    out["all: float32 GEMM (floor)"] = t(full, feats)
    out["all: centred float32 GEMM"] = t(centred, feats)
    out["all: symmetric 2x2 blocks"] = t(sym, feats)
    out["all: centred + symmetric 2x2 blocks"] = t(centred_sym, feats)
    out["all: ours (snncka.cka_math._gram_of_feature)"] = t(ours, feats)
    sp = [F for F, s in zip(feats, spikes, strict=True) if s]
    if sp:
        out["spikes: float32 GEMM (floor)"] = t(full, sp)
        out["spikes: centred float32 GEMM"] = t(centred, sp)
        try:
            out["spikes: exact int8 GEMM (int32 counts)"] = t(int8, sp)
            exact = all(torch.equal(int8(F).double(), (F.double() @ F.double().T)) for F in sp[:4])
            out["int8 exact"] = bool(exact)
        except RuntimeError as e:  # torch._int_mm's shape/device constraints
            out["int8 GEMM"] = f"unavailable ({str(e).splitlines()[0][:80]})"
    out["sym max rel err"] = max(float((sym(F) - full(F)).abs().max() / full(F).abs().max().clamp_min(1e-30))
                                 for F in feats[:4])
    return out


# ------------------------------------------------------------------------------------------------ driver


def _compute(row: str, a, b, data, quick: bool, out: str | None):
    """One row's work on ``data``: (matrix or None, projected extra seconds or None, time factor)."""
    if row == "floor":
        return row_floor(a, b, data), None, 1
    if row == "ours":
        return row_ours(a, b, data), None, 1
    if row == "ours@4096":  # our default batch of 256 on the paper's 4096 images, all 16 batches timed
        return row_ours(a, b, data), None, 1
    if row == "ours@1024":  # one of the 4 batches of 1024 timed, projected (cost is linear in batches)
        return row_ours(a, b, data[:1]), None, len(data)
    if row == "reference":
        return row_reference(a, b, data, per_batch_out=out + ".first.npy" if out else None), None, 1
    if row == "paper@256":
        return row_paper(a, b, data)[0], None, 1
    if row == "paper@1024":  # one of the 4 batches of 1024, its pair loop sampled; both projected
        m, extra = row_paper(a, b, data[:1], sample_pairs=8 if quick else 40)
        return m, extra * len(data), len(data)
    if row == "pytorch-cka":
        return row_pytorch_cka(a, b, data), None, 1
    if row == "torch-cka":
        t0 = time.perf_counter()
        m = row_torch_cka(a, b, data)
        La = len(m)
        # projected: all 74 x 74 pairs (its cost is per pair) and all batches
        return m, (time.perf_counter() - t0) * (len(data) * (74 * 74) / (La * La) - 1), 1
    if row == "repsim":
        return row_repsim(a, b, data), None, 1
    raise SystemExit(f"unknown row {row}")


def run_row(workload: str, row: str, out: str, quick: bool, device: str = "cpu") -> None:
    os.environ.setdefault("SNNCKA_COMPILE", "1")
    dev = torch.device(device)
    n = 256 if quick else N_IMAGES
    a, b = (m.to(dev) for m in _models(workload))
    bs = 1024 if row.endswith("@1024") else BATCH
    n_imgs = (1024 if quick else 4096) if row.endswith(("@1024", "@4096")) else n
    data = [x.to(dev) for x in _batches(n_imgs, bs)]
    row = row.split("#")[0]
    # warm-up outside the timing, the row's own work on one batch of 32 images: compiles the LIF kernels of
    # an SNN, creates the CUDA context and cuBLAS/cuDNN handles (or starts the CPU's BLAS threads)
    _compute(row, a, b, [data[0][:32], data[0][32:64]], quick, None)  # 2 batches: the jackknife path too
    base = _reset_peak(dev)
    t0 = time.perf_counter()
    m, extra, scale = _compute(row, a, b, data, quick, out)
    _sync(dev)
    secs = (time.perf_counter() - t0) * scale
    peak = _peak(dev) - base
    if m is not None:
        np.save(out + ".npy", np.asarray(m, dtype=np.float64))
    Path(out + ".json").write_text(json.dumps(dict(seconds=secs, peak_mb=peak, projected_extra=extra)))


def _fmt_diff(m: np.ndarray | None, ref: np.ndarray | None) -> str:
    if m is None or ref is None:
        return "n/a"
    both = np.isfinite(m) & np.isfinite(ref)
    nan_mismatch = int((np.isfinite(m) != np.isfinite(ref)).sum())
    d = float(np.abs(m[both] - ref[both]).max()) if both.any() else float("nan")
    return f"{d:.1e}" + (f" ({nan_mismatch} NaN mismatches)" if nan_mismatch else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (256 images, sampled layers)")
    ap.add_argument("--rows", default="", help="comma-separated subset of rows to run ('grams': below the floor)")
    ap.add_argument("--workloads", default="W1,W2", help="comma-separated subset of W1, W2")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (peak MB is then GPU memory)")
    ap.add_argument("--exact-rss", action="store_true",
                    help="CPU: glibc mmap threshold 64 KiB in the rows, so peak RSS follows live tensor bytes (the "
                         "allocator cache no longer blurs the peak-memory column); its page faults slow every row, "
                         "so take times from a run without it")
    ap.add_argument("--no-reference", default="", help="workloads (e.g. W1) to run without the float64 reference "
                    "row (saves its time when its accuracy is known; the diff column is then n/a)")
    ap.add_argument("--_row", help=argparse.SUPPRESS)
    ap.add_argument("--_workload", help=argparse.SUPPRESS)
    ap.add_argument("--_out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._row:
        run_row(args._workload, args._row, args._out, args.quick, args.device)
        return
    torch_threads = torch.get_num_threads()
    dev = torch.device(args.device)
    where = (f"{torch.cuda.get_device_name(dev)} (peak MB = GPU memory allocated)" if dev.type == "cuda"
             else "cpu (peak MB = peak RSS)")
    print(f"torch {torch.__version__}, {torch_threads} threads, {os.cpu_count()} CPUs; device {where}; "
          f"{256 if args.quick else N_IMAGES} images, batch {BATCH}", flush=True)
    wanted = set(filter(None, args.rows.split(",")))
    tmp = Path(tempfile.mkdtemp(prefix="bench_cka_"))
    for workload, rows in (("W1", ROWS_W1), ("W2", ROWS_W2)):
        if workload not in args.workloads.split(","):
            continue
        results: dict[str, dict] = {}
        rows = rows + [r for r in OPTIONAL if r in wanted and (workload == "W1" or r != "repsim")]
        for row in rows:
            base_row = row.split("#")[0]
            if wanted and row not in wanted and base_row not in ("floor", "reference"):
                continue
            if row == "reference" and workload in args.no_reference.split(","):
                continue
            out = str(tmp / f"{workload}_{row}")
            cmd = [sys.executable, __file__, "--_row", row, "--_workload", workload, "--_out", out,
                   "--device", args.device]
            if args.quick:
                cmd.append("--quick")
            env = dict(os.environ)
            if args.exact_rss:  # freed buffers leave the resident set, so peak RSS follows live tensor bytes
                env["MALLOC_MMAP_THRESHOLD_"] = "65536"
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                err = (proc.stderr.strip().splitlines() or ["?"])[-1]
                print(f"  [{workload}] {row}: skipped ({err[:150]})", flush=True)
                continue
            r = json.loads(Path(out + ".json").read_text())
            r["matrix"] = np.load(out + ".npy") if Path(out + ".npy").exists() else None
            if base_row in results:  # a repeat: keep the faster run (and the lower peak)
                prev = results[base_row]
                prev["peak_mb"] = min(prev["peak_mb"], r["peak_mb"])
                prev["seconds"] = min(prev["seconds"], r["seconds"])
            else:
                results[base_row] = r
            print(f"  [{workload}] {row}: {r['seconds']:.1f} s", flush=True)
        ref = results.get("reference", {}).get("matrix")
        first = np.load(str(tmp / f"{workload}_reference.first.npy")) if ref is not None else None
        floor = results.get("floor", {})
        print(f"\n{workload}: {'two ANN ResNet-20s' if workload == 'W1' else 'ANN vs SNN (T=4) ResNet-20'}")
        print(f"{'row':<14}{'seconds':>10}{'x floor':>9}{'peak MB':>10}{'x floor':>9}  max |diff| to float64 ref")
        for row, r in results.items():
            secs = r["seconds"] + (r["projected_extra"] or 0)
            note = ""
            if row == "paper@1024":
                note = "  (4096 images: 1 batch of 1024 timed with a sample of pairs, projected)"
            elif row == "torch-cka":
                note = "  (every 4th layer, 1 of 4 batches timed, projected; diff vs reference on those)"
            elif row == "ours@1024":
                note = "  (4096 images, batch 1024: 1 of 4 batches timed, projected)"
            elif row == "ours@4096":
                note = "  (4096 images, batch 256, all timed)"
            elif row == "repsim":
                note = "  (full-batch CKA; diff vs ours on one batch of 1024)"
            if row in ("ours@4096", "ours@1024", "paper@1024", "repsim"):
                diff = "n/a"
                if row == "repsim":
                    ours_full = _full_batch_ours(workload, args.quick, dev)
                    diff = _fmt_diff(r["matrix"], ours_full)
            elif row == "torch-cka":
                sub = first[::TORCH_CKA_STRIDE, ::TORCH_CKA_STRIDE] if first is not None else None
                diff = _fmt_diff(r["matrix"], sub)
            else:
                diff = _fmt_diff(r["matrix"], ref) if row != "reference" else "0 (is the reference)"
            fs, fm = floor.get("seconds", float("nan")), floor.get("peak_mb", float("nan"))
            mem = r["peak_mb"]
            print(f"{row:<14}{secs:>10.2f}{secs / fs:>9.2f}{mem:>10.0f}{mem / fm:>9.2f}  {diff}{note}")
        if "paper@1024" in results:
            p = results["paper@1024"]["seconds"] + results["paper@1024"]["projected_extra"]
            for mine in ("ours@1024", "ours@4096"):
                if mine in results:
                    print(f"paper@1024 / {mine} = {p / results[mine]['seconds']:.1f}x")
        print(flush=True)
        if workload == "W1" and (not wanted or "grams" in wanted):
            _print_grams(args.quick, dev)


def _print_grams(quick: bool, device: torch.device) -> None:
    print(f"Below the floor: Gram work alone, one batch of 256, W2 (ANN + SNN layers), seconds, {device}")
    g = gram_variants("W2", quick, device)
    for k, v in g.items():
        print(f"  {k:<42} {v:.3f}" if isinstance(v, float) else f"  {k:<42} {v}", flush=True)
    print(flush=True)


def _full_batch_ours(workload: str, quick: bool, device: torch.device) -> np.ndarray:
    from snncka import compare

    a, b = _models(workload)
    n = 256 if quick else N_IMAGES
    return compare(a, b, [_images(n)], device=device, progress=False).matrix


if __name__ == "__main__":
    main()
