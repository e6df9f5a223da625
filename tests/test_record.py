"""Layer selection and recording: kinds, forward order, repeated calls, inplace ops, time layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import snncka
from snncka.cka import compare
from snncka.record import Recorder, kind_of, parse_time, record, select_layers, to_feature


def _resnet(spiking: bool, **kw) -> nn.Module:
    torch.manual_seed(0)
    return snncka.create("resnet8", spiking=spiking, num_classes=3, in_channels=1, width=0.25, **kw).eval()


def test_paper_selection_on_resnet_in_forward_order():
    ann, snn = _resnet(False), _resnet(True, T=2)
    sel = select_layers(ann)
    assert sel == select_layers(snn)  # ANN and SNN: same names, same kinds
    names = [n for n, _ in sel]
    assert names[:9] == ["conv1", "bn1", "s1.b0", "s1.b0.act1", "s1.b0.conv1", "s1.b0.bn1", "s1.b0.act2",
                         "s1.b0.conv2", "s1.b0.bn2"]  # registration order: the block before its children
    kinds = dict(sel)
    assert kinds["s2.b0.ds.0"] == "pool" and kinds["s2.b0.ds.2"] == "norm" and kinds["fc"] == "linear"
    with torch.no_grad(), Recorder(snn) as rec:
        rec(torch.rand(4, 1, 8, 8))
    # forward order: a block's output is recorded after its children; 32 layers in resnet8
    assert rec.names[:9] == ["conv1", "bn1", "s1.b0.act1", "s1.b0.conv1", "s1.b0.bn1", "s1.b0.act2",
                             "s1.b0.conv2", "s1.b0.bn2", "s1.b0"]
    assert rec.names[-3:] == ["act", "pool", "fc"] and len(rec.names) == 32
    assert rec.kinds[:3] == ["conv", "norm", "act"] and rec.kinds[8] == "block"
    assert set(rec.names) == set(names)


def test_selection_by_kind_pattern_and_callable():
    ann = _resnet(False)
    assert [n for n, _ in select_layers(ann, "act")] == [
        "s1.b0.act1", "s1.b0.act2", "s2.b0.act1", "s2.b0.act2", "s3.b0.act1", "s3.b0.act2", "act"]
    assert [n for n, _ in select_layers(ann, ["s1.*.conv?", "fc"])] == ["s1.b0.conv1", "s1.b0.conv2", "fc"]
    assert [n for n, _ in select_layers(ann, ["block"])] == ["s1.b0", "s2.b0", "s3.b0"]
    assert [n for n, _ in select_layers(ann, lambda n, m: isinstance(m, nn.AdaptiveAvgPool2d))] == ["pool"]
    with pytest.raises(ValueError, match="matched no module"):
        select_layers(ann, "s9.*")
    with pytest.raises(ValueError, match="empty layer selection"):
        select_layers(ann, [])


def test_kind_of_common_modules():
    assert kind_of(nn.Conv1d(1, 1, 1)) == "conv" and kind_of(nn.LayerNorm(3)) == "norm"
    assert kind_of(nn.GELU()) == "act" and kind_of(nn.MaxPool2d(2)) == "pool"
    assert kind_of(nn.Softmax()) == "other"
    assert kind_of(nn.Sequential()) == "other" and kind_of(snncka.neurons.LIF(T=2)) == "act"


class _Twice(nn.Module):
    """Calls one ReLU twice, the first time right after a layer whose output it then overwrites in place."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.lin(self.relu(self.lin(x))) - 0.5)


def test_module_called_twice_recorded_twice_and_inplace_safe():
    torch.manual_seed(0)
    net = _Twice()
    x = torch.randn(5, 3)
    with torch.no_grad(), Recorder(net) as rec, pytest.warns(UserWarning, match="as in a Python time loop"):
        rec(x)  # every module ran twice: it might be a time loop, so the recorder says how to record one
    with torch.no_grad():
        lin1 = net.lin(x)
        lin2 = net.lin(torch.relu(lin1))
    assert rec.names == ["lin", "relu", "lin#2", "relu#2"] and rec.kinds == ["linear", "act", "linear", "act"]
    assert (lin1 < 0).any()  # the inplace ReLU would have zeroed these in an uncloned record
    torch.testing.assert_close(rec.features["lin"][:, 0], lin1)
    torch.testing.assert_close(rec.features["lin#2"][:, 0], lin2)
    torch.testing.assert_close(rec.features["relu#2"][:, 0], torch.relu(lin2 - 0.5))


def test_folded_snn_feature_is_steps_concatenated_and_mixed_steps():
    snn = _resnet(True, T=3, stage_T=(3, 3, 1), v_th=0.3)
    x = torch.rand(4, 1, 8, 8)
    outs = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: outs.__setitem__(n, o.clone()))
             for n, m in snn.named_modules() if n in ("s1.b0.act1", "s3.b0.conv1")]
    with torch.no_grad(), Recorder(snn) as rec:
        rec(x)
    for h in hooks:
        h.remove()
    act = rec.features["s1.b0.act1"]  # [B, T, p]
    assert act.shape == (4, 3, 4 * 8 * 8)
    raw = outs["s1.b0.act1"]  # [T*B, C, H, W], step-major
    for b in range(4):
        expect = torch.cat([raw[t * 4 + b].flatten() for t in range(3)])
        torch.testing.assert_close(act[b].reshape(-1), expect)
    assert set(act.unique().tolist()) <= {0.0, 1.0}
    assert rec.features["s3.b0.conv1"].shape[1] == 1  # the stage run with T = 1
    torch.testing.assert_close(rec.features["s3.b0.conv1"][:, 0], outs["s3.b0.conv1"].flatten(1))


