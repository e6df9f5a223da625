"""Leaky integrate-and-fire neurons with surrogate gradients (paper Sec. 3).

Dynamics per time step t (u[-1] = 0):

    u_pre[t] = tau * u[t-1] + i[t]
    y[t]     = 1 if u_pre[t] > v_th else 0    (u_pre[t] >= v_th with fire_at_threshold, the released code)
    u[t]     = u_pre[t] * (1 - y[t])          (hard reset, default)
    u[t]     = u_pre[t] - v_th * y[t]         (soft reset)

The backward pass replaces dy/du_pre by a surrogate (default: the paper's rectangular Eq. 3; ``dspike`` is the
authors' released DSpike) and runs backpropagation through time, through the reset term unless
``detach_reset=True``.

Two implementations share one interface:

* ``lif_reference`` -- a readable Python loop over T with autograd through every step; tests use it.
* ``lif_fused`` -- the whole time loop as one autograd function. Its forward keeps only the pre-reset
  membrane ``u_pre`` (one tensor the size of the input); spikes and surrogate values are recomputed in the
  backward pass, which runs BPTT itself. Inside ``recompute_spikes()`` (which snncka's models enter) the
  layers after a LIF do not keep its float spikes either: they are rebuilt from ``u_pre`` when needed, so a
  spiking network stores as many activations per step as its ANN twin. Optionally its two kernels are
  compiled by ``torch.compile`` (inductor fuses the T-step loop into one elementwise kernel: one pass over
  memory on CPU, Triton on GPU).
"""

from __future__ import annotations

import math
import os
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from . import limits

__all__ = [
    "SURROGATES",
    "LIF",
    "LIFConfig",
    "RateMeter",
    "lif_fused",
    "lif_reference",
    "recompute_spikes",
    "surrogate_grad",
    "spike_fn",
]


# --------------------------------------------------------------------------------------------------------
# Surrogate gradients: each is d y / d u_pre as a function of x = u_pre - v_th and one shape parameter.
# --------------------------------------------------------------------------------------------------------


def _rect(x: Tensor, alpha: float) -> Tensor:
    """Paper Eq. 3: (1/alpha) * 1{|x| < alpha}. alpha = 1 is the straight-through estimator."""
    # compared in place into a float tensor: a bool mask and its cast cost 4x more per element on a CPU
    m = x.abs().lt_(alpha)
    return m if alpha == 1 else m.div_(alpha)


def _triangle(x: Tensor, gamma: float) -> Tensor:
    """(1/gamma^2) * max(0, gamma - |x|) (Esser et al. 2016, Bellec et al. 2018); area 1."""
    return (gamma - x.abs()).clamp_min(0) / (gamma * gamma)


def _sigmoid(x: Tensor, k: float) -> Tensor:
    """Derivative of sigmoid(k x) (Zenke & Ganguli 2018; spikingjelly's Sigmoid); area 1."""
    s = torch.sigmoid(k * x)
    return k * s * (1 - s)


def _arctan(x: Tensor, alpha: float) -> Tensor:
    """Derivative of arctan(pi/2 alpha x)/pi + 1/2 (Fang et al. 2021; spikingjelly's ATan); area 1."""
    return (alpha / 2) / (1 + (math.pi / 2 * alpha * x) ** 2)


def _dspike(x: Tensor, b: float) -> Tensor:
    """DSpike (Li et al. 2021) exactly as in the paper authors' released code (its ``DSPIKE(region=3)`` with
    temperature 3): the derivative of ``g(x) = tanh(b * clamp(x, -b, b)) / (2 tanh(b * b)) + 1/2``, i.e.
    ``b sech^2(b x) / (2 tanh(b^2))`` on the closed window ``|x| <= b`` and zero outside. The released code
    passes one value (3) as both temperature and window half-width; ``b`` is that value. Area 1.
    """
    t = torch.tanh(b * x)  # (1 - t)(1 + t): exact 1 - t near the window edge, where 1 - t*t would cancel
    return torch.where(x.abs() <= b, b * ((1 - t) * (1 + t)) / (2 * math.tanh(b * b)), torch.zeros_like(x))


