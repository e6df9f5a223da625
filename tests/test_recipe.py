"""Both recipes against an independent model of what the authors' released ResNets compute.

``Released`` below is written for this test from the facts of the released modules, not from their code:
pre-activation blocks (act -> conv3x3 -> BN -> act -> conv3x3 -> BN, projection avg-pool(stride) -> conv1x1 ->
BN on the activated input); the ANN's ReLUs are in place, so the block input itself is overwritten by
``relu(x)`` and its identity shortcut carries that; the SNN keeps ``[B, T, ...]`` tensors, applies stateless
layers to each step, uses LIF with tau 0.5, threshold 1, a spike when ``mem - 1 >= 0``, a hard reset
``mem = (1 - spike) * mem`` and DSpike's gradient (``tanh(3 clamp(x, -3, 3)) / (2 tanh 9) + 1/2``); its
time-dependent BN registers each BatchNorm twice. The logits of the SNN are per step, averaged over T.

snncka's models get the reference's weights by parameter order (``load_released_state_dict``) and must give
the same logits (eval and train mode), the same BN running statistics, and the same input and weight gradients.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from snncka import recipes
from snncka.models import create, from_config, load_released_state_dict
from snncka.record import Recorder, select_layers

pytestmark = pytest.mark.usefixtures("eager_kernels")  # see conftest.py

T, B, HW, WIDTH = 2, 4, 8, 0.25
CH = (4, 8, 16)  # 16/32/64 channels x 0.25


# ----------------------------------------------------------------------------------------------------------
# The independent model
# ----------------------------------------------------------------------------------------------------------


def dspike_spike(v: torch.Tensor) -> torch.Tensor:
    """Heaviside(v >= 0) forward; gradient of tanh(3 clamp(v, -3, 3)) / (2 tanh 9) + 1/2 backward."""
    smooth = torch.tanh(3 * v.clamp(-3, 3)) / (2 * math.tanh(9)) + 0.5
    return (v >= 0).to(v.dtype) + (smooth - smooth.detach())


def lif_bt(x: torch.Tensor) -> torch.Tensor:
    """LIF over the time axis 1 of ``[B, T, ...]``."""
    mem, out = 0, []
    for t in range(x.shape[1]):
        mem = 0.5 * mem + x[:, t]
        s = dspike_spike(mem - 1.0)
        mem = (1 - s) * mem
        out.append(s)
    return torch.stack(out, 1)


class PerStep(nn.Module):
    """A stateless layer on ``[B, T, ...]`` (steps folded into the batch); the layer is ``.module``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x):
        y = self.module(x.flatten(0, 1))
        return y.view(x.shape[0], x.shape[1], *y.shape[1:])


