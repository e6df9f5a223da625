"""CKA reference functions and the streaming engine, held to independent formulas and a peer package."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import snncka
from snncka.cka import (
    CKAResult,
    TemporalResult,
    center_gram,
    cka,
    compare,
    gram_linear,
    gram_rbf,
    hsic_biased,
    hsic_unbiased,
    temporal,
)
from snncka.record import Recorder


def _net(seed: int, offset: float = 0.0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A tiny CNN; ``offset`` shifts its conv outputs so ReLU features share a large positive offset."""
    torch.manual_seed(seed)
    net = nn.Sequential()
    net.add_module("conv", nn.Conv2d(2, 4, 3, padding=1))
    net.add_module("bn", nn.BatchNorm2d(4))
    net.add_module("relu", nn.ReLU(inplace=True))
    net.add_module("pool", nn.AvgPool2d(2))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(16, 5))
    net.add_module("act", nn.ReLU())
    with torch.no_grad():
        net.bn.running_mean.normal_()
        net.bn.running_var.uniform_(0.5, 2)
        net.bn.bias.fill_(offset)
        net.fc.bias.add_(offset)
    return net.to(dtype).eval()


def _batches(k: int = 3, n: int = 12, seed: int = 0, dtype: torch.dtype = torch.float64
             ) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 2, 4, 4, generator=g, dtype=dtype) for _ in range(k)]