SURROGATES: dict[str, tuple[Callable[[Tensor, float], Tensor], float]] = {
    "rect": (_rect, 1.0),
    "triangle": (_triangle, 1.0),
    "sigmoid": (_sigmoid, 4.0),
    "arctan": (_arctan, 2.0),
    "dspike": (_dspike, 3.0),
}


def surrogate_grad(x: Tensor, surrogate: str = "rect", param: float | None = None) -> Tensor:
    """Value of the surrogate dy/du_pre at ``x = u_pre - v_th``."""
    fn, default = _lookup(surrogate)
    return fn(x, default if param is None else param)


def _lookup(surrogate: str) -> tuple[Callable[[Tensor, float], Tensor], float]:
    try:
        return SURROGATES[surrogate]
    except KeyError:
        raise ValueError(f"unknown surrogate {surrogate!r}; choose one of {sorted(SURROGATES)}") from None


class _SpikeFn(torch.autograd.Function):
    """Heaviside step forward, surrogate gradient backward (one time step)."""

    @staticmethod
    def forward(ctx, x: Tensor, surrogate: str, param: float, at_zero: bool) -> Tensor:  # x = u_pre - v_th
        ctx.save_for_backward(x)
        ctx.surrogate, ctx.param = surrogate, param
        return ((x >= 0) if at_zero else (x > 0)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        return grad * SURROGATES[ctx.surrogate][0](x, ctx.param), None, None, None


def spike_fn(x: Tensor, surrogate: str = "rect", param: float | None = None,
             fire_at_threshold: bool = False) -> Tensor:
    """Spike (Heaviside of ``x = u_pre - v_th``) with a surrogate gradient; ``fire_at_threshold`` makes the
    step fire at ``x == 0`` too (``x >= 0``, the released code's rule) instead of only at ``x > 0``."""
    fn, default = _lookup(surrogate)
    return _SpikeFn.apply(x, surrogate, default if param is None else param, bool(fire_at_threshold))


# --------------------------------------------------------------------------------------------------------
# Configuration and validation
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LIFConfig:
    """Parameters of a LIF layer; defaults are the paper's (tau 0.5, v_th 1.0, rectangular alpha 1.0)."""

    tau: float = 0.5
    v_th: float = 1.0
    surrogate: str = "rect"
    alpha: float | None = None  # surrogate parameter; None = the surrogate's default (rect: 1.0)
    reset: str = "hard"  # "hard" (to 0, the paper) or "soft" (subtract v_th)
    detach_reset: bool = False
    backend: str = "fused"  # "fused" or "reference"
    fire_at_threshold: bool = False  # True: spike when u_pre >= v_th (the released code); False: u_pre > v_th

    def __post_init__(self) -> None:
        for name, v, ok, rule in (("tau", self.tau, lambda f: 0 < f <= 1,
                                   "tau must lie in (0, 1] (the leak factor; the paper uses 0.5)"),
                                  ("v_th", self.v_th, lambda f: 0 < f <= 1e6, "v_th must be > 0 (at most 1e6)"),
                                  ("alpha", self.alpha, lambda f: 0 < f <= 1e6,
                                   "the surrogate parameter alpha must be > 0 (at most 1e6)")):
            if name == "alpha" and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int | float) or not (math.isfinite(v) and ok(v)):
                raise ValueError(f"{rule}, got {v!r}")
        limits.boolean("detach_reset", self.detach_reset)
        limits.boolean("fire_at_threshold", self.fire_at_threshold)
        limits.string("surrogate", self.surrogate)
        _lookup(self.surrogate)
        if self.reset not in ("hard", "soft"):
            raise ValueError(f"reset must be 'hard' or 'soft', got {self.reset!r}")
        if self.backend not in ("fused", "reference"):
            raise ValueError(f"backend must be 'fused' or 'reference', got {self.backend!r}")

    @property
    def param(self) -> float:
        return SURROGATES[self.surrogate][1] if self.alpha is None else float(self.alpha)