def test_time_layouts_tb_bt_and_errors():
    B, T = 4, 3
    y = torch.arange(T * B * 2, dtype=torch.float32).reshape(T, B, 2)
    tb = to_feature(y, B, parse_time("TB"))
    bt = to_feature(y.transpose(0, 1), B, parse_time("BT"))
    torch.testing.assert_close(tb, y.transpose(0, 1))
    torch.testing.assert_close(bt, tb)
    torch.testing.assert_close(to_feature(y.reshape(T * B, 2), B, parse_time("folded")), tb)
    assert to_feature(torch.zeros(B, 5), B, parse_time("TB")).shape == (B, 1, 5)  # a layer without time
    assert to_feature(torch.zeros(B, 5), B, parse_time(("BT", 3))).shape == (B, 1, 5)
    with pytest.raises(ValueError, match="time='TB'"):
        to_feature(y, B, parse_time(None))
    with pytest.raises(ValueError, match="unknown time layout"):
        parse_time("TBX")
    assert parse_time(None, _resnet(True)).kind == "folded" and parse_time(None, _resnet(False)).kind is None


class _TimeFirst(nn.Module):
    """A generic time-first SNN-like model: [T, B, p] through a shared Linear and a step-wise threshold."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 5)
        self.act = nn.Hardtanh(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x)).mean(0)


def test_time_first_model_needs_its_layout():
    torch.manual_seed(0)
    net = _TimeFirst()
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(5, 8, 6, generator=g), torch.zeros(8)) for _ in range(2)]  # [T, B, p] and labels
    with pytest.raises(ValueError, match="time='TB'"):  # 5 rows, but there are 8 labels
        compare(net, net, data, progress=False)
    res = compare(net, net, data, time_a="TB", time_b="TB", progress=False)
    assert res.n_images == 16 and res.layers_a == ["fc", "act"]
    feats = record(net, data, time="TB")
    assert feats["fc"].shape == (16, 5 * 5)
    torch.testing.assert_close(feats["fc"][:8].reshape(8, 5, 5), net.fc(data[0][0]).transpose(0, 1).detach())


@pytest.mark.filterwarnings("ignore:model. layer")
def test_spikingjelly_multistep_model():
    sj = pytest.importorskip("spikingjelly.activation_based")
    from spikingjelly.activation_based import functional, layer, neuron

    torch.manual_seed(0)
    net = nn.Sequential(layer.Conv2d(1, 4, 3, padding=1), neuron.LIFNode(), layer.Flatten(),
                        layer.Linear(4 * 8 * 8, 3), neuron.LIFNode())
    functional.set_step_mode(net, "m")
    assert sj is not None
    x = torch.rand(2, 6, 1, 8, 8) * 3  # [T, B, C, H, W]
    with torch.no_grad(), Recorder(net, time="TB") as rec:
        rec(x)
        first = rec.features["1"].clone()
        rec(x)  # neuron states are reset before each pass: the same spikes again
    assert rec.names == ["0", "1", "3", "4"] and rec.kinds == ["conv", "act", "linear", "act"]
    assert rec.batch_size == 6 and first.shape == (6, 2, 4 * 8 * 8)
    torch.testing.assert_close(rec.features["1"], first)
    assert first.sum() > 0 and set(first.unique().tolist()) <= {0.0, 1.0}
    res = compare(net, net, [x, x.flip(1)], time_a="TB", time_b="TB", progress=False)
    np.testing.assert_allclose(np.diagonal(res.matrix)[:2], 1.0, atol=1e-6)


def test_tuple_outputs_record_their_first_tensor():
    class Neuron(nn.Module):  # snntorch-style: returns (spikes, membrane)
        def forward(self, x):
            return (x > 0).float(), x

    net = nn.Sequential(nn.Linear(3, 4))
    net.add_module("spk", Neuron())
    x = torch.randn(5, 3)
    with torch.no_grad(), Recorder(net, ["spk"]) as rec:
        rec.reset()
        rec.batch_size = 5
        net.spk(x)
        torch.testing.assert_close(rec.features["spk"][:, 0], (x > 0).float())


def test_recorder_without_batch_size_is_an_error():
    net = nn.Sequential(nn.Linear(3, 4))
    with Recorder(net) as _, pytest.raises(RuntimeError, match="batch_size"):
        net(torch.randn(2, 3))


class _Loop(nn.Module):
    """A Python time loop: a Linear and an inplace ReLU called once per step, then a readout called once."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.relu = nn.ReLU(inplace=True)
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(sum(self.relu(self.lin(x * (t + 1))) for t in range(3)))


def test_loop_layout_stacks_a_modules_calls_into_its_time_series():
    torch.manual_seed(0)
    net = _Loop()
    x = torch.randn(5, 3)
    with torch.no_grad(), Recorder(net, time="loop") as rec:
        rec(x)
        expect = torch.stack([net.lin(x * (t + 1)) for t in range(3)], 1)  # [B, T, p]
    assert rec.names == ["lin", "relu", "out"] and rec.kinds == ["linear", "act", "linear"]
    assert (expect < 0).any()  # the inplace ReLU after lin would have zeroed these in an uncloned record
    torch.testing.assert_close(rec.features["lin"], expect)
    torch.testing.assert_close(rec.features["relu"], expect.relu())
    assert rec.features["out"].shape == (5, 1, 2)  # the readout after the loop: one step
    assert parse_time(("loop", 3)).T == 3
    feats = record(net, [x, x], time="loop")
    assert feats["lin"].shape == (10, 3 * 4)
