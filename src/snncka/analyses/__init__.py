"""The paper's analyses as functions (Sec. 3.3 and the experiments of Sec. 4, App. A and C).

Each analysis takes checkpoints (paths: a checkpoint file, or a run folder meaning the checkpoint its recipe
picks: ``best.pt`` under both recipes) or ``Subject`` objects (a model with the dataset it was trained on)
and returns a result (``snncka.results``):
``save`` writes ``<out>/<name>.json`` + ``.npz`` atomically, ``load_result`` reads it back, ``plot`` draws its
figures (PNG + SVG). The CKA analyses hold the engine's result in ``.cka`` (a ``CKAResult`` /
``TemporalResult``), so ``CKAResult.load`` reads a saved ``compare`` result too.

* ``compare``     cross-layer CKA of two models (or one with itself): heatmap + CKA curve (Fig. 2).
* ``temporal``    ``T x T`` CKA between the time steps of every SNN layer (Fig. 6, A.3, A.8, A.11, A.12).
* ``blocks``      CKA per layer type inside residual blocks and the periodic pattern along depth (Fig. 3).
* ``robustness``  PGD robust accuracy per eps and per-layer CKA clean vs adversarial (Fig. 8, A.9).
* ``probe``       linear classifiers on each block's pooled output (Fig. A.6).
* ``seeds``       CKA across seeds, every pairing (App. C).
* ``rates``       firing-rate statistics of every LIF layer.

The functions are named after their analysis (``blocks``, ``robustness``, ...), except ``compare_checkpoints``
and ``temporal_checkpoint``, whose short names are the CKA engine's (``snncka.compare``, ``snncka.cka.temporal``).

Every analysis takes ``recipe=`` (``"paper"``/``"code"``, ``snncka.recipes``; default: the recipe the first
model was built under). It fills in what is not given explicitly: the CKA layer set (``paper``: every layer
incl. fc; ``code``: no fc), images and minibatch size, the checkpoint of a run folder and the PGD settings.
Each result records its recipe, the recipe of every model and a warning when models of different recipes
are compared (``RecipeMeasured``).

Each registers its experiment step (``snncka.registry.register_analysis``): what ``[[analysis]] analysis = ...``
of an experiment file runs. ``TableResult`` holds what a user's analysis returned as a dict.

Modules: ``subjects`` (models, their data and test images) and one ``<analysis>_analysis`` module per analysis
(``compare_analysis``, ``temporal_analysis``, ``blocks_analysis``, ``robustness_analysis``, ``probe_analysis``,
``seeds_analysis``, ``rates_analysis``); the result format is ``snncka.results``.
"""

from __future__ import annotations

from ..results import CKAResult, Result, TemporalResult, iter_results, load_result
from .blocks_analysis import BLOCK_NAME, TYPE_LABELS, BlocksResult, block_subset, blocks, blocks_from, check_block_names
from .compare_analysis import CompareAnalysis, Overview, compare_checkpoints
from .probe_analysis import ProbeResult, fit_linear_probe, pooled_features, probe, probe_layers
from .rates_analysis import RatesResult, rates
from .robustness_analysis import DEFAULT_EPS, DRIFT_EPS, RobustnessResult, robustness
from .seeds_analysis import SeedsResult, seeds
from .subjects import RecipeMeasured, Subject, accuracy, check_same_images, describe, resolve_recipe
from .table import TableResult
from .temporal_analysis import TemporalAnalysis, temporal_checkpoint

__all__ = [
    "BLOCK_NAME",
    "Overview",
    "TableResult",
    "block_subset",
    "check_block_names",
    "DEFAULT_EPS",
    "DRIFT_EPS",
    "TYPE_LABELS",
    "BlocksResult",
    "CKAResult",
    "CompareAnalysis",
    "ProbeResult",
    "RatesResult",
    "RecipeMeasured",
    "Result",
    "RobustnessResult",
    "SeedsResult",
    "Subject",
    "TemporalAnalysis",
    "TemporalResult",
    "accuracy",
    "blocks",
    "blocks_from",
    "check_same_images",
    "compare_checkpoints",
    "describe",
    "fit_linear_probe",
    "iter_results",
    "load_result",
    "pooled_features",
    "probe",
    "probe_layers",
    "rates",
    "resolve_recipe",
    "robustness",
    "seeds",
    "temporal_checkpoint",
]
