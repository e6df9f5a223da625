"""Model zoo: App. D parameter counts, ANN/SNN twins, shapes, residual switch, mixed time steps, training,
bad input, the ``snncka models`` command."""

from __future__ import annotations

import argparse
import copy
import re

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from snncka.cli import main
from snncka.layers import TDBatchNorm2d
from snncka.models import NAMES, create, from_config
from snncka.neurons import LIF

pytestmark = pytest.mark.usefixtures("eager_kernels")  # see conftest.py


# ----------------------------------------------------------------------------------------------------------
# Parameter counts from the paper's tables (App. D), written out independently of snncka.models
# ----------------------------------------------------------------------------------------------------------

# Table D.1: blocks per stage; 3x3 convs with 16/32/64 channels; stride 2 at stages 2, 3
RESNET_BLOCKS = {"resnet20": 3, "resnet38": 6, "resnet56": 9, "resnet110": 18, "resnet164": 27}
# Table D.2: (3x3, 64) x a, (3x3, 128) x b, (3x3, 256) x c, (3x3, 512) x d
VGG_TABLE = {"vgg13": (1, 1, 2, 4), "vgg19": (2, 2, 3, 8), "vgg25": (2, 3, 4, 12), "vgg31": (2, 4, 5, 16),
             "vgg43": (2, 5, 6, 24)}


def conv3(cin: int, cout: int) -> int:
    return 9 * cin * cout  # no bias: a norm follows


def norm(c: int) -> int:
    return 2 * c  # weight and bias