class TdBN(nn.Module):
    """BatchNorm over all B*T samples; the same BatchNorm2d is registered twice, as ``bn`` and inside
    ``seqbn`` (so the state dict lists it twice, as the released one does)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(c)
        self.seqbn = PerStep(self.bn)

    def forward(self, x):
        return self.seqbn(x)


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, spiking: bool, inplace: bool) -> None:
        super().__init__()
        conv = (lambda m: PerStep(m)) if spiking else (lambda m: m)
        norm = TdBN if spiking else nn.BatchNorm2d
        self.spiking = spiking
        self.conv1 = conv(nn.Conv2d(cin, cout, 3, stride, 1, bias=False))
        self.bn1 = norm(cout)
        self.conv2 = conv(nn.Conv2d(cout, cout, 3, 1, 1, bias=False))
        self.bn2 = norm(cout)
        if not spiking:
            self.relu1, self.relu2 = nn.ReLU(inplace=inplace), nn.ReLU(inplace=inplace)
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(PerStep(nn.AvgPool2d(stride)) if spiking else nn.AvgPool2d(stride),
                                            conv(nn.Conv2d(cin, cout, 1, bias=False)), norm(cout))

    def forward(self, x):
        act1 = lif_bt if self.spiking else self.relu1
        act2 = lif_bt if self.spiking else self.relu2
        h = act1(x)  # with an in-place ReLU this overwrites x: the identity below is then relu(x)
        shortcut = self.downsample(h) if hasattr(self, "downsample") else x
        h = self.bn2(self.conv2(act2(self.bn1(self.conv1(h)))))
        return h + shortcut


class Released(nn.Module):
    def __init__(self, spiking: bool, inplace: bool = True, classes: int = 10) -> None:
        super().__init__()
        self.spiking = spiking
        self.conv1 = nn.Conv2d(3, CH[0], 3, 1, 1, bias=False)
        if spiking:
            self.conv1 = PerStep(self.conv1)
        self.bn = TdBN(CH[0]) if spiking else nn.BatchNorm2d(CH[0])
        cin = CH[0]
        for s, c in enumerate(CH):
            blocks = [Block(cin if b == 0 else c, c, 2 if s and not b else 1, spiking, inplace) for b in range(3)]
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
            cin = c
        self.relu = nn.ReLU(inplace=inplace)
        self.fc1 = PerStep(nn.Linear(CH[2], classes)) if spiking else nn.Linear(CH[2], classes)

    def forward(self, x):
        """ANN: logits [B, K]; SNN: per-step logits [B, T, K]."""
        if self.spiking:
            x = x.unsqueeze(1).repeat(1, T, 1, 1, 1)
        h = self.layer3(self.layer2(self.layer1(self.bn(self.conv1(x)))))
        h = lif_bt(h) if self.spiking else self.relu(h)
        h = h.mean((-2, -1))  # global average pool
        return self.fc1(h)


# ----------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------


def _reference(spiking: bool, inplace: bool = True) -> Released:
    torch.manual_seed(3)
    ref = Released(spiking, inplace).double()
    g = torch.Generator().manual_seed(4)
    for m in ref.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if isinstance(m, nn.BatchNorm2d):  # BN parameters and statistics away from their initial values
            with torch.no_grad():
                m.weight.copy_(1 + 0.3 * torch.rand(m.weight.shape, generator=g, dtype=torch.float64))
                m.bias.copy_(0.4 * torch.randn(m.bias.shape, generator=g, dtype=torch.float64) + 0.2)
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g, dtype=torch.float64))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g, dtype=torch.float64))
    return ref


def _images() -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    return torch.randn(B, 3, HW, HW, generator=g, dtype=torch.float64)


def _per_step(model, x):
    """Per-step logits in the reference's layout ([B, T, K] for an SNN, [B, K] for an ANN)."""
    out = model(x, per_step=True)
    return out.transpose(0, 1) if model.spiking else out[0]


def _run(model, x, upstream, ours: bool):
    x = x.clone().requires_grad_()
    out = _per_step(model, x) if ours else model(x)
    (out * upstream).sum().backward()
    return out.detach(), x.grad, [p.grad.clone() for p in model.parameters()]


