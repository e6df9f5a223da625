"""A researcher's own model, analysis and experiment file, outside the package, through `snncka reproduce`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from snncka import registry
from snncka.analyses import CompareAnalysis, TableResult, load_result
from snncka.cli import main

PLUGIN = '''
import torch
from torch import nn

import snncka


class Tiny(nn.Module):
    """One conv layer; as an SNN it thresholds its activation at T levels (a rate code)."""

    def __init__(self, spiking, T, in_channels, num_classes, width):
        super().__init__()
        c = max(1, int(8 * width))
        self.conv = nn.Conv2d(in_channels, c, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        self.steps = T if spiking else 1

    def forward(self, x):
        h = self.act(self.conv(x))
        if self.steps > 1:  # straight-through rate code: forward thresholded, backward identity
            levels = torch.stack([(h > (t + 1) / self.steps).float() for t in range(self.steps)]).mean(0)
            h = h + (levels - h).detach()
        return self.fc(self.pool(h).flatten(1))


@snncka.register_model("tiny-own")
def tiny(*, spiking, num_classes=10, in_channels=3, width=1, T=4, **_):
    return Tiny(spiking, T, in_channels, num_classes, width)


@snncka.register_analysis("mean-logit", needs="pair")
def mean_logit(snn, ann, images, factor=1.0):
    with torch.no_grad():
        return {"snn": float(snn(images).mean()) * factor, "ann": float(ann(images).mean()) * factor,
                "images": len(images)}
'''

EXPERIMENT = '''
id = "mine"
title = "My own model and analysis"
plugins = ["my_plugin"]

[scale.smoke]
epochs = 1
cka_images = 40

[[model]]
id = "tiny"
arch = "tiny-own"
T = 2

[[analysis]]
analysis = "compare"
[[analysis]]
analysis = "mean-logit"
factor = 2.0
'''


@pytest.fixture
def own(tmp_path: Path) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "my_plugin.py").write_text(textwrap.dedent(PLUGIN))
    (folder / "exp.toml").write_text(EXPERIMENT)
    return folder / "exp.toml"


def test_a_users_model_analysis_and_experiment_run_through_reproduce(own: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["reproduce", str(own), "--out", str(out), "--cache", str(tmp_path / "cache"),
                                    "--no-progress", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "tiny-own" in registry.models()
    report = (out / "report.html").read_text()
    assert "mean-logit" in report and "mine" in report
    table = load_result(out / "results" / "mean-logit-tiny.json")
    assert isinstance(table, TableResult) and table.settings == {"factor": 2.0}
    assert table.values["images"] == 40 and table.analysis_name == "mean-logit"
    saved = json.loads((out / "results" / "mean-logit-tiny.json").read_text())
    assert saved["settings"] == {"factor": 2.0}
    cmp = load_result(out / "results" / "compare-tiny.json")
    assert isinstance(cmp, CompareAnalysis) and cmp.spiking_a and not cmp.spiking_b
    assert cmp.n_images == 40 and cmp.layers_a == cmp.layers_b and "conv" in cmp.layers_a
    assert ((cmp.matrix >= -0.5) & (cmp.matrix <= 1.0 + 1e-6)).all()
    assert (out / "models" / "tiny-snn" / "last.pt").is_file()
    listed = CliRunner().invoke(main, ["models"])
    assert listed.exit_code == 0 and "tiny-own" in listed.output


@pytest.mark.parametrize("change, message", [
    (("arch = \"tiny-own\"", "arch = \"nope\""), "unknown model 'nope'; available:"),
    (("analysis = \"mean-logit\"", "analysis = \"nope\""), "unknown analysis 'nope'; registered:"),
    (("title =", "colour = 1\ntitle ="), "unknown key(s) colour; valid: id, title"),
    (("T = 2", "T = 2\ndepth = 3"), "unknown model key(s) depth; valid: id, arch"),
    (("factor = 2.0", "factor = 2.0\nfactr = 1"), "mean-logit: unknown setting(s) factr; valid: factor"),
    (("[\"my_plugin\"]", "[\"not_there\"]"), "plugin 'not_there' not found"),
])
def test_mistakes_in_an_own_experiment_are_one_line_errors(own: Path, tmp_path: Path, change, message) -> None:
    own.write_text(own.read_text().replace(*change))
    res = CliRunner().invoke(main, ["reproduce", str(own), "--out", str(tmp_path / "out"), "--cache",
                                    str(tmp_path / "cache"), "--no-progress"])
    assert res.exit_code == 1 and message in res.output, res.output
    assert res.output.count("\n") == 1 and not (tmp_path / "cache").exists()


def test_a_registered_model_trains_from_the_command_line(own: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(own.parent)
    res = CliRunner().invoke(main, ["--plugin", "my_plugin", "train", "--model", "tiny-own", "--spiking", "--T", "2",
                                    "--epochs", "1", "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    from snncka.models import load

    model = load(tmp_path / "run" / "last.pt")
    assert type(model).__name__ == "Tiny" and model.config["name"] == "tiny-own" and model.spiking
    bad = CliRunner().invoke(main, ["--plugin", "no_such_plugin", "models"])
    assert bad.exit_code == 1 and "plugin 'no_such_plugin' not found" in bad.output


def test_seeds_train_every_model_per_seed_and_name_the_results_of_later_seeds(own: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["reproduce", str(own), "--out", str(out), "--cache", str(tmp_path / "cache"),
                                    "--no-progress", "--device", "cpu", "--seeds", "2"])
    assert res.exit_code == 0, res.output
    for stem in ("compare-tiny", "mean-logit-tiny"):
        first, second = (load_result(out / "results" / f"{stem}{s}.json") for s in ("", "-s1"))
        assert [d["seed"] for d in first.identities] == [0, 0]  # type: ignore[attr-defined]
        assert [d["seed"] for d in second.identities] == [1, 1]  # type: ignore[attr-defined]
        assert not (out / "results" / f"{stem}-s2.json").exists()
    a, b = (torch.load(out / "models" / f"tiny{s}-snn" / "last.pt", weights_only=False)["model"] for s in ("", "-s1"))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # another seed: another model
    meta = json.loads((out / "experiment.json").read_text())
    assert meta["settings"]["seeds"] == 2 and set(meta["models"]) == {"tiny", "tiny-s1"}
    assert meta["results"]["compare-tiny-s1"] == {"model": "tiny", "seed": 1}


@pytest.mark.parametrize("seeds", ["0", "-1"])
def test_seeds_below_one_are_a_one_line_error(own: Path, tmp_path: Path, seeds: str) -> None:
    res = CliRunner().invoke(main, ["reproduce", str(own), "--out", str(tmp_path / "out"), "--seeds", seeds])
    assert res.exit_code == 1 and res.output.strip() == f"Error: --seeds must be an integer >= 1, got {seeds}"


def test_a_registered_per_model_analysis_has_a_command_made_from_the_registry(own: Path, tmp_path: Path,
                                                                               monkeypatch) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["reproduce", str(own), "--out", str(out), "--cache", str(tmp_path / "cache"),
                                    "--no-progress", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    monkeypatch.chdir(own.parent)  # --plugin finds the module in the current folder
    models = out / "models"
    cli = ["--plugin", "my_plugin", "mean-logit", str(models / "tiny-ann"), str(models / "tiny-snn"), "--out",
           str(tmp_path / "cli"), "--set", "factor=2.0", "--n-images", "40", "--device", "cpu", "--no-plot"]
    res = CliRunner().invoke(main, cli)
    assert res.exit_code == 0, res.output
    by_cli, by_run = (load_result(p) for p in (tmp_path / "cli" / "mean-logit.json",
                                                out / "results" / "mean-logit-tiny.json"))
    assert by_cli.values == by_run.values and by_cli.settings == {"factor": 2.0}  # type: ignore[attr-defined]
    assert [d["spiking"] for d in by_cli.identities] == [True, False]  # type: ignore[attr-defined]
    res = CliRunner().invoke(main, [*cli[:5], "--out", str(tmp_path / "cli"), "--set", "factr=1"])
    assert res.exit_code == 1 and "unknown setting(s) factr; valid: factor" in res.output, res.output
    res = CliRunner().invoke(main, [*cli[:3], str(models / "tiny-ann"), str(models / "tiny-ann"), "--out",
                                    str(tmp_path / "cli")])
    assert res.exit_code == 1 and "takes an SNN and an ANN checkpoint" in res.output, res.output
