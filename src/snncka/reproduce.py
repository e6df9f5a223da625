"""The paper's experiments as declarative configs (``snncka/experiments/*.toml``) and the one runner for them.

An experiment file names the models to train (``[[model]]``: an ANN/SNN pair of one architecture, or one of them),
the settings of each scale (``[scale.paper]``: the paper's data and 300 epochs; ``[scale.smoke]``: ``digits``, a few
epochs, shallower variants), and the analyses to run (``[[analysis]]``). A model's ``smoke = {...}`` table overrides
its fields at smoke scale (``skip = true`` leaves it out). Trained models are cached by their full training config,
so every experiment that needs the same model reuses it, and a rerun resumes what was interrupted.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["SCALES", "Experiment", "ModelSpec", "cache_key", "list_experiments", "load_experiment", "paper_numbers",
           "paper_row"]

SCALES = ("smoke", "paper")
_MODEL_FIELDS = {"id", "arch", "width", "T", "residual", "stage_T", "spiking", "seed", "data", "frames",
                 "paper_key", "neuron", "smoke", "paper"}


@dataclass(frozen=True)
class ModelSpec:
    """One entry of an experiment's ``[[model]]`` list, resolved for a scale."""

    id: str
    arch: str
    width: float = 1
    T: int = 4
    residual: tuple[bool, bool, bool] = (True, True, True)
    stage_T: tuple[int, ...] | None = None
    spiking: str = "pair"  # "pair" (ANN and SNN), "snn" or "ann"
    seed: int = 0
    data: str | None = None  # None: the scale's dataset
    frames: int | None = None
    neuron: dict = field(default_factory=dict)
    paper_key: dict | None = None  # keys of the paper table row this model corresponds to

    @property
    def kinds(self) -> tuple[str, ...]:
        return {"pair": ("ann", "snn"), "snn": ("snn",), "ann": ("ann",)}[self.spiking]


@dataclass
class Experiment:
    id: str
    title: str
    description: str
    paper: str | None
    scales: dict[str, dict[str, Any]]
    models: list[dict[str, Any]]
    analyses: list[dict[str, Any]]
    source: str = ""

    def settings(self, scale: str) -> dict[str, Any]:
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
        return dict(self.scales.get(scale, {}))

    def resolve(self, scale: str) -> list[ModelSpec]:
        """Model specs at ``scale`` (smoke overrides applied, skipped models dropped)."""
        specs = []
        for raw in self.models:
            entry = {k: v for k, v in raw.items() if k not in SCALES}
            entry.update(raw.get(scale, {}))
            if entry.pop("skip", False):
                continue
            specs.append(_spec(entry, self.id))
        return specs

    def paper_spec(self, model_id: str) -> ModelSpec:
        """A model's spec at paper scale, which is what it is compared with in the paper's tables."""
        raw = next(m for m in self.models if m["id"] == model_id)
        return _spec({k: v for k, v in raw.items() if k not in SCALES}, self.id)


def _spec(entry: dict[str, Any], exp_id: str) -> ModelSpec:
    unknown = set(entry) - _MODEL_FIELDS
    if unknown:
        raise ValueError(f"experiment {exp_id}: unknown model field(s) {sorted(unknown)}; allowed: {sorted(_MODEL_FIELDS)}")
    if entry.get("spiking", "pair") not in ("pair", "snn", "ann"):
        raise ValueError(f"experiment {exp_id}: model {entry.get('id')}: spiking must be 'pair', 'snn' or 'ann'")
    for key in ("residual", "stage_T"):
        if entry.get(key) is not None:
            entry[key] = tuple(entry[key])
    return ModelSpec(**entry)


def _experiment_files() -> dict[str, Any]:
    root = resources.files("snncka") / "experiments"
    return {p.name[:-5]: p for p in root.iterdir() if p.name.endswith(".toml")}


def list_experiments() -> list[Experiment]:
    return [load_experiment(i) for i in sorted(_experiment_files(), key=_order)]


def _order(exp_id: str) -> tuple[int, str]:
    return (0 if exp_id.startswith("fig") else 1, exp_id)


def load_experiment(exp_id: str) -> Experiment:
    files = _experiment_files()
    if exp_id not in files:
        raise ValueError(f"unknown experiment {exp_id!r}; valid IDs: {', '.join(sorted(files, key=_order))}")
    raw = tomllib.loads(files[exp_id].read_text())
    exp = Experiment(
        id=raw["id"], title=raw["title"], description=raw.get("description", "").strip(), paper=raw.get("paper"),
        scales=raw.get("scale", {}), models=raw.get("model", []), analyses=raw.get("analysis", []),
        source=str(files[exp_id]),
    )
    for scale in SCALES:
        exp.resolve(scale)  # validate early
    return exp


def paper_numbers() -> dict[str, Any]:
    """The paper's reported numbers (Tables 1, 2, 3, B.1, Fig. 8, Fig. A.9), cited in the file itself."""
    return json.loads((resources.files("snncka") / "paper_numbers.json").read_text())


def paper_row(table: str, key: dict[str, Any]) -> dict[str, Any] | None:
    """The row of a paper table whose fields equal ``key`` (fields absent from the row are ignored)."""
    for row in paper_numbers()[table]["rows"]:
        if all(row[k] == v for k, v in key.items() if k in row):
            return row
    return None


def cache_key(cfg: Any) -> str:
    """A short hash of a training config; identical configs share one trained model."""
    d = asdict(cfg)
    for k in ("progress", "device", "eval_batch_size"):
        d.pop(k, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]

