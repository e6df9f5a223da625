"""What a new user meets first must not mislead: the corresponding-layers curve only between corresponding
layers, a clipped image count said out loud, the README's snippets running as written, and CKA's public
functions right (or loud) on the features users hand them."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from snncka.cka import compare
from snncka.models import create

T = 3


class _SnnTorchNet(nn.Module):
    """The snntorch tutorial CNN: conv1/pool/fc with Leaky neurons in a Python time loop."""

    def __init__(self, snntorch) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.lif1 = snntorch.Leaky(beta=0.8, threshold=0.3)
        self.fc = nn.Linear(4 * 4 * 4, 10)
        self.lif2 = snntorch.Leaky(beta=0.8, threshold=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        out = []
        for _ in range(T):
            s1, mem1 = self.lif1(self.pool(self.conv1(x)), mem1)
            s2, mem2 = self.lif2(self.fc(s1.flatten(1)), mem2)
            out.append(s2)
        return torch.stack(out).mean(0)


def _images(n: int = 16) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def test_corresponding_layers_curve_only_between_corresponding_layers(tmp_path):
    snntorch = pytest.importorskip("snntorch")
    x = _images()
    zoo_ann = create("resnet20", spiking=False, width=0.25, in_channels=1)
    zoo_snn = create("resnet20", spiking=True, width=0.25, in_channels=1, T=2, v_th=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # silent layers of untrained models
        other = compare(_SnnTorchNet(snntorch), zoo_ann, x, time_a="loop", progress=False)
        same = compare(zoo_snn, zoo_ann, x, progress=False)
    # unrelated models share the names pool and fc by accident: no curve, and the reason is said
    assert {"pool", "fc"} <= set(other.corresponding()[0])
    assert "not one architecture" in other.curve_missing()
    with pytest.warns(UserWarning, match="no curve of corresponding layers drawn: .*not one architecture"):
        paths = other.plot(tmp_path / "other")
    assert sorted(p.name for p in paths) == ["cka_heatmap.png", "cka_heatmap.svg"]
    (row,) = other.summary()
    assert row["corresponding layers"].startswith("none: ") and "mean CKA (diagonal)" not in row
    # an SNN and an ANN of one architecture: the paper's curve (Fig. 2)
    assert same.curve_missing() is None and same.layers_a == same.layers_b
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        paths = same.plot(tmp_path / "same")
    assert "cka_curve.png" in {p.name for p in paths} and "mean CKA (diagonal)" in same.summary()[0]
    # different layer lists of one architecture (another selection) still correspond by name
    sub = compare(zoo_snn, zoo_ann, x, layers_a="act", progress=False)
    assert sub.layers_a != sub.layers_b and sub.curve_missing() is None
    # the same layer list of two models of no snncka architecture corresponds too
    torch.manual_seed(0)
    a, b = (nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 4)) for _ in range(2))
    assert compare(a, b, x, progress=False).curve_missing() is None


def test_more_images_than_the_test_split_is_said_in_one_line(tiny_runs, tmp_path):
    from click.testing import CliRunner

    from snncka.cli import main

    runner = CliRunner()
    out = tmp_path / "cmp"
    args = ["compare", str(tiny_runs["ann"]), "--out", str(out), "--device", "cpu", "--quiet", "--no-plot"]
    res = runner.invoke(main, [*args, "--n-images", "4096"])
    assert res.exit_code == 0, res.output
    said = [line for line in res.stderr.splitlines() if line.strip()]
    assert said == ["Warning: n_images (--n-images) 4096 is more than the 360 test images of 'digits': using all "
                    "360"]
    assert json.loads((out / "compare.json").read_text())["cka"]["n_images"] == 360
    res = runner.invoke(main, args)  # the recipe's 4096 on a small dataset: all of it, nothing to say
    assert res.exit_code == 0 and "Warning" not in res.stderr
    res = runner.invoke(main, [*args, "--n-images", "200"])
    assert res.exit_code == 0 and "Warning" not in res.stderr
    assert json.loads((out / "compare.json").read_text())["cka"]["n_images"] == 200
    res = runner.invoke(main, ["rates", str(tiny_runs["snn"]), "--out", str(out), "--device", "cpu", "--quiet",
                               "--no-plot", "--n-images", "1000"])
    assert res.exit_code == 0 and "1000 is more than the 360 test images" in res.stderr


def _readme_block(marker: str) -> str:
    """The README's Python code block that contains ``marker``."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    (block,) = [b for b in blocks if marker in b]
    return block