# --------------------------------------------------------------------------------------------------------
# Reference implementation: a readable loop, autograd through every step.
# --------------------------------------------------------------------------------------------------------


def lif_reference(x: Tensor, cfg: LIFConfig = LIFConfig(), return_membrane: bool = False):
    """Multi-step LIF on ``x`` of shape ``[T, ...]``; returns spikes ``[T, ...]`` (and ``u_pre``, ``u``)."""
    u = torch.zeros_like(x[0])
    spikes, pres, posts = [], [], []
    for t in range(x.shape[0]):
        u_pre = cfg.tau * u + x[t]
        y = spike_fn(u_pre - cfg.v_th, cfg.surrogate, cfg.param, cfg.fire_at_threshold)
        y_r = y.detach() if cfg.detach_reset else y
        u = u_pre * (1 - y_r) if cfg.reset == "hard" else u_pre - cfg.v_th * y_r
        spikes.append(y)
        pres.append(u_pre)
        posts.append(u)
    out = torch.stack(spikes)
    if return_membrane:
        return out, torch.stack(pres), torch.stack(posts)
    return out


# --------------------------------------------------------------------------------------------------------
# Fused implementation: one autograd node for the whole time loop.
# --------------------------------------------------------------------------------------------------------


def _make_kernels(surrogate: str, hard: bool, detach: bool, ge: bool, for_compile: bool) -> tuple[Callable, Callable]:
    """Forward and BPTT-backward kernels for one variant (its flags are constants of the closures); ``ge``:
    fire at ``u_pre >= v_th`` instead of ``u_pre > v_th``.

    Two formulations of the same arithmetic, because the fastest differs (``benchmarks/bench_lif_kernels.py``):
    eager kernels (``for_compile=False``) write every op's result in place, where it belongs, and compare into
    float tensors (a CPU compares into a bool mask and casts it 3-4x slower); torch.compile fuses functional
    code into one loop but turns those in-place writes into copies (the compiled call became 1.3-4x slower).
    Both fire the same spikes; tests/test_neurons.py checks each against the reference loop."""
    sg_fn = SURROGATES[surrogate][0]

    def c_of(sg: Tensor, u_pre: Tensor, v_th: float, tau: float) -> Tensor | None:
        """``c[t] = tau * du[t]/du_pre[t]`` for all steps; None for a detached soft reset (c = tau)."""
        if hard:
            keep = torch.empty_like(u_pre)  # 1 - y
            keep = torch.lt(u_pre, v_th, out=keep) if ge else torch.le(u_pre, v_th, out=keep)
            return (keep if detach else torch.addcmul(keep, sg, u_pre, value=-1)).mul_(tau)
        return None if detach else torch.mul(sg, -v_th * tau).add_(tau)

    def fwd(x: Tensor, tau: float, v_th: float) -> tuple[Tensor, Tensor]:
        """All T steps forward; returns (spikes, u_pre). Three ops per step, each writing into its step of
        the outputs. The hard reset ``u_pre - u_pre * y`` is the reference's ``u_pre * (1 - y)`` exactly."""
        spikes, u_pre = torch.empty_like(x), torch.empty_like(x)
        u = torch.zeros_like(x[0])
        for t in range(x.shape[0]):
            up = torch.add(x[t], u, alpha=tau, out=u_pre[t])
            y = torch.ge(up, v_th, out=spikes[t]) if ge else torch.gt(up, v_th, out=spikes[t])
            u = torch.addcmul(up, up, y, value=-1) if hard else torch.sub(up, y, alpha=v_th)
        return spikes, u_pre

    def bwd(gy: Tensor, u_pre: Tensor, tau: float, v_th: float, param: float) -> Tensor:
        """BPTT: dL/d(input current) of every step from dL/dy of every step and the saved u_pre.

        With ``g[t]`` = dL/du_pre[t], the chain rule through ``u_pre[t+1] = tau * u[t] + x[t+1]`` gives
        ``g[t] = sg[t] * gy[t] + c[t] * g[t+1]``, where ``c[t] = tau * du[t]/du_pre[t]`` and
        ``du/du_pre`` = (1 - y) - u_pre * sg for a hard reset (1 - y alone when the reset is detached), and
        1 - v_th * sg for a soft one (1 when detached). Both ``sg * gy`` and ``c`` are computed for all steps
        at once; the recurrence is one fused multiply-add per step, in place (``g`` overwrites ``sg * gy``)."""
        sg = sg_fn(u_pre - v_th, param)
        g, c = sg * gy, c_of(sg, u_pre, v_th, tau)
        for t in range(u_pre.shape[0] - 2, -1, -1):
            g[t].add_(g[t + 1], alpha=tau) if c is None else g[t].addcmul_(c[t], g[t + 1])
        return g

    def fwd_graph(x: Tensor, tau: float, v_th: float) -> tuple[Tensor, Tensor]:
        """``fwd`` as functional code, for torch.compile."""
        u = torch.zeros_like(x[0])
        pres = []
        for t in range(x.shape[0]):
            u_pre = torch.add(x[t], u, alpha=tau)
            pres.append(u_pre)
            y = ((u_pre >= v_th) if ge else (u_pre > v_th)).to(x.dtype)
            u = u_pre - u_pre * y if hard else torch.sub(u_pre, y, alpha=v_th)
        u_pre = torch.stack(pres)
        return ((u_pre >= v_th) if ge else (u_pre > v_th)).to(x.dtype), u_pre

    def bwd_graph(gy: Tensor, u_pre: Tensor, tau: float, v_th: float, param: float) -> Tensor:
        """``bwd`` as functional code, for torch.compile."""
        sg = sg_fn(u_pre - v_th, param)
        a, c = sg * gy, c_of(sg, u_pre, v_th, tau)
        g = a[-1]
        gx = [g]
        for t in range(u_pre.shape[0] - 2, -1, -1):
            g = torch.add(a[t], g, alpha=tau) if c is None else torch.addcmul(a[t], c[t], g)
            gx.append(g)
        gx.reverse()
        return torch.stack(gx)

    return (fwd_graph, bwd_graph) if for_compile else (fwd, bwd)


