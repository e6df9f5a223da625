"""The CUDA code paths hold the same values as the CPU ones (skipped without a GPU).

* the compiled fused LIF (Triton kernels) equals the reference loop on the CPU, every surrogate: spikes
  exactly, BPTT gradients to float32 rounding;
* a spiking ResNet-20 (width 0.5) forward and backward on the GPU equals the same on the CPU (float64);
* ``snncka.compare`` / ``snncka.cka.temporal`` on the GPU equal the CPU results to 1e-6 (ANN vs SNN);
* the CKA reference functions give the CPU's values on GPU tensors;
* the trainer's CUDA path (bf16 autocast, channels_last) trains: finite metrics, falling loss.

Convolutions and matrix products run without TF32 here (``_no_tf32``), so float32 differences are
rounding, not TF32's 10-bit mantissa; the trainer test keeps the trainer's own settings.
``SNNCKA_TEST_DEVICE=cpu`` runs the same tests with the CPU in the GPU's place (a check of the tests
themselves on a machine without a GPU).
"""

from __future__ import annotations

import copy
import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from snncka import data
from snncka.cka import center_gram, cka, compare, gram_linear, gram_rbf, hsic_biased, hsic_unbiased, temporal
from snncka.models import create, load
from snncka.neurons import SURROGATES, LIFConfig, lif_fused, lif_reference
from snncka.training import TrainConfig, train

DEV = os.environ.get("SNNCKA_TEST_DEVICE", "cuda")

