"""Subjects: a model together with the dataset it was trained on, and the test images the analyses feed it.

Models see their own input for the same test images: an ANN on event data gets one integrated frame, the SNN
T frames (Sec. 4, Fig. 7). Images: the first ``n_images`` of the test split (the paper: 4096, Sec. 3.3).

Recipes (``snncka.recipes``): an analysis runs under one recipe, by default the one recorded in the first
checkpoint's model config (``"paper"`` for a model made before recipes). It decides which checkpoint of a run
folder is read, the CKA layer set, image count and minibatch, and the PGD settings. ``RecipeMeasured`` is the
base of every analysis result: it records the recipe, its settings, the recipe of every analysed model and,
when they differ, a warning (comparing models of different recipes is allowed but stated).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import recipes
from ..checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint
from ..data import Dataset, frames_for, to_model_input
from ..data import get as get_dataset
from ..evaluation import evaluate_tensors
from ..identity import ModelIdentity
from ..models import SNNCKAModel
from ..models import from_checkpoint as models_from_checkpoint
from ..results import Measured
from ..runtime import resolve_device

__all__ = ["RecipeMeasured", "Subject", "accuracy", "check_same_images", "describe", "resolve_recipe"]

_DATA_CACHE: dict[tuple, Dataset] = {}  # the datasets of recent checkpoints, most recent last
_DATA_CACHE_SIZE = 4  # an experiment pairs a few (e.g. event data as 1 frame for the ANN, T frames for the SNN)


def _cached_dataset(key: tuple, load: Callable[[], Dataset]) -> Dataset:
    """Load a dataset once for the checkpoints that share it, keeping only the few most recently used."""
    ds = _DATA_CACHE.pop(key, None) or load()
    _DATA_CACHE[key] = ds
    while len(_DATA_CACHE) > _DATA_CACHE_SIZE:
        _DATA_CACHE.pop(next(iter(_DATA_CACHE)))
    return ds


@dataclass
class Subject:
    """A model together with the dataset it was trained on (the test split is what analyses use) and the seed
    it was trained with (part of its ``identity``)."""

    model: SNNCKAModel
    data: Dataset
    label: str = ""
    source: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.label:
            self.label = describe(self.model)
        if self.model.in_channels != self.data.in_channels:
            raise ValueError(
                f"{self.label}: the model takes {self.model.in_channels} input channels but dataset "
                f"{self.data.name!r} has {self.data.in_channels}; pair the checkpoint with its training data"
            )

    @property
    def spiking(self) -> bool:
        return bool(self.model.spiking)

    @property
    def identity(self) -> ModelIdentity:
        """What the model is (``snncka.identity``): what results record and findings read."""
        return ModelIdentity.of_model(self.model.config, self.data.name, self.seed)

    @property
    def recipe(self) -> str:
        """The recipe the model was built under (``"paper"`` for a model made before recipes)."""
        return str(self.model.config.get("recipe", "paper"))

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        data_root: str | Path | None = None,
        label: str | None = None,
        device: str | torch.device | None = None,
        which: str | None = None,
    ) -> Subject:
        """Load a checkpoint (``best.pt``/``last.pt`` or a run folder) and the dataset recorded in it. For a run
        folder, ``which`` (``"best"``/``"last"``) picks the file; None: the run's recipe's choice."""
        p, ckpt = read_checkpoint(path, which)
        return cls.from_checkpoint(ckpt, p, data_root=data_root, label=label, device=device)

    @classmethod
    def from_checkpoint(
        cls,
        ckpt: dict[str, Any],
        p: Path,
        *,
        data_root: str | Path | None = None,
        label: str | None = None,
        device: str | torch.device | None = None,
    ) -> Subject:
        """A subject from a loaded checkpoint dict (``p``: where it came from)."""
        model = models_from_checkpoint(ckpt, p, resolve_device(device))
        tc = ckpt.get("train_config") or {}
        name = tc.get("data")
        if not name:
            raise ValueError(
                f"checkpoint {str(p)!r} does not record its dataset (no train_config['data']); build a "
                "Subject(model, snncka.data.get(NAME)) yourself"
            )
        frames = frames_for(model.spiking, int(tc.get("T", model.T)), tc.get("frames"))
        if data_root is not None:
            check_data_root(data_root)
            root = data_root
        else:
            root = tc.get("data_root")
            if root is not None and not Path(root).is_dir():
                raise FileNotFoundError(
                    f"the data folder {str(root)!r} recorded in {str(p)!r} does not exist here; pass the folder "
                    "that holds the dataset's files (--data-root / data_root=)"
                )
        norm = recipes.get(model.config.get("recipe", "paper")).normalisation_for(name)
        key = (name, str(root), frames, tc.get("data_seed", 0), norm)
        ds = _cached_dataset(key, lambda: get_dataset(name, root=root, frames=frames, seed=tc.get("data_seed", 0),
                                                      normalisation=norm))
        return cls(model, ds, label or describe(model, tc.get("seed")), str(p), int(tc.get("seed", 0)))


def describe(model: SNNCKAModel, seed: int | None = None) -> str:
    """A short label like ``SNN resnet20 T4`` or ``ANN resnet20 x4 seed1``."""
    c = model.config
    parts = ["SNN" if model.spiking else "ANN", c["name"]]
    if c.get("width", 1) != 1:
        parts.append(f"x{c['width']:g}")
    if model.spiking:
        parts.append(f"T{c['T']}")
    if not all(c.get("residual", (True,))):
        parts.append("res" + "".join("1" if r else "0" for r in c["residual"]))
    if seed is not None:
        parts.append(f"seed{seed}")
    return " ".join(parts)


def check_data_root(root: str | Path) -> None:
    """A user-given data folder must exist (checked before any model or dataset is loaded)."""
    if not Path(root).is_dir():
        what = "is a file, not a folder" if Path(root).exists() else "does not exist"
        raise FileNotFoundError(f"data folder {str(root)!r} {what}; pass the folder that holds the dataset's files")


def run_recipe(folder: Path) -> str:
    """The recipe a run folder was trained under: its ``config.json``, else a checkpoint's model config."""
    try:
        info = json.loads((folder / "config.json").read_text())
        name = (info.get("model") or {}).get("recipe") or (info.get("train") or {}).get("recipe")
        if name:
            return str(name)
    except (OSError, ValueError, AttributeError):
        pass
    for f in ("last.pt", "best.pt"):
        if (folder / f).is_file():
            try:
                return str(load_checkpoint(folder / f, mmap=True)["model_config"].get("recipe", "paper"))
            except (CheckpointError, AttributeError):
                continue
    return "paper"


