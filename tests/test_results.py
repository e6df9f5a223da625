"""One result format for engine and analysis results; bad input to the analysis commands is one line, early.

Fast: results are built from hand-made matrices (or a two-layer network), no trained model is needed.
"""

from __future__ import annotations

import base64
import json
import re
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import snncka
from snncka import analyses as A
from snncka.checkpoint import CheckpointError, resolve_checkpoint
from snncka.cli import main
from snncka.report import build_report
from snncka.results import CKAResult, TemporalResult, check_output_dir, iter_results, load_result

LAYERS = ["conv1", "s1.b0.act1", "s1.b0", "fc"]


def _cka(matrix: np.ndarray, layers_b: list[str] | None = None) -> CKAResult:
    lb = layers_b or LAYERS
    return CKAResult(matrix=matrix, layers_a=LAYERS, layers_b=lb, kinds_a=["conv", "act", "block", "linear"],
                     kinds_b=["conv", "act", "block", "linear"][: len(lb)], n_images=64, batch_size=32,
                     estimator="unbiased", kernel="linear", ci_low=matrix - 0.01, ci_high=matrix + 0.01,
                     n_batches=2, meta={"model_a": {"name": "resnet8", "spiking": False}})


def _analysis(cka: CKAResult) -> A.CompareAnalysis:
    return A.CompareAnalysis(cka=cka, label_a="ANN resnet8", label_b="SNN resnet8 T4", spiking_a=False,
                             spiking_b=True, accuracy_a=95.0, accuracy_b=None, source_a="a.pt", source_b="b.pt")


def _matrix(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.2, 1.0, (4, 4))


# ---------------------------------------------------------------------------------------- one format


