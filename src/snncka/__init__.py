"""snncka: compare what spiking and artificial neural networks learn, layer by layer, with CKA."""

import os
from typing import Any

if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    # Idle OpenMP threads sleep instead of spinning (GNU OpenMP spins ~3 ms first): two processes sharing the
    # cores no longer burn each other's time (README, "Threads and shared cores"). The OpenMP runtime reads this
    # once, when torch loads it: it applies here if snncka is imported before torch (the CLI is), and always to
    # the processes started from here (the local launcher's workers, Slurm jobs). A user's own setting is kept.
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

from ._version import __version__
from .cka import CKAResult, MinibatchCKA, compare
from .models import create, from_config, list_models
from .registry import register_analysis, register_judge, register_model

__all__ = ["__version__", "CKAResult", "MinibatchCKA", "compare", "create", "demo_pair", "from_config",
           "list_models", "register_analysis", "register_judge", "register_model"]


def __getattr__(name: str) -> Any:
    if name == "demo_pair":  # imported on first use: it brings the trainer and the experiment runner
        from .pretrained import demo_pair

        return demo_pair
    raise AttributeError(f"module 'snncka' has no attribute {name!r}")