def read_checkpoint(path: str | Path, which: str | None = None) -> tuple[Path, dict[str, Any]]:
    """A checkpoint file and its contents. A run folder means the checkpoint ``which`` (``"best"``: best test
    accuracy, ``"last"``: the final epoch); None: the choice of the recipe the run was trained under."""
    p = Path(path)
    if which is None and p.is_dir():
        which = recipes.get(run_recipe(p)).checkpoint
    p = resolve_checkpoint(p, which=which or "best")
    return p, load_checkpoint(p)


def positive(value: int | None, what: str) -> int | None:
    """``value`` if None or >= 1, else a one-line error naming the option."""
    if value is not None and (isinstance(value, bool) or int(value) < 1):
        raise ValueError(f"{what} must be at least 1 (or left out for all), got {value}")
    return value


def subject(src: Any, data_root: str | Path | None, device: str | torch.device | None,
            recipe: str | recipes.Recipe | None = None) -> Subject:
    """One subject from a checkpoint, run folder or ``Subject``."""
    return subjects([src], data_root, device, recipe=recipe)[0]


def subjects(
    sources: Sequence[Any],
    data_root: str | Path | None,
    device: str | torch.device | None,
    same_data: bool = True,
    recipe: str | recipes.Recipe | None = None,
) -> list[Subject]:
    """Subjects for checkpoints / subjects; checks that all use one dataset before loading data. A run folder
    means the checkpoint ``recipe`` picks (None: the recipe the run was trained under)."""
    which = None if recipe is None else recipes.get(recipe).checkpoint
    if data_root is not None:
        check_data_root(data_root)
    read: list[Any] = [s if isinstance(s, Subject) else read_checkpoint(s, which) for s in sources]
    names = {}
    for r in read:
        name = r.data.name if isinstance(r, Subject) else (r[1].get("train_config") or {}).get("data")
        label = r.label if isinstance(r, Subject) else str(r[0])
        names.setdefault(name, label)
    if same_data and len(names) > 1:
        desc = ", ".join(f"{lab} uses {n!r}" for n, lab in names.items())
        raise ValueError(
            f"checkpoints of different datasets: {desc}; these analyses compare models on the same images, "
            "so use models trained on one dataset"
        )
    out = []
    for r in read:
        if isinstance(r, Subject):
            r.model.to(resolve_device(device)).eval()
            out.append(r)
        else:
            out.append(Subject.from_checkpoint(r[1], r[0], data_root=data_root, device=device))
    return out


