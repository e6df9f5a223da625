"""SNNs with a Python time loop (snntorch, spikingjelly single-step): under ``time="loop"`` a module's calls
within one forward are its time steps, so CKA equals that of the equivalent multi-step network."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from snncka.cka import compare, temporal

T = 4


def _data(k: int = 2, n: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(2 * torch.rand(n, 1, 8, 8, generator=g), torch.zeros(n)) for _ in range(k)]


def _ann() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 8 * 8, 5)).eval()


class _SnnTorchLoop(nn.Module):
    """The snntorch tutorial pattern: every layer called once per step of a Python loop."""

    def __init__(self, snntorch) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.lif1 = snntorch.Leaky(beta=0.8, threshold=0.5)
        self.fc = nn.Linear(4 * 8 * 8, 5)
        self.lif2 = snntorch.Leaky(beta=0.8, threshold=0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        spikes = []
        for _ in range(T):
            s1, mem1 = self.lif1(self.conv(x), mem1)
            s2, mem2 = self.lif2(self.fc(s1.flatten(1)), mem2)
            spikes.append(s2)
        return torch.stack(spikes).mean(0)


class _Steps(nn.Module):
    """A single-step neuron run over all T steps of a step-major ``[T*B, ...]`` input in one call."""

    def __init__(self, neuron: nn.Module) -> None:
        super().__init__()
        self.neuron = neuron

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem = self.neuron.init_leaky()
        out = []
        for xt in x.unflatten(0, (T, -1)):
            s, mem = self.neuron(xt, mem)
            out.append(s)
        return torch.cat(out)


class _SnnTorchMultiStep(nn.Module):
    """The same network, multi-step: each layer takes all T steps at once, time folded into the batch."""

    def __init__(self, loop: _SnnTorchLoop) -> None:
        super().__init__()
        loop = copy.deepcopy(loop)  # same weights, own modules
        self.conv, self.fc = loop.conv, loop.fc
        self.lif1, self.lif2 = _Steps(loop.lif1), _Steps(loop.lif2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.lif1(self.conv(x.repeat(T, 1, 1, 1)))
        return self.lif2(self.fc(s1.flatten(1))).unflatten(0, (T, -1)).mean(0)


NAMES = ["conv", "lif1", "fc", "lif2"]


def test_snntorch_time_loop_equals_multistep_network():
    snntorch = pytest.importorskip("snntorch")
    loop = _SnnTorchLoop(snntorch).eval()
    multi = _SnnTorchMultiStep(loop).eval()
    ann, data = _ann(), _data()
    got = compare(loop, ann, data, time_a="loop", progress=False)
    ref = compare(multi, ann, data, layers_a=NAMES, time_a="folded", progress=False)
    assert got.layers_a == NAMES and got.kinds_a == ["conv", "act", "linear", "act"]
    assert np.isfinite(got.matrix).all()
    np.testing.assert_allclose(got.matrix, ref.matrix, rtol=0, atol=1e-5)
    # compared with itself: one row per module (not one per call) and a diagonal of 1
    self_ = compare(loop, loop, data, time_a="loop", time_b="loop", progress=False)
    assert self_.layers_a == self_.layers_b == NAMES
    np.testing.assert_allclose(self_.diagonal(), 1.0, atol=1e-6)
    cross = compare(loop, multi, data, time_a="loop", time_b="folded", layers_b=NAMES, progress=False)
    np.testing.assert_allclose(cross.diagonal(), 1.0, atol=1e-5)
    # temporal sees the T steps of each module
    tr = temporal(loop, data, time="loop", progress=False)
    tm = temporal(multi, data, layers=NAMES, time="folded", progress=False)
    assert tr.layers == NAMES and tr.steps == [T] * 4
    np.testing.assert_allclose(tr.matrices, tm.matrices, rtol=0, atol=1e-5)


def test_spikingjelly_single_step_loop_equals_multi_step():
    pytest.importorskip("spikingjelly.activation_based")
    from spikingjelly.activation_based import functional, layer, neuron

    torch.manual_seed(0)
    net = nn.Sequential(layer.Conv2d(1, 4, 3, padding=1), neuron.LIFNode(v_threshold=0.5), layer.Flatten(),
                        layer.Linear(4 * 8 * 8, 5), neuron.LIFNode(v_threshold=0.2))
    with torch.no_grad():
        net[3].weight.mul_(4)  # the last neurons fire

    class Loop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x):
            return torch.stack([self.net(x) for _ in range(T)]).mean(0)

    class Multi(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = copy.deepcopy(net)
            functional.set_step_mode(self.net, "m")

        def forward(self, x):
            return self.net(x.unsqueeze(0).repeat(T, 1, 1, 1, 1)).mean(0)

    ann, data = _ann(), _data()
    got = compare(Loop(), ann, data, time_a="loop", progress=False)
    ref = compare(Multi(), ann, data, time_a="TB", progress=False)
    assert got.layers_a == ref.layers_a == ["net.0", "net.1", "net.3", "net.4"]
    assert np.isfinite(got.matrix).all()
    np.testing.assert_allclose(got.matrix, ref.matrix, rtol=0, atol=1e-5)


def test_layouts_that_do_not_apply_are_errors():
    snntorch = pytest.importorskip("snntorch")
    loop = _SnnTorchLoop(snntorch)
    multi = _SnnTorchMultiStep(loop)
    ann, data = _ann(), _data(k=1)
    for time in ("TB", "BT", "folded", ("TB", 4)):
        with pytest.raises(ValueError, match="ran 4 times in one forward .*use time='loop'"):
            compare(loop, ann, data, time_a=time, progress=False)
    with pytest.raises(ValueError, match=r"time=\('loop', 3\) expects 3 calls"):
        compare(loop, ann, data, time_a=("loop", 3), progress=False)
    compare(loop, ann, data, time_a=("loop", 4), progress=False)
    with pytest.raises(ValueError, match="time='loop' does not apply to Sequential"):
        compare(loop, ann, data, time_a="loop", time_b="loop", progress=False)
    with pytest.raises(ValueError, match="'TB' does not apply to Sequential: no recorded layer"):
        compare(loop, ann, data, time_a="loop", time_b=("TB", 4), progress=False)
    with pytest.raises(ValueError, match=r"time=\('folded', 3\) expects"):
        compare(multi, ann, data, layers_a=NAMES, time_a=("folded", 3), progress=False)


class _SharedReLU(nn.Module):
    """An ANN reusing one ReLU module (as torchvision's BasicBlock does): not a time loop."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.conv1, self.conv2 = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
        self.relu, self.fc = nn.ReLU(), nn.Linear(3 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv2(self.relu(self.conv1(x)))).flatten(1))


