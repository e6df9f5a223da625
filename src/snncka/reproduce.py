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
import shutil
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from tqdm.auto import tqdm

from . import analyses, data
from .analyses import Result, load_result
from .checkpoint import load_checkpoint
from .files import atomic_write, atomic_write_text
from .report import build_report
from .runtime import environment
from .training import RESUMABLE_CHANGES, TrainConfig, train

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
        raise ValueError(
            f"experiment {exp_id}: unknown model field(s) {sorted(unknown)}; allowed: {sorted(_MODEL_FIELDS)}"
        )
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
    """The paper's experiments in the paper's order (the demo is not one of them)."""
    return [load_experiment(i) for i in sorted(_experiment_files(), key=_order) if i != "demo"]


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
    for k in RESUMABLE_CHANGES:  # where and how a run goes, not what it trains
        d.pop(k, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]



# --------------------------------------------------------------------------------------------------------
# Results that only an experiment has: the paper's numbers beside ours, and an overview across its models.
# --------------------------------------------------------------------------------------------------------


@dataclass
class PaperComparison(Result):
    """Our accuracies next to the paper's (one row per model and type), with the difference."""

    analysis: ClassVar[str] = "paper"

    table: str
    caption: str
    rows: list[dict]
    scale: str
    seconds: float = 0.0

    def summary(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.rows]

    def plot(self, out: str | Path, name: str | None = None) -> list[Path]:
        from . import plots

        rows = [r for r in self.rows if r.get("ours (%)") is not None]
        if not rows:
            return []
        return plots.paper_bars(
            [f"{r['model']} {r['type']}" for r in rows],
            [r["ours (%)"] for r in rows],
            [r.get("paper (%)") for r in rows],
            Path(out) / f"{name or self.analysis}_accuracy",
            title=f"Accuracy: ours ({self.scale} scale) vs paper ({self.table})",
        )


@dataclass
class Overview(Result):
    """The CKA curves (heatmap diagonals) of every ANN/SNN pair of an experiment, on one figure."""

    analysis: ClassVar[str] = "overview"
    arrays: ClassVar[tuple[str, ...]] = ("curves",)

    curves: np.ndarray  # [models, max layers], NaN-padded
    labels: list[str]
    layers: list[list[str]]
    title: str = ""
    seconds: float = 0.0

    def plot(self, out: str | Path, name: str | None = None) -> list[Path]:
        from . import plots

        longest = max(range(len(self.labels)), key=lambda i: len(self.layers[i]))
        n = len(self.layers[longest])
        series = {lab: np.asarray(self.curves[i][:n], dtype=float) for i, lab in enumerate(self.labels)}
        return plots.curves(series, self.layers[longest], Path(out) / f"{name or self.analysis}_curves",
                            title=self.title, ylim=(min(0.0, float(np.nanmin(self.curves)) - 0.05), 1.05))

    def summary(self) -> list[dict[str, Any]]:
        return [{"model": lab, "layers": len(ls), "mean diagonal CKA": float(np.nanmean(self.curves[i]))}
                for i, (lab, ls) in enumerate(zip(self.labels, self.layers, strict=True))]


# --------------------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------------------


def default_cache() -> Path:
    """Where trained models are cached: ``$SNNCKA_CACHE/models`` or ``~/.cache/snncka/models``."""
    return data.cache_dir() / "models"


def train_config(spec: ModelSpec, kind: str, settings: dict[str, Any], **run_opts: Any) -> TrainConfig:
    """The training config of one model of a spec (``kind``: "ann" or "snn") at the scale's settings.

    An ANN ignores the SNN-only fields, so every spec that differs only in them shares one trained ANN.
    """
    snn = kind == "snn"
    return TrainConfig(
        model=spec.arch, spiking=snn, T=spec.T if snn else 1, width=float(spec.width),
        residual=list(spec.residual), stage_T=list(spec.stage_T) if snn and spec.stage_T else None,
        neuron=dict(spec.neuron) if snn else {}, data=spec.data or settings["data"], frames=spec.frames,
        epochs=int(settings["epochs"]), batch_size=int(settings["batch_size"]), seed=spec.seed,
        **{k: v for k, v in run_opts.items() if v is not None},
    )


def ensure_trained(cfg: TrainConfig, cache: Path) -> Path:
    """Train ``cfg`` into the cache unless it is there; resume it if a previous run was interrupted.

    Returns the run folder (``last.pt`` holds the final weights)."""
    run = cache / f"{cfg.model}-{'snn' if cfg.spiking else 'ann'}-{cache_key(cfg)}"
    last = run / "last.pt"
    if last.is_file():
        if int(load_checkpoint(last, mmap=True)["epoch"]) >= cfg.epochs:  # metadata only: tensors stay on disk
            return run
        train(cfg, run, resume=True)
    else:
        train(cfg, run, force=run.exists())
    return run


