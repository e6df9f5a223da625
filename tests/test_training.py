"""Trainer, checkpoints, resume and the train/eval commands (issue 4, items 3 and 5)."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from snncka import data
from snncka.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from snncka.cli import main
from snncka.models import create, load
from snncka.neurons import LIF
from snncka.training import SyncBatchNorm2d, TrainConfig, TrainingDivergedError, evaluate, read_metrics, train

TINY = dict(model="resnet8", width=0.5, batch_size=64, progress=False)
N_TRAIN, N_TEST = 256, 120


def small() -> data.Dataset:
    """A fixed subset of digits (256 train / 120 test images): keeps the trainer tests fast."""
    d = data.get("digits")
    return data.Dataset("digits", d.x_train[:N_TRAIN], d.y_train[:N_TRAIN], d.x_test[:N_TEST],
                        d.y_test[:N_TEST], d.num_classes, augment=d.augment)


@pytest.fixture(autouse=True)
def _no_compile(monkeypatch):
    """Tiny models: the uncompiled fused LIF is faster than paying torch.compile's warm-up."""
    monkeypatch.setenv("SNNCKA_COMPILE", "0")


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _strip_times(m: dict) -> dict:
    timing = ("seconds", "train_seconds", "data_seconds", "images_per_s")
    return {k: v for k, v in m.items() if k not in timing}


@pytest.fixture(scope="module")
def snn_run(tmp_path_factory):
    """A 2-epoch SNN run (T=2) shared by the tests that only read its files (seed 1: after 8 steps every LIF
    layer of it fires, so the rate checks compare non-trivial rates; with seed 0 the head is still silent)."""
    out = tmp_path_factory.mktemp("snn_run")
    import os

    old = os.environ.get("SNNCKA_COMPILE")
    os.environ["SNNCKA_COMPILE"] = "0"
    try:
        result = train(TrainConfig(**TINY, spiking=True, T=2, epochs=2, seed=1), out, dataset=small())
    finally:
        if old is None:
            del os.environ["SNNCKA_COMPILE"]
        else:
            os.environ["SNNCKA_COMPILE"] = old
    return out, result


# ---------------------------------------------------------------------------------------------------------
# Run files and metrics
# ---------------------------------------------------------------------------------------------------------


def test_run_files_config_and_lr_schedule(snn_run):
    out, result = snn_run
    # .lock: the run folder's one-writer lock (snncka.files)
    assert sorted(p.name for p in out.iterdir()) == [".lock", "best.pt", "config.json", "last.pt", "metrics.jsonl"]
    info = json.loads((out / "config.json").read_text())
    assert info["train"]["lr"] == pytest.approx(0.1 * 64 / 256)  # linear scaling of 0.1 @ 256
    assert info["model"] == create("resnet8", spiking=True, width=0.5, T=2, in_channels=1).config
    assert info["data"]["n_train"] == N_TRAIN and info["data"]["n_test"] == N_TEST
    assert info["schedule"] == {"steps_per_epoch": N_TRAIN // 64, "batch_size": 64, "amp_bf16": False,
                                "channels_last": False}
    env = info["environment"]
    assert env["torch"] == torch.__version__ and env["world_size"] == 1 and env["device"] == "cpu"
    ms = _metrics(out)
    assert [m["epoch"] for m in ms] == [1, 2]
    steps, total = 4, 8
    for m in ms:  # cosine per iteration: lr of the epoch's first step
        t = (m["epoch"] - 1) * steps
        assert m["lr"] == pytest.approx(0.025 * 0.5 * (1 + math.cos(math.pi * t / total)), rel=1e-12)
        assert 0 <= m["train_acc"] <= 1 and 0 <= m["test_acc"] <= 1 and m["loss"] > 0
    assert result["test_acc"] == ms[-1]["test_acc"] and result["best_acc"] == max(m["test_acc"] for m in ms)
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["scheduler"]["last_epoch"] == total
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine ends at 0
    assert ckpt["optimizer"]["param_groups"][0]["momentum"] == 0.9
    assert ckpt["optimizer"]["param_groups"][0]["weight_decay"] == 1e-4
    assert ckpt["optimizer"]["param_groups"][0]["nesterov"] is False


