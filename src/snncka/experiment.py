"""Experiment files: what to train and what to analyse, declared in TOML (the schema: docs/EXPERIMENTS.md).

A file names the models to train (``[[model]]``: an ANN/SNN pair of one architecture, or one of them) and the
analyses to run on them (``[[analysis]]``, each a registered analysis: ``snncka.registry``). ``plugins`` lists
modules imported first (a user's models and analyses register themselves there; a module beside the file is
found). The settings of each scale (``paper``: the paper's data and 300 epochs; ``smoke``: ``digits``, a few
epochs) default to ``experiments/_scales.toml``; the file's own ``[scale.<name>]`` table overrides single keys.
A model's ``smoke = {...}`` table overrides its fields at smoke scale (``skip = true`` leaves it out); such a
model's files are named ``<what was trained>-for-<model id>``.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from . import analyses as _builtin  # noqa: F401  (registers the built-in analyses)
from . import data, recipes, registry
from .launch import ModelJob
from .models import check_name
from .options import SCALES, RunOptions, default_scales, seed_suffix
from .training import TrainConfig

__all__ = ["KEYS", "MODEL_KEYS", "SCALES", "Experiment", "ModelSpec", "default_cache", "default_scales",
           "experiment_files", "load_experiment", "model_jobs", "scale_settings", "train_config"]

KEYS = ("id", "title", "description", "plugins", "recipes", "judges", "scale", "model", "analysis")
MODEL_KEYS = ("id", "arch", "width", "T", "residual", "stage_T", "train", "seed", "data", "frames", "neuron",
              "table_key", *SCALES)
TRAIN = {"pair": ("ann", "snn"), "snn": ("snn",), "ann": ("ann",)}


@dataclass(frozen=True)
class ModelSpec:
    """One entry of an experiment's ``[[model]]`` list, resolved for a scale."""

    id: str
    arch: str
    width: float = 1
    T: int = 4
    residual: tuple[bool, bool, bool] = (True, True, True)
    stage_T: tuple[int, ...] | None = None
    train: str = "pair"  # "pair" (ANN and SNN), "snn" or "ann"
    seed: int = 0
    data: str | None = None  # None: the scale's dataset
    frames: int | None = None
    neuron: dict = field(default_factory=dict)
    table_key: dict | None = None  # fields of the row of a published table this model corresponds to
    name: str = ""  # file name: the id, or "<trained>-for-<id>" where the scale changed what is trained

    @property
    def types(self) -> tuple[str, ...]:
        """The network types trained for this entry: ``("ann", "snn")``, ``("snn",)`` or ``("ann",)``."""
        return TRAIN[self.train]


@dataclass
class Experiment:
    id: str
    title: str
    description: str
    scales: dict[str, dict[str, Any]]
    models: list[dict[str, Any]]
    analyses: list[dict[str, Any]]
    source: str = ""
    recipes: list[str] = field(default_factory=list)  # several: the experiment compares recipes
    plugins: list[str] = field(default_factory=list)
    judges: list[str] = field(default_factory=list)

    def settings(self, scale: str) -> dict[str, Any]:
        """The scale's settings: the shared defaults (``_scales.toml``) updated by the experiment's own."""
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
        return {**default_scales().get(scale, {}), **self.scales.get(scale, {})}

    def resolve(self, scale: str, seed: int = 0) -> list[ModelSpec]:
        """Model specs at ``scale`` (smoke overrides applied, skipped models dropped), each with its seed raised by
        ``seed`` (the ``seed``-th of the seeds a run trains; the names stay those of the first)."""
        specs = []
        for raw in self.models:
            entry = {k: v for k, v in raw.items() if k not in SCALES}
            entry.update(raw.get(scale, {}))
            if entry.pop("skip", False):
                continue
            spec = _spec(entry, self.id)
            specs.append(replace(spec, seed=spec.seed + seed, name=_trained_name(spec, self.paper_spec(spec.id))))
        return specs

    def analyses_at(self, scale: str) -> list[dict[str, Any]]:
        """The ``[[analysis]]`` entries at ``scale``: an entry's ``smoke = {...}`` / ``paper = {...}`` table
        overrides its keys there (e.g. which residual blocks exist in the smaller smoke model)."""
        out = []
        for raw in self.analyses:
            over = raw.get(scale, {})
            out.append({**{k: v for k, v in raw.items() if k not in SCALES or not isinstance(v, dict)},
                        **(over if isinstance(over, dict) else {})})
        return out

    def paper_spec(self, model_id: str) -> ModelSpec:
        """A model's spec at paper scale (the size the experiment is written for)."""
        raw = next(m for m in self.models if m["id"] == model_id)
        return _spec({k: v for k, v in raw.items() if k not in SCALES}, self.id)