def _paper_key(spec: ModelSpec) -> dict[str, Any]:
    res = all(spec.residual) if len(set(spec.residual)) == 1 else "partial"
    key: dict[str, Any] = {"model": spec.arch, "width": spec.width, "T": spec.T, "residual": res}
    key.update(spec.paper_key or {})
    return key


def _final_accuracy(run: Path) -> float:
    lines = [ln for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    return 100.0 * float(json.loads(lines[-1])["test_acc"])


def _paper_comparison(exp: Experiment, table: str, scale: str, runs: dict[str, dict[str, Path]]) -> PaperComparison:
    """Final test accuracy of every trained model beside the paper's row for the model's paper-scale setting."""
    c100 = exp.settings("paper").get("data") == "cifar100"
    rows = []
    for model_id, kinds in runs.items():
        key = _paper_key(exp.paper_spec(model_id))
        row = paper_row(table, key)
        for kind, run in kinds.items():
            theirs = None if row is None else row.get(kind, row.get(f"{kind}_{'c100' if c100 else 'c10'}"))
            rows.append(_row(model_id, kind, _describe_key(key), _final_accuracy(run), theirs))
    return PaperComparison(table=table, caption=paper_numbers()[table]["caption"], rows=rows, scale=scale)


def _robustness_comparison(table: str, scale: str, model_id: str, res: Any) -> PaperComparison:
    """PGD robust accuracy per eps beside the paper's (Fig. 8 / Fig. A.9)."""
    rows = []
    for label, clean, accs in zip(res.labels, res.clean_accuracy, res.accuracy, strict=True):
        kind = "snn" if label.startswith("SNN") else "ann"
        for eps, ours in zip([0.0, *res.eps], [clean, *accs], strict=True):
            row = paper_row(table, {"eps": eps})
            rows.append(_row(model_id, kind, f"eps={eps:g}", ours, None if row is None else row.get(kind)))
    return PaperComparison(table=table, caption=paper_numbers()[table]["caption"], rows=rows, scale=scale)


def _row(model: str, kind: str, setting: str, ours: float, theirs: float | None) -> dict[str, Any]:
    return {"model": model, "type": kind.upper(), "paper setting": setting, "ours (%)": ours,
            "paper (%)": theirs, "difference": None if theirs is None else ours - theirs}


def _describe_key(key: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in key.items())


def _models_of(analysis: dict[str, Any], specs: list[ModelSpec], need: tuple[str, ...]) -> list[ModelSpec]:
    """The specs an analysis applies to (its ``models`` list, or all) that have the kinds it needs."""
    wanted = analysis.get("models")
    chosen = [s for s in specs if wanted is None or s.id in wanted]
    return [s for s in chosen if all(k in s.kinds for k in need)]


def _layers(analysis: dict[str, Any]) -> Any:
    layers = analysis.get("layers", "paper")
    return layers if isinstance(layers, str) else list(layers)


def run(
    exp_id: str,
    scale: str = "smoke",
    out: str | Path | None = None,
    *,
    cache: str | Path | None = None,
    data_root: str | None = None,
    download: bool = False,
    device: str = "auto",
    epochs: int | None = None,
    cka_images: int | None = None,
    progress: bool = True,
) -> Path:
    """Run experiment ``exp_id`` at ``scale``: train (or reuse) its models, run its analyses, write figures and
    the HTML report into ``out``; returns the report's path. Finished analyses are not recomputed."""
    exp = load_experiment(exp_id)
    settings = exp.settings(scale)
    if epochs is not None:
        settings["epochs"] = epochs
    if cka_images is not None:
        settings["cka_images"] = cka_images
    out = Path(out) if out is not None else Path("runs") / f"{exp.id}-{scale}"
    cache = Path(cache) if cache is not None else default_cache()
    specs = exp.resolve(scale)
    dev = None if device == "auto" else device
    opts = dict(data_root=data_root, download=download, device=device, progress=progress)

    for name in sorted({s.data or settings["data"] for s in specs}):
        check_available(name, data_root, download)

    runs: dict[str, dict[str, Path]] = {}
    for spec in tqdm(specs, desc=f"{exp.id}: models", unit="model", disable=not progress or len(specs) < 2):
        runs[spec.id] = {k: ensure_trained(train_config(spec, k, settings, **opts), cache) for k in spec.kinds}
        for k, run_dir in runs[spec.id].items():  # training logs beside the results, for the report
            for f in ("config.json", "metrics.jsonl"):
                _copy(run_dir / f, out / "models" / f"{spec.id}-{k}" / f)

    res_dir = out / "results"
    ckpt = lambda sid, k: runs[sid][k] / "last.pt"  # noqa: E731
    common = dict(n_images=settings.get("cka_images", 4096), data_root=data_root, device=dev, progress=progress)

    def cached(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Result:
        """``fn(*args, **kwargs)`` saved as ``results/<name>``, or loaded from there if a run already did it."""
        path = res_dir / f"{name}.json"
        if path.is_file():
            return load_result(path)
        res = fn(*args, **kwargs)
        res = res[0] if isinstance(res, tuple) else res
        _save(res, out, name)
        return res

    for a in exp.analyses:
        kind, layers = a["kind"], _layers(a)
        suffix = f"-{a['name']}" if "name" in a else ""
        if kind in ("compare", "blocks"):
            pairs = _models_of(a, specs, ("ann", "snn"))
            results = [cached(f"compare-{s.id}", analyses.compare, ckpt(s.id, "snn"), ckpt(s.id, "ann"),
                              layers=layers, **common) for s in pairs]
            if kind == "blocks":
                for s, cmp in zip(pairs, results, strict=True):
                    cached(f"blocks-{s.id}", analyses.blocks, cmp)
            elif len(results) > 1:
                cached(f"overview{suffix}", _overview, exp, results, [s.id for s in pairs])
        elif kind == "self":
            for s in _models_of(a, specs, ("snn",)):
                cached(f"self-{s.id}", analyses.compare, ckpt(s.id, "snn"), None, layers=layers, **common)
        elif kind == "temporal":
            for s in _models_of(a, specs, ("snn",)):
                cached(f"temporal{suffix}-{s.id}", analyses.temporal, ckpt(s.id, "snn"), layers=layers, **common)
        elif kind == "robustness":
            table = a.get("paper", exp.paper if exp.paper in ("fig8", "figA9") else None)
            for s in _models_of(a, specs, ("ann", "snn")):
                res = cached(f"robustness-{s.id}", analyses.robustness, [ckpt(s.id, "ann"), ckpt(s.id, "snn")],
                             eps=a.get("eps", analyses.DEFAULT_EPS), steps=a.get("steps", 10), layers=layers,
                             **common)
                if table:
                    _save(_robustness_comparison(table, scale, s.id, res), out, f"paper-robustness-{s.id}")
        elif kind == "probe":
            chosen = [ckpt(s.id, k) for s in _models_of(a, specs, ()) for k in s.kinds]
            cached(f"probe{suffix}", analyses.probe, chosen, data_root=data_root, device=dev, progress=progress)
        elif kind == "seeds":
            chosen = [ckpt(s.id, k) for k in ("ann", "snn") for s in _models_of(a, specs, ("ann", "snn"))]
            cached(f"seeds{suffix}", analyses.seeds, chosen, **common)
        elif kind == "accuracy":
            table = a.get("paper", exp.paper)
            _save(_paper_comparison(exp, table, scale, runs), out, f"paper-{table}")
        else:
            raise ValueError(f"experiment {exp.id}: unknown analysis kind {kind!r}")

    _write_json(out / "experiment.json", {
        "id": exp.id, "title": exp.title, "description": exp.description, "scale": scale,
        "settings": settings, "source": exp.source, "cache": str(cache),
        "models": {sid: {k: str(p) for k, p in kinds.items()} for sid, kinds in runs.items()},
        "environment": environment(),
    })
    return build_report(out, title=f"snncka {exp.id} ({scale} scale): {exp.title}")


def _save(res: Result, out: Path, name: str) -> None:
    res.save(out / "results", name)
    res.plot(out / "figures", name)


def _overview(exp: Experiment, results: list[Any], ids: list[str]) -> Overview:
    diags = [r.corresponding() for r in results]
    width = max(len(names) for names, _ in diags)
    curves = np.full((len(diags), width), np.nan)
    for i, (_, d) in enumerate(diags):
        curves[i, : len(d)] = d
    return Overview(curves=curves, labels=ids, layers=[list(n) for n, _ in diags],
                    title=f"{exp.id}: CKA of corresponding layers, SNN vs ANN")


def check_available(name: str, data_root: str | None, download: bool) -> None:
    """Fail before any training when a dataset can't be loaded, with the loader's message on what to do."""
    data.get(name, root=data_root, download=download)  # raises for an unknown name, listing the known ones


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=1, default=str))