pytestmark = pytest.mark.skipif(torch.device(DEV).type == "cuda" and not torch.cuda.is_available(),
                                reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def _compiled(monkeypatch: pytest.MonkeyPatch):
    """The default (compiled) fused LIF: the GPU's real path."""
    monkeypatch.setenv("SNNCKA_COMPILE", "1")


@pytest.fixture
def _no_tf32():
    if not torch.cuda.is_available():
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------------------
# Fused LIF on the GPU vs the reference loop on the CPU
# ----------------------------------------------------------------------------------------------------------

T, SHAPE = 4, (8, 3, 61)  # 1464 neurons: not a multiple of any block size
LIF_CASES = [(s, "hard", False) for s in sorted(SURROGATES)] + [("sigmoid", "soft", True)]


def _run(fn, x: torch.Tensor, upstream: torch.Tensor):
    x = x.clone().requires_grad_()
    y = fn(x)
    (y * upstream).sum().backward()
    return y.detach(), x.grad


@pytest.mark.parametrize("surrogate,reset,detach", LIF_CASES)
def test_compiled_fused_lif_equals_reference_dyadic(surrogate, reset, detach):
    """Inputs k/64: every membrane value is exact in float32 on any hardware (tau 0.5), so spikes must be
    identical bit for bit, threshold ties (u_pre == v_th does not fire) included."""
    cfg = LIFConfig(surrogate=surrogate, reset=reset, detach_reset=detach)
    x = torch.randint(-32, 97, (T, *SHAPE), generator=_gen(0)).float() / 64
    up = torch.randn(x.shape, generator=_gen(1))
    y_ref, g_ref = _run(lambda v: lif_reference(v, cfg), x.double(), up.double())  # CPU, float64
    y_cpu, g_cpu = _run(lambda v: lif_reference(v, cfg), x, up)  # CPU, float32
    y_dev, g_dev = _run(lambda v: lif_fused(v, cfg, compiled=True), x.to(DEV), up.to(DEV))
    assert y_dev.device.type == torch.device(DEV).type and y_dev.dtype == torch.float32
    assert torch.equal(y_dev.cpu().double(), y_ref) and torch.equal(y_cpu.double(), y_ref)
    assert 0.1 < y_ref.mean().item() < 0.7
    assert ((lif_reference(x.double(), cfg, return_membrane=True)[1] == 1.0).sum() > 0)  # ties occur
    scale = g_ref.abs().max().item()
    assert scale > 0.1
    torch.testing.assert_close(g_dev.cpu().double(), g_ref, rtol=1e-5, atol=1e-6 * scale)
    torch.testing.assert_close(g_dev.cpu(), g_cpu, rtol=1e-5, atol=1e-6 * scale)
    # the reference loop itself on the GPU, too
    y_rdev, g_rdev = _run(lambda v: lif_reference(v, cfg), x.to(DEV), up.to(DEV))
    assert torch.equal(y_rdev.cpu().double(), y_ref)
    torch.testing.assert_close(g_rdev.cpu().double(), g_ref, rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("surrogate,reset,detach", LIF_CASES)
def test_compiled_fused_lif_equals_reference_random(surrogate, reset, detach):
    """Random float32 inputs: a spike may differ only where the membrane lies within rounding of v_th
    (the kernel may contract tau * u + x into one FMA); gradients agree on every neuron far from it."""
    cfg = LIFConfig(surrogate=surrogate, reset=reset, detach_reset=detach)
    x = torch.randn(T, *SHAPE, generator=_gen(2)) * 0.9 + 0.55
    up = torch.randn(x.shape, generator=_gen(3))
    y_ref, g_ref = _run(lambda v: lif_reference(v, cfg), x, up)
    y_dev, g_dev = _run(lambda v: lif_fused(v, cfg, compiled=True), x.to(DEV), up.to(DEV))
    u_pre = lif_reference(x.double(), cfg, return_membrane=True)[1]
    near = (u_pre - cfg.v_th).abs() < 1e-5
    differ = y_dev.cpu() != y_ref
    assert not (differ & ~near).any()
    far = ~near.flatten(1).any(0)  # neurons never near the threshold: the whole BPTT chain must agree
    assert far.float().mean() > 0.99
    scale = g_ref.abs().max().item()
    torch.testing.assert_close(g_dev.cpu().flatten(1)[:, far], g_ref.flatten(1)[:, far], rtol=1e-4,
                               atol=1e-5 * scale)


# ----------------------------------------------------------------------------------------------------------
# A spiking ResNet-20 on the GPU vs the CPU
# ----------------------------------------------------------------------------------------------------------


def test_spiking_resnet20_forward_backward_matches_cpu(_no_tf32):
    """Float64 (so no spike flips from rounding): logits, loss, every parameter's gradient and tdBN's running
    statistics after one training-mode step agree with the CPU's."""
    torch.manual_seed(0)
    m_cpu = create("resnet20", spiking=True, T=4, width=0.5).double().train()
    m_dev = copy.deepcopy(m_cpu).to(DEV)
    x = torch.randn(8, 3, 32, 32, generator=_gen(4), dtype=torch.float64) + 0.5
    y = torch.randint(0, 10, (8,), generator=_gen(5))
    out = {}
    for name, m, dev in (("cpu", m_cpu, "cpu"), ("dev", m_dev, DEV)):
        logits = m(x.to(dev))
        loss = F.cross_entropy(logits, y.to(dev))
        loss.backward()
        out[name] = (logits.detach().cpu(), loss.item(),
                     {k: p.grad.cpu() for k, p in m.named_parameters()},
                     {k: b.cpu() for k, b in m.named_buffers()})
    (lc, sc, gc, bc), (ld, sd, gd, bd) = out["cpu"], out["dev"]
    torch.testing.assert_close(ld, lc, rtol=1e-9, atol=1e-9)
    assert sd == pytest.approx(sc, rel=1e-10)
    assert gc.keys() == gd.keys() and len(gc) > 60
    nonzero = 0
    for k in gc:
        s = gc[k].abs().max().item()
        nonzero += s > 0
        torch.testing.assert_close(gd[k], gc[k], rtol=1e-7, atol=1e-9 * max(s, 1.0), msg=lambda m, k=k: f"{k}: {m}")
    assert nonzero > 0.9 * len(gc)
    for k in bc:
        torch.testing.assert_close(bd[k], bc[k], rtol=1e-9, atol=1e-12, msg=lambda m, k=k: f"{k}: {m}")


# ----------------------------------------------------------------------------------------------------------
# CKA engine and reference functions on the GPU vs the CPU
# ----------------------------------------------------------------------------------------------------------


def _pair(dtype: torch.dtype):
    torch.manual_seed(0)
    ann = create("resnet20", spiking=False, width=0.5).to(dtype).eval()
    torch.manual_seed(1)
    snn = create("resnet20", spiking=True, T=4, width=0.5).to(dtype).eval()
    g = _gen(6)
    batches = [torch.rand(32, 3, 32, 32, generator=g, dtype=dtype) for _ in range(3)]
    return ann, snn, batches


def _assert_same(a: np.ndarray, b: np.ndarray, atol: float) -> float:
    assert a.shape == b.shape
    np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b))
    fin = np.isfinite(a)
    assert fin.mean() > 0.3
    d = float(np.abs(a[fin] - b[fin]).max())
    assert d <= atol, d
    return d


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # random-init SNN: silent deep layers warn (NaN CKA)
def test_compare_on_gpu_equals_cpu_ann_vs_snn(_no_tf32):
    ann, snn, batches = _pair(torch.float64)
    cpu = compare(snn, ann, batches, progress=False)
    dev = compare(snn, ann, batches, device=DEV, progress=False)  # models moved there and back
    assert next(snn.parameters()).device.type == "cpu"
    assert dev.layers_a == cpu.layers_a and dev.layers_b == cpu.layers_b and len(cpu.layers_a) == 74
    d = _assert_same(dev.matrix, cpu.matrix, 1e-6)
    _assert_same(dev.ci_low, cpu.ci_low, 1e-6)
    # the same with models and data already on the GPU
    on = compare(snn.to(DEV), ann.to(DEV), [b.to(DEV) for b in batches], progress=False)
    _assert_same(on.matrix, cpu.matrix, 1e-6)
    print(f"compare float64 ANN vs SNN, {DEV} vs cpu: max |diff| {d:.1e}")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_compare_on_gpu_float32_ann_vs_ann(_no_tf32):
    """Float32 models (the usual case): no spikes to flip, so CKA differs by float32 rounding only."""
    torch.manual_seed(0)
    a = create("resnet20", spiking=False, width=0.5).eval()
    torch.manual_seed(1)
    b = create("resnet20", spiking=False, width=0.5).eval()
    batches = [torch.rand(32, 3, 32, 32, generator=_gen(7)) for _ in range(3)]
    cpu = compare(a, b, batches, progress=False).matrix
    dev = compare(a, b, batches, device=DEV, progress=False).matrix
    d = _assert_same(dev, cpu, 1e-4)
    print(f"compare float32 ANN vs ANN (TF32 off), {DEV} vs cpu: max |diff| {d:.1e}")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_temporal_on_gpu_equals_cpu(_no_tf32):
    _, snn, batches = _pair(torch.float64)
    cpu = temporal(snn, batches, progress=False)
    dev = temporal(snn, batches, device=DEV, progress=False)
    assert dev.layers == cpu.layers and dev.matrices.shape == cpu.matrices.shape == (len(cpu.layers), 4, 4)
    _assert_same(dev.matrices, cpu.matrices, 1e-6)


