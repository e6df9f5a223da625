"""The paper's experiments as declarative configs (``snncka/experiments/*.toml``) and the one runner for them.

An experiment file names the models to train (``[[model]]``: an ANN/SNN pair of one architecture, or one of them)
and the analyses to run (``[[analysis]]``). The settings of each scale (paper: the paper's data and 300 epochs;
smoke: ``digits``, a few epochs) are shared by all experiments (``experiments/_scales.toml``); an experiment's own
``[scale.<name>]`` table overrides single keys. A model's ``smoke = {...}`` table overrides its fields at smoke
scale (``skip = true`` leaves it out); such a model's files are named ``<what was trained>-for-<paper model>``.
Trained models are cached by their full training config (``snncka.launch``), so every experiment that needs the
same model reuses it, a rerun resumes what was interrupted, and the models can train as parallel or Slurm jobs.
"""

from __future__ import annotations

import json
import shutil
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from . import analyses, data, recipe_compare, recipes, stagesteps, verdicts
from .analyses import Result, load_result
from .checkpoint import resolve_checkpoint
from .files import atomic_link_or_copy, atomic_write, atomic_write_text, check_writable
from .launch import InlineLauncher, ModelJob, cache_key, ensure_trained, run_folder
from .report import build_report
from .runtime import environment
from .training import TrainConfig, read_metrics

__all__ = ["ANALYSES", "SCALES", "Experiment", "ModelSpec", "cache_key", "ensure_trained", "list_experiments",
           "load_experiment", "model_jobs", "paper_numbers", "paper_row", "run", "run_folder", "train_config"]

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
    name: str = ""  # file name: the id, or "<trained>-for-<id>" where the scale changed what is trained

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
    recipes: list[str] = field(default_factory=list)  # several: the experiment compares recipes (paper-vs-code)

    def settings(self, scale: str) -> dict[str, Any]:
        """The scale's settings: the shared defaults (``_scales.toml``) updated by the experiment's own."""
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
        return {**_default_scales().get(scale, {}), **self.scales.get(scale, {})}

    def resolve(self, scale: str) -> list[ModelSpec]:
        """Model specs at ``scale`` (smoke overrides applied, skipped models dropped)."""
        specs = []
        for raw in self.models:
            entry = {k: v for k, v in raw.items() if k not in SCALES}
            entry.update(raw.get(scale, {}))
            if entry.pop("skip", False):
                continue
            spec = _spec(entry, self.id)
            specs.append(replace(spec, name=_trained_name(spec, self.paper_spec(spec.id))))
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


def _arch_name(s: ModelSpec) -> str:
    return s.arch + (f"x{s.width:g}" if s.width != 1 else "")


def _trained_name(spec: ModelSpec, paper: ModelSpec) -> str:
    """``spec.id`` when ``spec`` trains what the paper trained, else ``<what is trained>-for-<id>`` (e.g.
    ``resnet20-for-resnet110``, ``resnet20-T4-for-resnet20-T8``), so no file claims a model it isn't."""
    what = ("arch", "width", "T", "stage_T", "residual", "data", "frames", "neuron", "spiking")
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


def _experiment_files() -> dict[str, Any]:
    """The experiment files by ID (files starting with ``_`` hold shared settings, not experiments)."""
    root = resources.files("snncka") / "experiments"
    return {p.name[:-5]: p for p in root.iterdir() if p.name.endswith(".toml") and not p.name.startswith("_")}


def _default_scales() -> dict[str, dict[str, Any]]:
    """The settings every experiment shares per scale (``experiments/_scales.toml``)."""
    text = (resources.files("snncka") / "experiments" / "_scales.toml").read_text()
    return tomllib.loads(text)["scale"]


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
        source=str(files[exp_id]), recipes=list(raw.get("recipes", [])),
    )
    for name in exp.recipes:
        recipes.get(name)  # an unknown recipe is a one-line error listing the recipes
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



# --------------------------------------------------------------------------------------------------------
# Results that only an experiment has: the paper's numbers beside ours, and an overview across its models.
# --------------------------------------------------------------------------------------------------------