def _renamed(fn: Callable, name: str) -> Callable:
    """A copy of ``fn`` with its own code object, so torch.compile caches each variant separately
    (its recompile limit counts per code object, and the variants differ only in closure constants)."""
    return types.FunctionType(fn.__code__.replace(co_name=name), fn.__globals__, name, None, fn.__closure__)


_KERNELS: dict[tuple, tuple[Callable, Callable]] = {}


# On a CPU, compiling a kernel family costs ~10 s once; per call (fwd+bwd, T=4, 2 cores,
# benchmarks/bench_lif_kernels.py) the compiled kernels take as long as the eager ones up to 2^16 elements,
# 0.27 vs 0.39 ms at 2^17, 0.76 vs 3.0 ms at 2^20 and 4.0 vs 19.5 ms at 2^22. Below this many elements per
# call the saving needs more calls than a short run makes (the demo's 8x8 digits: <= 2^17 per training call),
# so eager; CIFAR-sized batches (>= 2^21) compile, and pay for it within an epoch.
_CPU_COMPILE_MIN_NUMEL = 2**21
_AUTO: dict[tuple, bool] = {}  # the decision per kernel family, made at the family's first call


def _compile_default(x: Tensor | None = None, cfg: LIFConfig | None = None) -> bool:
    """Whether to compile: SNNCKA_COMPILE=1 always, =0 never (compiling needs a C++ compiler on CPU, Triton
    on GPU); by default on GPUs, and on the CPU when the family's first call (a ``[T, N]`` input ``x``) is
    large enough for compiling to pay. Compiled and eager kernels compute the same values."""
    env = os.environ.get("SNNCKA_COMPILE", "auto")
    if env in ("0", "1"):
        return env == "1"
    if x is None or cfg is None or x.device.type != "cpu":
        return x is None or x.device.type != "cpu"
    key = (cfg.surrogate, cfg.reset == "hard", cfg.detach_reset, cfg.fire_at_threshold, x.shape[0], x.dtype)
    return _AUTO.setdefault(key, x.numel() >= _CPU_COMPILE_MIN_NUMEL)


