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
