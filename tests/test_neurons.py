"""LIF neurons: hand-computed sequences, surrogate formulas, fused == reference (values, BPTT gradients)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from snncka.neurons import (
    LIF,
    SURROGATES,
    LIFConfig,
    lif_fused,
    lif_reference,
    recompute_spikes,
    spike_fn,
    surrogate_grad,
)

pytestmark = pytest.mark.usefixtures("eager_kernels")  # see conftest.py


# ----------------------------------------------------------------------------------------------------------
# Hand-computed dynamics (tau 0.5, v_th 1; dyadic inputs so every value is exact in binary)
# ----------------------------------------------------------------------------------------------------------

X_SEQ = [0.75, 0.75, 0.5, 0.75, 1.5]
# hard reset: u_pre = 0.5 u + x; y = u_pre > 1 (strict: u_pre == 1.0 at t=3 does not fire); u = u_pre (1 - y)
HARD = dict(u_pre=[0.75, 1.125, 0.5, 1.0, 2.0], y=[0, 1, 0, 0, 1], u=[0.75, 0.0, 0.5, 1.0, 0.0])
# soft reset: u = u_pre - y
SOFT = dict(u_pre=[0.75, 1.125, 0.5625, 1.03125, 1.515625], y=[0, 1, 0, 1, 1],
            u=[0.75, 0.125, 0.5625, 0.03125, 0.515625])


@pytest.mark.parametrize("reset,expected", [("hard", HARD), ("soft", SOFT)])
def test_hand_computed_sequence(reset, expected):
    x = torch.tensor(X_SEQ, dtype=torch.float64).reshape(5, 1)
    cfg = LIFConfig(reset=reset)
    y, u_pre, u = lif_reference(x, cfg, return_membrane=True)
    assert u_pre.flatten().tolist() == expected["u_pre"]
    assert y.flatten().tolist() == expected["y"]
    assert u.flatten().tolist() == expected["u"]
    for compiled in (False, True) if reset == "hard" else (False,):  # (each compiled variant costs seconds)
        assert lif_fused(x, cfg, compiled=compiled).flatten().tolist() == expected["y"]
        # the autograd path of the fused LIF gives the same spikes
        y = lif_fused(x.clone().requires_grad_(), cfg, compiled=compiled)
        assert y.flatten().tolist() == expected["y"]


def test_tau_and_threshold_are_used():
    # tau 0.25, v_th 0.5: u_pre = 0.25 u + x
    x = torch.tensor([[0.25], [0.5], [0.5]], dtype=torch.float64)
    y, u_pre, u = lif_reference(x, LIFConfig(tau=0.25, v_th=0.5), return_membrane=True)
    assert u_pre.flatten().tolist() == [0.25, 0.5625, 0.5]
    assert y.flatten().tolist() == [0, 1, 0]
    assert u.flatten().tolist() == [0.25, 0.0, 0.5]


# Two steps, x = [1.25, 0.5], loss = y0 + y1, rect surrogate alpha 1, tau 0.5, v_th 1:
#   y0 = 1 (u_pre0 = 1.25), y1 = 0 (u_pre1 = 0.5 tau-decayed reset state + 0.5); sg(0.25) = sg(-0.5) = 1.
#   dL/dx1 = sg1 = 1.  dL/dx0 = sg0 + tau * sg1 * du0/du_pre0 with
#   hard: du0/du_pre0 = (1 - y0) - u_pre0 * sg0 = -1.25 -> 1 - 0.625 = 0.375; detached: (1 - y0) = 0 -> 1
#   soft: du0/du_pre0 = 1 - v_th * sg0 = 0 -> 1; detached: 1 -> 1.5
HAND_GRADS = {("hard", False): [0.375, 1.0], ("hard", True): [1.0, 1.0],
              ("soft", False): [1.0, 1.0], ("soft", True): [1.5, 1.0]}


@pytest.mark.parametrize("reset,detach", list(HAND_GRADS))
def test_hand_computed_bptt_gradient(reset, detach):
    cfg = LIFConfig(reset=reset, detach_reset=detach)
    for fn in (lif_reference, lambda x, c: lif_fused(x, c, compiled=False)):
        x = torch.tensor([[1.25], [0.5]], dtype=torch.float64, requires_grad=True)
        y = fn(x, cfg)
        assert y.flatten().tolist() == [1.0, 0.0]
        y.sum().backward()
        assert x.grad.flatten().tolist() == HAND_GRADS[(reset, detach)]


# ----------------------------------------------------------------------------------------------------------
# Surrogate gradients against their formulas
# ----------------------------------------------------------------------------------------------------------

POINTS = [-2.5, -1.0, -0.999, -0.6, -0.25, 0.0, 0.1, 0.49, 0.5, 0.999, 1.0, 1.7]


def _rect(x, a):  # paper Eq. 3
    return (1 / a) if abs(x) < a else 0.0


def _num_deriv(f, x, h=1e-6):
    return (f(x + h) - f(x - h)) / (2 * h)


@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.0])
def test_rect_surrogate_is_eq3(alpha):
    x = torch.tensor(POINTS, dtype=torch.float64, requires_grad=True)
    y = spike_fn(x, "rect", alpha)
    assert y.tolist() == [1.0 if p > 0 else 0.0 for p in POINTS]
    y.sum().backward()
    assert x.grad.tolist() == [_rect(p, alpha) for p in POINTS]
    assert surrogate_grad(x.detach(), "rect", alpha).tolist() == [_rect(p, alpha) for p in POINTS]


def test_rect_default_window_inside_and_outside():
    # default alpha = 1: straight-through inside |u_pre - v_th| < 1, zero outside (boundary excluded)
    x = torch.tensor([0.0, 0.99, -0.99, 1.0, -1.0, 3.0], dtype=torch.float64)
    assert surrogate_grad(x).tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


PRIMITIVES = {
    # surrogate -> (primitive g with g' = surrogate, or None) and an explicit formula of the derivative
    "triangle": (None, lambda x, g: max(0.0, g - abs(x)) / g**2),
    "sigmoid": (lambda x, k: 1 / (1 + math.exp(-k * x)),
                lambda x, k: k * math.exp(-k * x) / (1 + math.exp(-k * x)) ** 2),
    "arctan": (lambda x, a: math.atan(math.pi / 2 * a * x) / math.pi + 0.5,
               lambda x, a: (a / 2) / (1 + (math.pi / 2 * a * x) ** 2)),
    "dspike": (lambda x, b: math.tanh(b * min(b, max(-b, x))) / (2 * math.tanh(b * b)) + 0.5,
               lambda x, b: b * (1 - math.tanh(b * x) ** 2) / (2 * math.tanh(b * b)) if abs(x) <= b else 0.0),
}


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
@pytest.mark.parametrize("param", [None, 0.7, 5.0])
def test_other_surrogates_match_their_formulas(name, param):
    p = SURROGATES[name][1] if param is None else param
    prim, formula = PRIMITIVES[name]
    x = torch.tensor(POINTS, dtype=torch.float64, requires_grad=True)
    spike_fn(x, name, param).sum().backward()
    expected = [formula(v, p) for v in POINTS]
    assert x.grad.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-15)
    if prim is not None:  # the formula really is the derivative of the described function
        for v in POINTS:
            if name == "dspike" and abs(abs(v) - p) < 1e-5:
                continue  # the window edge
            numeric = _num_deriv(lambda z, p=p, prim=prim: prim(z, p), v)
            assert numeric == pytest.approx(formula(v, p), abs=1e-6)


def test_area_one_surrogates_integrate_to_one():
    x = torch.linspace(-60, 60, 1_200_001, dtype=torch.float64)
    dx = (x[1] - x[0]).item()
    for name in ("triangle", "sigmoid", "dspike"):
        assert (surrogate_grad(x, name).sum() * dx).item() == pytest.approx(1.0, abs=1e-4), name
    # the paper's rectangle has height 1/alpha on a window of width 2 alpha: area 2 for every alpha
    for alpha in (1.0, 0.5):
        assert (surrogate_grad(x, "rect", alpha).sum() * dx).item() == pytest.approx(2.0, abs=1e-3)
    # arctan has heavy tails: its integral over [-60, 60] is 2/pi * atan(pi/2 * 2 * 60)
    assert (surrogate_grad(x, "arctan").sum() * dx).item() == pytest.approx(
        2 / math.pi * math.atan(math.pi * 60), abs=1e-4)


# The released DSpike, transcribed from the authors' code as a formula: forward of the smooth function
# tanh(temp * clamp(x, -region, region)) / (2 tanh(temp * region)) + 1/2 (temp = region = 3 as released),
# whose autograd gradient is the surrogate.
def _released_dspike_grad(x: torch.Tensor, temp: float = 3.0, region: float = 3.0) -> torch.Tensor:
    x = x.clone().requires_grad_()
    smooth = torch.tanh(temp * torch.clamp(x, -region, region)) / (2 * math.tanh(region * temp)) + 0.5
    smooth.sum().backward()
    return x.grad


EDGE = [1.0, 3.0, 3 - 1e-9, 3 + 1e-9, 2.9999, 3.0001, 0.0, 0.5, 1.5, 2.0, 2.5, 4.0, 10.0]


@pytest.mark.parametrize("param", [None, 3.0, 2.0])
def test_dspike_is_the_released_formula(param):
    p = 3.0 if param is None else param
    pts = [s * v * p / 3 for v in EDGE for s in (1, -1)]
    x = torch.tensor(pts, dtype=torch.float64, requires_grad=True)
    spike_fn(x, "dspike", param).sum().backward()
    expected = _released_dspike_grad(x.detach(), p, p)
    torch.testing.assert_close(x.grad, expected, rtol=1e-12, atol=0)
    inside = [abs(v) <= p for v in pts]
    assert [g > 0 for g in x.grad.tolist()] == inside  # closed window: |x| = 3 still has a gradient
    # the formula at |x| = 1 and 3: 3 sech^2(3x) / (2 tanh 9)
    if p == 3.0:
        for v in (1.0, 3.0):
            want = 3 / math.cosh(3 * v) ** 2 / (2 * math.tanh(9))
            assert surrogate_grad(torch.tensor([v, -v], dtype=torch.float64), "dspike").tolist() == \
                pytest.approx([want, want], rel=1e-9)


# ----------------------------------------------------------------------------------------------------------
# Firing at the threshold (the released code's u_pre >= v_th)
# ----------------------------------------------------------------------------------------------------------

# X_SEQ with >=: u_pre == 1.0 at t=3 fires, so t=4 starts from 0
HARD_GE = dict(u_pre=[0.75, 1.125, 0.5, 1.0, 1.5], y=[0, 1, 0, 1, 1], u=[0.75, 0.0, 0.5, 0.0, 0.0])


def test_fire_at_threshold_hand_computed_sequence():
    x = torch.tensor(X_SEQ, dtype=torch.float64).reshape(5, 1)
    cfg = LIFConfig(fire_at_threshold=True)
    y, u_pre, u = lif_reference(x, cfg, return_membrane=True)
    assert (u_pre.flatten().tolist(), y.flatten().tolist(), u.flatten().tolist()) == \
        (HARD_GE["u_pre"], HARD_GE["y"], HARD_GE["u"])
    for compiled in (False, True):
        assert lif_fused(x, cfg, compiled=compiled).flatten().tolist() == HARD_GE["y"]
        assert lif_fused(x.clone().requires_grad_(), cfg, compiled=compiled).flatten().tolist() == HARD_GE["y"]
    assert spike_fn(torch.zeros(1), fire_at_threshold=True).item() == 1.0
    assert spike_fn(torch.zeros(1)).item() == 0.0


# Two steps, x = [1.0, 0.5], loss = y0 + y1, rect alpha 1, tau 0.5, v_th 1, hard reset, sg(0) = sg(-0.5) = 1:
#   >=: y0 = 1 (u_pre0 == 1), u0 = 0, u_pre1 = 0.5, y1 = 0; dL/dx0 = 1 + 0.5 * ((1 - 1) - 1.0 * 1) = 0.5
#   > : y0 = 0, u0 = 1, u_pre1 = 1.0, y1 = 0;            dL/dx0 = 1 + 0.5 * ((1 - 0) - 1.0 * 1) = 1
@pytest.mark.parametrize("ge,spikes,grads", [(True, [1.0, 0.0], [0.5, 1.0]), (False, [0.0, 0.0], [1.0, 1.0])])
def test_fire_at_threshold_hand_computed_gradient(ge, spikes, grads):
    cfg = LIFConfig(fire_at_threshold=ge)
    for fn in (lif_reference, lambda x, c: lif_fused(x, c, compiled=False), lambda x, c: LIF(T=2, cfg=c)(x)):
        x = torch.tensor([[1.0], [0.5]], dtype=torch.float64, requires_grad=True)
        with recompute_spikes():
            y = fn(x, cfg)
            out = y * torch.tensor([[1.0], [1.0]], dtype=torch.float64)  # saves the spikes (rebuilt on unpack)
        assert y.flatten().tolist() == spikes
        out.sum().backward()
        assert x.grad.flatten().tolist() == grads


def test_recompute_spikes_keeps_the_firing_rule():
    w = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    x = torch.tensor([[1.0, 0.25, 2.0], [0.5, 1.0, -1.0]], dtype=torch.float64, requires_grad=True)
    with recompute_spikes():
        y = LIF(T=2, fire_at_threshold=True)(x)
        out = y @ w
    out.sum().backward()
    assert torch.equal(w.grad, y.detach().T @ torch.ones(2, 3, dtype=torch.float64))
    assert y[0, 0].item() == 1.0


# ----------------------------------------------------------------------------------------------------------
# Fused vs reference
# ----------------------------------------------------------------------------------------------------------


def _inputs(seed: int, shape=(6, 5, 9)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64) * 0.9 + 0.55


def _compare(cfg: LIFConfig, compiled: bool, seed: int = 0) -> None:
    x = _inputs(seed)
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    xr = x.clone().requires_grad_()
    yr = lif_reference(xr, cfg)
    (yr * upstream).sum().backward()
    xf = x.clone().requires_grad_()
    yf = lif_fused(xf, cfg, compiled=compiled)
    (yf * upstream).sum().backward()
    assert torch.equal(yf, yr)
    assert 0.1 < yr.mean().item() < 0.6  # the inputs make neurons fire and sit inside surrogate windows
    torch.testing.assert_close(xf.grad, xr.grad, rtol=0, atol=1e-10)
    assert xr.grad.abs().max().item() > 0.1


GRID = list(itertools.product(sorted(SURROGATES), ("hard", "soft"), (False, True)))


@pytest.mark.parametrize("surrogate,reset,detach", GRID)
def test_fused_equals_reference_eager(surrogate, reset, detach):
    _compare(LIFConfig(surrogate=surrogate, reset=reset, detach_reset=detach), compiled=False)
    _compare(LIFConfig(surrogate=surrogate, reset=reset, detach_reset=detach, tau=0.8, v_th=0.7, alpha=0.6),
             compiled=False, seed=3)


@pytest.mark.parametrize("surrogate,reset", [("dspike", "hard"), ("rect", "soft")])
def test_fused_equals_reference_fire_at_threshold(surrogate, reset):
    _compare(LIFConfig(surrogate=surrogate, reset=reset, fire_at_threshold=True), compiled=False)
    # inputs on a dyadic grid: u_pre hits v_th exactly in many places
    x = (torch.randint(0, 9, (6, 40), generator=torch.Generator().manual_seed(2)) / 8).double()
    cfg = LIFConfig(surrogate=surrogate, reset=reset, fire_at_threshold=True)
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    yr, pre, _ = lif_reference(xr, cfg, return_membrane=True)
    assert (pre == 1.0).sum() > 5
    yf = lif_fused(xf, cfg, compiled=False)
    assert torch.equal(yr, yf) and torch.equal(yr[pre == 1.0], torch.ones_like(yr[pre == 1.0]))
    yr.sum().backward()
    yf.sum().backward()
    torch.testing.assert_close(xf.grad, xr.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("surrogate,reset,detach", [("rect", "hard", False), ("sigmoid", "soft", True)])
def test_fused_equals_reference_compiled(surrogate, reset, detach):
    _compare(LIFConfig(surrogate=surrogate, reset=reset, detach_reset=detach), compiled=True)
    # the dynamic-shape kernel serves other shapes and parameters without a new variant
    _compare(LIFConfig(surrogate=surrogate, reset=reset, detach_reset=detach, tau=0.25, alpha=0.5),
             compiled=True, seed=7)
    # float32, as training runs: the compiled (functional) and eager (in-place) kernels fire the same spikes
    cfg = LIFConfig(surrogate=surrogate, reset=reset, detach_reset=detach)
    x, up = _inputs(5).float(), torch.randn(_inputs(5).shape, generator=torch.Generator().manual_seed(6))
    out = []
    for compiled in (False, True):
        xi = x.clone().requires_grad_()
        y = lif_fused(xi, cfg, compiled=compiled)
        (y * up).sum().backward()
        out.append((y, xi.grad))
    assert torch.equal(out[0][0], out[1][0])
    torch.testing.assert_close(out[0][1], out[1][1], rtol=1e-5, atol=1e-6)


def test_reset_path_changes_the_gradient():
    # guards the grid above: detaching the reset must matter on these inputs
    x = _inputs(0)
    grads = []
    for detach in (False, True):
        xx = x.clone().requires_grad_()
        lif_reference(xx, LIFConfig(detach_reset=detach)).sum().backward()
        grads.append(xx.grad)
    assert (grads[0] - grads[1]).abs().max().item() > 0.1


# ----------------------------------------------------------------------------------------------------------
# Module, folded layout, spike recomputation
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_module_folded_and_unfolded_layouts(backend):
    x = _inputs(5, (3, 4, 2, 5))
    expected = lif_reference(x)
    assert torch.equal(LIF(backend=backend)(x), expected)  # [T, B, ...]
    folded = x.reshape(12, 2, 5)  # rows t*B .. t*B+B-1 are step t
    assert torch.equal(LIF(T=3, backend=backend)(folded), expected.reshape(12, 2, 5))
    with pytest.raises(ValueError, match="T=3"):
        LIF(T=3, backend=backend)(x.reshape(12, 10)[:10])


def test_recompute_spikes_is_exact_and_does_not_store_spikes():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1).double()
    x = (torch.randn(3 * 2, 2, 5, 5, dtype=torch.float64) + 0.5).requires_grad_()
    grads = []
    for hooks in (False, True):
        x.grad = None
        conv.zero_grad()
        lif = LIF(T=3)
        if hooks:
            with recompute_spikes():
                y = lif(x)
                out = conv(y)
            saved = out.grad_fn._saved_input  # rebuilt from the LIF membrane on unpack
            assert torch.equal(saved, y) and saved.data_ptr() != y.data_ptr()
        else:
            out = conv(lif(x))
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).reshape(out.shape)).sum().backward()
        grads.append((x.grad.clone(), conv.weight.grad.clone()))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


def test_recompute_spikes_respects_in_place_changes():
    x = (torch.randn(4, 3, dtype=torch.float64) + 0.5).requires_grad_()
    w = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    with recompute_spikes():
        y = LIF(T=2)(x)
        y.mul_(3.0)  # no longer plain spikes: must be stored as is
        out = y @ w
    out.sum().backward()
    torch.testing.assert_close(w.grad, (3 * lif_reference(x.detach().reshape(2, 2, 3)).reshape(4, 3)).T
                               @ torch.ones(4, 3, dtype=torch.float64), rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------
# Bad configuration
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,match", [
    (dict(tau=0.0), "tau must lie in"), (dict(tau=1.5), "tau must lie in"),
    (dict(tau=-0.5), "tau must lie in"),
    (dict(alpha=0.0), "alpha must be > 0"), (dict(alpha=-1.0), "alpha must be > 0"),
    (dict(v_th=0.0), "v_th must be > 0"), (dict(surrogate="relu"), "choose one of .*rect"),
    (dict(reset="zero"), "reset must be"), (dict(backend="cuda"), "backend must be"),
])
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LIFConfig(**kwargs)


def test_tau_one_allowed_and_bad_T():
    assert LIFConfig(tau=1.0).tau == 1.0
    with pytest.raises(ValueError, match="T .* must be >= 1"):
        LIF(T=0)


def test_rate_meter_counts_hand_computed_spikes():
    """Constant inputs into a LIF (tau 0.5, v_th 1, hard reset) over T=4: 0.6 -> u_pre 0.6, 0.9, 1.05 (spike),
    0.6: one spike in 4 steps; 1.5 -> a spike every step; 0.2 -> none."""
    from snncka.neurons import LIF, RateMeter

    lif = LIF(T=4, tau=0.5, v_th=1.0)
    net = torch.nn.Sequential(lif)
    x = torch.tensor([0.6, 1.5, 0.2]).repeat(4, 1)  # [T*B, 3] folded, B = 1: three neurons
    with RateMeter(net, detail=True) as meter:
        meter.images = 1
        net(x)
        meter.images = 1
        net(x)
    assert meter.names == ["0"] and meter.handles == []
    assert meter.rates() == {"0": (1 + 4 + 0) * 2 / 24}
    assert meter.steps == {"0": 4}
    assert meter.step_sum["0"].tolist() == [2.0, 2.0, 4.0, 2.0]  # per step, over both images
    assert meter.neuron_sum["0"].tolist() == [2.0, 8.0, 0.0]  # per neuron, over steps and images
    net(x)  # hooks removed: nothing more is counted
    assert meter.sums.tolist() == [[10.0, 24.0]]