def test_the_readmes_minibatch_snippet_runs_as_written_and_equals_compare(eager_kernels):
    import snncka

    code = _readme_block("MinibatchCKA(")
    assert "Recorder(" in code and "feats_a" not in code  # says where the features come from
    torch.manual_seed(0)
    model_a = create("resnet8", spiking=True, T=2, width=0.25, in_channels=1, v_th=0.2)
    model_b = create("resnet8", spiking=False, width=0.25, in_channels=1)
    x = _images(24)
    loader = [(x[:12], torch.zeros(12)), (x[12:], torch.zeros(12))]
    ns = {"snncka": snncka, "model_a": model_a, "model_b": model_b, "loader": loader}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # silent layers of untrained models
        exec(compile(code, "README.md", "exec"), ns)
        ref = compare(model_a, model_b, loader, progress=False)
    res = ns["res"]
    assert res.layers_a == ref.layers_a and res.layers_b == ref.layers_b and res.n_images == 24
    np.testing.assert_allclose(res.matrix, ref.matrix, rtol=0, atol=1e-6)


# ------------------------------------------------------------------ CKA's public functions on users' features


def _offset_pair(n: int = 48, offset: float = 1e4, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 features far from 0 (a large common offset, as un-normalised inputs or logits can have)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 40, generator=g, dtype=torch.float64)
    Y = X @ torch.randn(40, 24, generator=g, dtype=torch.float64) + torch.randn(n, 24, generator=g,
                                                                                   dtype=torch.float64)
    return (X + offset).float(), (Y + offset).float()


def _naive(X: torch.Tensor, Y: torch.Tensor, unbiased: bool = True) -> tuple[float, float, float]:
    """HSIC_xy, HSIC_xx, HSIC_yy of the stored float32 values, in float64 by the written-out formulas."""
    from snncka.cka import hsic_biased, hsic_unbiased

    Xd, Yd = X.double() - X.double().mean(0), Y.double() - Y.double().mean(0)
    K, L = Xd @ Xd.T, Yd @ Yd.T
    h = hsic_unbiased if unbiased else hsic_biased
    return float(h(K, L)), float(h(K, K)), float(h(L, L))


def test_cka_functions_are_right_on_float32_features_with_a_large_offset():
    from snncka.cka import MinibatchCKA, cka, temporal

    (X1, Y1), (X2, Y2) = _offset_pair(seed=3), _offset_pair(seed=4)
    for unbiased in (True, False):
        h1, h2 = _naive(X1, Y1, unbiased), _naive(X2, Y2, unbiased)
        one = h1[0] / np.sqrt(h1[1] * h1[2])
        assert 0.3 < one < 1
        assert cka(X1, Y1, unbiased=unbiased).item() == pytest.approx(one, abs=1e-9)
        # minibatch CKA over two batches (Nguyen et al. 2020): sums of per-batch HSIC
        expect = (h1[0] + h2[0]) / np.sqrt((h1[1] + h2[1]) * (h1[2] + h2[2]))
        acc = MinibatchCKA(unbiased=unbiased)
        acc.update({"x": X1}, {"y": Y1})
        acc.update({"x": X2}, {"y": Y2})
        assert acc.compute().matrix[0, 0] == pytest.approx(expect, abs=1e-5)  # float32 Grams
        ident = nn.Sequential(nn.Identity())
        res = compare(ident, nn.Sequential(nn.Identity()), [X1, X2], data_b=[Y1, Y2], layers_a=["0"],
                      layers_b=["0"], unbiased=unbiased, progress=False)
        assert res.matrix[0, 0] == pytest.approx(expect, abs=1e-5)
    acc = MinibatchCKA(kernel="rbf")  # the RBF kernel: the reference formula on the same values
    acc.update({"x": X1}, {"y": Y1})
    ref = cka(X1.double(), Y1.double(), kernel="rbf").item()
    assert 0.3 < ref < 1 and acc.compute().matrix[0, 0] == pytest.approx(ref, abs=1e-5)
    # temporal: the CKA between two time steps of an offset layer [B, T, p]
    steps = torch.stack([X1, Y1[:, :24].contiguous().repeat(1, 2)[:, :40]], 1)  # [B, 2, 40]
    tr = temporal(nn.Sequential(nn.Identity()), [steps], layers=["0"], time="BT", progress=False)
    h = _naive(steps[:, 0], steps[:, 1])
    assert tr.matrices[0, 0, 1] == pytest.approx(h[0] / np.sqrt(h[1] * h[2]), abs=1e-5)