def _spec(entry: dict[str, Any], exp_id: str) -> ModelSpec:
    unknown = set(entry) - set(MODEL_KEYS)
    if unknown:
        raise ValueError(f"experiment {exp_id}: unknown model key(s) {', '.join(sorted(unknown))}; valid: "
                         f"{', '.join(MODEL_KEYS)}")
    if "id" not in entry or "arch" not in entry:
        raise ValueError(f"experiment {exp_id}: every [[model]] needs an id and an arch, got {entry}")
    if entry.get("train", "pair") not in TRAIN:
        raise ValueError(f"experiment {exp_id}: model {entry.get('id')}: train must be one of "
                         f"{', '.join(TRAIN)}, got {entry.get('train')!r}")
    check_name(entry["arch"])
    for key in ("residual", "stage_T"):
        if entry.get(key) is not None:
            entry[key] = tuple(entry[key])
    return ModelSpec(**entry)


def _arch_name(s: ModelSpec) -> str:
    return s.arch + (f"x{s.width:g}" if s.width != 1 else "")


def _trained_name(spec: ModelSpec, paper: ModelSpec) -> str:
    """``spec.id`` when ``spec`` trains what the paper-scale entry trains, else ``<what is trained>-for-<id>``
    (e.g. ``resnet20-for-resnet110``, ``resnet20-T4-for-resnet20-T8``), so no file claims a model it isn't."""
    what = ("arch", "width", "T", "stage_T", "residual", "data", "frames", "neuron", "train")
    if all(getattr(spec, k) == getattr(paper, k) for k in what):
        return spec.id
    parts = [_arch_name(spec)]
    if spec.T != paper.T or spec.stage_T != paper.stage_T:
        parts.append(f"T{'-'.join(map(str, spec.stage_T)) if spec.stage_T else spec.T}")
    if spec.residual != paper.residual:
        parts.append("res" + "".join("1" if r else "0" for r in spec.residual))
    if spec.data != paper.data and spec.data:
        parts.append(spec.data)
    return "-".join(parts) + f"-for-{spec.id}"


def experiment_files() -> dict[str, Any]:
    """The experiment files by ID of the library's folder (the demo) and of every folder registered with
    ``snncka.registry.register_experiments`` (files starting with ``_`` hold shared settings)."""
    folders = [resources.files("snncka") / "experiments", *registry.experiment_folders()]
    return {p.name[:-5]: p for root in folders for p in root.iterdir()
            if p.name.endswith(".toml") and not p.name.startswith("_")}


def import_plugins(plugins: list[str], folder: Path | None) -> None:
    """Import each module of ``plugins`` (a user's models and analyses register themselves there); modules
    in ``folder`` (the experiment file's) are found too."""
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise ValueError(f"plugins must be a list of module names, got {plugins!r}")
    added = folder is not None and str(folder) not in sys.path
    if added:
        sys.path.insert(0, str(folder))
    try:
        for name in plugins:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as e:
                if e.name != name and not name.startswith(f"{e.name}."):
                    raise
                where = f" or in {folder}" if folder is not None else ""
                raise ValueError(f"plugin {name!r} not found: no module of that name is installed{where}") from e
    finally:
        if added:
            sys.path.remove(str(folder))


def load_experiment(ref: str | Path) -> Experiment:
    """The experiment of a TOML file (a path) or of a registered ID (``experiment_files``): plugins imported,
    every key, model and analysis name checked (an unknown one is a one-line error listing the valid ones)."""
    path = Path(ref)
    if path.suffix == ".toml" or path.is_file():
        if not path.is_file():
            raise ValueError(f"experiment file {str(path)!r} does not exist")
        text, source, folder = path.read_text(), str(path), path.resolve().parent
    else:
        files = experiment_files()
        if str(ref) not in files:
            raise ValueError(f"unknown experiment {str(ref)!r}; valid IDs: {', '.join(sorted(files, key=order))} "
                             "(or an experiment file, FILE.toml)")
        text, source, folder = files[str(ref)].read_text(), str(files[str(ref)]), None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{source}: not valid TOML ({e})") from None
    unknown = set(raw) - set(KEYS)
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}; valid: {', '.join(KEYS)}")
    import_plugins(list(raw.get("plugins", [])), folder)
    exp_id = str(raw.get("id", Path(source).stem))
    exp = Experiment(
        id=exp_id, title=str(raw.get("title", exp_id)), description=raw.get("description", "").strip(),
        scales=raw.get("scale", {}), models=raw.get("model", []), analyses=raw.get("analysis", []),
        source=source, recipes=list(raw.get("recipes", [])), plugins=list(raw.get("plugins", [])),
        judges=list(raw.get("judges", [])),
    )
    bad_scales = set(exp.scales) - set(SCALES)
    if bad_scales:
        raise ValueError(f"{source}: unknown scale(s) {', '.join(sorted(bad_scales))}; valid: {', '.join(SCALES)}")
    for name in exp.recipes:
        recipes.get(name)  # an unknown recipe is a one-line error listing the recipes
    for a in exp.analyses:
        if "analysis" not in a:
            raise ValueError(f"{source}: every [[analysis]] needs analysis = \"<registered name>\", got {a}")
        check_settings(registry.get_analysis(a["analysis"]), a, source)
    for j in exp.judges:
        registry.get_judge(j)
    for scale in SCALES:
        exp.resolve(scale)  # validate early
    return exp