def _features(net: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad(), Recorder(net) as rec:
        rec(x)
        return {k: v.reshape(v.shape[0], -1) for k, v in rec.features.items()}


def _hsic_numpy_spec(K: np.ndarray, L: np.ndarray) -> float:
    """SPEC's unbiased HSIC, written out again in numpy."""
    n = K.shape[0]
    Kt, Lt = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    one = np.ones(n)
    return float(
        (np.trace(Kt @ Lt) + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
         - 2 / (n - 2) * one @ Kt @ Lt @ one) / (n * (n - 3))
    )


def _hsic_u_statistic(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. (2012): HSIC_1 is the U-statistic of k_ij l_ij + k_ij l_qr - 2 k_ij l_iq over distinct
    i, j, q, r."""
    n = K.shape[0]
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += K[i, j] * L[i, j] + K[i, j] * L[q, r] - 2 * K[i, j] * L[i, q]
        count += 1
    return total / count


# ---------------------------------------------------------------- reference functions


def test_unbiased_hsic_equals_u_statistic_and_spec_formula():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(7, 5, generator=g, dtype=torch.float64)
    Y = torch.randn(7, 3, generator=g, dtype=torch.float64)
    K, L = gram_linear(X), gram_linear(Y)
    ref = _hsic_u_statistic(K.numpy(), L.numpy())
    assert hsic_unbiased(K, L).item() == pytest.approx(ref, rel=1e-12, abs=1e-12)
    assert _hsic_numpy_spec(K.numpy(), L.numpy()) == pytest.approx(ref, rel=1e-12, abs=1e-12)
    # the engine's prepared inner product is the same estimator
    assert (center_gram(K) * center_gram(L)).sum().item() / (7 * 4) == pytest.approx(ref, rel=1e-12, abs=1e-12)


def test_biased_hsic_and_center():
    g = torch.Generator().manual_seed(2)
    X = torch.randn(9, 4, generator=g, dtype=torch.float64)
    Y = torch.randn(9, 6, generator=g, dtype=torch.float64)
    K, L = gram_linear(X), gram_linear(Y)
    H = torch.eye(9, dtype=torch.float64) - 1 / 9
    assert torch.allclose(center_gram(K, unbiased=False), H @ K @ H, atol=1e-12)
    expect = torch.trace(K @ H @ L @ H) / 64
    assert hsic_biased(K, L).item() == pytest.approx(expect.item(), rel=1e-12)
    engine = (center_gram(K, False) * center_gram(L, False)).sum().item() / 64
    assert engine == pytest.approx(expect.item(), rel=1e-12)


def test_fast_paths_equal_the_readable_ones():
    """The engine's upper-triangle U-centring and its 3/4-multiply symmetric Gram are the readable formulas."""
    from snncka.cka_math import _flatten_sym, _sym_gram, _u_rows

    g = torch.Generator().manual_seed(11)
    for n in (64, 65, 130, 1000):
        X = torch.randn(n, 40, generator=g, dtype=torch.float64)
        assert torch.allclose(_sym_gram(X), X @ X.T, rtol=0, atol=1e-12)
        K = torch.stack([gram_linear(torch.randn(n, 7, generator=g, dtype=torch.float64)) for _ in range(3)])
        K[1] = 2.5  # a constant layer: every distance equal, so its U-centred Gram is exactly zero
        rows = _u_rows(K, torch.full((3,), 1e-12, dtype=torch.float64))
        expect = _flatten_sym(center_gram(K), unbiased=True)
        expect[1] = 0
        assert torch.allclose(rows, expect, rtol=0, atol=1e-10)
        assert not rows[1].any() and rows[0].any()


def test_gram_rbf_matches_kornblith_formula():
    g = torch.Generator().manual_seed(3)
    X = torch.randn(8, 3, generator=g, dtype=torch.float64)
    sq = ((X[:, None] - X[None]) ** 2).sum(-1).numpy()
    expect = np.exp(-sq / (2 * 0.5**2 * np.median(sq)))
    assert np.allclose(gram_rbf(X, 0.5).numpy(), expect, atol=1e-12)


def test_cka_properties():
    g = torch.Generator().manual_seed(4)
    X = torch.randn(20, 6, generator=g, dtype=torch.float64)
    Y = X @ torch.randn(6, 4, generator=g, dtype=torch.float64) + 0.5 * torch.randn(20, 4, generator=g,
                                                                                     dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    for unbiased in (True, False):
        for kernel in ("linear", "rbf"):
            assert cka(X, X, kernel=kernel, unbiased=unbiased).item() == pytest.approx(1.0, abs=1e-12)
            v = cka(X, Y, kernel=kernel, unbiased=unbiased).item()
            assert cka(Y, X, kernel=kernel, unbiased=unbiased).item() == pytest.approx(v, abs=1e-12)
            assert cka(3.7 * X @ Q, Y, kernel=kernel, unbiased=unbiased).item() == pytest.approx(v, abs=1e-12)
    for seed in range(5):  # biased linear CKA lies in [0, 1]; unbiased may be negative (and is not clamped)
        gs = torch.Generator().manual_seed(seed)
        A, B = torch.randn(6, 3, generator=gs, dtype=torch.float64), torch.randn(6, 2, generator=gs,
                                                                                    dtype=torch.float64)
        assert 0.0 <= cka(A, B, unbiased=False).item() <= 1.0
    negatives = [cka(*torch.randn(2, 6, 2, generator=torch.Generator().manual_seed(s), dtype=torch.float64))
                 .item() for s in range(20)]
    assert min(negatives) < 0


def test_cka_rejects_mismatched_shapes_and_kernels():
    with pytest.raises(ValueError, match="same n samples"):
        cka(torch.randn(5, 2), torch.randn(6, 2))
    with pytest.raises(ValueError, match="unknown kernel"):
        cka(torch.randn(5, 2), torch.randn(5, 2), kernel="poly")
    with pytest.raises(ValueError, match="at least 4"):
        hsic_unbiased(torch.eye(3), torch.eye(3))


# ---------------------------------------------------------------- engine vs reference


@pytest.mark.parametrize("unbiased,kernel", [(True, "linear"), (False, "linear"), (True, "rbf"),
                                             (False, "rbf:0.8")])
def test_engine_equals_minibatch_definition(unbiased, kernel):
    a, b = _net(0), _net(1)
    data = _batches()
    res = compare(a, b, data, unbiased=unbiased, kernel=kernel, progress=False)
    hsic = hsic_unbiased if unbiased else hsic_biased
    thr = float(kernel.partition(":")[2] or 1.0)
    gram = gram_linear if kernel == "linear" else (lambda X: gram_rbf(X, thr))
    fa = [_features(a, x) for x in data]
    fb = [_features(b, x) for x in data]
    names = list(fa[0])
    assert res.layers_a == res.layers_b == names == ["conv", "bn", "relu", "pool", "fc", "act"]
    assert res.kinds_a == ["conv", "norm", "act", "pool", "linear", "act"]
    expect = np.zeros((6, 6))
    for i, la in enumerate(names):
        for j, lb in enumerate(names):
            # SPEC: mean_i HSIC(K_i, L_i) / sqrt(mean_i HSIC(K_i, K_i) * mean_i HSIC(L_i, L_i))
            kl = np.mean([hsic(gram(f[la]), gram(g[lb])).item() for f, g in zip(fa, fb, strict=True)])
            kk = np.mean([hsic(gram(f[la]), gram(f[la])).item() for f in fa])
            ll = np.mean([hsic(gram(g[lb]), gram(g[lb])).item() for g in fb])
            expect[i, j] = kl / np.sqrt(kk * ll)
    np.testing.assert_allclose(res.matrix, expect, atol=1e-10, rtol=0)
    assert (res.n_images, res.batch_size, res.n_batches) == (36, 12, 3)
    assert res.estimator == ("unbiased" if unbiased else "biased") and res.kernel == kernel


def test_engine_symmetric_and_self_comparison():
    a, b = _net(0), _net(1)
    data = _batches()
    ab = compare(a, b, data, progress=False)
    ba = compare(b, a, data, progress=False)
    np.testing.assert_allclose(ab.matrix, ba.matrix.T, atol=1e-12)
    aa = compare(a, a, data, progress=False)
    np.testing.assert_allclose(aa.diagonal(), 1.0, atol=1e-12)
    np.testing.assert_allclose(aa.matrix, aa.matrix.T, atol=1e-12)
    # two selections of one model: rows and columns are the matching sub-blocks of the full self-comparison
    sub = compare(a, a, data, layers_a=["act"], layers_b=["conv", "fc"], progress=False)
    assert sub.layers_a == ["relu", "act"] and sub.layers_b == ["conv", "fc"]
    np.testing.assert_allclose(sub.matrix, aa.matrix[np.ix_([2, 5], [0, 4])], atol=1e-12)


def test_self_comparison_computes_grams_once(monkeypatch):
    import snncka.cka_stream as mod

    calls = []
    orig = mod._gram_of_feature
    monkeypatch.setattr(mod, "_gram_of_feature", lambda *a, **k: calls.append(1) or orig(*a, **k))
    net = _net(0)
    compare(net, net, _batches(k=2), progress=False)
    assert len(calls) == 2 * 6  # 2 batches x 6 layers, not twice that


def test_biased_linear_engine_in_unit_interval_and_invariances():
    a, b = _net(0), _net(1)
    data = _batches()
    res = compare(a, b, data, unbiased=False, progress=False)
    assert np.all(res.matrix >= 0) and np.all(res.matrix <= 1)
    # isotropic scaling of a layer's features (a scaled copy of the network) changes nothing
    b2 = _net(1)
    with torch.no_grad():
        b2.fc.weight.mul_(5.0)
        b2.fc.bias.mul_(5.0)
    scaled = compare(a, b2, data, layers_b=["fc"], progress=False)
    plain = compare(a, b, data, progress=False).matrix
    np.testing.assert_allclose(scaled.matrix[:, 0], plain[:, 4], atol=1e-12)


def test_agrees_with_pytorch_cka_package():
    """pytorch-cka (PyPI, independent code) offers the unbiased linear estimator, per pair and minibatch."""
    peer = pytest.importorskip("cka")  # pytorch-cka installs as the top-level module ``cka``
    g = torch.Generator().manual_seed(5)
    X = torch.randn(30, 8, generator=g, dtype=torch.float64)
    Y = torch.tanh(X @ torch.randn(8, 5, generator=g, dtype=torch.float64))
    assert peer.cka_from_features(X, Y).item() == pytest.approx(cka(X, Y).item(), abs=1e-12)
    a, b = _net(0), _net(1)
    data = _batches()
    names = ["conv", "bn", "relu", "pool", "fc", "act"]
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the peer accumulates in the default dtype
    try:
        (theirs,) = peer.compute_cka(a, b, [data], layers=names, progress=False)
    finally:
        torch.set_default_dtype(default)
    ours = compare(a, b, data, progress=False).matrix
    # the peer stores bn's output without a copy, so the inplace ReLU after it overwrites it (its bn column
    # repeats relu's); compare every other layer pair
    keep = [0, 2, 3, 4, 5]
    ours, theirs = ours[np.ix_(keep, keep)], theirs.numpy()[np.ix_(keep, keep)]
    inside = (ours > 0) & (ours < 1)  # the peer clamps to [0, 1]
    assert inside.sum() > 15
    np.testing.assert_allclose(theirs[inside], ours[inside], atol=1e-10)
    np.testing.assert_allclose(theirs[~inside], np.clip(ours[~inside], 0, 1), atol=1e-10)


class _Features(nn.Module):
    """Records its input exactly: an identity Linear (kind "linear") followed by a ReLU."""

    def __init__(self, p: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.lin = nn.Linear(p, p, bias=False, dtype=dtype)
        self.relu = nn.ReLU()
        with torch.no_grad():
            self.lin.weight.copy_(torch.eye(p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.lin(x))


def test_float32_features_match_float64_result():
    """ReLU-like features with a large shared offset: centring before the float32 Gram keeps 1e-6 accuracy,
    where a plain float32 Gram loses it (float32 cancellation)."""
    g = torch.Generator().manual_seed(6)
    X = 20 + torch.randn(4, 64, 300, generator=g)
    Y = 20 + torch.tanh(X - 20) + 0.3 * torch.randn(4, 64, 300, generator=g)
    a32, b32 = _Features(300, torch.float32), _Features(300, torch.float32)
    a64, b64 = _Features(300, torch.float64), _Features(300, torch.float64)
    got = compare(a32, b32, list(X), data_b=list(Y), progress=False).matrix
    ref = compare(a64, b64, list(X.double()), data_b=list(Y.double()), progress=False).matrix
    assert np.abs(got - ref).max() < 1e-6
    # the reference formula centres the columns in float64 first: right on raw float32 features too
    naive = cka(X[0], Y[0]).item()
    assert naive == pytest.approx(cka(X[0].double(), Y[0].double()).item(), abs=1e-6)


def test_reference_cka_on_relu_features_with_an_offset():
    """float32 ReLU features (mean ~1, std 0.3, 16384 dims, n = 256): the reference formula equals the
    float64 column-centred value; with an offset of 2 it stays finite (a raw float32 Gram gave 1.9 / NaN)."""
    g = torch.Generator().manual_seed(7)
    X = torch.relu(1 + 0.3 * torch.randn(256, 16384, generator=g))
    Y = torch.relu(X + 0.3 * torch.randn(256, 16384, generator=g))
    for offset in (0.0, 2.0):
        Xo, Yo = X + offset, Y + offset
        Xd, Yd = Xo.double() - Xo.double().mean(0), Yo.double() - Yo.double().mean(0)
        K, L = Xd @ Xd.T, Yd @ Yd.T
        expect = (hsic_unbiased(K, L) / torch.sqrt(hsic_unbiased(K, K) * hsic_unbiased(L, L))).item()
        got = cka(Xo, Yo).item()
        assert np.isfinite(got) and got == pytest.approx(expect, abs=1e-9)
        assert 0 < got < 1


def test_constant_layer_gives_nan_and_one_warning():
    a, b = _net(0), _net(1)
    with torch.no_grad():
        b.fc.weight.zero_()
        b.fc.bias.fill_(0.3)  # fc (and act after it) output a constant
    data = _batches()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = compare(a, b, data, progress=False)
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 1 and "fc" in msgs[0] and "act" in msgs[0] and "constant" in msgs[0]
    assert np.isnan(res.matrix[:, 4]).all() and np.isnan(res.matrix[:, 5]).all()
    assert np.isfinite(res.matrix[:, :4]).all()


def test_small_batches_and_mismatched_streams_are_errors():
    a, b = _net(0), _net(1)
    with pytest.raises(ValueError, match="at least 4"):
        compare(a, b, [torch.randn(3, 2, 4, 4, dtype=torch.float64)], progress=False)
    compare(a, b, [torch.randn(3, 2, 4, 4, dtype=torch.float64)], unbiased=False, progress=False)
    data = _batches(k=2, n=8)
    with pytest.raises(ValueError, match="same batch size"):
        compare(a, a, data, data_b=[x[:6] for x in data], progress=False)
    with pytest.raises(ValueError, match="data_b ended"):
        compare(a, b, data, data_b=data[:1], progress=False)
    with pytest.raises(ValueError, match="empty"):
        compare(a, b, [], progress=False)
    with pytest.raises(ValueError, match="matched no module"):
        compare(a, b, data, layers_a=["nothing*"], progress=False)


def test_clean_vs_perturbed_inputs_of_one_model():
    net = _net(0)
    data = _batches()
    same = compare(net, net, data, data_b=data, progress=False)
    np.testing.assert_allclose(same.diagonal(), 1.0, atol=1e-12)
    noisy = [x + 0.5 * torch.randn_like(x) for x in data]
    res = compare(net, net, data, data_b=noisy, progress=False)
    assert np.all(res.diagonal() < 0.999)
    # equals comparing two copies of the network, one fed the noisy stream
    twin = _net(0)
    np.testing.assert_allclose(res.matrix, compare(net, twin, data, data_b=noisy, progress=False).matrix,
                               atol=1e-12)


def test_models_put_in_eval_mode_and_restored():
    a, b = _net(0).train(), _net(1)
    res = compare(a, b, _batches(), progress=False)
    assert a.training and not b.training
    # eval mode was used: the same numbers as with an eval-mode model
    np.testing.assert_allclose(res.matrix, compare(_net(0), b, _batches(), progress=False).matrix, atol=1e-12)


def test_jackknife_interval_from_leave_one_batch_out_runs():
    a, b = _net(0), _net(1)
    data = _batches(k=4, n=10)
    res = compare(a, b, data, progress=False)
    loo = np.stack([compare(a, b, data[:i] + data[i + 1:], progress=False).matrix for i in range(4)])
    from scipy.stats import t

    se = np.sqrt(3 / 4 * ((loo - loo.mean(0)) ** 2).sum(0))
    np.testing.assert_allclose(res.ci_low, res.matrix - t.ppf(0.975, 3) * se, atol=1e-10)
    np.testing.assert_allclose(res.ci_high, res.matrix + t.ppf(0.975, 3) * se, atol=1e-10)
    assert np.all(res.ci_low <= res.matrix + 1e-12) and np.all(res.matrix <= res.ci_high + 1e-12)


def test_result_save_load_roundtrip(tmp_path):
    res = compare(_net(0), _net(1), _batches(), progress=False)
    path = res.save(tmp_path / "out" / "cka.npz")
    assert path.exists() and path.with_suffix(".json").exists()
    back = CKAResult.load(path)
    np.testing.assert_array_equal(back.matrix, res.matrix)
    np.testing.assert_array_equal(back.ci_low, res.ci_low)
    assert (back.layers_a, back.kinds_b, back.n_images, back.estimator) == (
        res.layers_a, res.kinds_b, res.n_images, res.estimator)
    assert not list((tmp_path / "out").glob("*.tmp"))
    sub = compare(_net(0), _net(1), _batches(), layers_b=["fc"], progress=False)
    with pytest.raises(ValueError, match="as many layers"):
        sub.diagonal()


# ---------------------------------------------------------------- snncka models and temporal mode


def test_ann_vs_snn_and_temporal_on_snncka_models(tmp_path):
    torch.manual_seed(0)
    kw = dict(num_classes=3, in_channels=1, width=0.25)
    ann = snncka.create("resnet8", spiking=False, **kw)
    snn = snncka.create("resnet8", spiking=True, T=3, v_th=0.3, **kw)
    g = torch.Generator().manual_seed(0)
    data = [(torch.rand(8, 1, 8, 8, generator=g), torch.zeros(8)) for _ in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = snncka.compare(ann, snn, data, progress=False)
    assert res.layers_a == res.layers_b and len(res.layers_a) == 2 + 3 * 7 + 2 * 3 + 3
    # direct encoding: conv1 of the SNN sees the same image T times, its feature is T copies of the ANN-like
    # conv1 output; with identical weights CKA(conv1, conv1) = 1
    snn2 = snncka.create("resnet8", spiking=True, T=3, **kw)
    snn2.load_state_dict(ann.state_dict())
    r2 = compare(ann, snn2, data, layers_a=["conv1"], layers_b=["conv1"], progress=False)
    assert r2.matrix[0, 0] == pytest.approx(1.0, abs=1e-6)

    tr = temporal(snn, data, progress=False)
    assert tr.matrices.shape == (len(res.layers_a), 3, 3) and tr.T == 3 and tr.n_images == 16
    conv1 = tr.layers.index("conv1")
    np.testing.assert_allclose(tr.matrices[conv1], np.ones((3, 3)), atol=1e-6)  # identical time steps
    tr.save(tmp_path / "t.npz")
    back = TemporalResult.load(tmp_path / "t.npz")
    np.testing.assert_array_equal(back.matrices, tr.matrices)
    assert back.layers == tr.layers


def test_temporal_mixed_steps_and_reference_values():
    torch.manual_seed(0)
    snn = snncka.create("resnet8", spiking=True, T=3, stage_T=(3, 3, 1), num_classes=3, in_channels=1,
                        width=0.25, v_th=0.3)
    g = torch.Generator().manual_seed(1)
    data = [torch.rand(8, 1, 8, 8, generator=g) for _ in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tr = temporal(snn, data, progress=False)
    j = tr.layers.index("s3.b0.conv1")
    assert tr.steps[j] == 1 and tr.matrices[j, 0, 0] == pytest.approx(1.0)
    assert np.isnan(tr.matrices[j, 1:]).all()
    # the per-step matrix of one layer equals the minibatch definition on that layer's steps
    k = tr.layers.index("s2.b0.act1")
    feats = []
    snn.eval()
    with torch.no_grad(), Recorder(snn, ["s2.b0.act1"]) as rec:
        for x in data:
            rec(x)
            feats.append(rec.features["s2.b0.act1"].double())
    for s in range(3):
        for t_ in range(3):
            kl = sum(hsic_unbiased(gram_linear(f[:, s]), gram_linear(f[:, t_])) for f in feats)
            kk = sum(hsic_unbiased(gram_linear(f[:, s]), gram_linear(f[:, s])) for f in feats)
            ll = sum(hsic_unbiased(gram_linear(f[:, t_]), gram_linear(f[:, t_])) for f in feats)
            expect = (kl / torch.sqrt(kk * ll)).item()
            if np.isfinite(expect):
                assert tr.matrices[k, s, t_] == pytest.approx(expect, abs=1e-6)
