"""Our numbers beside the paper's: accuracies of the checkpoints the analyses read (Tables 1, 2, 3, B.1; Table 3
under both protocols) and PGD accuracies (Fig. 8, A.9), as analyses of the paper's experiment files (``accuracy``,
``robustness-table``).

Table 3's second protocol: a spiking model trained with T steps everywhere, rebuilt with fewer steps in one stage
(``stage_T``, e.g. ``[1, T, T]``: stage 1 runs once and its output is repeated to T steps; ``[T, T, 1]``: stage 3
runs once on the time-averaged input, Sec. 4.3) and evaluated with the *same* weights, without retraining. The
parameter names do not depend on ``stage_T``, so the full-T state dict loads unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..analyses import RobustnessResult, Subject, accuracy, load_result
from ..checkpoint import load_checkpoint
from ..experiment import ModelSpec
from ..identity import ModelIdentity
from ..models import SNNCKAModel, from_config
from ..registry import register_analysis
from ..results import Result
from ..training import TrainConfig, read_metrics
from .numbers import numbers, row, value

__all__ = ["REUSED", "RETRAINED", "PaperComparison", "checkpoint_accuracy", "with_stage_T",
           "without_retraining_accuracy"]

RETRAINED, REUSED = "retrained", "full-T weights, no retraining"


@dataclass
class PaperComparison(Result):
    """Our accuracies next to the paper's (one row per model and type). At paper scale with the difference;
    at other scales (other data, fewer epochs) the paper's numbers are shown as a reference only."""

    analysis: ClassVar[str] = "paper-table"

    table: str
    caption: str
    rows: list[dict]  # model, type, paper setting, "ours (%)", "paper (%)", identity (a ModelIdentity's fields)
    scale: str
    seconds: float = 0.0

    def summary(self) -> list[dict[str, Any]]:
        if self.scale == "paper":  # an ambiguous paper value is a text naming its readings: no difference
            return [{**{k: v for k, v in r.items() if k not in ("identity", "images")},
                     "difference": r["ours (%)"] - r["paper (%)"] if _number(r["paper (%)"]) else None}
                    for r in self.rows]
        ours = f"ours, {self.scale} scale (%)"
        return [{"model": r["model"], "type": r["type"], **({"protocol": r["protocol"]} if "protocol" in r else {}),
                 ours: r["ours (%)"], "paper's setting (reference only)": r["paper setting"],
                 "paper (%) (other data and epochs: not comparable)": r["paper (%)"]} for r in self.rows]

    def plot(self, out: str | Path, name: str | None = None) -> list[Path]:
        from .. import plots

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


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _row(model: str, network: str, setting: str, ours: float, theirs: float | str | None) -> dict[str, Any]:
    return {"model": model, "type": network.upper(), "paper setting": setting, "ours (%)": ours, "paper (%)": theirs}


def table_key(spec: ModelSpec) -> dict[str, Any]:
    """The fields of the paper-table row a model (at paper scale) corresponds to."""
    res = all(spec.residual) if len(set(spec.residual)) == 1 else "partial"
    key: dict[str, Any] = {"model": spec.arch, "width": spec.width, "T": spec.T, "residual": res}
    key.update(spec.table_key or {})
    return key


def _describe_key(key: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in key.items())


def checkpoint_accuracy(checkpoint: Path) -> float:
    """Test accuracy (%) of a run's checkpoint, as its training log wrote it for the checkpoint's epoch: the
    table shows the model the analyses read (the recipe's ``checkpoint``: best or last epoch), never another
    epoch's weights."""
    epoch = int(load_checkpoint(checkpoint, mmap=True)["epoch"])
    log = read_metrics(checkpoint.parent / "metrics.jsonl")
    line = next((m for m in log if m["epoch"] == epoch), None)
    if line is None:
        raise ValueError(f"{checkpoint.parent / 'metrics.jsonl'} has no line for epoch {epoch} of {checkpoint}")
    return 100.0 * float(line["test_acc"])


def _test_images(run_dir: Path) -> int | None:
    """The number of test images a run's accuracies are over (its config's data), None if unknown."""
    n = json.loads((run_dir / "config.json").read_text()).get("data", {}).get("n_test")
    return int(n) if isinstance(n, int) else None


def _identity(run_dir: Path) -> dict[str, Any]:
    """The identity of the model trained in ``run_dir`` (from its resolved training config)."""
    train = json.loads((run_dir / "config.json").read_text())["train"]  # the config's fields and resolved values
    return ModelIdentity.of(TrainConfig.from_dict({k: v for k, v in train.items() if k in _FIELDS})).as_dict()


_FIELDS = {f.name for f in fields(TrainConfig)}


def _check_table(specs: Sequence[ModelSpec], *, table: str, **_: Any) -> None:
    if table not in numbers():
        raise ValueError(f"no paper table {table!r}; the paper's tables: {', '.join(numbers())}")


@register_analysis("accuracy", needs="all", check=_check_table)
def accuracy_table(run: Any, *, table: str, models: list[str] | None = None, without_retraining: bool = False
                   ) -> None:
    """Test accuracy of every trained model (of the checkpoint the recipe's analyses read) beside the paper's row
    for its paper-scale setting; ``without_retraining``: Table 3's second protocol as well. Reused while the
    runs' logs and checkpoints (and the paper's numbers) are those it was made from."""
    read = [run.runs[s.name][k] / f for s in run.models(models, ()) for k in sorted(run.runs[s.name])
            for f in ("config.json", "metrics.jsonl")]
    read += [run.ckpt(s, k) for s in run.models(models, ()) for k in sorted(run.runs[s.name])]
    if without_retraining:
        read += [run.ckpt(s, "snn") for s in run.specs if "snn" in s.types]
    run.cached(f"paper-{table}", lambda *_: _accuracy_table(run, table, models, without_retraining), read,
               numbers()[table], run.exp.settings("paper").get("data"), run.scale,
               [run.exp.paper_spec(s.id) for s in run.models(models, ())], table, without_retraining,
               run.options.data_root)


