"""One self-contained HTML report for a run folder: every figure, accuracy and CKA tables, configs,
environment and timings, ordered as a reader asks: the answer first (the paper's findings judged, with the
numbers behind each verdict), then the figures, each kind with a paragraph on how to read it, then the tables,
and the provenance (files, configurations, environment, timings) last. Models are named by their labels;
file paths appear only in the provenance (and as a hover title), never wrapped.

``build_report(run_dir)`` walks ``run_dir`` for training runs (folders with ``config.json`` +
``metrics.jsonl``, as ``snncka train`` writes them) and saved results (``<name>.json`` + ``<name>.npz`` in the
format of ``snncka.results``: analysis results and engine results saved by ``res.save()``), redraws every
result's figures from the saved numbers (so figures and tables always agree), and writes ``report.html``.
Images are embedded as base64 PNG data URIs, styles are inline, and there is no script, font or link to
anything outside the file: it opens offline, in any browser, and can be mailed or archived as one file.
Accuracies are in percent; an undefined value (NaN) shows as "–". Every training run and analysis result
shows its recipe (``snncka.recipes``: ``paper`` or ``code``); a result that compared models of different
recipes is marked, and its warning is listed under "Recipes".
A file that cannot be read (or a result that cannot be drawn) is skipped with a warning and listed in the
report, so one bad file does not block the rest.
"""

from __future__ import annotations

import base64
import html
import json
import math
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from . import analyses as _builtin  # noqa: F401  (registers the built-in result kinds the report reads)
from .analyses import describe
from .files import atomic_write_bytes
from .readers import read_json
from .results import Result, iter_results, saved_figures
from .runtime import environment
from .seed_runs import seed_figures, seed_groups
from .training import read_metrics