def model_input(s: Subject, x: Tensor) -> Tensor:
    """A dataset batch as this model's input (an ANN's single event frame becomes a plain image batch)."""
    x = to_model_input(x)
    if x.dim() == 5 and not s.spiking and x.shape[0] == 1:
        x = x[0]
    return x


def images_used(s: Subject, n_images: int | None, *, asked: bool = True) -> int:
    """The number of test images an analysis uses: ``n_images``, or the whole test split if None or more.
    More than the split holds is said in a warning when the count was ``asked`` for (not a recipe's default,
    such as the paper's 4096, on a smaller dataset)."""
    positive(n_images, "n_images (--n-images)")
    total = len(s.data.y_test)
    if asked and n_images is not None and int(n_images) > total:
        warnings.warn(f"n_images (--n-images) {int(n_images)} is more than the {total} test images of "
                      f"{s.data.name!r}: using all {total}", UserWarning, stacklevel=3)
    return total if n_images is None else min(int(n_images), total)


def n_images_of(s: Subject, n_images: int | None, *, asked: bool = True) -> int:
    """The number of test images a CKA analysis uses (``images_used``); at least 4 (the unbiased HSIC)."""
    n = images_used(s, n_images, asked=asked)
    if n < 4:
        raise ValueError(f"need at least 4 test images for (unbiased) CKA, got {n}")
    return n


def first_batches(s: Subject, n: int, batch_size: int, device: torch.device) -> list[Tensor]:
    """The first ``n`` test images in batches (a last batch of < 4 images is dropped)."""
    positive(batch_size, "batch_size")
    out = []
    for i in range(0, n, batch_size):
        j = min(i + batch_size, n)
        if j - i < 4 and out:
            break
        out.append(model_input(s, s.data.x_test[i:j]).to(device))
    return out


def images_in(x: Tensor) -> int:
    """Number of images in a model-input batch (``[T, B, ...]`` frames or ``[B, ...]`` images)."""
    return int(x.shape[1]) if x.dim() == 5 else int(x.shape[0])


def check_same_images(a: Subject, b: Subject) -> None:
    """Raise a clear error unless ``a`` and ``b`` are evaluated on the same test images."""
    da, db = a.data, b.data
    if da.name != db.name:
        raise ValueError(
            f"checkpoints of different datasets: {a.label} uses {da.name!r}, {b.label} uses {db.name!r}; CKA "
            "compares two models' layers on the same images, so compare models trained on one dataset"
        )
    if tuple(da.x_test.shape[-3:]) != tuple(db.x_test.shape[-3:]):
        raise ValueError(
            f"incompatible input shapes: {a.label} takes images of shape {tuple(da.x_test.shape[-3:])} "
            f"(C, H, W), {b.label} {tuple(db.x_test.shape[-3:])}; both models must see the same images"
        )
    if len(da.y_test) != len(db.y_test) or not torch.equal(da.y_test.cpu(), db.y_test.cpu()):
        raise ValueError(
            f"{a.label} and {b.label} use different test splits of {da.name!r} (labels differ); load both "
            "the same data settings"
        )


