"""How an experiment runs, as one typed record: resolved and checked once where a run starts (the command line or
``snncka.runner.run``), then handed down to the training configs and the analyses unchanged."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

from . import data, recipes

__all__ = ["SCALES", "RunOptions", "default_scales", "seed_suffix"]

SCALES = ("smoke", "paper")


def default_scales() -> dict[str, dict[str, Any]]:
    """The settings every experiment shares per scale (``experiments/_scales.toml``)."""
    text = (resources.files("snncka") / "experiments" / "_scales.toml").read_text()
    return tomllib.loads(text)["scale"]


def _at_least(value: Any, least: int, flag: str, why: str = "") -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
        raise ValueError(f"{flag} must be an integer >= {least}{why}, got {value!r}")


@dataclass(frozen=True)
class RunOptions:
    """The options of one experiment run, checked when made (each bad value a one-line ``ValueError``).

    ``scale``: ``smoke`` or ``paper``; ``recipe``: ``snncka.recipes`` name (None: not given, i.e. the paper's,
    or every recipe an experiment compares); ``epochs``, ``cka_images``, ``seeds``: overrides of the scale's
    settings (None: the scale's); ``cache``: the trained-model cache (None: ``$SNNCKA_CACHE/models``);
    ``data_root``, ``download``: where the datasets are and whether CIFAR may be downloaded; ``device``:
    ``auto``, ``cpu``, ``cuda``, ...; ``progress``: progress bars."""

    scale: str = "smoke"
    recipe: str | None = None
    epochs: int | None = None
    cka_images: int | None = None
    seeds: int | None = None
    cache: Path | None = None
    data_root: str | None = None
    download: bool = False
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"unknown scale {self.scale!r}; choose one of {', '.join(SCALES)}")
        if self.recipe is not None:
            recipes.get(self.recipe)  # an unknown name: a one-line error listing the recipes
        _at_least(self.epochs, 1, "--epochs")
        _at_least(self.cka_images, 4, "--cka-images", " (unbiased CKA needs 4 images per batch)")
        _at_least(self.seeds, 1, "--seeds")
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"--device must be auto, cpu, cuda, cuda:N, ...; got {self.device!r}")
        object.__setattr__(self, "cache", Path(self.cache) if self.cache is not None else data.cache_dir() / "models")

    @property
    def recipe_name(self) -> str:
        """The recipe this run trains and analyses under (the paper's unless another is given)."""
        return self.recipe or "paper"

    def with_recipe(self, recipe: str) -> RunOptions:
        """These options under ``recipe`` (an experiment that compares recipes runs once per recipe)."""
        return RunOptions(**{**self.as_dict(), "recipe": recipe})

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def settings(self, exp: Any) -> dict[str, Any]:
        """Experiment ``exp``'s settings at this scale (``Experiment.settings``) with these overrides applied;
        ``seeds`` is always there (1 where no scale sets it)."""
        out = {"seeds": 1, **exp.settings(self.scale)}
        for key in ("epochs", "cka_images", "seeds"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        _at_least(out["seeds"], 1, f"{exp.source or exp.id}: seeds")
        return out

    def analysis_images(self, settings: dict[str, Any]) -> int | None:
        """The test images the CKA analyses take (``n_images``): the scale's count, except the paper scale's shared
        default, which leaves each recipe its own (Sec. 3.3: the paper's 4096; the released code's 2048). None:
        the recipe's."""
        if (self.scale == "paper" and self.cka_images is None
                and settings.get("cka_images") == default_scales()["paper"].get("cka_images")):
            return None
        return int(settings.get("cka_images", 4096))

    def analysis_batch(self, settings: dict[str, Any]) -> int | None:
        """The CKA minibatch of the analyses (``batch_size``): the scale's ``cka_batch`` where it sets one (the
        smoke scale: small batches, so the intervals over batches of test images rest on enough batches), else
        None: the recipe's (Sec. 3.3: 256). Checked here, before any training."""
        b = settings.get("cka_batch")
        _at_least(b, 4, "scale setting cka_batch", " (unbiased CKA needs 4 images per batch)")
        return None if b is None else int(b)

    @property
    def torch_device(self) -> str | None:
        """The device the analyses are given: None for ``auto`` (cuda where there is one)."""
        return None if self.device == "auto" else self.device


def seed_suffix(k: int) -> str:
    """What seed ``k`` (``ModelSpec.seed + k``) appends to a result's or model folder's stem: nothing for the
    first seed (its names stay those of a one-seed run), ``-s<k>`` for the others."""
    return f"-s{k}" if k else ""
