"""Recipes: the paper's text (``"paper"``, the default) or the authors' released code (``"code"``).

The paper (Li, Kim, Park & Panda, TMLR 2023) and its released code disagree on choices that move the numbers
(surrogate, firing rule, the ANN's shortcut, momentum, weight decay, normalisation, schedule, checkpoint, CKA
image count and layers, PGD). One ``Recipe`` names every such choice, so that models, training, analyses and
experiments switch together and a result records which recipe made it. docs/FIDELITY.md lists every point
with its source.

The ``paper`` recipe keeps what the paper states (Eq. 3's box surrogate, spikes at ``u > v_th``, the
pre-activation identity shortcut, weight decay 1e-4 (App. B), 4096 CKA images (Sec. 4.1)) and, where the
paper is silent, takes the released code's choice: the cosine schedule stepped per epoch, the released fixed
normalisation constants where they exist (CIFAR-10/100; other datasets keep their training-set statistics),
the checkpoint of best test accuracy, and PGD's 20 steps of eps/10 without random start or clipping on the
whole test set. Exceptions, on purpose:

* momentum: 0.9 for ANN and SNN. App. B describes one optimiser for "all models"; 0.9 is the released SNN's
  value (the released ANN script uses 0.8, which the ``code`` recipe keeps).
* the CKA minibatch size stays 256: a computational choice; the unbiased HSIC estimator is unbiased in every
  minibatch, so the minibatch CKA does not depend on it in expectation (the released code uses 1024).
* the clean-vs-adversarial CKA attacks the model in eval mode: the released code attacks it in train mode,
  which changes the analysed model (BatchNorm uses batch statistics and its running statistics drift toward
  the adversarial batch); ``code`` copies that, ``paper`` does not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["CODE_CKA_KINDS", "RECIPES", "RELEASED_NORMALISATION", "Recipe", "get"]

# The released code's fixed input normalisation (mean, std per channel) for ``normalisation="fixed"``.
RELEASED_NORMALISATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}
# The layer kinds the released CKA code records (``cka_layers="code"``): every conv, norm, activation, pooling
# and residual-block output, but not the final linear layer; in the order the forward pass calls them.
CODE_CKA_KINDS: tuple[str, ...] = ("conv", "norm", "act", "block", "pool")


@dataclass(frozen=True)
class Recipe:
    """Every choice on which the paper's text and the released code differ (see docs/FIDELITY.md)."""

    name: str
    # neuron (paper Eq. 3 vs the released DSpike) and firing rule (u > v_th vs u - v_th >= 0)
    surrogate: str = "rect"
    fire_at_threshold: bool = False  # True: a spike when u_pre >= v_th (released code); False: u_pre > v_th
    # ANN topology: "identity" = pre-activation shortcut carrying x (paper, He et al. 2016b); "activated" = the
    # released code's ReLU(inplace=True) first op, so the identity shortcut carries relu(x)
    ann_shortcut: str = "identity"
    # a residual block computes its shortcut after bn2 (False) or right after its first activation (True, the
    # released order): same values, but the shortcut's layers run -- and are recorded -- at that point
    shortcut_first: bool = False
    # optimisation (App. B)
    momentum_ann: float = 0.9
    momentum_snn: float = 0.9
    weight_decay: float = 1e-4
    weight_decay_snn_cifar100: float = 1e-4
    lr_schedule_step: str = "epoch"  # cosine stepped per "iteration" or per "epoch" (the released code)
    # data: "dataset" = each dataset's training-set mean/std; "fixed" = the released constants where they
    # exist (RELEASED_NORMALISATION: CIFAR-10/100), the training-set statistics elsewhere
    normalisation: str = "fixed"
    # which checkpoint of a run folder the analyses read: "last" epoch or "best" test accuracy (released)
    checkpoint: str = "best"
    # CKA (§3.3): images and minibatch size; "paper" = every conv/norm/act/pool/block + fc in forward order,
    # "code" = the released recording (no fc, shortcut recorded after the block's first activation)
    cka_images: int = 4096
    cka_batch: int = 256
    cka_layers: str = "paper"
    # PGD (Eq. 5, Fig. 8): steps, step size as a fraction of eps, random start, clip to the valid pixel range,
    # the attacked model's mode in the clean-vs-adversarial CKA, images attacked (None = the whole test set)
    pgd_steps: int = 20
    pgd_step_frac: float = 0.1
    pgd_random_start: bool = False
    pgd_clip: bool = False
    pgd_model_mode: str = "eval"
    # in a train-mode attack, BatchNorm running statistics move at every step; True keeps them moved (the
    # released code: its following eval-mode pass uses them), False restores them after the attack
    pgd_bn_updates: bool = False
    pgd_images: int | None = None
    notes: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def normalisation_for(self, dataset: str) -> str:
        """The ``normalisation=`` of ``snncka.data.get`` for ``dataset`` under this recipe: ``"fixed"`` only
        where released constants exist, else ``"dataset"`` (the training set's statistics)."""
        return "fixed" if self.normalisation == "fixed" and dataset in RELEASED_NORMALISATION else "dataset"

    def cka_selection(self) -> str | list[str]:
        """The CKA layer selection (``snncka.record``) of ``cka_layers``: ``"paper"`` = every conv, norm, act,
        pool, block and linear layer; ``"code"`` = the same without the linear layer (``CODE_CKA_KINDS``)."""
        if self.cka_layers == "code":
            return list(CODE_CKA_KINDS)
        if self.cka_layers == "paper":
            return "paper"
        raise ValueError(f"recipe {self.name!r}: cka_layers must be 'paper' or 'code', got {self.cka_layers!r}")

    def momentum(self, spiking: bool) -> float:
        return self.momentum_snn if spiking else self.momentum_ann

    def weight_decay_for(self, dataset: str, spiking: bool) -> float:
        return self.weight_decay_snn_cifar100 if spiking and dataset == "cifar100" else self.weight_decay


RECIPES: dict[str, Recipe] = {
    "paper": Recipe(name="paper"),
    "code": Recipe(
        name="code",
        surrogate="dspike",
        fire_at_threshold=True,
        ann_shortcut="activated",
        shortcut_first=True,
        momentum_ann=0.8,
        momentum_snn=0.9,
        weight_decay_snn_cifar100=5e-4,
        cka_images=2048,
        cka_batch=1024,
        cka_layers="code",
        pgd_model_mode="train",
        pgd_bn_updates=True,
        pgd_images=None,
    ),
}


def get(name: str | Recipe) -> Recipe:
    """The recipe called ``name``; an unknown name is a one-line error listing the recipes."""
    if isinstance(name, Recipe):
        return name
    try:
        return RECIPES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}") from None