def accuracy(
    s: Subject, n_images: int | None = None, batch_size: int = 256, device: str | torch.device | None = None
) -> float:
    """Test accuracy (%) of the subject's model on the first ``n_images`` test images (all by default), by the
    evaluation loop training uses (``snncka.evaluation``)."""
    dev = resolve_device(device)
    n = len(s.data.y_test) if n_images is None else min(n_images, len(s.data.y_test))
    res = evaluate_tensors(s.model, s.data.x_test[:n], s.data.y_test[:n], batch_size, dev,
                           to_input=lambda x: model_input(s, x))
    return 100.0 * res["correct"] / n


@dataclass(kw_only=True)
class RecipeMeasured(Measured):
    """A measured analysis result that records its recipe (``snncka.recipes``).

    ``recipe``: the recipe the analysis ran under ("" in a result made before recipes); ``recipe_settings``:
    its fields; ``model_recipes``: the recipe each analysed model was built under; ``mixed_recipes`` and
    ``recipe_warning``: set when those differ (the comparison is allowed, and stated in the report);
    ``identities``: each analysed model's ``ModelIdentity`` (as a dict), in the analysis's order of models.
    """

    recipe: str = ""
    recipe_settings: dict = field(default_factory=dict)
    model_recipes: list[str] = field(default_factory=list)
    identities: list[dict] = field(default_factory=list)
    mixed_recipes: bool = False
    recipe_warning: str = ""

    def identity(self, spiking: bool | None = None) -> ModelIdentity | None:
        """The first analysed model's identity (``spiking``: the first SNN's / ANN's); None if none recorded."""
        for d in self.identities:
            if spiking is None or bool(d["spiking"]) == spiking:
                return ModelIdentity.from_dict(d)
        return None

    def recipe_label(self) -> str:
        """The recipe as the report shows it, e.g. ``code`` or ``paper (models: paper, code; mixed)``."""
        if not self.recipe:
            return ""
        models = list(dict.fromkeys(self.model_recipes))
        if not models or models == [self.recipe]:
            return self.recipe
        return f"{self.recipe} (models: {', '.join(models)}{'; mixed' if self.mixed_recipes else ''})"


def resolve_recipe(recipe: str | recipes.Recipe | None, subs: Sequence[Subject]
                   ) -> tuple[recipes.Recipe, dict[str, Any]]:
    """The analysis recipe (``recipe``, else the first model's) and the ``RecipeMeasured`` fields recording it.
    Models built under different recipes give a ``UserWarning`` (the comparison still runs)."""
    model_recipes = [s.recipe for s in subs]
    rec = recipes.get(recipe if recipe is not None else (model_recipes[0] if model_recipes else "paper"))
    mixed = len(set(model_recipes)) > 1
    warning = ""
    if mixed:
        who = ", ".join(f"{s.label} ({s.recipe})" for s in subs)
        warning = (f"comparing models built under different recipes: {who}; the analysis uses recipe "
                   f"{rec.name!r}, so differences include the recipes' (see docs/FIDELITY.md)")
        warnings.warn(warning, UserWarning, stacklevel=3)
    return rec, dict(recipe=rec.name, recipe_settings=rec.as_dict(), model_recipes=model_recipes,
                     identities=[s.identity.as_dict() for s in subs], mixed_recipes=mixed, recipe_warning=warning)


def cka_settings(rec: recipes.Recipe, n_images: int | None | str, batch_size: int | None, layers: Any
                 ) -> tuple[int | None, int, Any]:
    """(images, minibatch size, layer selection) of a CKA analysis: each given value, else the recipe's
    (``n_images="recipe"``: ``rec.cka_images``; None: the whole test split)."""
    n = rec.cka_images if n_images == "recipe" else n_images
    if isinstance(n, str):
        raise ValueError(f"n_images must be a number, None (all test images) or 'recipe', got {n_images!r}")
    return n, rec.cka_batch if batch_size is None else batch_size, rec.cka_selection() if layers is None else layers