def test_a_time_loop_compared_without_its_layout_warns_and_names_the_fix():
    snntorch = pytest.importorskip("snntorch")
    loop, ann, data = _SnnTorchLoop(snntorch).eval(), _ann(), _data(k=1)
    with pytest.warns(UserWarning, match=r"4 of its 4 recorded modules ran 4 times .*pass time_a='loop'") as w:
        res = compare(loop, ann, data, progress=False)
    assert len([x for x in w if "time loop" in str(x.message)]) == 1  # once per compare
    assert res.layers_a[:2] == ["conv", "lif1"] and "conv#4" in res.layers_a  # what the warning is about
    with pytest.warns(UserWarning, match=r"pass time_b='loop'"):
        compare(ann, loop, data, progress=False)
    with pytest.warns(UserWarning, match=r"pass time_a='loop', time_b='loop'"):
        compare(loop, loop, data, progress=False)
    with pytest.warns(UserWarning, match=r"pass time='loop'"):
        temporal(loop, data, progress=False)
    import warnings

    with warnings.catch_warnings():  # the fix silences it; a reused module or a zoo model never warns
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # the untrained zoo SNN's silent layers
        compare(loop, ann, data, time_a="loop", progress=False)
        compare(_SharedReLU().eval(), ann, data, progress=False)
        from snncka.models import create

        snn, zoo_ann = create("resnet20", spiking=True, T=2, width=0.25), create("resnet20", spiking=False, width=0.25)
        x = torch.rand(8, 3, 8, 8)
        compare(snn, zoo_ann, x, progress=False)