def test_cka_reference_functions_on_gpu():
    g = _gen(8)
    X = torch.randn(40, 12, generator=g, dtype=torch.float64)
    Y = torch.tanh(X @ torch.randn(12, 7, generator=g, dtype=torch.float64))
    Xd, Yd = X.to(DEV), Y.to(DEV)
    pairs = [
        (gram_linear(Xd), gram_linear(X)),
        (gram_rbf(Xd, 0.5), gram_rbf(X, 0.5)),
        (center_gram(gram_linear(Xd)), center_gram(gram_linear(X))),
        (center_gram(gram_linear(Xd), False), center_gram(gram_linear(X), False)),
        (hsic_unbiased(gram_linear(Xd), gram_linear(Yd)), hsic_unbiased(gram_linear(X), gram_linear(Y))),
        (hsic_biased(gram_linear(Xd), gram_linear(Yd)), hsic_biased(gram_linear(X), gram_linear(Y))),
    ]
    for unbiased in (True, False):
        for kernel in ("linear", "rbf"):
            pairs.append((cka(Xd, Yd, kernel=kernel, unbiased=unbiased), cka(X, Y, kernel=kernel, unbiased=unbiased)))
    for on_dev, on_cpu in pairs:
        assert on_dev.device.type == torch.device(DEV).type and on_dev.dtype == torch.float64
        torch.testing.assert_close(on_dev.cpu(), on_cpu, rtol=1e-12, atol=1e-12)
    assert 0.1 < cka(Xd, Yd).item() < 1.0
    assert cka(Xd, Xd).item() == pytest.approx(1.0, abs=1e-12)


# ----------------------------------------------------------------------------------------------------------
# The trainer's GPU path
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spiking", [False, True], ids=["ann", "snn"])
def test_trainer_on_gpu_bf16_channels_last(tmp_path, spiking):
    """A few epochs of the real recipe on digits: bf16 autocast and channels_last on CUDA (amp="auto"),
    finite metrics, falling loss, better than chance, and a checkpoint that loads on the CPU."""
    ds = data.get("digits")
    epochs = 3
    cfg = TrainConfig(model="resnet8", spiking=spiking, T=4, width=0.5, epochs=epochs, batch_size=64, lr=0.1,
                      device=DEV, progress=False)
    res = train(cfg, tmp_path, dataset=ds)
    info = json.loads((tmp_path / "config.json").read_text())
    cuda = torch.device(DEV).type == "cuda"
    assert info["schedule"]["amp_bf16"] is cuda and info["schedule"]["channels_last"] is cuda
    ms = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(ms) == epochs
    for m in ms:
        assert all(math.isfinite(m[k]) for k in ("loss", "train_acc", "test_acc", "test_loss"))
        if spiking:
            rates = m["firing_rates"]
            assert rates and all(0 <= r <= 1 for r in rates.values()) and max(rates.values()) > 0
    assert ms[-1]["loss"] < ms[0]["loss"]
    assert res["test_acc"] > (0.8 if not spiking else 0.5)
    model = load(tmp_path / "last.pt")  # a GPU run's checkpoint loads on the CPU
    assert next(model.parameters()).device.type == "cpu"
    assert ds.x_train.device.type == "cpu"  # train() works on a device copy; the caller's dataset stays
    x, y = ds.x_test[:200], ds.y_test[:200]
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc > (0.7 if not spiking else 0.4)