__all__ = ["TrainingRun", "build_report", "find_training_runs", "recipe_of"]

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#222;line-height:1.4}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #bbb;margin-top:2em}
table{border-collapse:collapse;margin:0.5em 0 1em;font-size:0.85em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f0f0f0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td{overflow-wrap:break-word;max-width:28em}td.long{overflow-wrap:anywhere}.wide{overflow-x:auto;max-width:100%}
td.path{white-space:nowrap;overflow-wrap:normal;max-width:none;font-family:ui-monospace,monospace}
.guide{max-width:60em;margin:0.3em 0 0.6em}
figure{display:inline-block;margin:0.5em;vertical-align:top;max-width:calc(50% - 1em)}
figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:0.8em;color:#555}
pre{background:#f7f7f7;padding:0.6em;overflow-x:auto;font-size:0.8em}
nav ul{columns:2}.muted{color:#777;font-size:0.85em}
"""


@dataclass
class TrainingRun:
    """A training run folder as ``snncka train`` writes it."""

    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    def row(self, root: Path) -> dict[str, Any]:
        tc = self.config.get("train", self.config)
        mc = self.config.get("model", {})
        last = self.metrics[-1] if self.metrics else {}
        best = max((m.get("test_acc", float("nan")) for m in self.metrics), default=float("nan"))
        return {
            "model": _run_label(self),
            "architecture": mc.get("name", tc.get("model")),
            "type": "SNN" if tc.get("spiking") else "ANN",
            "recipe": mc.get("recipe", tc.get("recipe")),
            "T": tc.get("T") if tc.get("spiking") else "",
            "width": tc.get("width"),
            "data": tc.get("data"),
            "seed": tc.get("seed"),
            "epochs": f"{last.get('epoch', 0)}/{tc.get('epochs', '?')}",
            "best test acc (%)": 100 * best if best == best else None,
            "final test acc (%)": 100 * last["test_acc"] if "test_acc" in last else None,
            "train time (s)": sum(float(m.get("seconds", 0.0)) for m in self.metrics),
        }


def find_training_runs(root: str | Path) -> list[TrainingRun]:
    """Every training run folder below ``root`` (including ``root`` itself), sorted by path."""
    root = Path(root)
    runs = []
    for cfg in sorted(root.rglob("config.json")):
        d = cfg.parent
        if not (d / "metrics.jsonl").is_file():
            continue
        try:
            config = read_json(cfg)
            metrics = read_metrics(d / "metrics.jsonl")  # a torn last line (a killed run) is ignored
        except (OSError, ValueError) as e:
            warnings.warn(f"skipped training run {d}: {e}", UserWarning, stacklevel=2)
            continue
        if not isinstance(config, dict):
            warnings.warn(f"skipped training run {d}: {cfg.name} holds a JSON {type(config).__name__}, not an "
                          "object", UserWarning, stacklevel=2)
            continue
        runs.append(TrainingRun(d, config, metrics))
    return runs


def _run_label(run: TrainingRun) -> str:
    """A training run named like the analyses name its model (``SNN resnet20 T4 seed0``)."""
    tc = run.config.get("train", run.config)
    mc = run.config.get("model", {})
    if not isinstance(mc, dict) or "name" not in mc:
        return run.name
    spiking = bool(mc.get("spiking", tc.get("spiking")))
    return describe(SimpleNamespace(config=mc, spiking=spiking), tc.get("seed"))  # type: ignore[arg-type]


def _who(res: Result) -> str:
    """The models a result is about, by label (from the accuracies it measured)."""
    try:
        labels = dict.fromkeys(str(label) for label, _, _ in res.accuracies())
    except (ValueError, TypeError, KeyError, AttributeError):
        labels = {}
    return " vs ".join(labels) if 0 < len(labels) <= 3 else (f"{len(labels)} models" if labels else "")


# results that judge the paper's claims: the report opens with them
_VERDICT_KINDS = ("findings", "atlas")

# How to read each figure kind (by analysis), shown above its figures.
_GUIDE = {
    "findings": "Each row is one of the paper's claims, in words, with its verdict under each recipe. The effect "
                "is the number the claim compares with its threshold (an accuracy drop, a CKA difference, a "
                "spread), shown with its 95 % interval (over batches of test images for CKA, over test images or "
                "seeds for accuracies; 'interval over' says which) and the claim, e.g. '> 0'. \"holds\": the "
                "whole interval is on the claim's side of the threshold; \"does not hold\": wholly on the other "
                "side; \"uncertain\": it straddles the threshold; \"not measured\": this run computed nothing "
                "the claim can be judged on. \"one seed\" marks a verdict resting on one training per model. "
                "Below paper scale a verdict judges trends, not the paper's numbers.",
    "atlas": "The findings atlas: each row is one of the paper's claims, each column the paper's setting "
             "(baseline: recipe paper, the paper's surrogate, unbiased linear CKA, time steps concatenated) with "
             "one choice changed; the cell's colour is the verdict over the seeds (\"uncertain\": they disagree "
             "or the interval straddles the threshold) and its text the effect and how many seeds hold. The "
             "table lists the conclusions that flip: verdicts that differ from the baseline column's.",
    "cka": "CKA (centred kernel alignment, Sec. 3.3) scores how alike two layers' representations of the same "
           "test images are: 1 = the same up to a rotation and a scale, 0 = unrelated. It compares layers of "
           "different sizes and of different networks, so an ANN layer can be set against an SNN layer.",
    "compare": "Heatmap: one cell per pair of layers, the ANN's layers up the y axis and the SNN's along x, from "
               "input to output; the colour is their CKA (0 dark, 1 bright). Ticks name the stages (stem, s1, s2, "
               "s3, head or fc) and the dashed lines mark the boundaries between stages. A bright diagonal means "
               "the two networks compute alike layer by layer (Fig. 1). Curve: the CKA of corresponding layers "
               "(the heatmap's diagonal) against depth.",
    "temporal": "Temporal grid: for each SNN layer, the CKA between its outputs at time step t (x) and t' (y). "
                "Near 1 everywhere: the layer's output hardly changes over time (static); lower off the "
                "diagonal: it changes from step to step (dynamic) (Sec. 4.4, Fig. 7). Curve: the mean "
                "off-diagonal CKA of each layer against depth.",
    "blocks": "The CKA of corresponding layers inside residual blocks, by layer type (convolution, "
              "activation, block output): how much each block's output restores the similarity its inner "
              "layers lose (Fig. 3).",
    "robustness": "PGD bars: test accuracy (%) of each model under a PGD attack of strength eps (L-inf; "
                  "eps 0 = clean images), one bar per model. The smaller the drop from eps 0, "
                  "the more robust the model (Fig. 8). The CKA charts set each model's layers on clean images "
                  "against the same layers on attacked images (1 = the attack left the features unchanged).",
    "probe": "Test accuracy of a linear classifier trained on each block's pooled output: how much of the class "
             "information a layer makes linearly readable, along depth (Fig. A.6).",
    "seeds": "CKA between networks trained from different seeds: the heatmaps read like the comparison "
             "heatmap; how alike two trainings of one network are bounds how alike an ANN and an SNN can look "
             "(App. C).",
    "rates": "Firing rate of each spiking layer: the fraction of neurons that spike per time step (0 = silent, "
             "1 = spikes at every step); dead or saturated layers carry little information.",
    "paper-vs-code": "The same quantities measured under the paper's recipe and under the released code's, side "
                     "by side: where the bars differ, the paper's text and its code disagree in effect.",
    "accuracy": "Best test acc: the highest test accuracy over the training epochs (as the training log wrote "
                "it). Final test acc: the last epoch's. Measured test acc: re-measured by an analysis on the "
                "checkpoint it loaded, over the test images it used. All in percent.",
}


def _verdict_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Findings rows as a reader wants them: the claim in words first, the verdicts and their numbers next; the
    finding's id and source go last."""
    out = []
    for r in rows:
        first = {k: r[k] for k in ("claim",) if k in r}
        rest = {k: v for k, v in r.items() if k not in ("claim", "finding", "source", "judged on")}
        tail = {k: r[k] for k in ("source", "finding") if k in r}
        out.append({**first, **rest, **tail})
    return out


class PathCell(str):
    """A table cell holding a file path: shown as the file's name (the full path as its hover title), on one
    line."""


class NameList(list):
    """A table cell listing file names or model labels: one per line, none broken."""


class _FullPath(PathCell):
    """A path cell shown in full (the provenance's files table), on one line."""


def _cell(v: Any) -> str:
    if isinstance(v, NameList):
        return f"<td class='path'>{'<br>'.join(html.escape(str(n)) for n in v)}</td>"
    if isinstance(v, _FullPath):
        return f"<td class='path'>{html.escape(str(v))}</td>"
    if isinstance(v, PathCell):
        return f"<td class='path' title='{html.escape(str(v))}'>{html.escape(Path(v).name)}</td>"
    text, num = _fmt(v)
    if num:
        return f"<td class='num'>{html.escape(text)}</td>"
    # a word too long for any column (a platform string) may break anywhere; others only between words
    long = max((len(w) for w in text.split()), default=0) > 40
    return f"<td class='long'>{html.escape(text)}</td>" if long else f"<td>{html.escape(text)}</td>"


def _fmt(v: Any) -> tuple[str, bool]:
    if v is None:
        return "", False
    if isinstance(v, bool):
        return str(v), False
    if isinstance(v, float):
        if not math.isfinite(v):
            return ("–" if v != v else str(v)), True
        return (f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"), True
    if isinstance(v, int):
        return str(v), True
    return str(v), False


def _table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "<p class='muted'>(none)</p>"
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    out = ["<div class='wide'><table><thead><tr>", *(f"<th>{html.escape(c)}</th>" for c in cols),
           "</tr></thead><tbody>"]
    for r in rows:
        out.append("<tr>")
        out += [_cell(r.get(c)) for c in cols]
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def recipe_of(res: Result) -> str | None:
    """A result's recipe as the report shows it (None for a result that records none)."""
    label = getattr(res, "recipe_label", None)
    return (label() or None) if callable(label) else None


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    cap = html.escape(caption)
    return (
        f"<figure><img src='data:image/png;base64,{data}' alt='{cap}'><figcaption>{cap}</figcaption></figure>"
    )


def _params(meta: dict[str, Any]) -> dict[str, Any]:
    """The small, scalar settings of a saved result (what the report shows as its resolved config)."""
    skip = {
        "environment",
        "matrix",
        "cka",
        "accuracy",
        "train_accuracy",
        "layers",
        "kinds",
        "layers_a",
        "layers_b",
        "kinds_a",
        "kinds_b",
        "curve",
        "block_output",
        "block_inner_mean",
        "blocks",
        "position_means",
    }
    return {k: _params(v) if isinstance(v, dict) else v for k, v in meta.items()
            if k not in skip and not (isinstance(v, list) and len(v) > 12)}


def _shown_params(meta: dict[str, Any]) -> dict[str, Any]:
    """A result's settings as the report shows them: the images it used first, the recipe's defaults
    labelled."""
    used = _images_used(meta)
    shown = _recipe_default_images(_params(meta), used)
    return {"images used": used, **shown} if used is not None else shown


def _images_used(meta: Any) -> int | None:
    """The number of test images a saved result actually used (its ``n_images``, at any depth)."""
    if isinstance(meta, dict):
        if isinstance(meta.get("n_images"), int):
            return meta["n_images"]
        for v in meta.values():
            n = _images_used(v)
            if n is not None:
                return n
    return None


def _recipe_default_images(cfg: Any, used: int | None) -> Any:
    """``cfg`` with each recipe's default ``cka_images`` labelled as a default, so a reader never takes the
    recipe's 4096 (Sec. 4.1) for the number of images a run used."""
    if not isinstance(cfg, dict):
        return cfg
    out = {k: _recipe_default_images(v, used) for k, v in cfg.items()}
    if "cka_images" in out and isinstance(out["cka_images"], int):
        n = out["cka_images"]
        out["cka_images"] = (f"{n} (the recipe's default for CKA analyses; each result says the images it used)"
                             if used is None
                             else n if used == n else f"{n} (the recipe's default; this result used {used})")
    return out


_RUN_KEYS = ("command", "date")  # differ for every result; the rest describes the machine and software


def _environments(items: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per distinct environment (ignoring command and date), listing where it was used."""
    groups: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for where, env in items:
        machine = {k: (v if isinstance(v, int | float | bool) or v is None else str(v))
                   for k, v in env.items() if k not in _RUN_KEYS}
        key = json.dumps(machine, sort_keys=True, default=str)
        groups.setdefault(key, ([], machine))[0].append(where)
    rows = []
    for wheres, machine in groups.values():
        shown = wheres[:6] + ([f"and {len(wheres) - 6} more"] if len(wheres) > 6 else [])
        rows.append({"used by": NameList(shown), **machine})
    return rows


def _import_plugins(root: Path) -> None:
    """A folder ``snncka reproduce`` wrote names its experiment (``experiment.json``); loading the experiment
    imports its plugins, so the result kinds they define (the paper's findings) can be read. Nothing for other
    folders, or for an experiment this installation does not know."""
    from .experiment import load_experiment

    try:
        exp_id = read_json(root / "experiment.json").get("id")
        if isinstance(exp_id, str):
            load_experiment(exp_id)
    except (OSError, ValueError, KeyError, AttributeError, ImportError):
        pass


def _usable(path: Path, res: Result) -> bool:
    """Whether the report can show ``res`` (its summary and accuracies compute); else one warning naming the
    file, and the report goes on without it."""
    try:
        res.summary()
        res.accuracies()
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, ZeroDivisionError) as e:
        warnings.warn(f"skipped {path}: its {res.analysis!r} result cannot be shown ({type(e).__name__}: {e})",
                      UserWarning, stacklevel=2)
        return False
    return True


def build_report(run_dir: str | Path, out: str | Path | None = None, *, title: str | None = None) -> Path:
    """Write the HTML report of ``run_dir`` (default ``run_dir/report.html``) atomically; returns its path."""
    t0 = time.perf_counter()
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"run directory {str(root)!r} does not exist; pass the folder that holds the training runs and "
            "analysis results (e.g. the --out of snncka train / compare / reproduce)"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _import_plugins(root)
        runs = find_training_runs(root)
        results: list[tuple[Path, Result]] = [(p, r) for p, r in iter_results(root) if _usable(p, r)]
    skipped = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if not runs and not results:
        why = f" (skipped: {'; '.join(skipped)})" if skipped else ""
        raise ValueError(
            f"{str(root)!r} holds no training runs (config.json + metrics.jsonl) and no results "
            f"(<name>.json from snncka compare/temporal/... or res.save()); nothing to report{why}"
        )
    for msg in skipped:
        warnings.warn(msg, UserWarning, stacklevel=2)
    out = Path(out) if out is not None else root / "report.html"
    title = title or f"snncka report: {root.resolve().name}"
    parts: list[str] = []
    toc: list[tuple[str, str]] = []

    def section(anchor: str, heading: str, body: str) -> None:
        toc.append((anchor, heading))
        parts.append(f"<h2 id='{anchor}'>{html.escape(heading)}</h2>{body}")

    # 1. The answer: the paper's findings judged on these results, with the figures that carry them.
    figdir = Path(tempfile.mkdtemp(prefix="snncka-report-"))
    n_figs = 0

    def drawn(what: str, draw: Callable[[], list[Path]]) -> list[Path]:
        """The PNGs ``draw`` makes; a figure that cannot be drawn is named in the report, not fatal."""
        nonlocal n_figs
        try:
            paths = [q for q in draw() if q.suffix == ".png"]
        except (ValueError, OSError) as e:
            msg = f"{what} not drawn: {e}"
            warnings.warn(msg, UserWarning, stacklevel=3)
            skipped.append(msg)
            return []
        n_figs += len(paths)
        return paths

    def figures_of(k: int, p: Path, res: Result) -> list[str]:
        # the figures the run drew from this very result (unchanged since), else drawn here
        paths = drawn(f"figures of {p}",
                      lambda: saved_figures(p, p.parent.parent / "figures") or res.plot(figdir / str(k)))
        who = _who(res) + (f" (recipe {recipe_of(res)})" if recipe_of(res) else "")
        return [_img(q, f"{who + ': ' if who else ''}{q.stem}") for q in paths]

    def seed_images(base: str, group: list[Result]) -> list[str]:
        paths = drawn(f"seed-mean figures of {base}", lambda: seed_figures(base, group, figdir / f"seeds-{base}"))
        return [_img(q, f"{base}, mean of {len(group)} seeds: {q.stem}") for q in paths]

    try:
        verdicts = [(k, p, r) for k, (p, r) in enumerate(results) if r.analysis in _VERDICT_KINDS]
        if verdicts:
            body = []
            for k, p, res in verdicts:
                body.append(f"<p class='guide'>{html.escape(_GUIDE[res.analysis])}</p>")
                basis = getattr(res, "basis", "")
                if basis:
                    body.append(f"<p class='muted'>Judged on: {html.escape(str(basis))}</p>")
                body.append(_table(_verdict_rows(res.summary())))
                body += figures_of(k, p, res)
            section("verdicts", "Findings: the paper's claims judged on these results", "".join(body))

        # 2. Figures, grouped by kind, each kind with a paragraph on how to read it. An analysis saved for
        # several seeds is drawn once, as the seed mean with a band, where its kind has such a figure.
        kinds: dict[str, list[str]] = {}
        banded: set[int] = set()
        for base, group in seed_groups((p.stem, r) for p, r in results).items():
            imgs = seed_images(base, [r for _, r in group])
            if imgs:
                kinds.setdefault(group[0][1].analysis, []).extend(imgs)
                banded.update(id(r) for _, r in group)
        for k, (p, res) in enumerate(results):
            if res.analysis in _VERDICT_KINDS or id(res) in banded:
                continue
            imgs = figures_of(k, p, res)
            if imgs:
                kinds.setdefault(res.analysis, []).extend(imgs)
        figs = [f"<p class='guide'>{html.escape(_GUIDE['cka'])}</p>"] if kinds else []
        for kind, imgs in kinds.items():
            figs.append(f"<h3>{html.escape(kind)}</h3>")
            if kind in _GUIDE:
                figs.append(f"<p class='guide'>{html.escape(_GUIDE[kind])}</p>")
            figs += imgs
        section("figures", "Figures", "".join(figs) or "<p class='muted'>(no figures)</p>")
    finally:
        shutil.rmtree(figdir, ignore_errors=True)

    # 3. Tables. Accuracy: training runs plus accuracies measured by analyses, rows named by model.
    acc_rows = [r.row(root) for r in runs]
    for _, res in results:
        for label, acc, src in res.accuracies():
            acc_rows.append({"model": label, "recipe": recipe_of(res), "measured test acc (%)": acc,
                             "checkpoint": PathCell(src) if src else None, "measured by": res.analysis})
    section("accuracy", "Accuracy", f"<p class='guide'>{html.escape(_GUIDE['accuracy'])}</p>" + _table(acc_rows))

    # CKA summaries: one table per analysis kind.
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for _, res in results:
        if res.analysis in _VERDICT_KINDS:
            continue
        for row in res.summary():
            by_kind.setdefault(res.analysis, []).append(
                {**row, **({"recipe": recipe_of(res)} if recipe_of(res) else {})})
    body = "".join(f"<h3>{html.escape(k)}</h3>{_table(v)}" for k, v in by_kind.items())
    section("summary", "CKA and analysis summary", body or "<p class='muted'>(no analyses)</p>")

    # Recipes: which recipe each result ran under, and every comparison of models of different recipes.
    rec_rows = [{"analysis": res.analysis, "models": _who(res), "recipe": recipe_of(res),
                 "models' recipes": ", ".join(getattr(res, "model_recipes", []) or []),
                 "warning": getattr(res, "recipe_warning", "") or None, "file": PathCell(p)}
                for p, res in results if recipe_of(res)]
    if rec_rows:
        mixed = sum(bool(r["warning"]) for r in rec_rows)
        note = (f"<p><b>{mixed} result(s) compare models built under different recipes</b>; their differences "
                "include the recipes' (docs/FIDELITY.md).</p>" if mixed else "")
        section("recipes", "Recipes", note + _table(rec_rows))

    # 4. Provenance, last: files, resolved configuration, environment, skipped files, timings.
    files = [{"what": f"training run {_run_label(r)}", "path": PathCell(r.path)} for r in runs]
    files += [{"what": f"{res.analysis} {_who(res)}".strip(), "path": PathCell(p)} for p, res in results]
    section("files", "Files", f"<p class='muted'>Run folder: {html.escape(str(root.resolve()))}</p>"
            + _table([{**f, "path": _FullPath(f["path"])} for f in files]))

    cfg = []
    for r in runs:
        cfg.append(
            f"<details><summary>{html.escape(_run_label(r))} (training, {html.escape(r.name)})"
            f"</summary><pre>{html.escape(json.dumps(_recipe_default_images(r.config, None), indent=1))}</pre>"
            "</details>"
        )
    for p, res in results:
        try:
            meta = read_json(p)
        except (OSError, ValueError):
            meta = {}
        cfg.append(
            f"<details><summary>{html.escape(res.analysis)} {html.escape(_who(res))} ({html.escape(p.name)})"
            f"</summary><pre>{html.escape(json.dumps(_shown_params(meta), indent=1))}</pre></details>"
        )
    section("config", "Resolved configuration", "".join(cfg))

    # Environment: where the report was built, and where each result / run was computed.
    envs: list[tuple[str, dict[str, Any]]] = [("this report", environment())]
    for p, res in results:
        e = getattr(res, "environment", None)
        if isinstance(e, dict) and e:
            envs.append((p.name, e))
    for r in runs:
        e = r.config.get("environment")
        if isinstance(e, dict):
            envs.append((_run_label(r), e))
    section("environment", "Environment", _table(_environments(envs)))
    if skipped:
        section("skipped", "Skipped files",
                "<ul>" + "".join(f"<li>{html.escape(m)}</li>" for m in skipped) + "</ul>")

    # Timings.
    t_rows = [{"item": f"train {_run_label(r)}", "seconds": r.row(root)["train time (s)"]} for r in runs]
    t_rows += [
        {"item": f"{res.analysis} {_who(res)}".strip(), "seconds": float(getattr(res, "seconds", 0.0)),
         "file": PathCell(p)}
        for p, res in results
    ]
    t_rows.append({"item": "this report (figures and HTML)", "seconds": time.perf_counter() - t0})
    section("timings", "Timings", _table(t_rows))

    nav = (
        "<nav><ul>" + "".join(f"<li><a href='#{a}'>{html.escape(h)}</a></li>" for a, h in toc) + "</ul></nav>"
    )
    doc = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p class='muted'>{len(runs)} training run(s), "
        f"{len(results)} analysis result(s), {n_figs} figure(s) "
        "&middot; generated "
        f"{html.escape(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}</p>{nav}{''.join(parts)}</body></html>"
    )
    atomic_write_bytes(out, doc.encode("utf-8"))
    return out