@dataclass
class PaperComparison(Result):
    """Our accuracies next to the paper's (one row per model and type). At paper scale with the difference;
    at other scales (other data, fewer epochs) the paper's numbers are shown as a reference only."""

    analysis: ClassVar[str] = "paper"

    table: str
    caption: str
    rows: list[dict]  # model, type, paper setting, "ours (%)", "paper (%)"
    scale: str
    seconds: float = 0.0

    def summary(self) -> list[dict[str, Any]]:
        if self.scale == "paper":  # an ambiguous paper value is a text naming its readings: no difference
            return [{**r, "difference": r["ours (%)"] - r["paper (%)"] if _number(r["paper (%)"]) else None}
                    for r in self.rows]
        ours = f"ours, {self.scale} scale (%)"
        return [{"model": r["model"], "type": r["type"], **({"protocol": r["protocol"]} if "protocol" in r else {}),
                 ours: r["ours (%)"], "paper's setting (reference only)": r["paper setting"],
                 "paper (%) (other data and epochs: not comparable)": r["paper (%)"]} for r in self.rows]

    def plot(self, out: str | Path, name: str | None = None) -> list[Path]:
        from . import plots

        rows = [r for r in self.rows if r.get("ours (%)") is not None]
        if not rows:
            return []
        paper_scale = self.scale == "paper"
        unsure = [f"{r['model']} {r['type']} {r['paper setting']}" for r in rows
                  if isinstance(r.get("paper (%)"), str)]
        note = f"; no paper bar where its printed value is ambiguous ({', '.join(unsure)}): see the table" if (
            paper_scale and unsure) else ""
        return plots.paper_bars(
            [f"{r['model']} {r['type']}" for r in rows],
            [r["ours (%)"] for r in rows],
            [r.get("paper (%)") if paper_scale and _number(r.get("paper (%)")) else None for r in rows],
            Path(out) / f"{name or self.analysis}_accuracy",
            title=(f"Accuracy: ours vs paper ({self.table}){note}" if paper_scale else
                   f"Accuracy at {self.scale} scale (the paper's {self.table} numbers: table, reference only)"),
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


def scale_settings(exp: Experiment, scale: str, epochs: int | None = None,
                   cka_images: int | None = None) -> dict[str, Any]:
    """The scale's settings with the command line's overrides, checked before any work starts."""
    settings = exp.settings(scale)
    for key, value, least in (("epochs", epochs, 1), ("cka_images", cka_images, 4)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            flag = "--" + key.replace("_", "-")
            why = " (unbiased CKA needs 4 images per batch)" if key == "cka_images" else ""
            raise ValueError(f"{flag} must be an integer >= {least}{why}, got {value!r}")
        settings[key] = value
    return settings


def model_jobs(exp: Experiment, scale: str, settings: dict[str, Any], cache: str | Path,
               **run_opts: Any) -> tuple[list[ModelJob], dict[str, dict[str, Path]]]:
    """Every model the experiment trains at ``scale`` as a job (each cache entry once), and the run folder of
    each spec's ANN/SNN by spec name. Every training config is validated here, before any training."""
    jobs: dict[Path, ModelJob] = {}
    runs: dict[str, dict[str, Path]] = {}
    for spec in exp.resolve(scale):
        runs[spec.name] = {}
        for kind in spec.kinds:
            cfg = train_config(spec, kind, settings, **run_opts)
            cfg.validate()
            job = ModelJob(f"{spec.name}-{kind}", cfg, Path(cache))
            jobs.setdefault(job.run_dir, job)
            runs[spec.name][kind] = job.run_dir
    return list(jobs.values()), runs


def _paper_key(spec: ModelSpec) -> dict[str, Any]:
    res = all(spec.residual) if len(set(spec.residual)) == 1 else "partial"
    key: dict[str, Any] = {"model": spec.arch, "width": spec.width, "T": spec.T, "residual": res}
    key.update(spec.paper_key or {})
    return key


def _final_accuracy(run: Path) -> float:
    return 100.0 * float(read_metrics(run / "metrics.jsonl")[-1]["test_acc"])


def _row(model: str, kind: str, setting: str, ours: float, theirs: float | None) -> dict[str, Any]:
    return {"model": model, "type": kind.upper(), "paper setting": setting, "ours (%)": ours, "paper (%)": theirs}


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _describe_key(key: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in key.items())


# --------------------------------------------------------------------------------------------------------
# The analyses: one function per ``kind`` of an experiment's ``[[analysis]]`` entries
# --------------------------------------------------------------------------------------------------------


@dataclass
class _Context:
    """What every analysis of one experiment run needs."""

    exp: Experiment
    scale: str
    specs: list[ModelSpec]
    runs: dict[str, dict[str, Path]]
    out: Path
    common: dict[str, Any]  # n_images (unless the recipe's), data_root, device, progress
    recipe: str = "paper"

    def ckpt(self, spec: ModelSpec, kind: str) -> Path:
        """The checkpoint the recipe analyses (its ``checkpoint``: best or last epoch; last if no best)."""
        return resolve_checkpoint(self.runs[spec.name][kind], recipes.get(self.recipe).checkpoint)

    def models(self, analysis: dict[str, Any], need: tuple[str, ...]) -> list[ModelSpec]:
        """The specs an analysis applies to (its ``models`` list of ids, or all) that have the kinds it needs."""
        wanted = analysis.get("models")
        chosen = [s for s in self.specs if wanted is None or s.id in wanted]
        return [s for s in chosen if all(k in s.kinds for k in need)]

    def cached(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Result:
        """``fn(*args, **kwargs)`` saved as ``results/<name>``, or loaded from there if a run already did it."""
        path = self.out / "results" / f"{name}.json"
        if path.is_file():
            return load_result(path)
        res = fn(*args, **kwargs)
        res = res[0] if isinstance(res, tuple) else res
        _save(res, self.out, name)
        return res


def _layers(analysis: dict[str, Any]) -> dict[str, Any]:
    """``layers=`` of an analysis entry, if it names one (else the analysis uses the recipe's CKA layers)."""
    layers = analysis.get("layers")
    if layers is None:
        return {}
    return {"layers": layers if isinstance(layers, str) else list(layers)}


def _suffix(analysis: dict[str, Any]) -> str:
    return f"-{analysis['name']}" if "name" in analysis else ""


def _compare_pairs(c: _Context, a: dict[str, Any]) -> list[tuple[ModelSpec, Result]]:
    return [(s, c.cached(f"compare-{s.name}", analyses.compare, c.ckpt(s, "snn"), c.ckpt(s, "ann"),
                         **_layers(a), **c.common)) for s in c.models(a, ("ann", "snn"))]


def _run_compare(c: _Context, a: dict[str, Any]) -> None:
    """SNN vs ANN heatmap and curve of every pair; an overview of the curves when there are several."""
    pairs = _compare_pairs(c, a)
    if len(pairs) > 1:
        c.cached(f"overview{_suffix(a)}", _overview, c.exp, [r for _, r in pairs], [s.name for s, _ in pairs])


def _run_blocks(c: _Context, a: dict[str, Any]) -> None:
    """Per-layer-type CKA inside the residual blocks (Fig. 3), from each pair's comparison."""
    for s, cmp in _compare_pairs(c, a):
        c.cached(f"blocks-{s.name}", analyses.blocks, cmp)
        for blk in a.get("blocks", []):  # single blocks (Fig. A.5: the 10th and 34th of ResNet-110)
            c.cached(f"blocks-{s.name}-{blk}", stagesteps.block_subset, cmp, blk)


def _run_self(c: _Context, a: dict[str, Any]) -> None:
    for s in c.models(a, ("snn",)):
        c.cached(f"self-{s.name}", analyses.compare, c.ckpt(s, "snn"), None, **_layers(a), **c.common)


def _run_temporal(c: _Context, a: dict[str, Any]) -> None:
    for s in c.models(a, ("snn",)):
        c.cached(f"temporal{_suffix(a)}-{s.name}", analyses.temporal, c.ckpt(s, "snn"), **_layers(a),
                 **c.common)


def _run_robustness(c: _Context, a: dict[str, Any]) -> None:
    """PGD accuracy and clean-vs-adversarial CKA; beside the paper's bars (Fig. 8 / A.9) where it has them."""
    table = a.get("paper", c.exp.paper if c.exp.paper in ("fig8", "figA9") else None)
    for s in c.models(a, ("ann", "snn")):
        res = c.cached(f"robustness-{s.name}", analyses.robustness, [c.ckpt(s, "ann"), c.ckpt(s, "snn")],
                       eps=a.get("eps", analyses.DEFAULT_EPS), **_layers(a),
                       **({"steps": a["steps"]} if "steps" in a else {}),
                       **c.common)
        if table:
            rows = []
            for label, clean, accs in zip(res.labels, res.clean_accuracy, res.accuracy, strict=True):
                kind = "snn" if label.startswith("SNN") else "ann"
                for eps, ours in zip([0.0, *res.eps], [clean, *accs], strict=True):
                    row = paper_row(table, {"eps": eps})
                    rows.append(_row(s.name, kind, f"eps={eps:g}", ours, stagesteps.paper_value(row, kind)))
            _save(PaperComparison(table=table, caption=paper_numbers()[table]["caption"], rows=rows,
                                  scale=c.scale), c.out, f"paper-robustness-{s.name}")


def _run_probe(c: _Context, a: dict[str, Any]) -> None:
    chosen = [c.ckpt(s, k) for s in c.models(a, ()) for k in s.kinds]
    c.cached(f"probe{_suffix(a)}", analyses.probe, chosen, data_root=c.common["data_root"],
             device=c.common["device"], progress=c.common["progress"])


def _run_seeds(c: _Context, a: dict[str, Any]) -> None:
    chosen = [c.ckpt(s, k) for k in ("ann", "snn") for s in c.models(a, ("ann", "snn"))]
    c.cached(f"seeds{_suffix(a)}", analyses.seeds, chosen, **c.common)


def _run_accuracy(c: _Context, a: dict[str, Any]) -> None:
    """Final test accuracy of every trained model beside the paper's row for the model's paper-scale setting."""
    table = a.get("paper", c.exp.paper)
    c100 = c.exp.settings("paper").get("data") == "cifar100"
    rows = []
    for spec in c.models(a, ()):
        key = _paper_key(c.exp.paper_spec(spec.id))
        row = paper_row(table, key)
        for kind, run_dir in c.runs[spec.name].items():
            theirs = None if row is None else row.get(kind, row.get(f"{kind}_{'c100' if c100 else 'c10'}"))
            rows.append(_row(spec.name, kind, _describe_key(key), _final_accuracy(run_dir), theirs))
    caption = paper_numbers()[table]["caption"]
    if a.get("without_retraining"):
        rows = _with_reused_weights(c, rows)
        caption += (f" Two protocols: '{RETRAINED}' (the mixed-step model trained that way) and '{REUSED}' (the "
                    "full-T model run with the mixed steps, rows reuse-...); the paper does not say which it used.")
    _save(PaperComparison(table=table, caption=caption, rows=rows, scale=c.scale), c.out, f"paper-{table}")


RETRAINED, REUSED = "retrained", "full-T weights, no retraining"


def _with_reused_weights(c: _Context, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table 3's two protocols: every SNN with ``stage_T`` (retrained that way) and, as ``reuse-<full>[-...]``,
    the full-T SNN of the same setting run with that ``stage_T`` without retraining (and the full-T SNN
    evaluated the same way), each row labelled with its protocol."""
    def same(full: ModelSpec, s: ModelSpec) -> bool:
        return replace(full, id=s.id, name=s.name, stage_T=s.stage_T, paper_key=s.paper_key) == s

    by_name = {r["model"]: r for r in rows if r["type"] == "SNN"}
    out = [{**r, "protocol": RETRAINED if r["type"] == "SNN" and _stage_T(c, r["model"]) else "trained at full T"}
           for r in rows]
    for full in (s for s in c.specs if "snn" in s.kinds and not s.stage_T):
        mixed = [s for s in c.specs if "snn" in s.kinds and s.stage_T and same(full, s)]
        if not mixed:
            continue
        variants = [full, *mixed]
        accs = stagesteps.without_retraining_accuracy(c.ckpt(full, "snn"), [s.stage_T for s in variants],
                                                      data_root=c.common["data_root"], device=c.common["device"])
        for s, ours in zip(variants, accs, strict=True):
            suffix = s.name[len(full.name):] if s.name.startswith(full.name) else f"-{s.name}"
            out.append({**by_name[s.name], "model": f"reuse-{full.name}{suffix}", "ours (%)": ours,
                        "protocol": REUSED})
    return out


def _stage_T(c: _Context, name: str) -> tuple[int, ...] | None:
    return next(s.stage_T for s in c.specs if s.name == name)


#: analysis kind (``[[analysis]] kind = ...``) -> the function that runs it
ANALYSES: dict[str, Callable[[_Context, dict[str, Any]], None]] = {
    "compare": _run_compare, "blocks": _run_blocks, "self": _run_self, "temporal": _run_temporal,
    "robustness": _run_robustness, "probe": _run_probe, "seeds": _run_seeds, "accuracy": _run_accuracy,
}


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
    launcher: Any = None,
    recipe: str | None = None,
) -> Path:
    """Run experiment ``exp_id`` at ``scale``: train (or reuse) its models, run its analyses, judge the paper's
    findings on the results, write figures and the HTML report into ``out``; returns the report's path.
    Finished analyses are not recomputed.

    ``recipe`` (``snncka.recipes``: "paper", the default, or "code") trains every model and runs every analysis
    the way the paper's text or the released code does; it is part of each model's cache key. An experiment
    that compares recipes (``recipes = [...]`` in its file, e.g. ``paper-vs-code``) runs once per recipe into
    ``out/<recipe>`` and then compares them (``snncka.recipe_compare``); it takes no ``recipe``.
    ``launcher`` trains the models (``snncka.launch``: ``InlineLauncher`` by default, ``LocalLauncher(jobs)``
    for parallel processes, ``SlurmLauncher(...)`` for a Slurm array); the analyses run here once all exist."""
    exp = load_experiment(exp_id)
    out = Path(out) if out is not None else default_out(exp_id, scale, recipe)
    opts = dict(cache=cache, data_root=data_root, download=download, device=device, epochs=epochs,
                cka_images=cka_images, progress=progress, launcher=launcher)
    if exp.recipes:
        if recipe is not None:
            raise ValueError(f"experiment {exp.id} runs every recipe it compares ({', '.join(exp.recipes)}); "
                             "leave out --recipe")
        return recipe_compare.run_recipes(exp, scale, out, **opts)
    run_one(exp_id, scale, out, recipe=recipe or "paper", **opts)
    suffix = "" if (recipe or "paper") == "paper" else f", recipe {recipe}"
    return build_report(out, title=f"snncka {exp.id} ({scale} scale{suffix}): {exp.title}")


def default_out(exp_id: str, scale: str, recipe: str | None = None) -> Path:
    """``runs/<ID>-<scale>``, with ``-<recipe>`` for a recipe other than the paper's."""
    return Path("runs") / (f"{exp_id}-{scale}" + (f"-{recipe}" if recipe not in (None, "paper") else ""))


def run_one(exp_id: str, scale: str, out: Path, *, cache: str | Path | None = None, data_root: str | None = None,
            download: bool = False, device: str = "auto", epochs: int | None = None, cka_images: int | None = None,
            progress: bool = True, launcher: Any = None, recipe: str = "paper", findings: bool = True) -> None:
    """``run`` under one recipe without the report: models, analyses, ``experiment.json`` and (``findings``)
    the paper's findings judged on this run's results (``results/findings``)."""
    cache = Path(cache) if cache is not None else default_cache()
    recipes.get(recipe)  # an unknown name is a one-line error listing the recipes, before any work
    exp, settings, jobs, runs = _prepare(exp_id, scale, out, cache, epochs, cka_images, data_root=data_root,
                                         download=download, device=device, progress=progress, recipe=recipe)
    specs = exp.resolve(scale)
    (launcher or InlineLauncher(progress)).train(jobs)
    for job in jobs:  # all trained now; a concurrent run may still hold a lock for the same model: wait for it
        ensure_trained(job.cfg, job.cache)
    for spec in specs:  # training logs and checkpoints beside the results (for the report and `snncka compare`)
        for k, run_dir in runs[spec.name].items():
            _export_run(run_dir, out / "models" / f"{spec.name}-{k}")

    dev = None if device == "auto" else device
    common: dict[str, Any] = dict(data_root=data_root, device=dev, progress=progress)
    if not (scale == "paper" and cka_images is None
            and settings.get("cka_images") == _default_scales()["paper"].get("cka_images")):
        common["n_images"] = settings.get("cka_images", 4096)  # else the recipe's (paper 4096, code 2048)
    ctx = _Context(exp, scale, specs, runs, out, common, recipe)
    for a in exp.analyses_at(scale):
        ANALYSES[a["kind"]](ctx, a)

    _write_json(out / "experiment.json", {
        "id": exp.id, "title": exp.title, "description": exp.description, "scale": scale, "recipe": recipe,
        "settings": settings, "source": exp.source, "cache": str(cache),
        "models": {sid: {k: str(p) for k, p in kinds.items()} for sid, kinds in runs.items()},
        "environment": environment(),
    })
    if findings:
        _save(verdicts.judge({recipe: out}, scale, exp.id), out, "findings")


def _prepare(exp_id: str, scale: str, out: Path, cache: Path, epochs: int | None, cka_images: int | None,
             **run_opts: Any) -> tuple[Experiment, dict[str, Any], list[ModelJob], dict[str, dict[str, Path]]]:
    """Everything checked before any training: the experiment, the overrides, every training config, the
    datasets' availability and the output folder."""
    exp = load_experiment(exp_id)
    settings = scale_settings(exp, scale, epochs, cka_images)
    bad = [a["kind"] for a in exp.analyses if a["kind"] not in ANALYSES]
    if bad:
        raise ValueError(f"experiment {exp.id}: unknown analysis kind(s) {bad}; known: {', '.join(ANALYSES)}")
    for a in exp.analyses_at(scale):
        for s in exp.resolve(scale) if a.get("blocks") else []:
            if a.get("models") is None or s.id in a["models"]:
                stagesteps.check_block_names(a["blocks"], s.arch, f"experiment {exp.id}, model {s.id}")
    jobs, runs = model_jobs(exp, scale, settings, cache, **run_opts)
    for name in sorted({j.cfg.data for j in jobs}):
        check_available(name, run_opts.get("data_root"), bool(run_opts.get("download")))
    _check_writable(out)
    return exp, settings, jobs, runs


def submit(exp_id: str, scale: str, out: str | Path, slurm: Any, *, cache: str | Path | None = None,
           **kwargs: Any) -> tuple[list[Any], Any]:
    """Submit experiment ``exp_id``'s models to ``slurm`` (a ``snncka.launch.SlurmLauncher``) and its analyses as
    a job that runs ``run`` once they are all trained; returns (training jobs, analysis job). ``kwargs``: as
    ``run``'s (data_root, download, device, epochs, cka_images)."""
    from .plan import model_cost

    out, cache = Path(out), Path(cache) if cache is not None else default_cache()
    run_opts = {k: kwargs.get(k) for k in ("data_root", "download", "device")}
    several = load_experiment(exp_id).recipes  # an experiment comparing recipes trains each one's models
    jobs = []
    for recipe in several or [kwargs.get("recipe") or "paper"]:
        jobs += _prepare(exp_id, scale, out / recipe if several else out, cache, kwargs.get("epochs"),
                         kwargs.get("cka_images"), **run_opts, recipe=recipe, progress=False)[2]
    for j in jobs:
        j.hours = model_cost(j.cfg).gpu_hours(j.cfg.epochs)
    return slurm.submit_experiment(jobs, _analyse_job, exp_id, scale, str(out),
                                   {**kwargs, "cache": str(cache), "progress": False})


def _analyse_job(exp_id: str, scale: str, out: str, kwargs: dict[str, Any]) -> str:
    """The analysis job of ``submit``: every model is in the cache by now, so ``run`` only analyses."""
    return str(run(exp_id, scale, out, **kwargs))


def _check_writable(out: Path) -> None:
    """Fail before training when the output folder can't be created (e.g. a file is in the way)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        raise OSError(f"cannot create the output folder {str(out)!r}: a file is in the way ({e.strerror}); "
                      "choose another --out") from e
    check_writable(out)  # an existing read-only --out fails here, not after the training


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


def _export_run(run_dir: Path, dst: Path) -> None:
    """The run's logs (copies) and checkpoints (hard links where possible, else copies) into ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in ("config.json", "metrics.jsonl"):
        atomic_write(dst / f, lambda tmp, f=f: shutil.copyfile(run_dir / f, tmp))
    for f in ("last.pt", "best.pt"):
        if (run_dir / f).is_file():
            atomic_link_or_copy(run_dir / f, dst / f)  # the cache replaces (never rewrites) its checkpoints


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=1, default=str))