def test_engine_result_from_the_library_is_read_by_the_analysis_side(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    data = [torch.randn(16, 6) for _ in range(2)]
    res = snncka.compare(net, net, data, layers_a="linear", layers_b="linear", progress=False)
    path = res.save(tmp_path / "run" / "cka.npz")
    assert path == tmp_path / "run" / "cka.json" and (tmp_path / "run" / "cka.npz").is_file()
    for p in (path, tmp_path / "run" / "cka.npz"):
        back = load_result(p)
        assert isinstance(back, CKAResult)
        np.testing.assert_array_equal(back.matrix, res.matrix)
        assert (back.layers_a, back.n_batches, back.meta) == (res.layers_a, res.n_batches, res.meta)
    # the report reads a folder written by res.save() and draws the result
    doc = build_report(tmp_path / "run").read_text()
    assert "<h3>cka</h3>" in doc and doc.count("<img") == 2  # heatmap and curve


def test_analysis_result_holds_the_engine_result_and_both_classes_load_it(tmp_path):
    cmp = _analysis(_cka(_matrix()))
    path = cmp.save(tmp_path)  # a folder: <folder>/compare.json + .npz
    assert path == tmp_path / "compare.json"
    meta = json.loads(path.read_text())
    assert meta["snncka_result"] == "compare" and meta["cka"]["snncka_result"] == "cka"
    assert set(np.load(tmp_path / "compare.npz").files) == {"cka.matrix", "cka.ci_low", "cka.ci_high", "cka.batch_ab",
                                                            "cka.batch_aa", "cka.batch_bb"}  # (empty: none kept)
    whole = A.CompareAnalysis.load(path)
    inner = CKAResult.load(tmp_path / "compare.npz")  # the engine's view of a CLI result
    np.testing.assert_array_equal(inner.matrix, cmp.matrix)
    np.testing.assert_array_equal(whole.cka.ci_high, inner.ci_high)
    assert whole.label_b == "SNN resnet8 T4" and whole.accuracy_a == 95.0 and whole.layers_a == LAYERS
    with pytest.raises(ValueError, match="not a TemporalResult"):
        TemporalResult.load(path)


def test_analysis_results_from_matrices_computed_elsewhere(tmp_path):
    m = _matrix()
    r = A.CompareAnalysis.from_matrix(m, LAYERS, LAYERS, ["conv"] * 4, ["conv"] * 4, "SNN x", "ANN x", True, False,
                                      accuracy_a=80.0)
    np.testing.assert_array_equal(r.matrix, m)
    assert r.oriented()[3] == "SNN x" and np.isnan(r.ci_low).all() and r.accuracies() == [("SNN x", 80.0, None)]
    t = A.TemporalAnalysis.from_matrices(np.ones((2, 3, 3)), ["s1.b0", "fc"], ["block", "linear"], 3, "SNN x")
    back = load_result(t.save(tmp_path))
    assert back.T == 3 and back.label == "SNN x" and back.summary()[0]["mean CKA across steps"] == 1.0


def test_the_report_alone_knows_every_kind(tmp_path):
    # a fresh process that imports only the report still reads analysis results (kinds register on demand)
    import subprocess
    import sys

    _analysis(_cka(_matrix())).save(tmp_path)
    code = f"from snncka.report import build_report; print(build_report({str(tmp_path)!r}).read_text())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "<h3>compare</h3>" in out and "ANN resnet8" in out


def test_diagonal_and_corresponding_have_one_meaning_each():
    m = _matrix()
    swapped = ["fc", "s1.b0", "conv1", "s1.b0.act1"]  # B's layers in another order
    r = _cka(m, swapped)
    np.testing.assert_array_equal(r.diagonal(), np.diag(m))  # diagonal: position i vs position i
    names, values = r.corresponding()  # corresponding: same-named layers, in A's order
    assert names == LAYERS
    np.testing.assert_array_equal(values, [m[0, 2], m[1, 3], m[2, 1], m[3, 0]])
    cmp = _analysis(r)
    np.testing.assert_array_equal(cmp.diagonal(), r.diagonal())
    assert cmp.corresponding()[0] == names


def test_a_model_against_itself_reports_no_diagonal():
    m = _matrix()
    np.fill_diagonal(m, 1.0)  # CKA of a layer with itself: 1 by construction
    mine = A.CompareAnalysis(cka=_cka(m), label_a="SNN resnet8 T4", label_b="SNN resnet8 T4", spiking_a=True,
                             spiking_b=True, accuracy_a=95.0, accuracy_b=None, source_a="a.pt", source_b="a.pt")
    row = mine.summary()[0]
    assert not {"mean CKA (diagonal)", "min diagonal", "last layer"} & set(row)
    assert row["mean CKA (matrix)"] == pytest.approx(m.mean())
    other = _analysis(_cka(m)).summary()[0]  # two models: the diagonal is a measurement
    assert other["mean CKA (diagonal)"] == pytest.approx(1.0) and "min diagonal" in other
    seeds = A.SeedsResult(matrices=np.stack([m, _matrix(1)]), pairs=[[0, 0], [0, 1]], labels=["ANN s0", "SNN s0"],
                          spiking=[False, True], layers=LAYERS, n_images=64)
    rows = seeds.summary()
    assert rows[0]["mean CKA (diagonal)"] is None  # ANN s0 vs itself
    assert rows[1]["mean CKA (diagonal)"] == pytest.approx(np.diagonal(_matrix(1)).mean())


def test_plotting_from_python_works_for_engine_and_analysis_results(tmp_path):
    r = _cka(_matrix())
    assert [p.name for p in r.plot(tmp_path)] == ["cka_heatmap.png", "cka_heatmap.svg", "cka_curve.png",
                                                 "cka_curve.svg"]
    assert {p.name for p in _analysis(r).plot(tmp_path, "x")} == {"x_heatmap.png", "x_heatmap.svg",
                                                                  "x_curve.png", "x_curve.svg"}
    t = TemporalResult(layers=LAYERS, kinds=["conv", "act", "block", "linear"],
                       matrices=np.stack([np.eye(3) * 0.1 + 0.9] * 4), T=3, n_images=8, steps=[3] * 4)
    assert [p.name for p in t.plot(tmp_path) if p.suffix == ".png"] == ["temporal-cka_grid.png",
                                                                       "temporal-cka_curve.png"]
    np.testing.assert_allclose(t.off_diagonal_mean(), 0.9)


def test_a_result_of_a_type_no_module_defines_is_a_clear_error(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"snncka_result": "someones-own", "format_version": 2}))
    with pytest.raises(ValueError, match="'someones-own' result, a type no imported module defines"):
        load_result(tmp_path / "x.json")