def _assert_same(ref: Released, ours, train: bool) -> None:
    ref.train(train)
    ours.train(train)
    x = _images()
    g = torch.Generator().manual_seed(6)
    upstream = torch.randn(B, T, 10, generator=g, dtype=torch.float64) if ours.spiking else \
        torch.randn(B, 10, generator=g, dtype=torch.float64)
    out_r, gx_r, gw_r = _run(ref, x, upstream, ours=False)
    out_o, gx_o, gw_o = _run(ours, x, upstream, ours=True)
    torch.testing.assert_close(out_o, out_r, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gx_o, gx_r, rtol=1e-9, atol=1e-12)
    assert len(gw_o) == len(gw_r)
    for a, b in zip(gw_o, gw_r, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert gx_r.abs().max() > 1e-3 and all(w.abs().max() > 0 for w in gw_r[:-2])  # real gradients flow
    if train:  # both updated their BN running statistics the same way
        theirs = [v for k, v in ref.state_dict().items() if "seqbn" not in k]
        for a, b in zip(ours.state_dict().values(), theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def _ours(spiking: bool, recipe: str, ref: Released):
    m = create("resnet20", spiking=spiking, recipe=recipe, width=WIDTH, T=T).double()
    load_released_state_dict(m, ref.state_dict())
    return m


# ----------------------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spiking", [False, True], ids=["ann", "snn"])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_code_recipe_is_the_released_network(spiking, train):
    ref = _reference(spiking)
    ours = _ours(spiking, "code", ref)
    if spiking:  # the inputs make neurons fire (eval: the statistics stay as loaded)
        with torch.no_grad():
            rate = lif_bt(ref.eval().bn(ref.conv1(_images().unsqueeze(1).repeat(1, T, 1, 1, 1)))).mean().item()
        assert 0.05 < rate < 0.95, rate
    _assert_same(ref, ours, train)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_paper_ann_is_the_released_ann_without_in_place_relu(train):
    _assert_same(*(lambda r: (r, _ours(False, "paper", r)))(_reference(False, inplace=False)), train)


def test_the_in_place_relu_changes_the_ann_and_the_recipes_differ():
    # guards the tests above: the released ANN (in-place) is another function than the paper's
    x = _images()
    ref_code, ref_paper = _reference(False, True).eval(), _reference(False, False).eval()
    with torch.no_grad():
        assert (ref_code(x) - ref_paper(x)).abs().max() > 1e-2
        paper = _ours(False, "paper", ref_code).eval()
        assert (paper(x) - ref_code(x)).abs().max() > 1e-2


def test_paper_snn_differs_from_the_released_snn():
    ref = _reference(True).eval()
    x = _images().requires_grad_()
    ours = _ours(True, "paper", ref).eval()
    ours(x).sum().backward()
    g_paper = x.grad.clone()
    x.grad = None
    ref(x).mean(1).sum().backward()
    assert (g_paper - x.grad).abs().max() > 1e-3  # rect surrogate vs DSpike


def _leaf_calls(model: nn.Module) -> list[str]:
    kinds = {nn.Conv2d: "conv", nn.BatchNorm2d: "bn", nn.ReLU: "act", nn.AvgPool2d: "avgpool",
             nn.Linear: "fc"}
    calls: list[str] = []
    hooks = [m.register_forward_hook(lambda m, i, o, k=k: calls.append(k))
             for m in model.modules() for t, k in kinds.items() if type(m) is t]
    with torch.no_grad():
        model(_images())
    for h in hooks:
        h.remove()
    return calls


def test_layers_run_in_the_released_order():
    ref = _reference(False).eval()
    assert _leaf_calls(_ours(False, "code", ref).eval()) == _leaf_calls(ref)
    # the paper recipe runs the projection shortcut after bn2
    paper = _leaf_calls(_ours(False, "paper", ref).eval())
    assert sorted(paper) == sorted(_leaf_calls(ref)) and paper != _leaf_calls(ref)


def test_recipe_is_stored_and_rebuilt():
    m = create("resnet20", spiking=True, recipe="code", width=WIDTH, T=T)
    assert m.config["recipe"] == "code"
    lif = m.s1.b0.act1.cfg
    assert (lif.surrogate, lif.param, lif.fire_at_threshold) == ("dspike", 3.0, True)
    twin = from_config(m.config)
    assert twin.config == m.config and twin.s1.b0.act1.cfg == lif
    ann = from_config(create("resnet20", spiking=False, recipe="code", width=WIDTH).config)
    assert ann.s1.b0.activated_identity and ann.s1.b0.shortcut_first
    # explicit arguments override the recipe, and survive the round trip
    m = create("resnet20", spiking=True, recipe="code", width=WIDTH, surrogate="rect", fire_at_threshold=False)
    assert (m.s1.b0.act1.cfg.surrogate, m.s1.b0.act1.cfg.fire_at_threshold) == ("rect", False)
    assert from_config(m.config).s1.b0.act1.cfg == m.s1.b0.act1.cfg
    a = create("resnet20", spiking=False, recipe="code", width=WIDTH, ann_shortcut="identity")
    assert not from_config(a.config).s1.b0.activated_identity
    # every stored config names its recipe (no fallback for an unreleased format without one)
    old = {k: v for k, v in create("resnet20", spiking=True, width=WIDTH).config.items() if k != "recipe"}
    with pytest.raises(ValueError, match="lacks recipe"):
        from_config(old)


def test_parameter_names_do_not_depend_on_the_recipe():
    for spiking in (False, True):
        a = create("resnet20", spiking=spiking, recipe="paper", width=WIDTH)
        b = create("resnet20", spiking=spiking, recipe="code", width=WIDTH)
        assert list(a.state_dict()) == list(b.state_dict())


def test_bad_recipe_arguments():
    with pytest.raises(ValueError, match="unknown recipe 'tf'; choose one of: paper, code"):
        create("resnet20", spiking=True, recipe="tf")
    with pytest.raises(ValueError, match="ann_shortcut must be one of identity, activated"):
        create("resnet20", spiking=False, ann_shortcut="relu")
    with pytest.raises(ValueError, match="unknown neuron argument.*thresh; choose from tau, v_th"):
        create("resnet20", spiking=True, thresh=1.0)
    with pytest.raises(ValueError, match="not registered"):
        create("resnet20", spiking=True, recipe=recipes.Recipe(name="mine", surrogate="sigmoid"))
    ref = _reference(False)
    with pytest.raises(ValueError, match=r"the state dict has \d+ tensors, resnet38"):
        load_released_state_dict(create("resnet38", spiking=False, width=WIDTH), ref.state_dict())
    with pytest.raises(ValueError, match="does not fit"):
        load_released_state_dict(create("resnet20", spiking=False, width=0.5), ref.state_dict())


def test_released_state_dict_skips_the_duplicate_bn():
    ref = _reference(True)
    sd = ref.state_dict()
    assert any("seqbn.module" in k for k in sd)
    m = _ours(True, "code", ref)
    assert len(m.state_dict()) == sum("seqbn" not in k for k in sd)
    assert torch.equal(m.bn1.running_var, ref.bn.bn.running_var)
    assert torch.equal(m.s3.b2.conv2.weight, ref.layer3[2].conv2.module.weight)


def test_recipes_hold_the_released_values():
    code, paper = recipes.get("code"), recipes.get("paper")
    assert (code.surrogate, code.fire_at_threshold, code.ann_shortcut, code.shortcut_first) == \
        ("dspike", True, "activated", True)
    assert (code.momentum_ann, code.momentum_snn) == (0.8, 0.9)
    assert code.weight_decay_for("cifar100", True) == 5e-4 and code.weight_decay_for("cifar100", False) == 1e-4
    assert (code.pgd_steps, code.pgd_step_frac, code.pgd_random_start, code.pgd_clip) == (20, 0.1, False, False)
    assert (paper.surrogate, paper.fire_at_threshold, paper.ann_shortcut) == ("rect", False, "identity")
    # where the paper is silent it takes the released PGD
    assert (paper.pgd_steps, paper.pgd_step_frac, paper.pgd_random_start) == (20, 0.1, False)
    assert recipes.RELEASED_NORMALISATION["cifar10"] == ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))