def test_metrics_match_independent_evaluation(snn_run):
    """test_acc, test_loss and every LIF layer's firing rate recomputed from last.pt with plain code."""
    out, _ = snn_run
    last = _metrics(out)[-1]
    model = load(out / "last.pt")
    assert not model.training
    ds = small()
    rates: dict[str, list[float]] = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: rates.setdefault(n, []).append(o.mean().item()))
             for n, m in model.named_modules() if isinstance(m, LIF)]
    with torch.no_grad():
        logits = model(ds.x_test)  # the whole test set in one batch
    for h in hooks:
        h.remove()
    assert last["test_acc"] == (logits.argmax(1) == ds.y_test).sum().item() / N_TEST
    assert last["test_loss"] == pytest.approx(F.cross_entropy(logits, ds.y_test).item(), rel=1e-5)
    assert list(last["firing_rates"]) == list(rates)
    assert len(rates) == 2 * 3 + 1  # two LIFs per block, one block per stage, plus the head
    for name, r in rates.items():
        assert last["firing_rates"][name] == pytest.approx(r[0], rel=1e-6), name
        assert 0 < r[0] < 1
    res = evaluate(model, ds, batch_size=50)  # batched: same numbers
    assert res["acc"] == pytest.approx(last["test_acc"]) and res["n"] == N_TEST
    assert res["loss"] == pytest.approx(last["test_loss"], rel=1e-5)


def test_best_checkpoint_is_best_epoch(snn_run):
    out, _ = snn_run
    ms = _metrics(out)
    best = load_checkpoint(out / "best.pt")
    best_epoch = max(ms, key=lambda m: m["test_acc"])["epoch"]  # first epoch with the maximum
    assert best["epoch"] == best_epoch and best["best_acc"] == max(m["test_acc"] for m in ms)
    assert "optimizer" not in best  # model-only
    assert evaluate(load(out / "best.pt"), small())["acc"] == pytest.approx(best["best_acc"])


