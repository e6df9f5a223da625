"""Hard limits at the edge: every absurd size, wrong type or too-big run is one ``Error:`` line naming the key
and its valid range (or what to lower), before anything large is allocated."""

from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner

from snncka import memory
from snncka.checkpoint import save_checkpoint
from snncka.cli import main
from snncka.models import create, load_released_state_dict
from snncka.trainconfig import TrainConfig
from snncka.training import memory_parts


def _one_error(args: list[str], match: str) -> str:
    res = CliRunner().invoke(main, args)
    lines = res.output.strip().splitlines()
    assert res.exit_code == 1, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    assert match in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("args,match", [
    (["--spiking", "--T", "100000000"], "T must be a positive integer, got 100000000; valid range [1, 1024]"),
    (["--width", "1e6"], "width must be a finite number >= 0.0625, got 1000000.0; valid range [0.0625, 64]"),
    (["--width", "inf"], "width must be a finite number >= 0.0625, got inf; valid range [0.0625, 64]"),
    (["--width", "1e-9"], "width must be a finite number >= 0.0625, got 1e-09; valid range [0.0625, 64]"),
    (["--data", "digits-dvs", "--spiking", "--frames", "100000000"],
     "frames must be a positive integer, got 100000000; valid range [1, 1024]"),
    (["--batch-size", "1000000000000"],
     "batch_size must be a positive integer, got 1000000000000; valid range [1, 65536]"),
    (["--spiking", "--alpha", "inf"], "neuron.alpha must be a finite number > 0, got inf; valid range (0, 1e+06]"),
    (["--epochs", "0"], "epochs must be a positive integer, got 0; valid range [1, 100000]"),
])
def test_train_options_out_of_range(tmp_path, args, match):
    _one_error(["train", *args, "--out", str(tmp_path / "run")], match)
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_models_width_out_of_range():
    _one_error(["models", "--width", "1e12"],
               "width must be a finite number >= 0.0625, got 1000000000000.0; valid range [0.0625, 64]")


@pytest.mark.parametrize("toml,match", [
    ("seed = 1.5", "seed must be a non-negative integer, got 1.5 (float); valid range [0, 9223372036854775807]"),
    ('width = "2"', "width must be a finite number >= 0.0625, got '2' (str); valid range [0.0625, 64]"),
    ("model = 20", "model must be a string, got 20 (int)"),
    ("neuron = 3", "neuron must be a table of LIF arguments"),
    ('[neuron]\ntau = "0.5"', "neuron.tau must be a finite number > 0, got '0.5' (str); valid range (0, 1]"),
    ('spiking = "false"', "spiking must be true or false, got 'false' (str)"),
    ("residual = [true, \"no\", true]", "residual[1] must be true or false, got 'no' (str)"),
    ("data_seed = " + "[" * 5000 + "]" * 5000, "nest deeper than 16 levels"),
    ("T = 100000000", "T must be a positive integer, got 100000000; valid range [1, 1024]"),
])
def test_train_config_toml_is_typed(tmp_path, toml, match):
    f = tmp_path / "c.toml"
    f.write_text(toml + "\n")
    _one_error(["train", "--config", str(f), "--out", str(tmp_path / "run")], match)
    assert not (tmp_path / "run").exists()


def test_train_config_reports_every_bad_key_at_once():
    with pytest.raises(ValueError) as e:
        TrainConfig.from_dict({"seed": -1, "spiking": "true", "lr": math.nan, "momentum": 1.0})
    msg = str(e.value)
    assert "\n" not in msg
    for part in ("spiking must be true or false", "lr must be a finite number > 0, got nan; valid range (0, 1e+38]",
                 "momentum must be a finite number >= 0, got 1.0; valid range [0, 1)",
                 "seed must be a non-negative integer, got "):
        assert part in msg


def _checkpoint(path, **config):
    m = create("resnet20", spiking=False, width=0.25, num_classes=10, in_channels=1)
    cfg = {**m.config, **config}
    save_checkpoint({"model_config": cfg, "model": m.state_dict(),
                     "train_config": {"data": "digits", "model": cfg["name"], "spiking": False}}, path)
    return str(path)


@pytest.mark.parametrize("config,match", [
    ({"width": 1e6}, "width must be a finite number >= 0.0625, got 1000000.0; valid range [0.0625, 64]"),
    ({"num_classes": 10**12}, "num_classes must be a positive integer, got 1000000000000; valid range [1, 100000]"),
    ({"name": "resnet200000"}, "a ResNet's depth must be 6n+2 in [8, 1202], got 200000"),
    ({"spiking": "false"}, "spiking must be true or false"),
])
def test_stored_configs_are_checked_before_allocating(tmp_path, config, match):
    ck = _checkpoint(tmp_path / "m.pt", **config)
    line = _one_error(["eval", ck], match)
    assert "describes a model snncka cannot build" in line
    _one_error(["compare", ck, ck, "--out", str(tmp_path / "cmp")], match)


def test_stored_train_config_is_checked(tmp_path):
    ck = _checkpoint(tmp_path / "m.pt")
    obj = torch.load(ck, weights_only=True)
    obj["train_config"]["seed"] = 0.5
    save_checkpoint({k: v for k, v in obj.items() if k not in ("format", "version")}, tmp_path / "n.pt")
    _one_error(["eval", str(tmp_path / "n.pt")], "seed must be a non-negative integer, got ")


