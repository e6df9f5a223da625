"""Effects, 95 % intervals and three-way verdicts of the paper's findings: from saved per-batch HSIC sums, over
test images and over seeds; findings.json; the accuracy tables' checkpoint."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats as sp

import snncka
from snncka.analyses import CompareAnalysis, RobustnessResult, SeedsResult, TemporalAnalysis
from snncka.checkpoint import resolve_checkpoint, save_checkpoint
from snncka.cka import temporal as cka_temporal
from snncka.cka_stream import MinibatchCKA
from snncka.paper import findings
from snncka.paper.findings import HOLDS, UNCERTAIN, UNMEASURED, claims, evaluate
from snncka.paper.findings.effects import accuracy_effect, cka_of
from snncka.paper.findings.verdicts import judge
from snncka.paper.tables import PaperComparison, checkpoint_accuracy
from snncka.results import load_result
from test_findings import BLOCK, BLOCK_NAMES, ident, pair

BLOCKS = ("s1.b0", "s2.b0", "s3.b0")
NAMES = [b if n is None else f"{b}.{n}" for b in BLOCKS for n in BLOCK_NAMES]
KINDS = [k for _ in BLOCKS for k in BLOCK]


def measured_pair(snn: str, noise: float | dict[str, float], *, seed: int = 0, k: int = 12, n: int = 16,
                  names=NAMES, kinds=KINDS, data: str = "digits") -> CompareAnalysis:
    """An ANN-vs-SNN result computed by the CKA engine on ``k`` batches of synthetic features: each SNN layer
    is its ANN layer plus Gaussian noise (``noise``: one level, or per layer kind); more noise, lower CKA."""
    g = torch.Generator().manual_seed(seed)
    acc = MinibatchCKA()
    level = noise if isinstance(noise, dict) else dict.fromkeys(set(kinds), noise)
    for _ in range(k):
        fa = {nm: torch.randn(n, 6, generator=g, dtype=torch.float64) for nm in names}
        fb = {nm: fa[nm] + level[kd] * torch.randn(n, 6, generator=g, dtype=torch.float64)
              for nm, kd in zip(names, kinds, strict=True)}
        acc.update(fb, fa)  # a: the SNN, b: the ANN
    res = acc.compute()
    res.kinds_a, res.kinds_b = list(kinds), list(kinds)
    ann = "ANN " + snn.split()[1]
    return CompareAnalysis(cka=res, label_a=snn, label_b=ann, spiking_a=True, spiking_b=False,
                           identities=[ident(snn, data), ident(ann, data)])


def table(name: str, accs: dict[tuple[str, str], float], images: int | None = 10_000) -> PaperComparison:
    arch = lambda m: m.split("-")[0].partition("x")  # noqa: E731
    rows = [{"model": m, "type": t.upper(), "ours (%)": v, "images": images,
             "identity": {"arch": arch(m)[0], "width": float(arch(m)[2] or 1),
                          "residual": [not m.endswith("-nores")] * 3}} for (m, t), v in accs.items()]
    return PaperComparison(table=name, caption="", rows=rows, scale="smoke")


def everything() -> dict:
    """Results on which every one of the 13 predicates is measured, CKA ones with per-batch HSIC sums."""
    torch.manual_seed(0)
    snn = snncka.create("resnet8", spiking=True, T=3, v_th=0.3, num_classes=3, in_channels=1, width=0.25)
    g = torch.Generator().manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tr = cka_temporal(snn, [torch.rand(8, 1, 8, 8, generator=g) for _ in range(4)], progress=False)
    def sums(noise: float, seed: int, names: list[str]) -> np.ndarray:  # [3, batches, layers]
        return np.stack(measured_pair("SNN resnet8 T4", noise, seed=seed, names=names,
                                      kinds=["conv"] * len(names)).cka.batch_samples())

    def cka(h: np.ndarray) -> list[float]:
        return cka_of(*h.sum(1)).tolist()

    clean_adv = [sums(1.5, 7, ["l0", "l1"]), sums(0.3, 8, ["l0", "l1"])]  # ANN, SNN at one eps
    pgd = RobustnessResult(eps=[0.01], labels=["ANN resnet8", "SNN resnet8 T4"],
                           identities=[ident("ANN resnet8"), ident("SNN resnet8 T4")], clean_accuracy=[91.0, 90.0],
                           accuracy=[[50.0], [70.0]], layers=[["l0", "l1"]] * 2, kinds=[["conv"] * 2] * 2,
                           cka=[[cka(h)] for h in clean_adv], steps=20, step_size="eps/10", random_start=False,
                           space="normalised", n_images=1000, cka_hsic=np.stack(clean_adv)[:, None])
    labels, spiking = ["ANN s0", "ANN s1", "SNN s0", "SNN s1"], [False, False, True, True]
    pairs = [[i, j] for i in range(4) for j in range(i + 1, 4)]
    per_pair = [sums(0.5, 10 + k, ["a", "b"]) for k in range(len(pairs))]
    seeds = SeedsResult(matrices=np.stack([np.diag(cka(h)) for h in per_pair]), pairs=pairs, labels=labels,
                        spiking=spiking, layers=["a", "b"], n_images=64, batch_hsic=np.stack(per_pair))
    return {
        "fig2/compare-r8": measured_pair("SNN resnet8 T4", 0.3, seed=1),
        "fig2/compare-r14": measured_pair("SNN resnet14 T4", 0.8, seed=2),
        "fig2/compare-r8x2": measured_pair("SNN resnet8 x2 T4", 0.2, seed=3),
        "fig5/compare-t2": measured_pair("SNN resnet20 T2", {"block": 0.2, "conv": 1.0, "act": 1.5, "norm": 1.0},
                                         seed=4),
        "fig5/compare-t8": measured_pair("SNN resnet20 T8", {"block": 0.2, "conv": 1.0, "act": 1.5, "norm": 1.0},
                                         seed=5),
        "fig7/compare-dvs": measured_pair("SNN resnet8 T4", 1.5, seed=6, data="digits-dvs"),
        "fig6/temporal-snn": TemporalAnalysis(cka=tr, label="SNN resnet8 T3"),
        "fig2/paper-table1": table("table1", {("resnet20", "ann"): 91.0, ("resnet20", "snn"): 89.0,
                                              ("resnet20x4", "ann"): 94.0, ("resnet20x4", "snn"): 93.5}),
        "fig4/paper-table2": table("table2", {("resnet20", "ann"): 91.0, ("resnet20", "snn"): 89.7,
                                              ("resnet20-nores", "ann"): 90.0, ("resnet20-nores", "snn"): 80.0}),
        "fig6/paper-table3": table("table3", {("snn-T4", "snn"): 89.7, ("snn-T4-first1", "snn"): 88.8,
                                              ("snn-T4-last1", "snn"): 86.0}),
        "fig8/robustness-r8": pgd,
        "appC/seeds": seeds,
    }


# ---------------------------------------------------------------------------------------------- saved sums


def test_saved_per_batch_hsic_reproduce_the_engines_cka(tmp_path: Path) -> None:
    r = measured_pair("SNN resnet8 T4", {"block": 0.3, "conv": 1.0, "act": 2.0, "norm": 0.5})
    ab, aa, bb = r.cka.batch_samples()
    names, d = r.corresponding()
    assert ab.shape == aa.shape == bb.shape == (12, len(names))
    np.testing.assert_allclose(cka_of(ab.sum(0), aa.sum(0), bb.sum(0)), d, rtol=1e-12)
    back = load_result(r.save(tmp_path, "compare-x"))
    for x, y in zip(back.cka.batch_samples(), (ab, aa, bb), strict=True):
        np.testing.assert_array_equal(x, y)
    # a result saved before the sums were kept still loads; its effects are points
    npz = tmp_path / "compare-x.npz"
    arrays = dict(np.load(npz))
    np.savez(npz, **{k: v for k, v in arrays.items() if "batch_" not in k})
    old = load_result(tmp_path / "compare-x.json")
    np.testing.assert_array_equal(old.matrix, r.matrix)
    assert old.cka.batch_samples() is None
    f = claims.similarity_high([measured_pair("SNN resnet20 T4", 0.3), ])
    g = claims.similarity_high([pair("SNN resnet20 T4", list(d))])
    assert "batches of test images" in f.basis and g.interval == (g.effect, g.effect) and "point" in g.basis


def test_temporal_per_batch_hsic_reproduce_the_matrices() -> None:
    tr = everything()["fig6/temporal-snn"].cka
    assert tr.batch_hsic.shape == (4, *tr.matrices.shape)
    od = claims._offdiag_from_hsic(tr.batch_hsic.sum(0), tr.steps)
    np.testing.assert_allclose(od, tr.off_diagonal_mean(), rtol=1e-6, equal_nan=True)


def test_a_pairwise_interval_is_the_engines_jackknife_for_few_batches() -> None:
    # with fewer than 10 batches the interval of one layer's CKA is the leave-one-batch-out jackknife:
    # recompute it by hand from the saved sums
    r = measured_pair("SNN resnet20 T4", 0.5, k=6, names=["s1.b0"], kinds=["block"])
    f = claims.similarity_high([r])  # effect: the fraction above 0.5 -- a step function; take CKA itself
    ab, aa, bb = (a[:, 0] for a in r.cka.batch_samples())
    loo = np.array([(ab.sum() - ab[i]) / np.sqrt((aa.sum() - aa[i]) * (bb.sum() - bb[i])) for i in range(6)])
    half = sp.t.ppf(0.975, 5) * np.sqrt(5 / 6 * ((loo - loo.mean()) ** 2).sum())
    full = r.corresponding()[1][0]
    e = findings.effects.cka_effect(lambda s: float(cka_of(*s[0])[0]), [r.cka.batch_samples()], full)
    assert e.interval == pytest.approx((full - half, full + half), rel=1e-9)
    assert "jackknife over 6 batches" in e.basis and f.verdict in (HOLDS, UNCERTAIN, "does not hold")


# ---------------------------------------------------------------------------------------------- every predicate


def test_every_predicate_gives_effect_interval_threshold_and_seeds() -> None:
    found = evaluate(everything())
    assert [f.id for f in found] == list(findings.ORDER)
    for f in found:
        assert f.verdict != UNMEASURED, f.id
        lo, hi = f.interval
        assert lo <= f.effect <= hi, f.id
        assert math.isfinite(f.threshold) and f.side in (">", ">=", "<", "<="), f.id
        assert (f.seeds_total, f.seeds_holding) == (1, int(findings.effects.on_side(f.effect, f.threshold, f.side)))
        assert f.basis, f.id
    cka_based = {"similarity-high", "depth-lowers-similarity", "width-raises-similarity", "blocks-restore-similarity",
                 "time-steps-add-little", "early-static-late-dynamic", "event-data-lowers-similarity",
                 "snn-adversarial-features-closer", "seed-pairings-alike"}
    for f in found:
        if f.id in cka_based:
            assert "batches of test images" in f.basis, f.id
        else:
            assert "test images (one seed)" in f.basis and f.interval[0] < f.effect < f.interval[1], f.id


def test_an_interval_across_the_threshold_is_uncertain_end_to_end(tmp_path: Path) -> None:
    # two depths with the same noise: their CKA differs by chance only, and the interval says so
    same = {"compare-a": measured_pair("SNN resnet8 T4", 1.0, seed=1),
            "compare-b": measured_pair("SNN resnet14 T4", 1.0, seed=2)}
    f = findings.claims.depth_lowers_similarity(list(same.values()))
    assert f.verdict == UNCERTAIN and f.interval[0] < 0 < f.interval[1]
    clear = [measured_pair("SNN resnet8 T4", 0.3, seed=1), measured_pair("SNN resnet14 T4", 3.0, seed=2)]
    g = findings.claims.depth_lowers_similarity(clear)
    assert g.verdict == HOLDS and g.interval[1] < 0
    # through saved results, the judge and findings.json
    (tmp_path / "results").mkdir()
    for name, r in same.items():
        r.save(tmp_path / "results", name)
    res = judge({"paper": tmp_path}, "smoke")
    back = load_result(res.save(tmp_path / "results", "findings"))
    row = next(r for r in back.verdicts["paper"] if r["finding"] == "depth-lowers-similarity")
    assert row["verdict"] == UNCERTAIN and row["effect"] == pytest.approx(f.effect)
    assert row["interval"] == pytest.approx(list(f.interval)) and row["threshold"] == 0.0
    assert (row["seeds_holding"], row["seeds_total"]) == (f.seeds_holding, 1)
    raw = json.loads((tmp_path / "results" / "findings.json").read_text())
    assert "verdict" in json.dumps(raw) and "seeds_total" in json.dumps(raw)
    summary = next(r for r in back.summary() if r["finding"] == "depth-lowers-similarity")
    assert summary["verdict"] == "uncertain (one seed)" and summary["seeds"] == "one seed"


# ---------------------------------------------------------------------------------------------- seeds


def test_seeds_are_grouped_and_their_interval_is_over_seeds() -> None:
    results = {"fig2/compare-a": pair("SNN resnet8 T4", [0.8]), "fig2/compare-b": pair("SNN resnet14 T4", [0.6]),
               "fig2/compare-a-s1": pair("SNN resnet8 T4 seed1", [0.7]),
               "fig2/compare-b-s1": pair("SNN resnet14 T4 seed1", [0.6]),
               "fig2/compare-a-s2": pair("SNN resnet8 T4 seed2", [0.75]),
               "fig2/compare-b-s2": pair("SNN resnet14 T4 seed2", [0.8])}
    f = {x.id: x for x in evaluate(results)}["depth-lowers-similarity"]
    effects = np.array([-0.2, -0.1, 0.05])
    half = sp.t.ppf(0.975, 2) * effects.std(ddof=1) / math.sqrt(3)
    assert f.effect == pytest.approx(effects.mean())
    assert f.interval == pytest.approx((effects.mean() - half, effects.mean() + half))
    assert (f.seeds_holding, f.seeds_total) == (2, 3) and f.verdict == UNCERTAIN
    assert f.basis == "t interval over 3 seeds" and set(f.numbers) == {"seed 0", "seed 1", "seed 2"}
    assert findings.seed_of("compare-resnet20-s12") == ("compare-resnet20", 12)
    assert findings.seed_of("compare-resnet20x2") == ("compare-resnet20x2", 0)
    # accuracies over seeds too: Table 2 with two seeds, the SNN losing far more in each
    t2 = lambda snn_nores: table("table2", {("resnet20", "ann"): 91.0, ("resnet20", "snn"): 90.0,  # noqa: E731
                                            ("resnet20-nores", "ann"): 90.0, ("resnet20-nores", "snn"): snn_nores})
    g = {x.id: x for x in evaluate({"paper-table2": t2(60.0), "paper-table2-s1": t2(62.0)})}
    r = g["residuals-matter-more-for-snn"]
    assert r.effect == pytest.approx(28.0) and (r.seeds_holding, r.seeds_total) == (2, 2) and r.verdict == HOLDS


# ---------------------------------------------------------------------------------------------- accuracies


def test_accuracy_interval_is_agresti_caffo_over_the_test_images() -> None:
    e = accuracy_effect([(1, 90.0), (-1, 80.0)], 100)
    p1, p2 = 92 / 104, 82 / 104
    half = sp.norm.ppf(0.975) * 100 * math.sqrt(p1 * (1 - p1) / 104 + p2 * (1 - p2) / 104)
    assert e.value == pytest.approx(10.0) and e.interval == pytest.approx((10 - half, 10 + half), rel=1e-6)
    assert accuracy_effect([(1, 90.0)], None).interval == (90.0, 90.0)


def test_the_tables_accuracy_is_that_of_the_checkpoint_the_analyses_read(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    log = [{"epoch": e, "test_acc": a} for e, a in ((1, 0.5), (2, 0.9306), (3, 0.9100))]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in log))
    save_checkpoint({"model_config": {}, "model": {}, "epoch": 2}, run / "best.pt")
    save_checkpoint({"model_config": {}, "model": {}, "epoch": 3}, run / "last.pt")
    assert checkpoint_accuracy(resolve_checkpoint(run, "best")) == pytest.approx(93.06)
    assert checkpoint_accuracy(resolve_checkpoint(run, "last")) == pytest.approx(91.00)
    (run / "best.pt").unlink()  # a run that never improved: the analyses read last.pt, so does the table
    assert checkpoint_accuracy(resolve_checkpoint(run, "best")) == pytest.approx(91.00)


def test_cka_result_rejects_per_batch_sums_of_the_wrong_shape() -> None:
    r = measured_pair("SNN resnet8 T4", 0.5, names=["a", "b"], kinds=["conv", "conv"]).cka
    bad = dataclasses.replace(r, batch_aa=r.batch_aa[:, :1])
    assert "batch_aa has shape" in bad.inconsistency()


def test_blocks_restore_similarity_takes_its_interval_from_the_comparison_behind_the_blocks() -> None:
    """A blocks result is the curve of a comparison, which keeps the per-batch sums: the finding's interval is
    over test images (with the blocks result alone it is the point)."""
    from snncka.analyses import blocks

    cmp = measured_pair("SNN resnet8 T4", {"block": 0.2, "conv": 0.9, "act": 0.6, "norm": 0.5})
    blk, _ = blocks(cmp)
    alone = {f.id: f for f in evaluate({"fig3/blocks-x": blk})}["blocks-restore-similarity"]
    both = {f.id: f for f in evaluate({"fig3/blocks-x": blk, "fig3/compare-x": cmp})}["blocks-restore-similarity"]
    assert alone.interval == (alone.effect, alone.effect) and "point" in alone.basis
    assert both.effect == pytest.approx(alone.effect) and "batches of test images" in both.basis
    assert both.interval[0] < both.effect < both.interval[1]