def test_checkpoint_carries_the_recipe(tmp_path):
    from snncka.checkpoint import save_checkpoint
    from snncka.models import load

    ref = _reference(True)
    m = _ours(True, "code", ref).float().eval()
    save_checkpoint({"model_config": m.config, "model": m.state_dict()}, tmp_path / "code.pt")
    back = load(tmp_path / "code.pt")
    assert back.config["recipe"] == "code" and back.s2.b1.act2.cfg.fire_at_threshold
    x = _images().float()
    with torch.no_grad():
        assert torch.equal(back(x), m(x))


def test_paper_recipe_takes_the_released_choice_where_the_paper_is_silent():
    paper, code = recipes.get("paper"), recipes.get("code")
    # silent in the paper: the released code's choice
    assert (paper.lr_schedule_step, paper.checkpoint, paper.normalisation) == ("epoch", "best", "fixed")
    assert paper.normalisation_for("cifar10") == paper.normalisation_for("cifar100") == "fixed"
    assert paper.normalisation_for("digits") == "dataset" == code.normalisation_for("cifar10-dvs")
    # stated in the paper (and the documented exceptions: CKA minibatch, eval-mode attack, one momentum)
    assert (paper.momentum_ann, paper.momentum_snn, paper.weight_decay_for("cifar100", True)) == (0.9, 0.9, 1e-4)
    assert (paper.cka_images, paper.cka_batch, paper.pgd_model_mode, paper.pgd_bn_updates) == (4096, 256, "eval",
                                                                                              False)
    assert (code.cka_images, code.cka_batch, code.pgd_model_mode) == (2048, 1024, "train")
    assert paper.cka_selection() == "paper" and code.cka_selection() == ["conv", "norm", "act", "block", "pool"]
    # the released CKA layer set of ResNet-20: 73 layers, no fc
    m = create("resnet20", spiking=True, recipe="code")
    with torch.no_grad(), Recorder(m, code.cka_selection()) as rec:
        rec(torch.zeros(2, 3, 32, 32))
    assert len(rec.names) == 73 and "fc" not in rec.names
    assert ("fc", "linear") in select_layers(m, paper.cka_selection())