def test_load_released_state_dict_with_non_tensors():
    m = create("resnet20", spiking=False, width=0.25)
    sd = {k: v.tolist() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match=r"^the released state dict holds non-tensor values at conv1\.weight, "):
        load_released_state_dict(m, sd)
    with pytest.raises(ValueError, match="must be a mapping"):
        load_released_state_dict(m, [1, 2])


def test_robustness_eps_nan(tmp_path):
    ck = _checkpoint(tmp_path / "m.pt")
    _one_error(["robustness", ck, "--eps", "nan", "--out", str(tmp_path / "r")],
               "eps must be a non-empty list of finite values >= 0")


def test_too_big_run_is_refused_before_allocating(tmp_path):
    # valid setting by setting, far too big together: 65536 images x 1024 steps of a CIFAR ResNet
    line = _one_error(["train", "--data", "cifar10", "--spiking", "--T", "1024", "--batch-size", "65536",
                       "--device", "cpu", "--out", str(tmp_path / "run")], "needs about")
    assert "activations of one batch" in line and "lower --batch-size, --T, --width or --frames" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("cfg", [TrainConfig(model="resnet20", spiking=True, data="digits"),
                                 TrainConfig(model="vgg13", data="cifar10", width=0.5)])
def test_memory_estimate_is_the_same_from_a_cpu_or_a_meta_forward(cfg, monkeypatch):
    """Small models count their layer outputs with one image on the CPU (the meta device's first forward imports
    torch's compiler); the count is the meta device's, which large models keep using."""
    cpu = memory_parts(cfg)
    monkeypatch.setattr(memory, "_REAL_PARAMS", 0)
    assert memory_parts(cfg) == cpu


def test_memory_check_against_a_small_limit(tmp_path, monkeypatch):
    cfg = TrainConfig(model="resnet20", spiking=True, T=4, data="digits", epochs=1, device="cpu")
    parts = memory_parts(cfg)
    assert set(parts) == {"parameters and optimizer", "activations of one batch", "data"}
    need = sum(parts.values())
    # the parameters: 3 float32 copies (weights, gradients, momentum) of the model's parameters and buffers
    m = create("resnet20", spiking=False, num_classes=10, in_channels=1)
    n = sum(p.numel() for p in m.parameters()) + sum(b.numel() for b in m.buffers())
    assert parts["parameters and optimizer"] == 12 * n
    assert parts["data"] == 1797 * 1 * 8 * 8 * 4
    # activations grow linearly with the batch and the time steps
    big = memory_parts(TrainConfig(model="resnet20", spiking=True, T=8, batch_size=64, data="digits"))
    assert big["activations of one batch"] == 4 * parts["activations of one batch"]
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: need - 1)
    line = _one_error(["train", "--spiking", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "run")],
                      f"needs about {need / 2**30:.2f} GiB")
    assert "GiB of RAM available on cpu" in line
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: need)
    memory.check(parts, "cpu", "x", "y")  # exactly enough passes


def test_checkpoint_model_too_big_for_the_device(tmp_path, monkeypatch):
    ck = _checkpoint(tmp_path / "m.pt")
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 1000)
    _one_error(["eval", ck], "the model itself does not fit: use a device with more memory")


def test_available_bytes_is_positive():
    assert memory.available_bytes("cpu") > 0


def test_cka_gram_buffers_checked_before_the_first_batch(monkeypatch):
    from snncka.cka import compare

    a = create("resnet20", spiking=False, width=0.25, num_classes=3, in_channels=1)
    x = torch.randn(8, 1, 8, 8)
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 1000)
    with pytest.raises(memory.MemoryEstimateError, match=r"^CKA over \d+ layers on batches of 8 images needs about "
                                                         r".*lower the batch size \(--batch-size\)$"):
        compare(a, a, x, batch_size=8, progress=False)
    monkeypatch.undo()
    assert compare(a, a, x, batch_size=8, progress=False).matrix.shape[0] > 0


def test_frames_of_a_stored_config_are_bounded_before_loading(tmp_path):
    from snncka.data import frames_for, get

    with pytest.raises(ValueError, match=r"^frames must be a positive integer .*got 100000000; valid range \[1, 1024"):
        frames_for(True, 4, 100_000_000)
    with pytest.raises(ValueError, match="valid range"):
        get("digits-dvs", frames=100_000_000)
    ck = _checkpoint(tmp_path / "m.pt")
    obj = torch.load(ck, weights_only=True)
    obj["train_config"] = {"data": "digits-dvs", "frames": 100_000_000}
    obj["model_config"] = {**obj["model_config"], "in_channels": 2}
    m = create("resnet20", spiking=False, width=0.25, num_classes=10, in_channels=2)
    obj["model"] = m.state_dict()
    save_checkpoint({k: v for k, v in obj.items() if k not in ("format", "version")}, tmp_path / "n.pt")
    _one_error(["compare", str(tmp_path / "n.pt"), str(tmp_path / "n.pt"), "--out", str(tmp_path / "c")],
               "frames must be a positive integer")


def test_eval_batch_size_is_bounded(tmp_path):
    ck = _checkpoint(tmp_path / "m.pt")
    _one_error(["eval", ck, "--batch-size", "1000000000000"],
               "batch_size must be a positive integer, got 1000000000000; valid range [1, 65536]")


def test_memory_estimate_of_a_vgg_on_event_data():
    parts = memory_parts(TrainConfig(model="vgg13", spiking=True, T=2, data="digits-dvs"))
    assert parts["data"] == 1797 * 2 * 2 * 20 * 20 * 4 and parts["activations of one batch"] > 0
