"""snncka: compare what spiking and artificial neural networks learn, layer by layer, with CKA."""

from typing import Any

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
