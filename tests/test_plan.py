"""The compute plan: MACs against a hand count, time against the calibration, features against a recorder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from snncka import data
from snncka.cli import main
from snncka.launch import ensure_trained
from snncka.models import create
from snncka.plan import CALIBRATION, DATASETS, count_macs, feature_sizes, model_cost, plan
from snncka.record import record
from snncka.training import TrainConfig


def _resnet8_digits_macs_by_stage() -> tuple[int, int, int, int, int]:
    """Hand count for ResNet-8 (one block per stage, 16/32/64 channels) on 1x8x8 digits, 10 classes:
    (stem, stage 1, stage 2, stage 3, fc) multiply-accumulates of one image."""
    stem = 8 * 8 * 16 * 1 * 9
    s1 = 2 * (8 * 8 * 16 * 16 * 9)
    s2 = 4 * 4 * 32 * 16 * 9 + 4 * 4 * 32 * 32 * 9 + 4 * 4 * 32 * 16  # conv1 (stride 2), conv2, 1x1 shortcut
    s3 = 2 * 2 * 64 * 32 * 9 + 2 * 2 * 64 * 64 * 9 + 2 * 2 * 64 * 32
    fc = 64 * 10
    return stem, s1, s2, s3, fc


def test_macs_equal_a_hand_count() -> None:
    stem, s1, s2, s3, fc = _resnet8_digits_macs_by_stage()
    ann = TrainConfig(model="resnet8", spiking=False, T=1, data="digits")
    assert count_macs(ann) == stem + s1 + s2 + s3 + fc == 763_520
    snn = TrainConfig(model="resnet8", spiking=True, T=4, data="digits")
    assert count_macs(snn) == 4 * (stem + s1 + s2 + s3 + fc)
    # mixed time steps (Table 3): stage 1 (and the stem) with one step, stages 2-3 and the head with 4
    mixed = TrainConfig(model="resnet8", spiking=True, T=4, stage_T=[1, 4, 4], data="digits")
    assert count_macs(mixed) == stem + s1 + 4 * (s2 + s3 + fc)
    last1 = TrainConfig(model="resnet8", spiking=True, T=4, stage_T=[4, 4, 1], data="digits")
    assert count_macs(last1) == 4 * (stem + s1 + s2) + s3 + fc


def test_reference_models_are_measured_and_others_scaled() -> None:
    snn = TrainConfig(model="resnet20", spiking=True, T=4, data="cifar10", epochs=300)
    cost = model_cost(snn)
    assert cost.measured and "measured" in cost.basis
    assert cost.gpu_hours(300) == pytest.approx(300 * CALIBRATION["snn"].epoch_s / 3600)
    assert CALIBRATION["snn"].epoch_s == 8.776 and CALIBRATION["ann"].epoch_s == 3.249  # RESULTS.md, H200
    ann = model_cost(TrainConfig(model="resnet20", spiking=False, T=1, data="cifar10"))
    assert ann.measured and ann.epoch_s == pytest.approx(3.249)
    t8 = model_cost(TrainConfig(model="resnet20", spiking=True, T=8, data="cifar10"))
    assert not t8.measured and "extrapolated" in t8.basis and t8.epoch_s == pytest.approx(2 * 8.776)
    # CIFAR-100 differs only in the classifier (64 x 100 instead of 64 x 10 MACs)
    c100 = model_cost(TrainConfig(model="resnet20", spiking=False, T=1, data="cifar100"))
    assert c100.macs - ann.macs == 64 * 90 and not c100.measured
    vgg = model_cost(TrainConfig(model="vgg13", spiking=True, T=4, data="cifar10"))
    assert "no vgg measurement" in vgg.basis


def test_feature_sizes_equal_what_the_recorder_records() -> None:
    cfg = TrainConfig(model="resnet8", spiking=True, T=2, stage_T=[2, 2, 1], data="digits")
    model = create("resnet8", spiking=True, T=2, stage_T=[2, 2, 1], in_channels=1).eval()
    feats = record(model, [torch.randn(3, 1, 8, 8)])
    assert feature_sizes(cfg) == {k: v.shape[1] for k, v in feats.items()}


def test_disk_is_two_state_dicts_and_the_momentum() -> None:
    cfg = TrainConfig(model="resnet8", spiking=False, T=1, data="digits")
    model = create("resnet8", spiking=False, in_channels=1)
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    params = sum(p.numel() for p in model.parameters()) * 4
    assert model_cost(cfg).disk_bytes == 2 * state + params


def test_dataset_table_matches_the_embedded_data() -> None:
    ds = data.get("digits")
    shape = DATASETS["digits"]
    assert (shape.n_train, shape.n_test, shape.classes) == (len(ds.y_train), len(ds.y_test), ds.num_classes)
    assert (shape.channels, shape.height, shape.width) == tuple(ds.x_train.shape[1:])


def test_plan_marks_cached_models_and_counts_only_what_is_left(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    before = plan(["appC"], "smoke", cache, epochs=1)
    assert [m.label for m in before] == [f"resnet8-for-seed{i}-{k}" for i in (0, 1) for k in ("ann", "snn")]
    assert all(m.done == 0 for m in before)
    first = before[0]
    ensure_trained(TrainConfig(**{**first.cfg.__dict__, "device": "cpu", "progress": False}), cache)
    after = plan(["appC"], "smoke", cache, epochs=1)
    assert after[0].done == 1 and after[0].remaining_hours == 0
    assert sum(m.remaining_hours for m in after) == pytest.approx(
        sum(m.remaining_hours for m in before) - first.remaining_hours)
    res = CliRunner().invoke(main, ["reproduce", "appC", "--plan", "--epochs", "1", "--cache", str(cache)])
    assert res.exit_code == 0, res.output
    assert "1 already in the cache" in res.output and "cached;" in res.output


def test_plan_counts_every_seed(tmp_path: Path) -> None:
    one = plan(["fig3"], "smoke", tmp_path, epochs=1)
    two = plan(["fig3"], "smoke", tmp_path, epochs=1, seeds=2)
    assert [m.label for m in two] == [m.label for m in one] + [m.label.replace("-ann", "-s1-ann").replace(
        "-snn", "-s1-snn") for m in one]
    assert len({m.run_dir for m in two}) == 2 * len(one) and [m.cfg.seed for m in two] == [0, 0, 1, 1]
    assert sum(m.remaining_hours for m in two) == pytest.approx(2 * sum(m.remaining_hours for m in one))
    paper = plan(["fig3"], "paper", tmp_path)  # the paper scale's default: three seeds
    assert sorted({m.cfg.seed for m in paper}) == [0, 1, 2] and len(paper) == 3 * len(one)
    res = CliRunner().invoke(main, ["reproduce", "fig3", "--plan", "--seeds", "0"])
    assert res.exit_code == 1 and res.output.strip() == "Error: --seeds must be an integer >= 1, got 0"


def test_plan_of_everything_at_paper_scale() -> None:
    res = CliRunner().invoke(main, ["reproduce", "all", "--plan", "--scale", "paper"])
    assert res.exit_code == 0, res.output
    for exp_id in ("fig2", "fig7", "appC"):
        assert f"{exp_id} at paper scale" in res.output
    assert "measured: SNN resnet20 T=4 cifar10" in res.output and "extrapolated" in res.output
    assert "GPU-hours to train" in res.output


def test_list_counts_the_models_the_plan_lists() -> None:
    """`reproduce --list` and `--plan` give one count per experiment and scale (every seed, shared models once)."""
    import re

    listed = CliRunner().invoke(main, ["reproduce", "--list"]).output
    assert listed.startswith("models: the networks trained (an ANN and an SNN count as two; one shared by several "
                             "entries counts once; every seed of the scale's)")  # says what it counts
    counts = dict(re.findall(r"\n(\S+) .*\n\s+models: (\d+) at paper scale", listed))
    assert counts["fig2"] == "54"  # 9 networks x ANN/SNN x 3 seeds
    for exp_id in ("fig2", "fig3"):
        for scale in ("paper", "smoke"):
            res = CliRunner().invoke(main, ["reproduce", exp_id, "--plan", "--scale", scale])
            n = int(re.search(rf"{exp_id} at {scale} scale: (\d+) models", res.output).group(1))
            assert f"{n} at {scale} scale" in listed.split(f"\n{exp_id} ")[1].splitlines()[1], (exp_id, scale)
    assert int(counts["fig2"]) == len(plan(["fig2"], "paper", Path("/nonexistent-cache")))
