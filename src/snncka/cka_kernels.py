"""CKA reference formulas on ``[n, p]`` features, small and readable in the style of Kornblith et al. 2019
(the engine in ``snncka.cka_stream`` is held to them by the tests): ``gram_linear``, ``gram_rbf``,
``center_gram``, ``hsic_biased``, ``hsic_unbiased`` (Song et al. 2012) and ``cka(X, Y)``."""

from __future__ import annotations

import torch
from torch import Tensor


def gram_linear(X: Tensor) -> Tensor:
    """Linear kernel ``K = X X^T`` of features ``[n, p]``."""
    return X @ X.T


def _median(x: Tensor) -> Tensor:
    """Median as numpy defines it (mean of the two middle values for an even count)."""
    s = x.flatten().sort().values
    m = s.numel()
    return s[m // 2] if m % 2 else (s[m // 2 - 1] + s[m // 2]) / 2


def _sq_dists_from_gram(K: Tensor) -> Tensor:
    d = torch.diagonal(K)
    return (d[:, None] + d[None, :] - 2 * K).clamp_min(0)


def _rbf_from_gram(K: Tensor, threshold: float) -> Tensor:
    sq = _sq_dists_from_gram(K)
    med = _median(sq)
    if not med > 0:
        raise ValueError("RBF bandwidth undefined: the median pairwise distance of a layer's features is 0")
    return torch.exp(-sq / (2 * threshold**2 * med))


def gram_rbf(X: Tensor, threshold: float = 1.0) -> Tensor:
    """RBF kernel ``exp(-|x_i - x_j|^2 / (2 sigma^2))`` with ``sigma = threshold * sqrt(median sq. distance)``
    (Kornblith et al. 2019: the bandwidth is a fraction of the median distance)."""
    return _rbf_from_gram(gram_linear(X), threshold)


def center_gram(K: Tensor, unbiased: bool = True) -> Tensor:
    """Centred Gram ``P(K)`` with ``HSIC(K, L) = <P(K), P(L)> / c(n)`` (Kornblith et al. 2019's
    ``center_gram``), batched over leading dims.

    ``unbiased=False``: double centring ``H K H`` with ``H = I - 11^T/n``. ``unbiased=True``: the U-centred Gram
    (zero diagonal, zero row sums; Szekely & Rizzo 2014), whose inner product is Song et al.'s HSIC_1.
    """
    n = K.shape[-1]
    if not unbiased:
        K = K - K.mean(-2, keepdim=True)
        return K - K.mean(-1, keepdim=True)
    Kt = K - torch.diag_embed(torch.diagonal(K, dim1=-2, dim2=-1))
    r = Kt.sum(-1)
    s = r.sum(-1)
    U = Kt - (r.unsqueeze(-1) + r.unsqueeze(-2)) / (n - 2) + (s / ((n - 1) * (n - 2)))[..., None, None]
    return U - torch.diag_embed(torch.diagonal(U, dim1=-2, dim2=-1))


def hsic_biased(K: Tensor, L: Tensor) -> Tensor:
    """Biased HSIC ``tr(K H L H) / (n - 1)^2`` (paper Eq. 4)."""
    n = K.shape[0]
    return torch.trace(K @ center_gram(L, unbiased=False)) / (n - 1) ** 2


def hsic_unbiased(K: Tensor, L: Tensor) -> Tensor:
    """Unbiased HSIC_1 of Song et al. (2012), written out term by term; needs ``n >= 4``."""
    n = K.shape[0]
    if n < 4:
        raise ValueError(f"the unbiased HSIC estimator needs at least 4 samples, got {n}")
    Kt = K - torch.diag(torch.diagonal(K))
    Lt = L - torch.diag(torch.diagonal(L))
    one = torch.ones(n, 1, dtype=K.dtype, device=K.device)
    term = (
        torch.trace(Kt @ Lt)
        + (one.T @ Kt @ one) * (one.T @ Lt @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * (one.T @ Kt @ Lt @ one)
    )
    return term.squeeze() / (n * (n - 3))


def _kernel_spec(kernel: str) -> tuple[str, float]:
    """'linear', 'rbf' (threshold 1) or 'rbf:<threshold>'."""
    name, _, arg = kernel.partition(":")
    if name == "linear" and not arg:
        return "linear", 0.0
    if name == "rbf":
        try:
            thr = float(arg) if arg else 1.0
        except ValueError:
            thr = -1.0
        if thr > 0:
            return "rbf", thr
    raise ValueError(f"unknown kernel {kernel!r}; use 'linear', 'rbf' or 'rbf:<threshold>' (e.g. 'rbf:0.5')")


def cka(X: Tensor, Y: Tensor, *, kernel: str = "linear", unbiased: bool = True) -> Tensor:
    """CKA between features ``X [n, p]`` and ``Y [n, q]`` of the same n samples (reference formula).

    The columns are centred in float64 first (CKA is invariant to a shift of the features): a float32 Gram of
    raw ReLU features with a common offset loses every digit to cancellation. A NaN or Inf is an error naming
    where it is, not a NaN result.
    """
    if X.dim() != 2 or Y.dim() != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(f"cka needs [n, p] and [n, q] features, same n samples: got {X.shape}, {Y.shape}")
    name, thr = _kernel_spec(kernel)
    for which, F in (("X", X), ("Y", Y)):
        bad = ~torch.isfinite(F)
        if bool(bad.any()):
            i, j = (int(v) for v in bad.nonzero()[0])
            raise ValueError(
                f"cka: {which} holds {int(bad.sum())} non-finite value(s) (NaN or Inf), the first at sample {i}, "
                f"column {j}; CKA of such features is undefined -- check the data and the model (NaN weights)"
            )
    X, Y = X.double(), Y.double()
    X, Y = X - X.mean(0), Y - Y.mean(0)
    K, L = (gram_linear(X), gram_linear(Y)) if name == "linear" else (gram_rbf(X, thr), gram_rbf(Y, thr))
    hsic = hsic_unbiased if unbiased else hsic_biased
    return hsic(K, L) / torch.sqrt(hsic(K, K) * hsic(L, L))
