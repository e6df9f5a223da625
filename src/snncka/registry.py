"""The registries through which models, analyses and judges reach the experiment runner (timm style).

* ``@register_model(name)``: ``f(**kwargs) -> nn.Module`` taking ``snncka.create``'s keyword arguments
  (``spiking``, ``num_classes``, ``in_channels``, ``width``, ``T``, ``residual``, ``stage_T``, ``recipe`` and the
  neuron's). The model is then built by ``snncka.create(name, ...)``, listed by ``snncka models``, trained by
  ``snncka train --model name`` and usable as ``arch`` in an experiment file.
* ``@register_analysis(name, needs=...)``: an analysis an experiment file runs with ``[[analysis]] analysis = name``.
  ``needs="pair"``: ``f(snn, ann, images, **settings)`` for every ANN/SNN pair; ``"snn"`` / ``"ann"``:
  ``f(model, images, **settings)`` for every model of that type; ``"all"``: ``f(run, **settings)`` once, with
  the run (``snncka.runner.Run``: the experiment, its models' checkpoints, the output folder). ``settings`` are
  the entry's other keys. It returns a result (``snncka.results.Result``: saved and plotted) or a dict of JSON
  numbers and lists (saved as ``results/<name>-<model>.json``, shown as a table in the report), or None when
  it saved its own results (``run.cached``).
* ``@register_judge(name)``: ``f(folders, scale, experiment) -> Result`` run after every analysis of an
  experiment whose file lists it in ``judges = [...]``; ``folders`` maps each recipe to its output folder.
  Its result is saved as ``results/<name>.json`` (e.g. the paper's findings, judged on the results).

Every lookup of an unknown name is a one-line error listing the registered names. This module imports nothing
of snncka: the zoo (``snncka.models``) and the built-in analyses (``snncka.analyses``) register themselves when
imported, as a user's modules do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["NEEDS", "AnalysisEntry", "analyses", "get_analysis", "get_judge", "get_model", "judges", "models",
           "experiment_folders", "register_analysis", "register_experiments", "register_judge", "register_model"]

F = TypeVar("F", bound=Callable[..., Any])
NEEDS = ("pair", "snn", "ann", "all")


@dataclass(frozen=True)
class AnalysisEntry:
    """A registered analysis: its function and what it is called with (``needs``)."""

    name: str
    fn: Callable[..., Any]
    needs: str
    check: Callable[..., None] | None = None
    on_checkpoints: bool = True  # the command line runs it on checkpoints (``snncka <name> CHECKPOINT...``)


_MODELS: dict[str, Callable[..., Any]] = {}
_ANALYSES: dict[str, AnalysisEntry] = {}
_JUDGES: dict[str, Callable[..., Any]] = {}


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"a {what} name must be a non-empty string without '/', got {name!r}")
    return name


def register_model(name: str) -> Callable[[F], F]:
    """Register ``f(**kwargs) -> nn.Module`` as model ``name`` (``snncka.create``'s keyword arguments)."""
    _check_name(name, "model")

    def deco(fn: F) -> F:
        _MODELS[name] = fn
        return fn

    return deco


def register_analysis(name: str, needs: str = "pair", check: Callable[..., None] | None = None,
                      on_checkpoints: bool | None = None) -> Callable[[F], F]:
    """Register an analysis for experiment files' ``[[analysis]] analysis = name`` (see the module doc).
    ``check(specs, **settings)``, if given, runs before any training and raises on settings that cannot work
    for the experiment's models (``specs``: its ``ModelSpec``s at the scale run). ``on_checkpoints``: whether
    ``snncka <name> CHECKPOINT...`` runs it on checkpoints (default: yes for ``needs="pair"|"snn"|"ann"``,
    whose command is made from the function; a ``needs="all"`` step with a command of its own says True)."""
    _check_name(name, "analysis")
    if needs not in NEEDS:
        raise ValueError(f"needs must be one of {', '.join(NEEDS)}, got {needs!r}")

    def deco(fn: F) -> F:
        _ANALYSES[name] = AnalysisEntry(name, fn, needs, check,
                                        needs != "all" if on_checkpoints is None else on_checkpoints)
        return fn

    return deco


def register_judge(name: str) -> Callable[[F], F]:
    """Register ``f(folders, scale, experiment) -> Result`` for experiment files' ``judges = [name]``."""
    _check_name(name, "judge")

    def deco(fn: F) -> F:
        _JUDGES[name] = fn
        return fn

    return deco


def models() -> list[str]:
    """The registered model names (the zoo's fixed names and every ``register_model``)."""
    return list(_MODELS)


def get_model(name: str) -> Callable[..., Any] | None:
    """The factory registered as ``name``, or None (the zoo also builds any ``resnet<6n+2>``)."""
    return _MODELS.get(name)


def analyses() -> dict[str, AnalysisEntry]:
    """Every registered analysis by name (the built-in ones included)."""
    return dict(_ANALYSES)


def get_analysis(name: str) -> AnalysisEntry:
    known = analyses()
    if name not in known:
        raise ValueError(f"unknown analysis {name!r}; registered: {', '.join(sorted(known))} (register your "
                         "own with @snncka.register_analysis and list its module in the file's plugins)")
    return known[name]


def judges() -> list[str]:
    return list(_JUDGES)


def get_judge(name: str) -> Callable[..., Any]:
    if name not in _JUDGES:
        raise ValueError(f"unknown judge {name!r}; registered: {', '.join(sorted(_JUDGES)) or 'none'} (register "
                         "one with @snncka.register_judge and list its module in the file's plugins)")
    return _JUDGES[name]


_EXPERIMENT_FOLDERS: list[Any] = []


def register_experiments(folder: Any) -> None:
    """Make the experiment files (``*.toml``) in ``folder`` loadable by ID (``snncka reproduce ID``)."""
    if folder not in _EXPERIMENT_FOLDERS:
        _EXPERIMENT_FOLDERS.append(folder)


def experiment_folders() -> list[Any]:
    """The folders registered with ``register_experiments``, in registration order."""
    return list(_EXPERIMENT_FOLDERS)