def _kernels(cfg: LIFConfig, compiled: bool, x: Tensor) -> tuple[Callable, Callable]:
    """The (forward, backward) kernels for ``cfg`` and an input like ``x`` (``[T, N]``).

    Compiled kernels are made per number of steps, dtype and device type (each with its own code object), so
    a process that meets many models never hits torch.compile's recompile limit; N stays dynamic.
    """
    key: tuple = (cfg.surrogate, cfg.reset == "hard", cfg.detach_reset, cfg.fire_at_threshold, compiled)
    if compiled:
        key += (x.shape[0], x.dtype, x.device.type)
    if key not in _KERNELS:
        fwd, bwd = _make_kernels(*key[:5])
        if compiled:
            tag = "_".join(str(k).replace("torch.", "") for k in key[:4] + key[5:])
            eager = _kernels(cfg, False, x)
            fwd = _with_fallback(torch.compile(_renamed(fwd, f"lif_fwd_{tag}"), dynamic=True, fullgraph=True),
                                 eager[0])
            bwd = _with_fallback(torch.compile(_renamed(bwd, f"lif_bwd_{tag}"), dynamic=True, fullgraph=True),
                                 eager[1])
        _KERNELS[key] = (fwd, bwd)
    return _KERNELS[key]


def _with_fallback(compiled: Callable, eager: Callable) -> Callable:
    """Run ``compiled``; if torch.compile fails (no compiler, unsupported platform), warn once and use the
    eager kernel from then on -- same values, only slower."""
    state = {"fn": compiled}

    def call(*args):
        try:
            return state["fn"](*args)
        except torch._dynamo.exc.TorchDynamoException as e:  # BackendCompilerFailed, Unsupported, ...
            warnings.warn(f"snncka: compiling the fused LIF kernel failed ({type(e).__name__}); using the eager "
                          "kernel (set SNNCKA_COMPILE=0 to skip compiling)", RuntimeWarning, stacklevel=3)
            state["fn"] = eager
            return eager(*args)

    return call


def _fwd(flat: Tensor, cfg: LIFConfig, compiled: bool) -> tuple[Tensor, Tensor]:
    """Spikes and u_pre of a contiguous ``[T, N]`` input."""
    return _kernels(cfg, compiled, flat)[0](flat, cfg.tau, cfg.v_th)


class _LIFFused(torch.autograd.Function):
    """The whole time loop of a ``[T, N]`` input as one autograd node."""

    @staticmethod
    def forward(ctx, x: Tensor, cfg: LIFConfig, compiled: bool) -> tuple[Tensor, Tensor]:
        spikes, u_pre = _fwd(x, cfg, compiled)
        ctx.save_for_backward(u_pre)
        ctx.cfg, ctx.compiled = cfg, compiled
        ctx.mark_non_differentiable(u_pre)
        ctx.set_materialize_grads(False)  # no zero-filled gradient for the (non-differentiable) u_pre output
        return spikes, u_pre

    @staticmethod
    def backward(ctx, gy: Tensor | None, _g_u_pre: Tensor | None):
        if gy is None:
            return None, None, None
        (u_pre,) = ctx.saved_tensors
        cfg = ctx.cfg
        gx = _kernels(cfg, ctx.compiled, u_pre)[1](gy.contiguous(), u_pre, cfg.tau, cfg.v_th, cfg.param)
        return gx, None, None