def test_save_path_and_name_rules(tmp_path):
    r = _cka(_matrix())
    assert r.save(tmp_path / "a.json") == tmp_path / "a.json"
    assert r.save(tmp_path / "sub") == tmp_path / "sub" / "cka.json"
    assert r.save(tmp_path, "mine") == tmp_path / "mine.json"
    with pytest.raises(ValueError, match="plain file name"):
        r.save(tmp_path, "x/y")
    with pytest.raises(FileNotFoundError, match="no saved result"):
        load_result(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="is a folder"):
        load_result(tmp_path)


# ---------------------------------------------------------------------------------- NaN and bad files


def test_a_result_with_nan_saves_plots_and_reports(tmp_path):
    m = np.full((4, 4), np.nan)  # e.g. a model whose features are not finite: every CKA undefined
    cmp = _analysis(_cka(m))
    cmp.save(tmp_path)
    back = load_result(tmp_path / "compare.json")
    assert np.isnan(back.matrix).all()
    row = back.summary()[0]
    assert np.isnan(row["mean CKA (matrix)"]) and row["undefined entries"] == 16
    assert len(back.plot(tmp_path / "figs")) == 4
    doc = build_report(tmp_path).read_text()
    assert ">–</td>" in doc and ">nan<" not in doc


def test_report_skips_a_bad_file_with_a_warning(tmp_path):
    _analysis(_cka(_matrix())).save(tmp_path / "good")
    (tmp_path / "bad_run").mkdir()
    (tmp_path / "bad_run" / "config.json").write_text("[1, 2]")  # valid JSON, not an object
    (tmp_path / "bad_run" / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "compare.json").write_text(json.dumps({"snncka_result": "compare"}))  # no fields
    with pytest.warns(UserWarning) as caught:
        doc = build_report(tmp_path).read_text()
    msgs = " ".join(str(w.message) for w in caught)
    assert "bad_run" in msgs and "broken" in msgs
    assert "Skipped files" in doc and "<h3>compare</h3>" in doc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert [p.parent.name for p, _ in iter_results(tmp_path)] == ["good"]
    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code == 0 and "Warning: skipped training run" in res.output


def test_environment_table_has_one_row_per_environment(tmp_path):
    env = {"snncka": "0.1", "python": "3.11", "platform": "Linux-" + "x" * 200, "command": ["a"], "date": "d1"}
    for k in range(3):
        r = _analysis(_cka(_matrix(k)))
        r.environment = {**env, "command": [f"cmd{k}"], "date": f"d{k}"}
        r.save(tmp_path, f"r{k}")
    doc = build_report(tmp_path).read_text()
    env_html = doc.split("id='environment'")[1].split("</table>")[0]
    assert env_html.count("<tr>") == 3  # header, this report, the three results (one environment)
    assert "r0.json<br>r1.json<br>r2.json" in env_html and "overflow-wrap:anywhere" in doc


# ------------------------------------------------------------------------------------ CLI bad input


def _cli(*args: str):
    return CliRunner().invoke(main, list(args))


def _one_line_error(res, text: str) -> None:
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and text in lines[0], res.output