def test_evaluate_on_tensors_matches_manual():
    torch.manual_seed(0)
    model = create("resnet8", spiking=False, width=0.5, in_channels=1).eval()
    x, y = torch.randn(37, 1, 8, 8), torch.randint(0, 10, (37,))
    with torch.no_grad():
        logits = model(x)
    res = evaluate(model, (x, y), batch_size=8)
    assert res["n"] == 37 and "firing_rates" not in res
    assert res["acc"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert res["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    model.train()
    evaluate(model, (x, y))
    assert model.training  # mode restored
    with pytest.raises(ValueError, match="differ in length"):
        evaluate(model, (x, y[:5]))


def test_sync_batchnorm_without_process_group_is_batchnorm():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3)
    sbn = SyncBatchNorm2d(3)
    sbn.load_state_dict(bn.state_dict())
    x = torch.randn(6, 3, 4, 4)
    assert torch.equal(bn(x), sbn(x))
    assert torch.equal(bn.running_var, sbn.running_var)


# ---------------------------------------------------------------------------------------------------------
# Kill and resume
# ---------------------------------------------------------------------------------------------------------


class _Killed(Exception):
    pass


def _kill_after(k: int):
    def hook(epoch: int, metrics: dict) -> None:
        if epoch == k:
            raise _Killed(f"killed after epoch {epoch}")

    return hook


@pytest.mark.parametrize("spiking", [False, True], ids=["ann", "snn"])
def test_resume_is_bitwise_identical(tmp_path, spiking):
    cfg = dict(TINY, spiking=spiking, T=2, epochs=3)
    full = tmp_path / "full"
    train(TrainConfig(**cfg), full, dataset=small())

    part = tmp_path / "part"
    with pytest.raises(_Killed):
        train(TrainConfig(**cfg), part, on_epoch_end=_kill_after(2), dataset=small())
    assert load_checkpoint(part / "last.pt")["epoch"] == 2
    # A run killed between writing its metrics line and its checkpoint leaves an extra line: it is dropped.
    with open(part / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 3, "loss": 0.0}) + "\n")
    torch.manual_seed(1234)  # the resumed process starts from unrelated random states
    np.random.seed(1234)  # noqa: NPY002
    random.seed(1234)
    train(TrainConfig(**cfg), part, resume=True, dataset=small())

    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(part / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    sa_, sb_ = a["optimizer"]["state"], b["optimizer"]["state"]
    for (ka, sa), (kb, sb) in zip(sa_.items(), sb_.items(), strict=True):
        assert ka == kb and torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert torch.equal(a["rng"]["data"], b["rng"]["data"])
    assert [_strip_times(m) for m in _metrics(full)] == [_strip_times(m) for m in _metrics(part)]


def test_resume_rejects_a_changed_config_and_a_missing_run(tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(**TINY, epochs=1), out, dataset=small())
    before = (out / "last.pt").read_bytes()
    with pytest.raises(ValueError, match="epochs: run has 1, asked 2"):
        train(TrainConfig(**TINY, epochs=2), out, resume=True, dataset=small())
    assert (out / "last.pt").read_bytes() == before
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        train(TrainConfig(**TINY, epochs=1), tmp_path / "nothing", resume=True)
    # Resuming a finished run trains nothing and returns its last metrics.
    res = train(TrainConfig(**dict(TINY, progress=True), epochs=1), out, resume=True, dataset=small())
    assert res["epoch"] == 1 and (out / "last.pt").read_bytes() == before


def _files(run: Path) -> dict[str, bytes]:
    """A run folder's files and their bytes, but the writers' lock file, whose holder note ("pid N ... since
    <time>") each writer rewrites."""
    return {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock"}


def test_existing_run_is_not_overwritten_without_force(tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(**TINY, epochs=1), out, dataset=small())
    files = _files(out)
    with pytest.raises(FileExistsError, match="--resume"):
        train(TrainConfig(**TINY, epochs=1, seed=1), out, dataset=small())
    assert _files(out) == files
    train(TrainConfig(**TINY, epochs=1, seed=1), out, force=True, dataset=small())
    assert load_checkpoint(out / "last.pt")["train_config"]["seed"] == 1
    assert len(_metrics(out)) == 1


# ---------------------------------------------------------------------------------------------------------
# Checkpoint files
# ---------------------------------------------------------------------------------------------------------


def test_corrupt_truncated_and_foreign_checkpoints(tmp_path, snn_run):
    out, _ = snn_run
    good = (out / "last.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(good[: len(good) // 2])
    (tmp_path / "junk.pt").write_bytes(b"\x00not a checkpoint" * 50)
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    for name in ("trunc.pt", "junk.pt"):
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            load_checkpoint(tmp_path / name)
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            load(tmp_path / name)
    with pytest.raises(CheckpointError, match="not a snncka checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="missing"):
        save_checkpoint({"model": {}}, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_load_rebuilds_the_model(snn_run):
    out, _ = snn_run
    ckpt = load_checkpoint(out / "last.pt")
    model = load(out / "last.pt")
    assert model.spiking and model.T == 2 and model.config == ckpt["model_config"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt["model"][k]), k


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------

CLI_TINY = ["--model", "resnet8", "--width", "0.25", "--batch-size", "256", "--no-progress"]


def test_cli_train_resume_and_eval(tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", *CLI_TINY, "--epochs", "1", "--spiking", "--T", "1",
                                  "--tau", "0.75", "--out", str(out)])
    assert r.exit_code == 0, r.output
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["train_config"]["neuron"] == {"tau": 0.75} and ckpt["model_config"]["neuron"] == {"tau": 0.75}
    assert ckpt["train_config"]["spiking"] and ckpt["epoch"] == 1

    # --resume alone reads the run's settings (nothing left to train here) and changes no file.
    files = _files(out)
    r = CliRunner().invoke(main, ["train", "--resume", "--no-progress", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert _files(out) == files

    r = CliRunner().invoke(main, ["eval", str(out / "best.pt"), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    best = max(m["test_acc"] for m in _metrics(out))
    assert res["acc"] == pytest.approx(best) and res["n"] == 360 and res["data"] == "digits"
    assert set(res["firing_rates"]) == set(_metrics(out)[0]["firing_rates"])
    r = CliRunner().invoke(main, ["eval", str(out / "last.pt"), "--split", "train"])
    assert r.exit_code == 0 and "digits train accuracy" in r.output and "1437 images" in r.output


def test_cli_errors_exit_nonzero_and_write_nothing(tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["train", *CLI_TINY, "--data", "no-such-data", "--out", str(tmp_path / "a")])
    assert r.exit_code != 0 and "unknown dataset 'no-such-data'" in r.output
    assert not (tmp_path / "a").exists()
    r = runner.invoke(main, ["train", *CLI_TINY, "--data-root", str(tmp_path / "nope"),
                             "--out", str(tmp_path / "b")])
    assert r.exit_code != 0 and "does not exist" in r.output and not (tmp_path / "b").exists()
    r = runner.invoke(main, ["train", *CLI_TINY, "--model", "resnet7", "--out", str(tmp_path / "c")])
    assert r.exit_code != 0 and "unknown model" in r.output and not (tmp_path / "c").exists()
    r = runner.invoke(main, ["train", *CLI_TINY, "--resume", "--out", str(tmp_path / "d")])
    assert r.exit_code != 0 and "cannot resume" in r.output

    out = tmp_path / "run"
    assert runner.invoke(main, ["train", *CLI_TINY, "--epochs", "1", "--out", str(out)]).exit_code == 0
    files = _files(out)
    r = runner.invoke(main, ["train", *CLI_TINY, "--epochs", "1", "--out", str(out)])
    assert r.exit_code != 0 and "already holds" in r.output
    # A corrupt last.pt: resume refuses with a clear message and leaves the folder as it was.
    (out / "last.pt").write_bytes(files["last.pt"][:1000])
    r = runner.invoke(main, ["train", "--resume", "--no-progress", "--out", str(out)])
    assert r.exit_code != 0 and "truncated or corrupt" in r.output
    r = runner.invoke(main, ["eval", str(out / "last.pt")])
    assert r.exit_code != 0 and "truncated or corrupt" in r.output
    assert (out / "last.pt").read_bytes() == files["last.pt"][:1000]
    assert (out / "best.pt").read_bytes() == files["best.pt"]


def test_cli_wrong_data_root_for_a_real_dataset(tmp_path):
    if "cifar10" not in data.DATASETS:
        pytest.skip("cifar10 loader not registered")
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(main, ["train", *CLI_TINY, "--data", "cifar10",
                                  "--data-root", str(tmp_path / "empty"), "--out", str(tmp_path / "run")])
    assert r.exit_code != 0 and "Traceback" not in r.output and str(tmp_path / "empty") in r.output
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------------------
# Accuracy (the acceptance numbers)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("spiking", "target", "epochs", "batch", "lr"),
                         [(False, 0.95, 8, 64, 0.1), (True, 0.93, 12, 32, None)], ids=["ann", "snn"])
def test_resnet20_reaches_target_accuracy_on_digits(tmp_path, monkeypatch, spiking, target, epochs, batch, lr):
    """The issue's acceptance numbers on the full digits split. The SNN is the demo's (12 epochs, batch 32, the
    recipe's own lr scaling 0.1 * 32 / 256); on this machine it ends at ~94-95% (ANN ~99%)."""
    monkeypatch.setenv("SNNCKA_COMPILE", "1")  # the compiled kernels (on a CPU the default runs these eager)
    res = train(TrainConfig(model="resnet20", spiking=spiking, T=4, epochs=epochs, batch_size=batch, lr=lr,
                            progress=False), tmp_path)
    assert res["test_acc"] >= target, res


# ---------------------------------------------------------------------------------------------------------
# Reliability: divergence, torn files, full disk, bad input (each a one-line error before long work)
# ---------------------------------------------------------------------------------------------------------


def test_non_finite_loss_stops_the_run_naming_epoch_and_step(tmp_path):
    ds = small()
    bad = data.Dataset("digits", torch.full_like(ds.x_train, float("nan")), ds.y_train, ds.x_test, ds.y_test,
                       ds.num_classes, augment=ds.augment)
    with pytest.raises(TrainingDivergedError, match=r"non-finite at epoch 1, step 1 of 4 .*nothing was saved"):
        train(TrainConfig(**TINY, epochs=2), tmp_path / "nan", dataset=bad)
    assert not (tmp_path / "nan" / "last.pt").exists() and read_metrics(tmp_path / "nan" / "metrics.jsonl") == []
    # From the command line: an absurd learning rate is one line naming the epoch, exit status 1.
    r = CliRunner().invoke(main, ["train", *CLI_TINY, "--epochs", "2", "--lr", "1e30", "--out",
                                  str(tmp_path / "lr")])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert re.search(r"^Error: the loss became non-finite at epoch 1, step \d+ of \d+", r.output)
    assert len(r.output.strip().splitlines()) == 1


def test_torn_metrics_line_and_stale_temps_do_not_block_resume(tmp_path):
    cfg = dict(TINY, epochs=2)
    out = tmp_path / "run"
    with pytest.raises(_Killed):
        train(TrainConfig(**cfg), out, on_epoch_end=_kill_after(1), dataset=small())
    with open(out / "metrics.jsonl", "a") as f:  # killed while appending epoch 2's line
        f.write('{"epoch": 2, "loss": 0.3')
    stale = out / ".last.pt.k1ll3d.tmp"  # killed while writing a checkpoint
    stale.write_bytes(b"partial")
    assert [m["epoch"] for m in read_metrics(out / "metrics.jsonl")] == [1]
    train(TrainConfig(**cfg), out, resume=True, dataset=small())
    assert [m["epoch"] for m in read_metrics(out / "metrics.jsonl")] == [1, 2] == [m["epoch"] for m in _metrics(out)]
    assert not stale.exists()
    # A bad line that is not the last one is corruption, not a kill: a one-line error naming it.
    (tmp_path / "m.jsonl").write_text('{"epoch": 1}\nnot json\n{"epoch": 3}\n')
    with pytest.raises(ValueError, match=r"m.jsonl, line 2: not a metrics record"):
        read_metrics(tmp_path / "m.jsonl")


def test_full_disk_while_checkpointing_is_one_line_and_keeps_old_files(tmp_path, monkeypatch):
    real_save, calls = torch.save, []

    def save(obj, f, *a, **k):  # epoch 1 writes best.pt and last.pt; epoch 2's first write hits a full disk
        calls.append(f)
        if len(calls) > 2:
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 4416 vs 4302")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", *CLI_TINY, "--epochs", "2", "--out", str(out)])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    err = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert len(err) == 1 and "disk is full" in err[0] and "intact" in err[0], r.output
    assert load_checkpoint(out / "last.pt")["epoch"] == 1  # the previous checkpoint is untouched
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize(("args", "message"), [
    (["--batch-size", "0"], "batch_size must be a positive integer, got 0"),
    (["--epochs", "0"], "epochs must be a positive integer, got 0"),
    (["--epochs", "-3"], "epochs must be a positive integer, got -3"),
    (["--lr", "inf"], "lr must be a finite number > 0"),
    (["--lr", "nan"], "lr must be a finite number > 0"),
    (["--lr", "-0.1"], "lr must be a finite number > 0"),
    (["--weight-decay", "-1"], "weight_decay must be a finite number >= 0"),
    (["--device", "bogus"], "unknown device 'bogus'; use auto, cpu, cuda or cuda:N"),
    (["--recipe", "nope"], "unknown recipe 'nope'; choose one of: paper, code"),
])
def test_cli_bad_training_input_is_one_line_before_training(tmp_path, args, message):
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", *CLI_TINY, *args, "--out", str(out)])
    assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output, r.output
    assert not out.exists()


def test_bf16_on_cpu_runs_bf16_and_says_so(tmp_path):
    """--amp bf16 on a CPU runs CPU bf16 autocast (what config.json records): its weights differ from fp32's."""
    runs = {}
    for amp in ("bf16", "off"):
        train(TrainConfig(**TINY, epochs=1, amp=amp), tmp_path / amp, dataset=small())
        runs[amp] = load_checkpoint(tmp_path / amp / "last.pt")["model"]
        info = json.loads((tmp_path / amp / "config.json").read_text())
        assert info["schedule"]["amp_bf16"] is (amp == "bf16")
    assert any(not torch.equal(runs["bf16"][k], runs["off"][k]) for k in runs["off"] if k.endswith("weight"))


def test_logs_without_progress_name_the_model(tmp_path):
    r = CliRunner().invoke(main, ["train", *CLI_TINY, "--epochs", "1", "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    assert re.search(r"^resnet8 x0.25 ANN epoch 1/1: loss", r.output, re.M), r.output


def test_train_help_has_no_markup():
    r = CliRunner().invoke(main, ["train", "--help"])
    assert r.exit_code == 0 and "``" not in r.output and "`" not in r.output and "--config" in r.output


# ---------------------------------------------------------------------------------------------------------
# Settings: TOML config, per-dataset defaults, recipes
# ---------------------------------------------------------------------------------------------------------


def test_cli_config_file_with_overrides_and_unknown_keys(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('model = "resnet8"\nwidth = 0.25\nbatch_size = 256\nepochs = 3\nspiking = true\nT = 1\n'
                    'progress = false\n[neuron]\ntau = 0.75\n')
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", "--config", str(toml), "--epochs", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    tc = load_checkpoint(out / "last.pt")["train_config"]
    assert (tc["epochs"], tc["width"], tc["batch_size"], tc["spiking"], tc["T"]) == (1, 0.25, 256, True, 1)
    assert tc["neuron"] == {"tau": 0.75}
    assert TrainConfig.from_toml(toml, epochs=1) == TrainConfig.from_dict(tc)

    toml.write_text('model = "resnet8"\nepoch = 3\nlearning_rate = 0.1\n')
    r = CliRunner().invoke(main, ["train", "--config", str(toml), "--out", str(tmp_path / "bad")])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
    assert "unknown key(s) epoch, learning_rate; valid keys: model, spiking," in r.output
    assert not (tmp_path / "bad").exists()


def test_per_dataset_defaults_and_recipes_resolve():
    d = TrainConfig()
    assert (d.resolved_batch_size, d.resolved_lr, d.resolved_momentum, d.resolved_weight_decay) == (
        32, 0.1 * 32 / 256, 0.9, 1e-4)
    assert TrainConfig(data="cifar10").resolved_batch_size == 256 == TrainConfig(data="cifar10").resolved_lr * 2560
    code_ann = TrainConfig(recipe="code", data="cifar100")
    code_snn = TrainConfig(recipe="code", data="cifar100", spiking=True)
    assert (code_ann.resolved_momentum, code_ann.resolved_weight_decay) == (0.8, 1e-4)
    assert (code_snn.resolved_momentum, code_snn.resolved_weight_decay) == (0.9, 5e-4)
    assert TrainConfig(recipe="code", momentum=0.5, weight_decay=0.0).resolved()["momentum"] == 0.5
    with pytest.raises(ValueError, match="unknown recipe 'nope'; choose one of: paper, code"):
        TrainConfig(recipe="nope").validate()


def test_code_recipe_trains_with_its_momentum_and_a_per_epoch_cosine(tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(**TINY, epochs=3, recipe="code"), out, dataset=small())
    ms = _metrics(out)
    for m in ms:  # constant within an epoch: the rate of epoch e (from 0) is lr * (1 + cos(pi * e / E)) / 2
        assert m["lr"] == pytest.approx(0.025 * 0.5 * (1 + math.cos(math.pi * (m["epoch"] - 1) / 3)), rel=1e-12)
    ckpt = load_checkpoint(out / "last.pt")
    group = ckpt["optimizer"]["param_groups"][0]
    assert group["momentum"] == 0.8 and group["weight_decay"] == 1e-4
    # last step of epoch 3 still used epoch 3's rate; the scheduler stands at the end of the run
    assert group["lr"] == pytest.approx(0.0, abs=1e-12)
    info = json.loads((out / "config.json").read_text())["train"]
    assert (info["recipe"], info["momentum"], info["weight_decay"], info["lr_schedule_step"]) == (
        "code", 0.8, 1e-4, "epoch")
    assert info["recipe_settings"]["name"] == "code"


def test_cpu_compile_policy_compiles_only_where_it_pays(monkeypatch):
    from snncka import neurons

    monkeypatch.delenv("SNNCKA_COMPILE", raising=False)
    monkeypatch.setattr(neurons, "_AUTO", {})
    cfg = neurons.LIFConfig()
    small_call = torch.zeros(4, 32 * 16 * 8 * 8)  # the demo's largest training call (digits, batch 32)
    big_call = torch.zeros(4, 32 * 16 * 32 * 32)  # a CIFAR-sized call
    assert neurons._compile_default(small_call, cfg) is False
    assert neurons._compile_default(big_call, cfg) is False  # decided at the family's first call
    monkeypatch.setattr(neurons, "_AUTO", {})
    assert neurons._compile_default(big_call, cfg) is True
    monkeypatch.setenv("SNNCKA_COMPILE", "1")
    assert neurons._compile_default(small_call, cfg) is True