def test_a_nan_feature_is_named_by_every_cka_function():
    from snncka.cka import MinibatchCKA, cka, temporal

    X, Y = _offset_pair(offset=0.0)
    Xn = X.clone()
    Xn[5, 7] = float("nan")
    with pytest.raises(ValueError, match=r"cka: X holds 1 non-finite value\(s\) \(NaN or Inf\), the first at "
                                         r"sample 5, column 7"):
        cka(Xn, Y)
    with pytest.raises(ValueError, match="cka: Y holds 1152 non-finite"):
        cka(X, torch.full_like(Y, float("inf")))
    for kw in ({}, {"unbiased": False}, {"kernel": "rbf"}, {"time_reduce": "mean"}):
        acc = MinibatchCKA(**kw)
        with pytest.raises(ValueError, match=r"non-finite features \(NaN or Inf\) in layer 'bad' of features_a, "
                                             r"batch 0"):
            acc.update({"ok": X, "bad": Xn}, {"y": Y})
    net = nn.Sequential(nn.Linear(40, 8), nn.ReLU(), nn.Linear(8, 4))
    with pytest.raises(ValueError, match=r"in layer '0' of model_b \(Sequential\), batch 1"):
        compare(nn.Sequential(nn.Linear(40, 3)), net, [X, X], data_b=[X, Xn], progress=False)
    with pytest.raises(ValueError, match=r"in layer '0' of model \(Sequential\) on data_b, batch 1"):
        compare(net, net, [X, X], data_b=[X, Xn], progress=False)
    with pytest.raises(ValueError, match=r"non-finite features \(NaN or Inf\) in layer '0' of model"):
        temporal(nn.Sequential(nn.Linear(40, 8)), [torch.stack([X, Xn], 1)], time="BT", progress=False)


def test_cli_compare_of_two_architectures_says_why_there_is_no_curve(tmp_path):
    from click.testing import CliRunner

    from snncka.checkpoint import save_checkpoint
    from snncka.cli import main

    paths = []
    for arch in ("resnet20", "vgg13"):
        m = create(arch, spiking=False, width=0.25, in_channels=1)
        paths.append(tmp_path / f"{arch}.pt")
        save_checkpoint({"model_config": m.config, "model": m.state_dict(), "train_config": {"data": "digits"}},
                        paths[-1])
    out = tmp_path / "cmp"
    res = CliRunner().invoke(main, ["compare", *map(str, paths), "--out", str(out), "--n-images", "64",
                                    "--device", "cpu", "--quiet"])
    assert res.exit_code == 0, res.output
    said = [line for line in res.stderr.splitlines() if "curve" in line]
    assert len(said) == 1 and said[0].startswith("Warning: compare: no curve of corresponding layers drawn: ")
    assert (out / "compare_heatmap.png").is_file() and not (out / "compare_curve.png").exists()
    assert "corresponding layers=none: " in res.stdout
