"""Run other libraries' LIF neurons inside snncka models (cross-checks and benchmarks).

snncka's spiking models pass time-folded tensors ``[T*B, ...]`` between layers; only the ``LIF`` modules
unfold time. ``swap_neurons`` replaces every ``LIF`` module of a model with a wrapper around a neuron from
spikingjelly or snntorch that unfolds the time axis, runs the peer's own dynamics step by step and folds the
spikes back, so that the same network can be trained with either implementation and compared value by value.

Both peers are optional (test-only) dependencies: spikingjelly (``pip install --no-deps spikingjelly==2.0.0
loguru``) and snntorch (``pip install snntorch``). The surrogate gradient is ours in both cases
(``RectSurrogate``: snncka's rectangular Eq. 3, which neither library ships with this normalisation); the
membrane update, threshold test and reset are the peer's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .neurons import LIF

__all__ = ["RectSurrogate", "SpikingJellyLIF", "SnnTorchLeaky", "swap_neurons"]


class _RectGrad(torch.autograd.Function):
    """Heaviside forward (given by the peer), paper Eq. 3 backward: (1/alpha) * 1{|x| < alpha}."""

    @staticmethod
    def forward(ctx, x: Tensor, spikes: Tensor, alpha: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return spikes

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() < ctx.alpha).to(grad.dtype) / ctx.alpha, None, None


class RectSurrogate:
    """Callable surrogate for a peer library: spikes by ``heaviside(x)``, gradient by paper Eq. 3.

    ``heaviside`` maps ``x = v - v_th`` to 0/1 spikes; pass the peer's own step function so the firing rule
    stays the peer's (spikingjelly fires at ``x >= 0``, snntorch at ``x > 0``).
    """

    def __init__(self, heaviside: Callable[[Tensor], Tensor], alpha: float = 1.0) -> None:
        if not alpha > 0:
            raise ValueError(f"the surrogate parameter alpha must be > 0, got {alpha}")
        self.heaviside, self.alpha = heaviside, float(alpha)

    def __call__(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            spikes = self.heaviside(x).to(x.dtype)
        return _RectGrad.apply(x, spikes, self.alpha)


class _Folded(nn.Module):
    """Base: unfold ``[T*B, ...]`` to ``[T, B, ...]``, run the peer, fold back."""

    def __init__(self, T: int) -> None:
        super().__init__()
        if T < 1:
            raise ValueError(f"T (number of time steps) must be >= 1, got {T}")
        self.T = T

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] % self.T:
            raise ValueError(f"time-folded input must have T*B rows with T={self.T}, got {x.shape[0]} rows")
        seq = x.reshape(self.T, x.shape[0] // self.T, *x.shape[1:])
        return self.run(seq).reshape(x.shape)

    def run(self, seq: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class SpikingJellyLIF(_Folded):
    """spikingjelly's multi-step ``LIFNode`` with snncka's dynamics: ``tau_sj = 1 / (1 - tau)``,
    ``decay_input=False``, hard reset to 0. ``surrogate``: ``"rect"`` (ours, paper Eq. 3 with ``alpha``,
    run by spikingjelly's Torch reference loop) or ``"builtin"`` (spikingjelly's own ``Rect`` with the same
    support |x| < alpha but height 1/(2 alpha), which lets spikingjelly pick its fastest CPU path)."""

    def __init__(self, T: int, tau: float = 0.5, v_th: float = 1.0, alpha: float = 1.0,
                 surrogate: str = "rect") -> None:
        super().__init__(T)
        from spikingjelly.activation_based import neuron
        from spikingjelly.activation_based import surrogate as sj_surrogate

        if surrogate == "rect":
            sg = RectSurrogate(sj_surrogate.heaviside, alpha)
        elif surrogate == "builtin":
            sg = sj_surrogate.Rect(alpha=0.5 / alpha)
        else:
            raise ValueError(f"surrogate must be 'rect' or 'builtin', got {surrogate!r}")
        self.node = neuron.LIFNode(tau=1.0 / (1.0 - tau), decay_input=False, v_threshold=v_th, v_reset=0.0,
                                   surrogate_function=sg, detach_reset=False, step_mode="m")

    def run(self, seq: Tensor) -> Tensor:
        self.node.reset()  # a fresh membrane for every sequence
        out = self.node(seq)
        self.node.reset()  # do not keep the last membrane (and its graph) alive
        return out


class SnnTorchLeaky(_Folded):
    """snntorch's ``Leaky(beta=tau, reset_mechanism='zero', reset_delay=False)`` stepped over T, with
    snncka's rectangular surrogate (snntorch's firing rule ``x > 0``)."""

    def __init__(self, T: int, tau: float = 0.5, v_th: float = 1.0, alpha: float = 1.0) -> None:
        super().__init__(T)
        import snntorch

        self.node = snntorch.Leaky(beta=tau, threshold=v_th, reset_mechanism="zero", reset_delay=False,
                                   spike_grad=RectSurrogate(lambda x: x > 0, alpha))

    def run(self, seq: Tensor) -> Tensor:
        mem = torch.zeros_like(seq[0])
        spikes = []
        for t in range(seq.shape[0]):
            spk, mem = self.node(seq[t], mem)
            spikes.append(spk)
        return torch.stack(spikes)


def swap_neurons(model: nn.Module, factory: Callable[[LIF], nn.Module]) -> nn.Module:
    """Replace every ``LIF`` module of ``model`` (in place) by ``factory(lif)``; returns the model.
    Module names stay the same, so recordings and state dicts line up."""
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, LIF)]
    if not targets:
        raise ValueError("the model has no snncka LIF modules to replace (is it an ANN?)")
    for name, lif in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, factory(lif))
    return model