#: the keys of an ``[[analysis]]`` entry the runner reads itself; a per-model analysis is not given them
RUNNER_KEYS = ("analysis", "name", "models", *SCALES)
_POSITIONAL = {"all": 1, "pair": 3, "snn": 2, "ann": 2}  # (run) / (snn, ann, images) / (model, images)


def check_settings(entry: registry.AnalysisEntry, a: dict[str, Any], where: str) -> None:
    """A one-line error for a key of an ``[[analysis]]`` entry its function does not take."""
    params = list(inspect.signature(entry.fn).parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    takes = [p.name for p in params[_POSITIONAL[entry.needs]:]]
    given = {k for k, v in a.items() if k not in SCALES or not isinstance(v, dict)}
    for scale in SCALES:
        given |= set(a.get(scale, {}) if isinstance(a.get(scale), dict) else {})
    ignored = {"analysis"} if entry.needs == "all" else set(RUNNER_KEYS)
    unknown = sorted(given - ignored - set(takes))
    if unknown:
        raise ValueError(f"{where}: analysis {entry.name}: unknown setting(s) {', '.join(unknown)}; valid: "
                         f"{', '.join([*takes, *([] if entry.needs == 'all' else ['name', 'models'])]) or 'none'}")


def order(exp_id: str) -> tuple[int, str]:
    """The paper's order of experiment IDs: the figures, then the appendices."""
    return (0 if exp_id.startswith("fig") else 1, exp_id)


def default_cache() -> Path:
    """Where trained models are cached: ``$SNNCKA_CACHE/models`` or ``~/.cache/snncka/models``."""
    return data.cache_dir() / "models"


def train_config(spec: ModelSpec, network: str, settings: dict[str, Any], **run_opts: Any) -> TrainConfig:
    """The training config of one model of a spec (``network``: "ann" or "snn") at the scale's settings.

    An ANN ignores the SNN-only fields, so every spec that differs only in them shares one trained ANN.
    """
    snn = network == "snn"
    return TrainConfig(
        model=spec.arch, spiking=snn, T=spec.T if snn else 1, width=float(spec.width),
        residual=list(spec.residual), stage_T=list(spec.stage_T) if snn and spec.stage_T else None,
        neuron=dict(spec.neuron) if snn else {}, data=spec.data or settings["data"], frames=spec.frames,
        epochs=int(settings["epochs"]), batch_size=int(settings["batch_size"]), seed=spec.seed,
        **{k: v for k, v in run_opts.items() if v is not None},
    )


def scale_settings(exp: Experiment, scale: str, epochs: int | None = None, cka_images: int | None = None,
                   seeds: int | None = None) -> dict[str, Any]:
    """The scale's settings with the command line's overrides (``RunOptions.settings``)."""
    return RunOptions(scale=scale, epochs=epochs, cka_images=cka_images, seeds=seeds).settings(exp)


def model_jobs(exp: Experiment, scale: str, settings: dict[str, Any], cache: str | Path, *, seed: int = 0,
               **run_opts: Any) -> tuple[list[ModelJob], dict[str, dict[str, Path]]]:
    """Every model the experiment trains at ``scale`` with seed ``ModelSpec.seed + seed`` as a job (each cache entry
    once), and the run folder of each spec's ANN/SNN by spec name. Every training config is validated here,
    before any training."""
    jobs: dict[Path, ModelJob] = {}
    runs: dict[str, dict[str, Path]] = {}
    for spec in exp.resolve(scale, seed):
        runs[spec.name] = {}
        for net in spec.types:
            cfg = train_config(spec, net, settings, **run_opts)
            cfg.validate()
            job = ModelJob(f"{spec.name}{seed_suffix(seed)}-{net}", cfg, Path(cache))
            jobs.setdefault(job.run_dir, job)
            runs[spec.name][net] = job.run_dir
    return list(jobs.values()), runs