def _lif_fused_state(x: Tensor, cfg: LIFConfig, compiled: bool | None) -> tuple[Tensor, Tensor | None]:
    """Spikes and, when a graph is recorded, the saved pre-reset membrane (None otherwise)."""
    flat = x.reshape(x.shape[0], -1).contiguous()  # [T, N]: one dynamic size for the compiled kernels
    if compiled is None:
        compiled = _compile_default(flat, cfg)
    if not (x.requires_grad and torch.is_grad_enabled()):
        with torch.no_grad():
            return _fwd(flat, cfg, compiled)[0].view(x.shape), None
    spikes, u_pre = _LIFFused.apply(flat, cfg, compiled)
    return spikes.view(x.shape), u_pre


def lif_fused(x: Tensor, cfg: LIFConfig = LIFConfig(), compiled: bool | None = None) -> Tensor:
    """Multi-step LIF on ``[T, ...]`` as one autograd node; same values and gradients as the reference."""
    return _lif_fused_state(x, cfg, compiled)[0]


# --------------------------------------------------------------------------------------------------------
# Memory: layers after a LIF (conv, pooling) save its float spikes for their backward. The spikes are exactly
# ``u_pre > v_th`` (or ``>=``) and the fused LIF keeps ``u_pre`` anyway, so inside ``recompute_spikes()`` such saved
# spikes are replaced by a recipe and rebuilt (bit for bit) when the backward pass needs them. A spiking
# network then stores one float per neuron and step, as many as its ANN twin stores per neuron.
# --------------------------------------------------------------------------------------------------------

_SPIKE_SOURCE = "_snncka_spike_source"


class _SpikeRecipe:
    __slots__ = ("u_pre", "v_th", "ge", "dtype", "shape")

    def __init__(self, u_pre: Tensor, v_th: float, ge: bool, dtype: torch.dtype, shape: torch.Size) -> None:
        self.u_pre, self.v_th, self.ge, self.dtype, self.shape = u_pre, v_th, ge, dtype, shape


def _pack(t: Tensor):
    src = getattr(t, _SPIKE_SOURCE, None)
    if src is None or t._version != src[3]:  # modified in place since the LIF made it: keep as is
        return t
    return _SpikeRecipe(src[0], src[1], src[2], t.dtype, t.shape)


def _unpack(obj):
    if isinstance(obj, _SpikeRecipe):  # one pass: compare straight into a float tensor
        out = torch.empty(obj.u_pre.shape, dtype=obj.dtype, device=obj.u_pre.device)
        cmp = torch.ge if obj.ge else torch.gt
        return cmp(obj.u_pre, obj.v_th, out=out).reshape(obj.shape)
    return obj


def recompute_spikes() -> torch.autograd.graph.saved_tensors_hooks:
    """Context manager: tensors that later layers save from fused-LIF outputs are rebuilt from the LIF's
    saved membrane in the backward pass instead of being kept (exact; saves one float per neuron and step).
    snncka's spiking models enter it in every forward pass. First-order gradients only: the rebuilt spikes
    carry no graph, so double backward (``create_graph=True``) through such layers is not supported."""
    return torch.autograd.graph.saved_tensors_hooks(_pack, _unpack)


# --------------------------------------------------------------------------------------------------------
# Module
# --------------------------------------------------------------------------------------------------------


