"""snncka: compare what spiking and artificial neural networks learn, layer by layer, with CKA."""

from .cka import CKAResult, compare
from .models import create, from_config, list_models

__version__ = "0.1.0"
__all__ = ["__version__", "CKAResult", "compare", "create", "from_config", "list_models"]
