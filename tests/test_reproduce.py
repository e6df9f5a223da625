"""The experiment registry, the runner and `snncka demo` / `snncka reproduce`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from snncka import analyses, launch, registry
from snncka.analyses import block_subset, check_block_names
from snncka.cli import main
from snncka.experiment import load_experiment
from snncka.launch import cache_key
from snncka.models import create
from snncka.models import load as load_model
from snncka.paper import findings, list_experiments
from snncka.paper.numbers import numbers as paper_numbers
from snncka.paper.numbers import row as paper_row
from snncka.paper.numbers import value as paper_value
from snncka.paper.tables import PaperComparison, table_key, with_stage_T
from snncka.runner import run, train_config

IDS = ["fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8", "appA1", "appA2", "appA3", "appC", "paper-vs-code"]
FAST = {"fig3", "fig7", "fig8", "appC"}  # the rest run under the slow marker
SINGLE = [i for i in IDS if i != "paper-vs-code"]  # one recipe each (paper-vs-code: tests/test_paper_vs_code.py)
SMOKE = dict(epochs=1, cka_images=96, progress=False, device="cpu")


def test_every_experiment_of_the_spec_is_registered_and_valid() -> None:
    assert [e.id for e in list_experiments()] == IDS
    for exp in list_experiments():
        assert exp.title and exp.description
        for scale in ("smoke", "paper"):
            settings = exp.settings(scale)
            specs = exp.resolve(scale)
            assert specs, (exp.id, scale)
            for s in specs:  # every model can be built with the scale's data shape (on the meta device: shapes
                # only, no weights to allocate and initialise for the paper's ResNet-164 and VGG-13 x10)
                ch = 2 if "dvs" in (s.data or settings.get("data", "")) or s.data == "ncaltech101" else (
                    1 if (s.data or settings.get("data")) == "digits" else 3)
                with torch.device("meta"):
                    create(s.arch, spiking=True, width=s.width, T=s.T, residual=s.residual, stage_T=s.stage_T,
                           in_channels=ch)
        assert {a["analysis"] for a in exp.analyses} <= set(registry.analyses())


def test_paper_numbers_match_the_paper_text() -> None:
    n = paper_numbers()
    assert "Li, Kim, Park, Panda" in n["source"]
    assert paper_row("table1", {"model": "resnet164", "width": 1}) == {
        "model": "resnet164", "width": 1, "ann": 93.00, "snn": 92.05}
    assert paper_row("table2", {"model": "resnet56", "residual": False})["snn"] == 33.61
    assert paper_row("table3", {"variant": "last_stage_1", "T": 16})["snn"] == 87.38
    assert paper_row("fig8", {"eps": 0.01}) == {"eps": 0.01, "ann": 48.30, "snn": 68.04}
    assert paper_row("tableB1", {"model": "resnet20", "width": 4, "T": 4})["snn_c100"] == 72.39


def test_paper_tables_cover_every_model_of_their_experiment() -> None:
    for exp_id, kinds, unreported in [("fig2", 18, set()), ("fig5", 12, {"resnet20-T128"}), ("fig6", 12, set()),
                                      ("appA2", 20, set())]:
        exp = load_experiment(exp_id)
        table = next(a for a in exp.analyses if a["analysis"] == "accuracy")
        specs = [s for s in exp.resolve("paper") if s.id in table.get("models", [s.id])]
        missing = {s.id for s in specs if paper_row(table["table"], table_key(exp.paper_spec(s.id))) is None}
        assert missing == unreported, exp_id  # T=128 is in Fig. 5 but not in Table B.1
        assert sum(len(s.types) for s in specs) == kinds
    # Table 2: every fully residual or fully non-residual model has a row; the partial ones don't.
    exp = load_experiment("fig4")
    for s in exp.resolve("paper"):
        row = paper_row("table2", table_key(exp.paper_spec(s.id)))
        assert (row is None) == ("nores-s" in s.id), s.id


def test_smoke_overrides_and_skips() -> None:
    exp = load_experiment("fig2")
    smoke = {s.id: s for s in exp.resolve("smoke")}
    assert "resnet164" not in smoke and smoke["resnet20"].arch == "resnet8"
    assert {s.id: s for s in exp.resolve("paper")}["resnet20"].arch == "resnet20"
    assert exp.settings("smoke")["data"] == "digits" and exp.settings("paper")["epochs"] == 300


def test_an_ann_is_shared_by_specs_that_differ_only_in_snn_settings() -> None:
    exp = load_experiment("fig5")
    settings = exp.settings("paper")
    specs = exp.resolve("paper")
    ann = {cache_key(train_config(s, "ann", settings)) for s in specs}
    snn = {cache_key(train_config(s, "snn", settings)) for s in specs}
    assert len(ann) == 1 and len(snn) == len(specs)
    # run-time options (device, progress, data location) don't change what is trained
    s = specs[0]
    assert cache_key(train_config(s, "ann", settings)) == cache_key(
        train_config(s, "ann", settings, device="cpu", progress=False, data_root="/x"))


def test_unknown_experiment_lists_valid_ids() -> None:
    res = CliRunner().invoke(main, ["reproduce", "fig99"])
    assert res.exit_code != 0
    for i in IDS:
        assert i in res.output
    with pytest.raises(ValueError, match="valid IDs: fig2, fig3"):
        load_experiment("nope")


def test_list_prints_every_experiment() -> None:
    res = CliRunner().invoke(main, ["reproduce", "--list"])
    assert res.exit_code == 0, res.output
    for i in IDS:
        assert f"snncka reproduce {i} --scale smoke" in res.output


def test_paper_scale_without_the_dataset_says_where_to_put_it(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["reproduce", "fig2", "--scale", "paper", "--data-root", str(tmp_path),
                                    "--out", str(tmp_path / "out")])
    assert res.exit_code != 0
    assert "cifar-10-python.tar.gz" in res.output and "--download" in res.output
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written


def _check_experiment(exp_id: str, out: Path, cache: Path) -> None:
    for _ in range(3):  # reruns into one folder reuse every model and result, and leave no temporary file
        report = run(exp_id, "smoke", out, cache=cache, **SMOKE)
    html = report.read_text()
    meta = json.loads((out / "experiment.json").read_text())
    # every temporary file was renamed over its target or removed: in the run folder, and in the cache folders
    # of the models this run used (not the whole cache: other xdist workers train other models in it meanwhile)
    used = [Path(run_dir) for nets in meta["models"].values() for run_dir in nets.values()]
    assert used and all(d.is_relative_to(cache) for d in used), used
    left = [p for d in (out, *used) for p in d.rglob("*.tmp")]
    assert not left, left
    exp = load_experiment(exp_id)
    results = sorted((out / "results").glob("*.json"))
    assert results, exp_id
    for p in results:
        res = analyses.load_result(p)
        figs = list((out / "figures").glob(f"{p.stem}_*.png"))
        assert figs or not res.plot(out / "tmp-figures", p.stem), p  # every plottable result has its figures
    kinds = {a["analysis"] for a in exp.analyses}
    names = {p.stem for p in results}
    if "compare" in kinds:
        assert any(n.startswith("compare-") for n in names)
    if "temporal" in kinds:
        t = analyses.load_result(next(p for p in results if p.stem.startswith("temporal")))
        import numpy as np

        d = np.array([np.diag(m)[: t.T] for m in t.matrices])
        assert np.allclose(d[~np.isnan(d)], 1.0, atol=1e-6)
    table = next((a["table"] for a in exp.analyses if "table" in a), None)  # the paper table it is set beside
    if table and ("accuracy" in kinds or "robustness" in kinds):
        paper = [analyses.load_result(p) for p in results if p.stem.startswith("paper-")]
        assert paper and all(r.rows for r in paper)
        assert any(r["paper (%)"] is not None for t in paper for r in t.rows)
        assert "paper (%)" in html
    if any(a.get("without_retraining") for a in exp.analyses):  # Table 3: both protocols, labelled
        rows = analyses.load_result(out / "results" / f"paper-{table}.json").rows
        protocols = {r["model"]: r["protocol"] for r in rows}
        assert protocols["snn-T4-first1"] == "retrained"
        assert protocols["reuse-snn-T4-first1"] == protocols["reuse-snn-T4-last1"] == "full-T weights, no retraining"
        assert "full-T weights, no retraining" in html
    assert meta["id"] == exp_id and meta["settings"]["epochs"] == 1 and meta["recipe"] == "paper"
    # the paper's findings, judged on this experiment's own results, in the report
    found = analyses.load_result(out / "results" / "findings.json")
    assert found.recipes == ["paper"] and len(found.verdicts["paper"]) == len(findings.ORDER)
    for row in found.verdicts["paper"]:  # each with its effect, 95 % interval, threshold and seeds
        assert {"verdict", "effect", "interval", "threshold", "seeds_holding", "seeds_total"} <= set(row)
    assert "judged on" in html and "trends only" in html
    assert html.count("<img") >= len(list((out / "figures").glob("*.png")))


@pytest.mark.parametrize("exp_id", [i for i in SINGLE if i in FAST])
def test_fast_experiments_run_end_to_end(exp_id: str, tmp_path: Path, small_digits: Path) -> None:
    _check_experiment(exp_id, tmp_path / exp_id, small_digits)


@pytest.mark.slow
@pytest.mark.parametrize("exp_id", [i for i in SINGLE if i not in FAST])
def test_slow_experiments_run_end_to_end(exp_id: str, tmp_path: Path, small_digits: Path) -> None:
    _check_experiment(exp_id, tmp_path / exp_id, small_digits)


def test_interrupted_reproduce_resumes_without_retraining(tmp_path: Path, monkeypatch, small_digits) -> None:
    cache, out = tmp_path / "cache", tmp_path / "out"

    def broken(*a, **k):
        raise RuntimeError("killed during the analyses")

    seeds = analyses.seeds_analysis.seeds
    monkeypatch.setattr(analyses.seeds_analysis, "seeds", broken)
    with pytest.raises(RuntimeError, match="killed"):
        run("appC", "smoke", out, cache=cache, **SMOKE)
    trained = sorted(p.name for p in cache.iterdir())
    assert len(trained) == 4  # two seeds x ANN/SNN finished before the "kill"
    monkeypatch.setattr(analyses.seeds_analysis, "seeds", seeds)  # (the small data stays)

    calls = []
    real_train = launch.train
    monkeypatch.setattr(launch, "train", lambda *a, **k: calls.append(a) or real_train(*a, **k))
    run("appC", "smoke", out, cache=cache, **SMOKE)
    assert calls == []  # every model came from the cache
    assert (out / "results" / "seeds.json").is_file() and (out / "report.html").is_file()


def test_demo_end_to_end(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "demo"), "--cache", str(tmp_path / "c"),
                                    "--epochs", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "report:" in res.output and (tmp_path / "demo" / "report.html").is_file()
    names = {p.stem for p in (tmp_path / "demo" / "results").glob("*.json")}
    assert names == {"compare-resnet20", "temporal-resnet20", "findings"}
    cmp = analyses.load_result(tmp_path / "demo" / "results" / "compare-resnet20.json")
    assert cmp.matrix.shape == (len(cmp.layers_a), len(cmp.layers_b)) and len(cmp.layers_a) > 60
    assert list((tmp_path / "demo" / "figures").glob("compare-resnet20_heatmap.png"))
    # the trained checkpoints lie where the demo says, and other commands take them
    for kind in ("ann", "snn"):
        ckpt = tmp_path / "demo" / "models" / f"resnet20-{kind}" / "last.pt"
        assert f"model:   {ckpt}" in res.output
        assert load_model(ckpt).spiking == (kind == "snn")
    res = CliRunner().invoke(main, ["compare", str(tmp_path / "demo" / "models" / "resnet20-snn" / "last.pt"),
                                    str(tmp_path / "demo" / "models" / "resnet20-ann" / "last.pt"),
                                    "--n-images", "64", "--out", str(tmp_path / "cmp"), "--quiet", "--no-plot"])
    assert res.exit_code == 0, res.output


def test_scale_settings_are_shared_and_overridden_per_experiment() -> None:
    for exp in list_experiments():
        paper, smoke = exp.settings("paper"), exp.settings("smoke")
        assert paper["epochs"] == 300 and paper["cka_images"] == 4096 and smoke["data"] == "digits"
        assert (paper["seeds"], smoke["seeds"]) == (3, 1)  # smoke: the one-seed times; paper: a spread per finding
        assert paper["data"] == ("cifar100" if exp.id == "appA2" else "cifar10")
        assert paper["batch_size"] == (128 if exp.id in ("fig7", "appA3") else 256)
    assert load_experiment("demo").settings("smoke")["epochs"] != load_experiment("fig2").settings("smoke")["epochs"]


def test_names_say_what_was_trained_and_what_the_paper_used() -> None:
    smoke = {s.id: s.name for s in load_experiment("fig3").resolve("smoke")}
    assert smoke == {"resnet110": "resnet20-for-resnet110"}
    fig2 = {s.id: s.name for s in load_experiment("fig2").resolve("smoke")}
    assert fig2["resnet20x2"] == "resnet8x2-for-resnet20x2" and fig2["resnet56"] == "resnet20-for-resnet56"
    fig5 = {s.id: s.name for s in load_experiment("fig5").resolve("smoke")}
    assert fig5["resnet20-T8"] == "resnet20-T4-for-resnet20-T8"
    assert {s.id: s.name for s in load_experiment("fig6").resolve("smoke")}["snn-T4-first1"] == "snn-T4-first1"
    for exp in list_experiments():  # at paper scale every model is what the paper trained
        assert all(s.name == s.id for s in exp.resolve("paper"))


@pytest.mark.parametrize("args, message", [
    (["--cka-images", "0"], "--cka-images must be an integer >= 4"),
    (["--epochs", "0"], "--epochs must be an integer >= 1"),
    (["--seeds", "0"], "--seeds must be an integer >= 1, got 0"),
    (["--seeds", "-2"], "--seeds must be an integer >= 1, got -2"),
    (["--launcher", "local", "--jobs", "0"], "--jobs must be >= 1"),
    (["--launcher", "slurm", "--time", "soon"], "--time 'soon'"),
])
def test_bad_overrides_are_rejected_before_any_training(tmp_path: Path, args: list[str], message: str) -> None:
    res = CliRunner().invoke(main, ["reproduce", "fig3", "--out", str(tmp_path / "out"), "--cache",
                                    str(tmp_path / "cache"), "--no-progress", *args])
    assert res.exit_code == 1 and message in res.output, res.output
    assert not (tmp_path / "cache").exists()


def test_an_output_folder_below_a_file_is_rejected_before_training(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    res = CliRunner().invoke(main, ["reproduce", "fig3", "--out", str(tmp_path / "file" / "out"), "--cache",
                                    str(tmp_path / "cache")])
    assert res.exit_code == 1 and "a file is in the way" in res.output, res.output
    assert not (tmp_path / "cache").exists()


def test_every_analysis_of_the_experiments_is_registered() -> None:
    kinds = {a["analysis"] for e in list_experiments() for a in e.analyses}
    assert kinds <= set(registry.analyses())


def test_paper_numbers_are_a_reference_only_below_paper_scale() -> None:
    rows = [{"model": "resnet20", "type": "SNN", "paper setting": "model=resnet20", "ours (%)": 95.0,
             "paper (%)": 91.0}]
    at_paper = PaperComparison(table="table1", caption="", rows=rows, scale="paper").summary()
    assert at_paper[0]["difference"] == pytest.approx(4.0)
    smoke = PaperComparison(table="table1", caption="", rows=rows, scale="smoke").summary()
    assert not any("difference" in k for k in smoke[0])
    assert smoke[0]["ours, smoke scale (%)"] == 95.0
    assert any("not comparable" in k for k in smoke[0])


def test_full_T_weights_rebuilt_with_mixed_steps_are_the_same_weights() -> None:
    torch.manual_seed(0)
    full = create("resnet8", spiking=True, T=4, in_channels=1).eval()
    x = 20 * torch.rand(3, 1, 8, 8)  # strong enough to make every stage spike at initialisation
    same = with_stage_T(full, None)
    assert torch.equal(same(x), full(x))  # stage_T=None: the model itself
    first1 = with_stage_T(full, [1, 4, 4])
    assert first1.config["stage_T"] == [1, 4, 4] and first1.state_dict().keys() == full.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(first1.state_dict().values(), full.state_dict().values(),
                                                  strict=True))
    # the same as a model built with stage_T given the full model's state dict, and not the full model
    built = create("resnet8", spiking=True, T=4, in_channels=1, stage_T=[1, 4, 4])
    built.load_state_dict(full.state_dict())
    with torch.no_grad():
        assert torch.equal(first1(x), built.eval()(x)) and not torch.equal(first1(x), full(x))
    with pytest.raises(ValueError, match="spiking models only"):
        with_stage_T(create("resnet8", spiking=False, in_channels=1), [1, 4, 4])


def test_ambiguous_paper_values_show_every_reading() -> None:
    row = paper_row("fig8", {"eps": 0.05})
    assert paper_value(row, "ann") == "0.1 or 0.11 (printed '0.111.88')"
    assert paper_value(row, "snn") == "11.88 or 1.88 (printed '0.111.88')"
    assert paper_value(paper_row("fig8", {"eps": 0.01}), "snn") == 68.04
    rows = [{"model": "resnet20", "type": "ANN", "paper setting": "eps=0.05", "ours (%)": 3.0,
             "paper (%)": paper_value(row, "ann")}]
    summary = PaperComparison(table="fig8", caption="", rows=rows, scale="paper").summary()
    assert summary[0]["difference"] is None and "or" in summary[0]["paper (%)"]


def test_single_block_analysis_and_its_block_names() -> None:
    from types import SimpleNamespace

    import numpy as np

    names = ["conv1", "s1.b0.act1", "s1.b0.conv1", "s1.b0", "s1.b1.act1", "s1.b1.conv1", "s1.b1", "fc"]
    kinds = ["conv", "act", "conv", "block", "act", "conv", "block", "linear"]
    curve = np.array([0.9, 0.5, 0.4, 0.8, 0.3, 0.2, 0.7, 0.6])
    cmp = SimpleNamespace(corresponding=lambda: (names, curve), layers_a=names, kinds_a=kinds, label_a="SNN",
                          label_b="ANN")
    res = block_subset(cmp, "s1.b1")
    assert res.layers == ["s1.b1.act1", "s1.b1.conv1", "s1.b1"] and res.block_names == ["s1.b1"]
    assert res.type_means == pytest.approx({"LIF/ReLU": 0.3, "conv": 0.2, "residual output": 0.7})
    with pytest.raises(ValueError, match="its blocks: s1.b0, s1.b1"):
        block_subset(cmp, "s2.b0")
    check_block_names(["s1.b9", "s2.b15"], "resnet110", "x")  # 18 blocks per stage
    for bad, arch in (("s2.b18", "resnet110"), ("s4.b0", "resnet20"), ("b1", "resnet20"), ("s1.b0", "vgg13")):
        with pytest.raises(ValueError):
            check_block_names([bad], arch, "x")
    exp = load_experiment("appA2")  # Fig. A.5's blocks exist at both scales (smoke overrides them)
    for scale in ("smoke", "paper"):
        a = next(a for a in exp.analyses_at(scale) if a["analysis"] == "blocks")
        specs = {s.id: s for s in exp.resolve(scale)}
        check_block_names(a["blocks"], specs["resnet110"].arch, scale)
    assert next(a for a in exp.analyses_at("paper") if a["analysis"] == "robustness-table")["table"] == "figA9"