def _accuracy_table(run: Any, table: str, models: list[str] | None, without_retraining: bool) -> PaperComparison:
    c100 = run.exp.settings("paper").get("data") == "cifar100"
    rows = []
    for spec in run.models(models, ()):
        key = table_key(run.exp.paper_spec(spec.id))
        r = row(table, key)
        for net, run_dir in run.runs[spec.name].items():
            theirs = None if r is None else r.get(net, r.get(f"{net}_{'c100' if c100 else 'c10'}"))
            rows.append({**_row(spec.name, net, _describe_key(key), checkpoint_accuracy(run.ckpt(spec, net)),
                                theirs), "identity": _identity(run_dir), "images": _test_images(run_dir)})
    caption = numbers()[table]["caption"]
    if without_retraining:
        rows = _with_reused_weights(run, rows)
        caption += (f" Two protocols: '{RETRAINED}' (the mixed-step model trained that way) and '{REUSED}' (the "
                    "full-T model run with the mixed steps, rows reuse-...); the paper does not say which it used.")
    return PaperComparison(table=table, caption=caption, rows=rows, scale=run.scale)


@register_analysis("robustness-table", needs="all", check=_check_table)
def robustness_table(run: Any, *, table: str, models: list[str] | None = None) -> None:
    """Our PGD accuracies (the ``robustness`` analysis's results) beside the paper's bars (Fig. 8 / A.9)."""
    for s in run.models(models, ("ann", "snn")):
        res = load_result(run.out / "results" / f"{run.result_name(f'robustness-{s.name}')}.json")
        if not isinstance(res, RobustnessResult):
            raise ValueError(f"results/robustness-{s.name} is a {res.analysis} result, not a robustness result")
        rows = []
        for label, clean, accs in zip(res.labels, res.clean_accuracy, res.accuracy, strict=True):
            net = "snn" if label.startswith("SNN") else "ann"
            for eps, ours in zip([0.0, *res.eps], [clean, *accs], strict=True):
                rows.append(_row(s.name, net, f"eps={eps:g}", ours, value(row(table, {"eps": eps}), net)))
        run.save(PaperComparison(table=table, caption=numbers()[table]["caption"], rows=rows, scale=run.scale),
                 f"paper-robustness-{s.name}")


def _with_reused_weights(run: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table 3's two protocols: every SNN with ``stage_T`` (retrained that way) and, as ``reuse-<full>[-...]``,
    the full-T SNN of the same setting run with that ``stage_T`` without retraining (and the full-T SNN
    evaluated the same way), each row labelled with its protocol."""
    def same(full: ModelSpec, s: ModelSpec) -> bool:
        return replace(full, id=s.id, name=s.name, stage_T=s.stage_T, table_key=s.table_key) == s

    stage_T = {s.name: s.stage_T for s in run.specs}
    by_name = {r["model"]: r for r in rows if r["type"] == "SNN"}
    out = [{**r, "protocol": RETRAINED if r["type"] == "SNN" and stage_T[r["model"]] else "trained at full T"}
           for r in rows]
    for full in (s for s in run.specs if "snn" in s.types and not s.stage_T):
        mixed = [s for s in run.specs if "snn" in s.types and s.stage_T and same(full, s)]
        if not mixed:
            continue
        variants = [full, *mixed]
        accs = without_retraining_accuracy(run.ckpt(full, "snn"), [s.stage_T for s in variants],
                                           data_root=run.options.data_root,
                                           device=run.options.torch_device)
        for s, ours in zip(variants, accs, strict=True):
            suffix = s.name[len(full.name):] if s.name.startswith(full.name) else f"-{s.name}"
            out.append({**by_name[s.name], "model": f"reuse-{full.name}{suffix}", "ours (%)": ours,
                        "protocol": REUSED})
    return out


def with_stage_T(model: SNNCKAModel, stage_T: Sequence[int] | None) -> SNNCKAModel:
    """``model`` rebuilt with ``stage_T`` steps per stage (None: its T everywhere), holding the same weights
    (no retraining), in eval mode on the model's device (Table 3, second protocol)."""
    if not model.spiking:
        raise ValueError("stage_T applies to spiking models only; this model is an ANN")
    new = from_config({**model.config, "stage_T": None if stage_T is None else [int(t) for t in stage_T]})
    new.load_state_dict(model.state_dict())
    device = next(model.parameters()).device
    return new.to(device).eval()


def without_retraining_accuracy(full_T_checkpoint: str | Path, stage_Ts: Sequence[Sequence[int] | None], *,
                                data_root: str | Path | None = None, device: str | torch.device | None = None,
                                n_images: int | None = None) -> list[float]:
    """Test accuracy (%) of the checkpoint's full-T spiking model run with each ``stage_T`` of ``stage_Ts``
    (steps per stage; None: T everywhere), on the first ``n_images`` test images of the data it was trained
    on (all by default). The checkpoint and its data are loaded once for all of them."""
    s = Subject.load(full_T_checkpoint, data_root=data_root, device=device)
    return [accuracy(Subject(with_stage_T(s.model, st), s.data, f"{s.label} stage_T={st}", s.source), n_images,
                     device=device) for st in stage_Ts]
