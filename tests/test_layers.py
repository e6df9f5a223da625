"""tdBN, time folding, encoders, change of time steps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snncka.layers import SeqFold, TDBatchNorm2d, change_steps, encode_direct, encode_frames, fold, unfold

T, B, C, H, W = 3, 4, 5, 6, 7


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add synchronisation (badly so on a busy machine)
    yield
    torch.set_num_threads(threads)


def _seq(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, B, C, H, W, generator=g, dtype=torch.float64) * 2 + 0.3


def _pair(seed: int = 1) -> tuple[TDBatchNorm2d, nn.BatchNorm2d]:
    torch.manual_seed(seed)
    td, bn = TDBatchNorm2d(C).double(), nn.BatchNorm2d(C).double()
    with torch.no_grad():
        td.weight.uniform_(0.5, 1.5)
        td.bias.uniform_(-1, 1)
    bn.load_state_dict(td.state_dict())
    return td, bn


@pytest.mark.parametrize("five_d", [False, True])
def test_tdbn_equals_batchnorm_on_folded_tensor_train(five_d):
    td, bn = _pair()
    x = _seq()
    xt = x.clone().requires_grad_()
    xb = x.clone().requires_grad_()
    yt = td(xt if five_d else fold(xt))
    yb = bn(fold(xb))
    assert yt.shape == ((T, B, C, H, W) if five_d else (T * B, C, H, W))
    torch.testing.assert_close(fold(yt) if five_d else yt, yb, rtol=0, atol=1e-12)
    # the naive formula: statistics over all T*B samples and all pixels (biased variance), then affine
    mean = x.mean(dim=(0, 1, 3, 4), keepdim=True)
    var = x.var(dim=(0, 1, 3, 4), unbiased=False, keepdim=True)
    w, b = td.weight.view(1, 1, C, 1, 1), td.bias.view(1, 1, C, 1, 1)
    naive = (x - mean) / torch.sqrt(var + td.eps) * w + b
    torch.testing.assert_close(yt.reshape(T, B, C, H, W), naive, rtol=0, atol=1e-12)
    # running statistics use the unbiased variance over T*B*H*W values, momentum 0.1
    n = T * B * H * W
    torch.testing.assert_close(td.running_mean, 0.1 * mean.flatten(), rtol=0, atol=1e-12)
    torch.testing.assert_close(td.running_var, 0.9 + 0.1 * var.flatten() * n / (n - 1), rtol=0, atol=1e-12)
    torch.testing.assert_close(td.running_var, bn.running_var, rtol=0, atol=1e-14)
    up = torch.randn(yb.shape, dtype=torch.float64)
    (yt.reshape(yb.shape) * up).sum().backward()
    (yb * up).sum().backward()
    torch.testing.assert_close(xt.grad, xb.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(td.weight.grad, bn.weight.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("five_d", [False, True])
def test_tdbn_equals_batchnorm_eval(five_d):
    td, bn = _pair()
    for seed in range(3):  # accumulate running statistics in train mode first
        x = _seq(seed)
        td(x if five_d else fold(x))
        bn(fold(x))
    td.eval()
    bn.eval()
    x = _seq(9)
    y = td(x if five_d else fold(x))
    torch.testing.assert_close(y.reshape(T * B, C, H, W), bn(fold(x)), rtol=0, atol=1e-12)
    mean, var = td.running_mean.view(1, 1, C, 1, 1), td.running_var.view(1, 1, C, 1, 1)
    naive = (x - mean) / torch.sqrt(var + td.eps)
    naive = naive * td.weight.view(1, 1, C, 1, 1) + td.bias.view(1, 1, C, 1, 1)
    torch.testing.assert_close(y.reshape(T, B, C, H, W), naive, rtol=0, atol=1e-12)


def test_tdbn_has_batchnorm_state_dict_keys():
    assert list(TDBatchNorm2d(C).state_dict()) == list(nn.BatchNorm2d(C).state_dict())


def test_fold_unfold_layout():
    x = _seq()
    f = fold(x)
    assert f.shape == (T * B, C, H, W)
    for t in range(T):
        for b in range(B):
            assert torch.equal(f[t * B + b], x[t, b])  # step-major rows
    assert torch.equal(unfold(f, T), x)
    with pytest.raises(ValueError, match="T=5"):
        unfold(f, 5)


def test_encoders():
    img = torch.randn(B, C, H, W)
    d = encode_direct(img, T)
    assert d.shape == (T * B, C, H, W)
    for t in range(T):
        assert torch.equal(d[t * B:(t + 1) * B], img)
    frames = _seq()
    assert torch.equal(encode_frames(frames), fold(frames))


def test_change_steps():
    x = _seq()
    one = x.mean(0)  # [B, ...]
    assert change_steps(fold(x), T, T) is not None and torch.equal(change_steps(fold(x), T, T), fold(x))
    torch.testing.assert_close(change_steps(fold(x), T, 1), (x[0] + x[1] + x[2]) / 3, rtol=0, atol=1e-14)
    rep = change_steps(one, 1, 4)
    assert rep.shape == (4 * B, C, H, W)
    assert all(torch.equal(rep[t * B:(t + 1) * B], one) for t in range(4))
    with pytest.raises(ValueError, match="one of them must be 1"):
        change_steps(fold(x), 3, 2)


def test_seqfold_runs_each_step():
    torch.manual_seed(0)
    conv = nn.Conv2d(C, 2, 3, padding=1).double()
    x = _seq()
    y = SeqFold(conv)(x)
    assert y.shape == (T, B, 2, H, W)
    for t in range(T):
        torch.testing.assert_close(y[t], conv(x[t]), rtol=0, atol=1e-12)