def test_outputs_are_checked_before_anything_is_loaded(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    missing = str(tmp_path / "no.pt")  # the error must be about --out, not about the checkpoint
    for cmd in (["compare", missing], ["temporal", missing], ["blocks", missing], ["robustness", missing],
                ["probe", missing], ["seeds", missing, missing], ["rates", missing]):
        _one_line_error(_cli(*cmd, "--out", str(blocker / "sub")), "is a file")
    _one_line_error(_cli("compare", missing, "--out", str(blocker)), "is a file")
    _one_line_error(_cli("compare", missing, "--out", str(tmp_path), "--name", "a/b"), "plain file name")
    _one_line_error(_cli("report", str(tmp_path), "--out", str(blocker / "r.html")), "is a file")
    with pytest.raises(ValueError, match="is a file"):
        check_output_dir(blocker)


def test_counts_and_penalties_are_validated_first(tmp_path):
    missing = str(tmp_path / "no.pt")
    out = str(tmp_path / "out")
    _one_line_error(_cli("rates", missing, "--out", out, "--n-images", "0"), "n_images (--n-images) must be at")
    _one_line_error(_cli("probe", missing, "--out", out, "--n-train", "0"), "n_train (--n-train) must be at")
    _one_line_error(_cli("probe", missing, "--out", out, "--n-test", "-3"), "n_test (--n-test) must be at")
    _one_line_error(_cli("probe", missing, "--out", out, "--l2", "-1"), "L2 penalty (--l2) must be")
    _one_line_error(_cli("probe", missing, "--out", out, "--batch-size", "0"), "batch_size (--batch-size) must")
    _one_line_error(_cli("rates", missing, "--out", out, "--batch-size", "0"), "batch_size (--batch-size) must")
    _one_line_error(_cli("compare", missing, "--out", out, "--n-images", "0"), "does not exist")  # checkpoint
    res = _cli("temporal", missing, "--out", out, "--data-root", str(tmp_path / "nonexist"))
    _one_line_error(res, "data folder")
    assert "does not exist" in res.output and "pass --data-root" not in res.output


def test_every_analysis_that_runs_on_checkpoints_has_its_command_and_cka_commands_share_the_cka_options():
    import click

    from snncka import registry
    from snncka.cli import main
    from snncka.cli.analysis import analysis_command

    listed = set(main.list_commands(click.Context(main)))
    for name, entry in registry.analyses().items():
        cmd = analysis_command(name)
        assert (cmd is not None) == entry.on_checkpoints, name  # e.g. the paper's accuracy tables need a whole run
        if cmd is not None:
            assert name in listed and main.get_command(click.Context(main), name) is cmd
            opts = {o for p in cmd.params for o in p.opts}
            if "--layers" in opts:  # a CKA command: every shared CKA option
                assert {"--biased", "--kernel", "--n-images", "--batch-size", "--layers"} <= opts, name
    assert {"compare", "self", "temporal", "blocks", "robustness", "probe", "seeds", "rates"} <= listed


# -------------------------------------------------------------------------------- which checkpoint


def test_resolve_checkpoint(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"")
    assert resolve_checkpoint(run) == run / "last.pt"
    assert resolve_checkpoint(run, "best") == run / "last.pt"  # a run that never evaluated: last.pt
    (run / "best.pt").write_bytes(b"")
    assert resolve_checkpoint(run, "best") == run / "best.pt" and resolve_checkpoint(run) == run / "last.pt"
    assert resolve_checkpoint(run / "x.pt") == run / "x.pt"  # a file path is itself
    with pytest.raises(CheckpointError, match="no last.pt"):
        resolve_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="'last' or 'best'"):
        resolve_checkpoint(run, "first")


def test_report_shows_the_figures_a_run_drew_and_redraws_changed_ones(tmp_path, monkeypatch):
    """A run saves each result with the names and hashes of the figures drawn from it (``save_drawn``); the
    report embeds those files instead of drawing them again, and redraws when one is missing or changed."""
    from snncka.results import saved_figures
    from snncka.runner import save_drawn

    run = tmp_path / "run"
    save_drawn(_analysis(_cka(_matrix())), run, "compare-resnet8")
    js = run / "results" / "compare-resnet8.json"
    drawn = saved_figures(js, run / "figures")
    assert [q.name for q in drawn] == ["compare-resnet8_heatmap.png", "compare-resnet8_curve.png"]
    calls = []
    real_plot = A.CompareAnalysis.plot
    monkeypatch.setattr(A.CompareAnalysis, "plot", lambda self, *a, **k: calls.append(1) or real_plot(self, *a, **k))
    doc = build_report(run).read_text()
    assert calls == [] and doc.count("<img") == 2  # embedded as drawn by the run
    embedded = re.findall(r"data:image/png;base64,([^']+)", doc)
    assert sorted(base64.b64decode(e) for e in embedded) == sorted(q.read_bytes() for q in drawn)
    drawn[0].write_bytes(drawn[0].read_bytes() + b"\0")  # changed since: not trusted, drawn again
    assert saved_figures(js, run / "figures") is None
    assert build_report(run).read_text().count("<img") == 2 and calls == [1]