def expected_params(name: str, width: int = 1, k: int = 10, cin: int = 3) -> int:
    if name.startswith("resnet"):  # Table D.1, or any depth 6n + 2
        n = RESNET_BLOCKS.get(name, (int(name[6:]) - 2) // 6)
        ch = [16 * width, 32 * width, 64 * width]
        total = conv3(cin, ch[0]) + norm(ch[0])  # stem
        prev = ch[0]
        for c in ch:
            for b in range(n):
                cin_b = prev if b == 0 else c
                total += conv3(cin_b, c) + norm(c) + conv3(c, c) + norm(c)
                if cin_b != c:  # projection shortcut: avg-pool -> conv1x1 -> norm
                    total += cin_b * c + norm(c)
            prev = c
        return total + ch[2] * k + k  # fc
    total, prev = 0, cin
    for c, reps in zip((64, 128, 256, 512), VGG_TABLE[name], strict=True):
        for _ in range(reps):
            total += conv3(prev, c * width) + norm(c * width)
            prev = c * width
    return total + prev * k + k


def _meta(name: str, **kw) -> nn.Module:
    with torch.device("meta"):  # shapes only
        return create(name, **kw)


def test_registry_names():
    assert set(NAMES) == set(RESNET_BLOCKS) | set(VGG_TABLE)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts_match_appendix_d(name):
    for width, k, cin in ((1, 10, 3), (2, 100, 2)):
        for spiking in (False, True):
            m = _meta(name, spiking=spiking, width=width, num_classes=k, in_channels=cin)
            assert sum(p.numel() for p in m.parameters()) == expected_params(name, width, k, cin)
    # the textbook value for CIFAR-10 ResNet-20 (pre-activation, projection shortcuts): ~0.27M
    if name == "resnet20":
        assert expected_params("resnet20") == 272_474


def test_any_resnet_6n_plus_2():
    m = _meta("resnet32", spiking=True)
    # resnet32 = resnet20 plus two identity blocks per stage
    extra = sum(2 * (2 * 9 * c * c + 2 * 2 * c) for c in (16, 32, 64))
    count = sum(p.numel() for p in m.parameters())
    assert count == expected_params("resnet32") == expected_params("resnet20") + extra
    assert len(m.s1) == len(m.s2) == len(m.s3) == 5


@pytest.mark.parametrize("name", ["resnet20", "resnet110", "vgg13", "vgg43"])
def test_ann_and_snn_are_twins(name):
    ann, snn = _meta(name, spiking=False), _meta(name, spiking=True)
    shapes = [(n, p.shape) for n, p in ann.named_parameters()]
    assert shapes == [(n, p.shape) for n, p in snn.named_parameters()]
    assert [n for n, _ in ann.named_modules()] == [n for n, _ in snn.named_modules()]
    assert list(ann.state_dict()) == list(snn.state_dict())
    for (n, a), (_, s) in zip(ann.named_modules(), snn.named_modules(), strict=True):
        if isinstance(a, nn.ReLU):
            assert isinstance(s, LIF), n
        elif isinstance(a, nn.BatchNorm2d):
            assert isinstance(s, TDBatchNorm2d), n
        else:
            assert type(a) is type(s), n


def test_paper_layer_names():
    names = {n for n, _ in _meta("resnet20", spiking=True).named_modules()}
    for n in ("conv1", "bn1", "s1.b0", "s1.b0.act1", "s1.b0.conv1", "s1.b0.bn1", "s1.b0.act2",
              "s1.b0.conv2", "s1.b0.bn2", "s1.b2", "s2.b0.ds.0", "s2.b0.ds.1", "s2.b0.ds.2", "s3.b2.conv2",
              "act", "pool", "fc"):
        assert n in names, n
    assert "s1.b0.ds" not in names  # identity shortcut in stage 1
    vgg = {n for n, _ in _meta("vgg13", spiking=True).named_modules()}
    assert {"s1.l0.conv", "s1.l0.bn", "s1.l0.act", "pool1", "pool2", "pool3", "s4.l3.act", "pool",
            "fc"} <= vgg


# ----------------------------------------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet20", "vgg13"])
@pytest.mark.parametrize("chw", [(1, 8, 8), (3, 32, 32)])
def test_output_shapes_images(name, chw):
    torch.manual_seed(0)
    c, h, w = chw
    width = 0.25
    x = torch.randn(2, c, h, w)
    ann = create(name, spiking=False, in_channels=c, num_classes=7, width=width)
    snn = create(name, spiking=True, in_channels=c, num_classes=7, width=width, T=3)
    assert ann(x).shape == (2, 7)
    assert ann(x, per_step=True).shape == (1, 2, 7)
    out, steps = snn(x), snn(x, per_step=True)
    assert out.shape == (2, 7) and steps.shape == (3, 2, 7)
    torch.testing.assert_close(out, steps.mean(0))


def test_output_shapes_event_frames():
    torch.manual_seed(0)
    snn = create("resnet20", spiking=True, in_channels=2, num_classes=10, width=0.25, T=5)
    frames = torch.rand(5, 2, 2, 48, 48)
    assert snn(frames).shape == (2, 10) and snn(frames, per_step=True).shape == (5, 2, 10)
    ann = create("resnet20", spiking=False, in_channels=2, num_classes=10, width=0.25)
    one = frames.sum(0, keepdim=True)  # the ANN sees all events in one frame
    assert torch.equal(ann(one), ann(one[0]))
    big = create("vgg13", spiking=True, in_channels=2, num_classes=101, width=0.0625, T=2)
    assert big(torch.rand(2, 1, 2, 128, 128)).shape == (1, 101)


# ----------------------------------------------------------------------------------------------------------
# Residual switch
# ----------------------------------------------------------------------------------------------------------


def _capture(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, tuple[torch.Tensor, ...]]:
    """Inputs and outputs of the named modules in one forward pass."""
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [model.get_submodule(n).register_forward_hook(
        lambda m, i, o, n=n: seen.__setitem__(n, (i[0].detach(), o.detach()))) for n in names]
    model(x)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("spiking", [False, True])
@pytest.mark.parametrize("off", [0, 1, 2])
def test_residual_off_removes_shortcuts_of_one_stage(spiking, off):
    torch.manual_seed(0)
    residual = [True, True, True]
    residual[off] = False
    m = create("resnet20", spiking=spiking, in_channels=1, width=0.5, T=2, residual=residual).double()
    names = [f"s{s}.b{b}{sub}" for s in (1, 2, 3) for b in range(3) for sub in ("", ".bn2", ".act1")]
    names += [f"s{s}.b0.ds" for s in (2, 3) if residual[s - 1]]
    got = _capture(m, names, torch.randn(2, 1, 8, 8, dtype=torch.float64))
    for s in (1, 2, 3):
        ds = getattr(m, f"s{s}").b0.ds
        assert (ds is not None) == (s > 1 and residual[s - 1])
        for b in range(3):
            block_in, block_out = got[f"s{s}.b{b}"]
            body = got[f"s{s}.b{b}.bn2"][1]
            if not residual[s - 1]:
                assert torch.equal(block_out, body)  # no identity, no projection
            elif b == 0 and s > 1:
                torch.testing.assert_close(block_out, body + got[f"s{s}.b0.ds"][1], rtol=0, atol=0)
                assert torch.equal(got[f"s{s}.b0.ds"][0], got[f"s{s}.b0.act1"][1])  # on the activated input
            else:
                torch.testing.assert_close(block_out, body + block_in, rtol=0, atol=0)


def test_residual_off_changes_only_that_stage_parameters():
    full = {n for n, _ in _meta("resnet20", spiking=True).named_parameters()}
    no2 = {n for n, _ in _meta("resnet20", spiking=True, residual=(True, False, True)).named_parameters()}
    assert full - no2 == {"s2.b0.ds.1.weight", "s2.b0.ds.2.weight", "s2.b0.ds.2.bias"}


# ----------------------------------------------------------------------------------------------------------
# Mixed time steps
# ----------------------------------------------------------------------------------------------------------


def test_stage_T_first_stage_runs_once():
    torch.manual_seed(0)
    m = create("resnet20", spiking=True, width=0.25, T=4, stage_T=(1, 4, 4))
    assert m.stage_T == (1, 4, 4) and m.s1.b0.act1.T == 1 and m.s2.b0.act1.T == 4
    x = torch.randn(3, 3, 8, 8)
    got = _capture(m, ["s1.b0.act1", "s1.b2", "s2.b0.act1", "s3.b0.act1"], x)
    assert got["s1.b0.act1"][0].shape[0] == 3  # one step of B images
    s2_in = got["s2.b0.act1"][0]
    assert s2_in.shape[0] == 4 * 3
    for t in range(4):  # stage 1's single step repeated to T = 4
        assert torch.equal(s2_in[3 * t:3 * t + 3], got["s1.b2"][1])
    assert m(x).shape == (3, 10) and m(x, per_step=True).shape == (4, 3, 10)


def test_stage_T_average_before_stage_3():
    torch.manual_seed(0)
    m = create("resnet20", spiking=True, width=0.25, T=4, stage_T=(4, 4, 1))
    x = torch.randn(3, 3, 8, 8)
    got = _capture(m, ["s2.b2", "s3.b0.act1", "act"], x)
    s2_out = got["s2.b2"][1]
    torch.testing.assert_close(got["s3.b0.act1"][0], s2_out.reshape(4, 3, *s2_out.shape[1:]).mean(0))
    assert m.act.T == 1 and got["act"][0].shape[0] == 3
    assert m(x).shape == (3, 10) and m(x, per_step=True).shape == (1, 3, 10)


def test_stage_T_vgg_and_config_roundtrip():
    m = create("vgg13", spiking=True, width=0.125, T=2, stage_T=(1, 2, 2, 2), in_channels=1)
    assert m(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    twin = from_config(copy.deepcopy(m.config))
    assert twin.stage_T == m.stage_T and twin.config == m.config
    twin.load_state_dict(m.state_dict())
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(twin.eval()(x), m.eval()(x))


# ----------------------------------------------------------------------------------------------------------
# Training lowers the loss
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet20", "vgg13"])
@pytest.mark.parametrize("spiking", [False, True])
def test_sgd_steps_lower_the_loss(name, spiking):
    torch.manual_seed(0)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    m = create(name, spiking=spiking, in_channels=1, width=0.25 if name == "resnet20" else 0.125, T=2)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    assert max(losses[-3:]) < losses[0] - 0.15, losses  # ~2.3 = ln 10 at the start


# ----------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------


def test_bad_input_shapes():
    m = create("resnet20", spiking=True, T=2, width=0.25)
    with pytest.raises(ValueError, match=re.escape("[B, 3, H, W]")):
        m(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="expected 3 input channels"):
        m(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="at least 4x4"):
        m(torch.randn(2, 3, 2, 2))
    with pytest.raises(ValueError, match=re.escape("expected 2 frames [T, B, C, H, W]")):
        m(torch.randn(3, 2, 3, 8, 8))
    with pytest.raises(ValueError, match="at least 8x8"):
        create("vgg13", spiking=False)(torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="single frame"):
        create("resnet20", spiking=False, width=0.25)(torch.randn(2, 1, 3, 8, 8))


@pytest.mark.parametrize("kwargs,match", [
    (dict(T=0), "T .* must be >= 1"), (dict(tau=1.5), "tau must lie in"), (dict(tau=0.0), "tau must lie in"),
    (dict(alpha=0.0), "alpha must be > 0"), (dict(width=0), "width must be > 0"),
    (dict(stage_T=(1, 4)), "stage_T needs 3"), (dict(stage_T=(2, 4, 4)), "from 1 to T or T to 1"),
    (dict(residual=(True, False)), "one flag per ResNet stage"), (dict(surrogate="box"), "choose one of"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _meta("resnet20", spiking=True, **kwargs)


def test_unknown_model_lists_names():
    for bad in ("resnet21", "vgg16", "mlp"):
        with pytest.raises(ValueError, match="available: resnet20, resnet38.*vgg43"):
            create(bad, spiking=True)
    with pytest.raises(ValueError, match="no residual connections"):
        _meta("vgg13", spiking=False, residual=(True, False, True))


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args,width,k,cin", [([], 1, 10, 3), (["--width", "2", "--num-classes", "100",
                                                                  "--in-channels", "2"], 2, 100, 2)])
def test_models_command_counts(args, width, k, cin):
    res = CliRunner().invoke(main, ["models", *args])
    assert res.exit_code == 0, res.output
    rows = {line.split()[0]: line.split() for line in res.output.splitlines()[1:]}
    assert set(rows) == set(NAMES)
    for name, cols in rows.items():
        n = expected_params(name, width, k, cin)
        assert int(cols[1].replace(",", "")) == n and int(cols[2].replace(",", "")) == n
    blocks = RESNET_BLOCKS["resnet110"]
    # conv / norm / LIF layers of resnet110: stem + 2 per block + 2 projections; 2 LIF per block + head
    assert rows["resnet110"][3] == f"{1 + 6 * blocks + 2}/{1 + 6 * blocks + 2}/{6 * blocks + 1}"


@pytest.mark.parametrize("width", ["0", "-1"])
def test_models_command_bad_width_is_one_line(width):
    res = CliRunner().invoke(main, ["models", "--width", width])
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [f"Error: width must be > 0, got {float(width)}"]


# ----------------------------------------------------------------------------------------------------------
# Malformed checkpoints: one-line CheckpointError
# ----------------------------------------------------------------------------------------------------------


def _tagged(tmp_path, name: str, edit) -> str:
    """A checkpoint in snncka's format whose dict ``edit`` has damaged."""
    from snncka.checkpoint import save_checkpoint

    m = create("resnet8", spiking=True, width=0.25, T=2)
    ckpt = {"model_config": copy.deepcopy(m.config), "model": m.state_dict()}
    edit(ckpt)
    path = tmp_path / name
    save_checkpoint(ckpt, path)
    return str(path)


@pytest.mark.parametrize("edit,match", [
    (lambda c: c["model_config"].pop("spiking"), r"cannot build \(the model config lacks spiking"),
    (lambda c: c["model_config"]["neuron"].update(thresh=1.0), r"unknown neuron argument\(s\) thresh"),
    (lambda c: c["model_config"].update(recipe="tf"), "unknown recipe 'tf'"),
    (lambda c: c.update(model_config=[1, 2]), "model config must be a dict"),
    (lambda c: c.update(model=[1, 2]), r"weights \('model'\) .* are a list, not a state dict"),
    (lambda c: c["model"].pop("fc.bias"), "do not fit the model they describe"),
])
def test_malformed_tagged_checkpoints(tmp_path, edit, match):
    from snncka.checkpoint import CheckpointError
    from snncka.models import load

    path = _tagged(tmp_path, "bad.pt", edit)
    with pytest.raises(CheckpointError, match=match) as info:
        load(path)
    assert "\n" not in str(info.value) and "bad.pt" in str(info.value)


def test_non_torch_files_are_named_as_such(tmp_path):
    from snncka.checkpoint import CheckpointError
    from snncka.models import load

    (tmp_path / "config.json").write_text('{\n  "model": "resnet20"\n}\n')
    (tmp_path / "notes.txt").write_text("best accuracy 91.2\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    # a pickled object (as old training scripts saved their arguments): loading it would run the file's code
    torch.save({"args": argparse.Namespace(lr=0.1)}, tmp_path / "objects.pt")
    for name, match in [("config.json", "is not a torch checkpoint file .it holds JSON"),
                        ("notes.txt", "is not a torch checkpoint file .it holds text"),
                        ("empty.pt", "is empty"), ("objects.pt", "holding Python objects other than tensors")]:
        with pytest.raises(CheckpointError, match=match) as info:
            load(tmp_path / name)
        msg = str(info.value)
        assert "\n" not in msg and "weights_only" not in msg, msg
        if name != "empty.pt":
            assert "truncated" not in msg and "corrupt" not in msg, msg
    res = CliRunner().invoke(main, ["eval", str(tmp_path / "config.json")])
    assert res.exit_code == 1 and "is not a torch checkpoint file" in res.output
