"""Analyses on a tiny trained digits ANN/SNN pair: values, invariants, save/load, bad input, CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from snncka import analyses as A
from snncka.attacks import pgd, to_normalised_eps
from snncka.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from snncka.cka import cka
from snncka.cli import main
from snncka.models import from_config
from snncka.record import record
from snncka.training import evaluate

N = 192  # test images used by the CKA-based tests (3 batches of 64)


@pytest.fixture(scope="module")
def subjects(tiny_runs):
    return A.Subject.load(tiny_runs["ann"], device="cpu"), A.Subject.load(tiny_runs["snn"], device="cpu")


@pytest.fixture(scope="module")
def ann_vs_snn(subjects):
    return A.compare_checkpoints(*subjects, n_images=N, batch_size=64, device="cpu", progress=False)


# ----------------------------------------------------------------------------------------------- compare


def test_compare_with_itself_is_one_on_the_diagonal(subjects, tmp_path):
    ann, _ = subjects
    r = A.compare_checkpoints(ann, None, n_images=N, batch_size=64, device="cpu", progress=False)
    names, d = r.corresponding()
    assert names == r.layers_a == r.layers_b and len(names) > 20
    np.testing.assert_allclose(d, 1.0, atol=1e-6)
    np.testing.assert_allclose(r.matrix, r.matrix.T, atol=1e-9)
    assert r.n_images == N and r.batch_size == 64 and r.estimator == "unbiased"
    back = A.load_result(r.save(tmp_path))
    assert isinstance(back, A.CompareAnalysis)
    np.testing.assert_array_equal(back.matrix, r.matrix)
    assert back.layers_a == r.layers_a and back.label_a == r.label_a


def test_compare_ann_vs_snn_orientation_and_accuracy(subjects, ann_vs_snn):
    ann, snn = subjects
    r = ann_vs_snn
    assert (r.spiking_a, r.spiking_b) == (False, True)
    assert r.layers_a == r.layers_b  # identical topology, identical layer names
    m, x_layers, y_layers, x_label, y_label = r.oriented()
    assert x_label.startswith("SNN") and y_label.startswith("ANN") and m.shape == r.matrix.shape
    # accuracies are the trainer's own evaluation of the same checkpoints
    assert r.accuracy_a == pytest.approx(100 * evaluate(ann.model, ann.data, device="cpu")["acc"])
    assert r.accuracy_b == pytest.approx(100 * evaluate(snn.model, snn.data, device="cpu")["acc"])
    assert np.isfinite(r.matrix).all() and np.nanmax(r.matrix) <= 1 + 1e-9
    # one batch: entries equal the reference CKA of the recorded features (SNN: T steps concatenated)
    one = A.compare_checkpoints(ann, snn, n_images=64, batch_size=64, device="cpu", progress=False)
    fa = record(ann.model, [ann.data.x_test[:64]])
    fs = record(snn.model, [snn.data.x_test[:64]])
    for na, ns in [("conv1", "conv1"), ("s1.b0.act1", "s1.b0.act1"), ("s2.b0", "s3.b0.act2"), ("fc", "fc")]:
        ref = float(cka(fa[na].double(), fs[ns].double()))
        assert one.matrix[one.layers_a.index(na), one.layers_b.index(ns)] == pytest.approx(ref, abs=1e-6)
    assert fs["s1.b0.act1"].shape[1] == 4 * fa["s1.b0.act1"].shape[1]
    # swapping the models transposes the matrix
    r2 = A.compare_checkpoints(snn, ann, n_images=N, batch_size=64, device="cpu", progress=False)
    np.testing.assert_allclose(r2.matrix, r.matrix.T, atol=1e-6)
    np.testing.assert_allclose(r2.oriented()[0], m, atol=1e-6)


# ---------------------------------------------------------------------------------------------- temporal


def test_temporal_static_input_diagonal_one(subjects, tmp_path):
    _, snn = subjects
    r = A.temporal_checkpoint(snn, n_images=N, batch_size=64, device="cpu", progress=False)
    L = len(r.layers)
    assert r.matrices.shape == (L, 4, 4) and r.T == 4
    for k in range(L):
        np.testing.assert_allclose(np.diag(r.matrices[k]), 1.0, atol=1e-6)
    assert np.nanmin(r.matrices) >= 0 and np.nanmax(r.matrices) <= 1 + 1e-9 and np.isfinite(r.matrices).all()
    # static input at stage 1: the stem conv and norm see the same image at every step -> all ones
    for name in ("conv1", "bn1"):
        np.testing.assert_allclose(r.matrices[r.layers.index(name)], 1.0, atol=1e-6)
    # the first LIF layer does differ across steps (a neuron charges before it fires)
    assert r.off_diagonal_mean()[r.layers.index("s1.b0.act1")] < 0.999
    back = A.load_result(r.save(tmp_path))
    np.testing.assert_array_equal(back.matrices, r.matrices)
    H = back.cka.batch_hsic.sum(0)  # the per-batch HSIC between time steps, kept: their sums give the matrices
    d = np.sqrt(np.diagonal(H, axis1=1, axis2=2))
    np.testing.assert_allclose(H / (d[:, :, None] * d[:, None, :]), r.matrices, rtol=1e-6)


def test_temporal_rejects_an_ann(subjects):
    with pytest.raises(ValueError, match="needs a spiking model"):
        A.temporal_checkpoint(subjects[0], n_images=N, device="cpu", progress=False)


# ------------------------------------------------------------------------------------------------ blocks


def _synthetic_resnet_curve(n_blocks: int, jagged: bool):
    layers, kinds, values = ["conv1", "bn1"], ["conv", "norm"], [1.0, 1.0]
    inner = [("act1", "act"), ("conv1", "conv"), ("bn1", "norm"), ("act2", "act"), ("conv2", "conv"),
             ("bn2", "norm")]
    for b in range(n_blocks):
        blk = f"s1.b{b}"
        for j, (n, k) in enumerate(inner):
            layers.append(f"{blk}.{n}")
            kinds.append(k)
            values.append(0.9 - 0.08 * j if jagged else 0.9 - 0.01 * len(values))
        layers.append(blk)
        kinds.append("block")
        values.append(0.95 if jagged else 0.9 - 0.01 * len(values))
    return np.array(values), layers, kinds


def test_blocks_detects_the_periodic_pattern():
    v, layers, kinds = _synthetic_resnet_curve(9, jagged=True)
    r = A.blocks_from(v, layers, kinds)
    assert r.periodic and r.block_length == 7 and r.period == 7 and r.restore_fraction == 1.0
    assert r.type_means["residual output"] == pytest.approx(0.95)
    assert r.type_means["conv"] == pytest.approx(np.mean([0.9 - 0.08, 0.9 - 0.32]))
    assert r.positions == ["act1", "conv1", "bn1", "act2", "conv2", "bn2", "output"]
    np.testing.assert_allclose(r.position_means, [0.9 - 0.08 * j for j in range(6)] + [0.95])
    flat = A.blocks_from(*_synthetic_resnet_curve(9, jagged=False))
    assert not flat.periodic and flat.restore_fraction == 0.0


def test_blocks_on_a_real_comparison_is_the_grouped_diagonal(ann_vs_snn, tmp_path):
    r, cmp = A.blocks(ann_vs_snn)
    assert cmp is ann_vs_snn
    names, d = cmp.corresponding()
    kinds = dict(zip(cmp.layers_a, cmp.kinds_a, strict=True))
    in_block = [n for n in names if n.split(".")[0] in ("s1", "s2", "s3")]  # block layers and outputs
    for kind, label in A.TYPE_LABELS.items():
        vals = [d[names.index(n)] for n in in_block if kinds[n] == kind]
        assert r.type_means[label] == pytest.approx(np.mean(vals)), label
    assert r.block_names == ["s1.b0", "s2.b0", "s3.b0"]
    assert not r.periodic  # three blocks are too few to call a pattern periodic
    back = A.load_result(r.save(tmp_path))
    assert back.type_means == pytest.approx(r.type_means)


def test_blocks_needs_residual_blocks():
    with pytest.raises(ValueError, match="needs a ResNet"):
        A.blocks_from([0.5, 0.4], ["s1.l0.conv", "s1.l0.act"], ["conv", "act"])


# -------------------------------------------------------------------------------------------------- PGD


def test_pgd_single_step_is_fgsm_and_stays_in_the_ball(subjects):
    for s in subjects:
        x, y = s.data.x_test[:32], s.data.y_test[:32]
        xr = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(s.model(xr), y)
        (g,) = torch.autograd.grad(loss, xr)
        assert g.abs().sum() > 0  # the SNN's input gradient flows through its surrogate gradients
        adv = pgd(s.model, x, y, eps=0.1, steps=1, step_size=0.1)
        torch.testing.assert_close(adv, x + 0.1 * g.sign())
        adv = pgd(s.model, x, y, eps=0.1, steps=5)
        assert (adv - x).abs().max() <= 0.1 + 1e-6
        with torch.no_grad():
            assert torch.nn.functional.cross_entropy(s.model(adv), y) > loss
    assert torch.equal(pgd(subjects[0].model, x, y, eps=0.0), x)
    eps = to_normalised_eps(0.01, [0.5, 0.25, 0.1])
    assert eps.shape == (3, 1, 1) and eps.flatten().tolist() == pytest.approx([0.02, 0.04, 0.1])


@pytest.mark.slow
def test_robustness_values(subjects, tmp_path):
    eps = [0.0, 0.1, 2.0]
    r = A.robustness(subjects, eps=eps, steps=2, n_images=64, batch_size=64, device="cpu", progress=False)
    for m, s in enumerate(subjects):
        acc = r.accuracy[m]
        assert acc[0] == pytest.approx(r.clean_accuracy[m])  # eps = 0 leaves accuracy unchanged
        assert r.clean_accuracy[m] == pytest.approx(A.accuracy(s, 64, device="cpu"))
        assert acc[-1] < r.clean_accuracy[m] - 20  # a radius of 2 std must hurt
        np.testing.assert_allclose(r.cka[m][0], 1.0, atol=1e-6)  # clean vs clean: 1 in every layer
        assert np.mean(r.cka[m][-1]) < np.mean(r.cka[m][1]) <= 1 + 1e-9
        assert len(r.cka[m][0]) == len(r.layers[m])
    assert r.space == "normalised" and r.step_size == "eps/10" and r.steps == 2  # steps overrides the recipe's
    back = A.load_result(r.save(tmp_path))
    assert back.accuracy == r.accuracy and back.labels == r.labels
    # the per-batch HSIC sums behind each CKA value are kept (intervals over test images) and reproduce it
    assert back.cka_hsic.shape[:3] == (len(subjects), len(eps), 3)
    for m in range(len(subjects)):
        L = len(r.layers[m])
        ab, aa, bb = back.cka_hsic[m, 1, :, :, :L].sum(1)
        np.testing.assert_allclose(ab / np.sqrt(aa * bb), r.cka[m][1], rtol=1e-9)


def test_robustness_rejects_unsorted_eps(subjects):
    with pytest.raises(ValueError, match="increasing"):
        A.robustness(subjects[:1], eps=[0.05, 0.01], device="cpu", progress=False)


# ------------------------------------------------------------------------------------------------ probe


def test_linear_probe_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 12, generator=g) * 1.5
    y = torch.randint(0, 4, (400,), generator=g)
    x = centers[y] + torch.randn(400, 12, generator=g)
    xtr, ytr, xte, yte = x[:300], y[:300], x[300:], y[300:]
    l2 = 1e-2
    tr, te = A.fit_linear_probe(xtr, ytr, xte, yte, num_classes=4, l2=l2)
    mu, sd = xtr.mean(0), xtr.std(0)
    clf = LogisticRegression(C=1 / (300 * l2), max_iter=5000, tol=1e-10)
    clf.fit(((xtr - mu) / sd).double().numpy(), ytr.numpy())
    sk_te = 100 * clf.score(((xte - mu) / sd).double().numpy(), yte.numpy())
    sk_tr = 100 * clf.score(((xtr - mu) / sd).double().numpy(), ytr.numpy())
    assert te == pytest.approx(sk_te, abs=1.0) and tr == pytest.approx(sk_tr, abs=0.5)
    assert te > 60  # separable clusters


def test_probe_last_block_close_to_model_accuracy(subjects, tmp_path):
    r = A.probe(subjects, n_train=600, batch_size=300, device="cpu", progress=False)
    for m, s in enumerate(subjects):
        assert r.blocks[m] == ["s1.b0", "s2.b0", "s3.b0"]
        assert r.model_accuracy[m] == pytest.approx(A.accuracy(s, device="cpu"))
        assert all(30 < a <= 100 for a in r.accuracy[m])  # far above chance (10 classes)
    # the ANN (~95% after 3 epochs): its own classifier is a linear read-out of nearly the same features
    assert abs(r.accuracy[0][-1] - r.model_accuracy[0]) < 5.0, (r.accuracy[0], r.model_accuracy[0])
    # the tiny SNN is far from converged (~80%): a probe fitted to convergence on the real-valued block output
    # reads out at least what its spiking head does, and more than the first block
    assert r.accuracy[1][-1] > r.model_accuracy[1] - 5.0 and r.accuracy[1][-1] > r.accuracy[1][0]
    back = A.load_result(r.save(tmp_path))
    assert back.accuracy == r.accuracy


# ------------------------------------------------------------------------------------------------ seeds


def test_seeds_pairings(subjects, ann_vs_snn, tmp_path):
    r = A.seeds(list(subjects), n_images=N, batch_size=64, device="cpu", progress=False)
    assert r.pairs == [[0, 0], [0, 1], [1, 1]]
    np.testing.assert_allclose(np.diagonal(r.matrices[0]), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.diagonal(r.matrices[2]), 1.0, atol=1e-6)
    np.testing.assert_allclose(r.matrices[1], ann_vs_snn.matrix, atol=1e-9)
    back = A.load_result(r.save(tmp_path))
    np.testing.assert_array_equal(back.matrices, r.matrices)
    ab, aa, bb = back.batch_hsic[1].sum(1)  # the sums behind each pairing's corresponding layers
    np.testing.assert_allclose(ab / np.sqrt(aa * bb), np.diagonal(r.matrices[1]), rtol=1e-9)


# ------------------------------------------------------------------------------------------------ rates


def test_rates_agree_with_the_trainers_meter(subjects, tmp_path):
    ann, snn = subjects
    r = A.rates(snn, device="cpu", progress=False)
    ref = evaluate(snn.model, snn.data, device="cpu")["firing_rates"]
    assert r.layers == list(ref)
    np.testing.assert_allclose(r.mean, [ref[n] for n in r.layers], rtol=1e-6)
    np.testing.assert_allclose(np.nanmean(r.per_step, axis=1), r.mean, rtol=1e-9)
    assert ((r.dead >= 0) & (r.dead <= 1)).all() and r.T == [4] * len(r.layers)
    back = A.load_result(r.save(tmp_path))
    np.testing.assert_array_equal(back.mean, r.mean)
    with pytest.raises(ValueError, match="no LIF layers"):
        A.rates(ann, device="cpu", progress=False)


def test_rates_dead_and_saturated_layers(subjects):
    _, snn = subjects
    model = from_config(snn.model.config)
    model.load_state_dict(snn.model.state_dict())
    model.eval()
    s = A.Subject(model, snn.data)
    with torch.no_grad():
        model.s1.b0.bn1.bias.fill_(-1e4)  # input of s1.b0.act2: never reaches threshold
        model.s2.b0.bn1.bias.fill_(1e4)  # input of s2.b0.act2: above threshold at every step
    r = A.rates(s, n_images=64, device="cpu", progress=False)
    k0, k1 = r.layers.index("s1.b0.act2"), r.layers.index("s2.b0.act2")
    assert r.mean[k0] == 0 and r.dead[k0] == 1 and r.saturated[k0] == 0
    assert r.mean[k1] == 1 and r.saturated[k1] == 1 and r.dead[k1] == 0
    np.testing.assert_array_equal(r.per_step[k1], 1.0)


# ------------------------------------------------------------------------------------------- bad input


def test_different_datasets_and_shapes_are_rejected(subjects, tiny_runs, tmp_path):
    ann, snn = subjects
    other = A.Subject(snn.model, dataclasses.replace(snn.data, name="digits-other"))
    with pytest.raises(ValueError, match="different datasets"):
        A.compare_checkpoints(ann, other, n_images=N, device="cpu", progress=False)
    # a checkpoint recording another dataset is caught before any CKA is computed
    ck = load_checkpoint(tiny_runs["snn"])
    ck["train_config"] = {**ck["train_config"], "data": "digits-dvs", "frames": 4}
    bad = tmp_path / "dvs.pt"
    save_checkpoint({k: v for k, v in ck.items() if k not in ("format", "version")}, bad)
    with pytest.raises(ValueError, match="different datasets"):
        A.compare_checkpoints(tiny_runs["ann"], bad, n_images=N, device="cpu", progress=False)
    small = dataclasses.replace(snn.data, x_test=snn.data.x_test[..., :6, :6])
    with pytest.raises(ValueError, match="incompatible input shapes"):
        A.compare_checkpoints(ann, A.Subject(snn.model, small), n_images=N, device="cpu", progress=False)
    rgb = dataclasses.replace(snn.data, x_train=snn.data.x_train.expand(-1, 3, -1, -1))
    with pytest.raises(ValueError, match="input channels"):
        A.Subject(snn.model, rgb)
    with pytest.raises(CheckpointError, match="does not exist"):
        A.compare_checkpoints(tmp_path / "missing.pt", device="cpu")


# --------------------------------------------------------------------------------------------------- CLI


def test_cli_compare_and_rates(tiny_runs, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cmp"
    res = runner.invoke(main, ["compare", str(tiny_runs["ann"]), str(tiny_runs["snn"]), "--out", str(out),
                               "--n-images", "128", "--batch-size", "64", "--device", "cpu", "--quiet"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "compare.json").read_text())
    assert meta["snncka_result"] == "compare" and meta["cka"]["n_images"] == 128
    for f in ("compare.npz", "compare_heatmap.png", "compare_heatmap.svg", "compare_curve.png"):
        assert (out / f).is_file(), f
    figs = next(line for line in res.output.splitlines() if line.startswith("figures"))
    assert figs.startswith("figures (4 files): ") and figs.count(str(out)) == 4  # prints what it wrote
    assert "test accuracy of ANN resnet8" in res.output and " %" in res.output  # percent, as in the report
    res = runner.invoke(main, ["blocks", str(out / "compare.json"), "--out", str(out), "--no-plot"])
    assert res.exit_code == 0, res.output
    assert "periodic pattern: False" in res.output and (out / "blocks.json").is_file()
    res = runner.invoke(main, ["rates", str(tiny_runs["snn"]), "--out", str(out), "--device", "cpu",
                               "--quiet", "--no-plot"])
    assert res.exit_code == 0 and (out / "rates.npz").is_file()
    res = runner.invoke(main, ["temporal", str(tiny_runs["ann"]), "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 1 and "needs a spiking model" in res.output
    res = runner.invoke(main, ["compare", str(tmp_path / "nope.pt"), "--out", str(out)])
    assert res.exit_code == 1 and "does not exist" in res.output


def test_results_with_nan_round_trip(tmp_path):
    # an undefined CKA (constant layer) is NaN in memory, null in JSON and NaN again after loading
    r = A.blocks_from([0.9, float("nan"), 0.8, 0.95], ["s1.b0.act1", "s1.b0.conv1", "s1.b0.bn1", "s1.b0"],
                      ["act", "conv", "norm", "block"])
    back = A.load_result(r.save(tmp_path, "b"))
    assert np.isnan(back.curve[1]) and back.curve[3] == 0.95
    json.loads((tmp_path / "b.json").read_text())  # strict JSON
    with pytest.raises(ValueError, match="not a snncka result"):
        (tmp_path / "x.json").write_text("{}")
        A.load_result(tmp_path / "x.json")


def test_dataset_cache_keeps_the_most_recent_few(monkeypatch):
    from snncka.analyses import subjects as analyses

    monkeypatch.setattr(analyses, "_DATA_CACHE", {})
    loads = []
    for k in [1, 2, 1, 3, 4, 5, 1, 2]:
        analyses._cached_dataset((k,), lambda k=k: loads.append(k) or f"ds{k}")
    assert loads == [1, 2, 3, 4, 5, 2]  # 1 stayed cached (recently used), 2 was evicted by 5
    assert list(analyses._DATA_CACHE) == [(4,), (5,), (1,), (2,)]