class LIF(nn.Module):
    """Multi-step LIF layer.

    Input layout: ``[T, B, ...]`` when ``T`` is None; with an integer ``T`` the input is *time-folded*
    ``[T*B, ...]`` (step-major), the layout the snncka models use between layers so that convolutions, norms
    and pooling run on all steps at once and share parameter names with the ANN. The output has the input's
    layout. With the fused backend the output carries a note that lets ``recompute_spikes()`` rebuild it
    from the saved membrane in the backward pass instead of storing it.
    """

    def __init__(self, T: int | None = None, cfg: LIFConfig | None = None, **kwargs) -> None:
        super().__init__()
        if T is not None and T < 1:
            raise ValueError(f"T (number of time steps) must be >= 1, got {T}")
        self.T = T
        self.cfg = cfg if cfg is not None else LIFConfig(**kwargs)

    def forward(self, x: Tensor) -> Tensor:
        if self.T is None:
            seq = x
        else:
            if x.shape[0] % self.T:
                raise ValueError(
                    f"time-folded input of LIF must have T*B rows with T={self.T}, got {x.shape[0]} rows"
                )
            seq = x.reshape(self.T, x.shape[0] // self.T, *x.shape[1:])
        if self.cfg.backend == "reference":
            return lif_reference(seq, self.cfg).reshape(x.shape)
        y, u_pre = _lif_fused_state(seq, self.cfg, None)
        y = y.reshape(x.shape)
        if u_pre is not None:  # let recompute_spikes() rebuild y from u_pre instead of storing it
            setattr(y, _SPIKE_SOURCE, (u_pre, self.cfg.v_th, self.cfg.fire_at_threshold, y._version))
        return y

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"T={self.T}, tau={c.tau}, v_th={c.v_th}, surrogate={c.surrogate}({c.param}), reset={c.reset}"
            f"{', detach_reset' if c.detach_reset else ''}{', fire_at_threshold' if c.fire_at_threshold else ''}, "
            f"backend={c.backend}"
        )


class RateMeter:
    """Spike counts of every LIF layer of ``model``, through forward hooks: the firing rates that training
    records after each epoch and that the firing-rate analysis reports.

    ``sums[l] = (spikes, elements)`` in float64 (exact counts; all-reducible under torch.distributed), so
    ``rates()`` is each layer's fraction of spikes. With ``detail=True`` it also keeps, per layer that ran,
    its step count and spike counts per time step and per neuron; set ``images`` to the batch's image count
    before each forward (the LIF output is time-folded, ``[T*B, ...]``). Use as a context manager, or
    ``close()`` to remove the hooks.
    """

    def __init__(self, model: nn.Module, device: torch.device | str | None = None, *, detail: bool = False) -> None:
        lifs = [(n, m) for n, m in model.named_modules() if isinstance(m, LIF)]
        self.names = [n for n, _ in lifs]
        self.sums = torch.zeros(len(lifs), 2, dtype=torch.float64, device=device)
        self.detail = detail
        self.images = 0
        self.steps: dict[str, int] = {}
        self.step_sum: dict[str, Tensor] = {}
        self.neuron_sum: dict[str, Tensor] = {}
        self.handles = [m.register_forward_hook(self._hook(i, n)) for i, (n, m) in enumerate(lifs)]

    def _hook(self, i: int, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: object, out: Tensor) -> None:
            self.sums[i, 0] += out.detach().sum(dtype=torch.float64)
            self.sums[i, 1] += out.numel()
            if self.detail:
                T = out.shape[0] // self.images
                spikes = out.detach().reshape(T, self.images, -1).double()
                self.steps[name] = T
                self.step_sum[name] = self.step_sum.get(name, 0) + spikes.sum(dim=(1, 2))
                self.neuron_sum[name] = self.neuron_sum.get(name, 0) + spikes.sum(dim=(0, 1))

        return hook

    def rates(self) -> dict[str, float]:
        """{LIF layer name: fraction of its outputs that are spikes} (0 for a layer that never ran)."""
        return {n: float(s / max(c, 1.0)) for n, (s, c) in zip(self.names, self.sums.tolist(), strict=True)}

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def __enter__(self) -> RateMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
