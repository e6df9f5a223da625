"""Analysis commands: one per registered analysis that runs on checkpoints (``snncka compare | self | temporal |
blocks | robustness | probe | seeds | rates`` and each registered per-model analysis, a plugin's too), and
``snncka report``.

Each command takes checkpoints (``best.pt``/``last.pt`` or a run folder, meaning the checkpoint its recipe
picks: ``best.pt``), checks its outputs, runs one function of ``snncka.analyses``, saves the result
(``<out>/<name>.json`` + ``.npz``, the format of ``snncka.results``) and its figures (PNG + SVG) in ``--out``, and
prints what it wrote. Accuracies are printed in percent. Every command takes ``--recipe paper|code`` (default:
the recipe the first checkpoint was built under); every CKA command the shared CKA options (``--n-images``,
``--batch-size``, ``--layers``, ``--biased``, ``--kernel``), whose defaults are the recipe's.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .. import analyses as A
from .. import recipes, registry
from ..analyses.subjects import positive
from ..analyses.table import call_analysis
from ..experiment import check_settings
from ..results import check_output_dir, result_paths
from .errors import user_errors

_COMMANDS: dict[str, click.Command] = {}  # registered analysis name -> its own command (the rest are made)


def _of_analysis(cmd: click.Command) -> click.Command:
    """``cmd`` is the command of the registered analysis of its name."""
    _COMMANDS[str(cmd.name)] = cmd
    return cmd


def _common(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options every analysis shares."""
    opts = [
        click.option(
            "--out",
            "out",
            type=click.Path(),  # checked by check_output_dir before the work, as one line
            required=True,
            help="Folder for the result (JSON + NPZ) and its figures (PNG + SVG).",
        ),
        click.option(
            "--name", default=None, help="File name stem of the result (default: the analysis name)."
        ),
        click.option(
            "--data-root",
            default=None,
            type=click.Path(),
            help="Folder with the dataset's files (default: the one recorded in the checkpoint).",
        ),
        click.option("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)."),
        click.option(
            "--recipe",
            default=None,
            metavar="|".join(recipes.RECIPES),
            help="Analysis recipe: paper (the paper's text) or code (the authors' released code): CKA layers, "
            "images and minibatch, PGD, which checkpoint of a run folder (default: the first checkpoint's).",
        ),
        click.option("--no-plot", is_flag=True, help="Save the result only, no figures."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _cka_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The CKA options every CKA command shares (images, minibatch, layers, estimator, kernel)."""
    opts = [
        click.option(
            "--n-images",
            default=None,
            type=int,
            help="Test images used (the first N) [default: the recipe's: paper 4096, code 2048].",
        ),
        click.option("--batch-size", default=None, type=int,
                     help="Minibatch size of minibatch CKA [default: the recipe's: paper 256, code 1024]."),
        click.option(
            "--layers",
            default=None,
            help="Layers to record: 'paper', kinds (conv,norm,act,block,pool,linear) or name patterns, "
            "comma-separated [default: the recipe's: paper every layer with fc, code without fc].",
        ),
        click.option("--biased", is_flag=True, help="Biased HSIC (Eq. 4) instead of the unbiased estimator."),
        click.option("--kernel", default="linear", show_default=True, help="linear, rbf or rbf:<threshold>."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _layers(text: str | None) -> str | list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items[0] if len(items) == 1 else items


def _floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise click.BadParameter(
            f"{what} takes comma-separated numbers, e.g. 0.001,0.01; got {text!r}"
        ) from None


def _value(v: Any) -> str:
    if isinstance(v, float):
        return "–" if v != v else f"{v:.4g}"
    return "–" if v is None else str(v)


def _finish(res: A.Result, out: str, name: str | None, no_plot: bool) -> None:
    """Save the result and its figures, and print every file written, the accuracies (%) and the summary."""
    with user_errors():
        path = res.save(out, name)
        click.echo(f"result: {path} (+ {path.with_suffix('.npz').name})")
        if isinstance(res, A.RecipeMeasured) and res.recipe:
            click.echo(f"  recipe: {res.recipe_label()}")
        for label, acc, _ in res.accuracies():
            click.echo(f"  test accuracy of {label}: {acc:.2f} %")
        if not no_plot:
            with warnings.catch_warnings(record=True) as caught:  # e.g. why a figure is not drawn
                warnings.simplefilter("always", UserWarning)
                figs = res.plot(out, name)
            click.echo(f"figures ({len(figs)} files): " + ", ".join(str(p) for p in figs))
            for w in caught:
                click.echo(f"Warning: {w.message}", err=True)
        for row in res.summary()[:12]:
            click.echo("  " + ", ".join(f"{k}={_value(v)}" for k, v in row.items()))


def _cka(n_images, batch_size, layers, biased, kernel, recipe, data_root, device, quiet) -> dict[str, Any]:
    """The keyword arguments every CKA-based analysis takes, from the shared options (None: the recipe's)."""
    return dict(n_images="recipe" if n_images is None else n_images, batch_size=batch_size,
                layers=_layers(layers), unbiased=not biased, kernel=kernel, recipe=recipe, data_root=data_root,
                device=device, progress=not quiet)


def _run(fn: Callable[[], A.Result], out: str, name: str | None, analysis: str, recipe: str | None) -> A.Result:
    """Check the recipe and the outputs, then compute (user errors become one line; warnings, e.g. models of
    different recipes, are printed as ``Warning: ...``)."""
    with user_errors():
        if recipe is not None:
            recipes.get(recipe)  # an unknown name fails here, listing the recipes
        check_output_dir(out, "output folder (--out)")
        result_paths(out, name or analysis)  # a bad --name fails here, before the work
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            res = fn()
    for w in caught:
        click.echo(f"Warning: {w.message}", err=True)
    return res


@_of_analysis
@click.command("compare")
@click.argument("checkpoint_a", type=click.Path())
@click.argument("checkpoint_b", type=click.Path(), required=False)
@_cka_options
@_common
def compare_cmd(checkpoint_a, checkpoint_b, n_images, batch_size, layers, biased, kernel, out, name, data_root,
                device, recipe, no_plot, quiet) -> None:
    """Cross-layer CKA heatmap and CKA curve of two checkpoints (or one against itself)."""
    kw = _cka(n_images, batch_size, layers, biased, kernel, recipe, data_root, device, quiet)
    res = _run(lambda: A.compare_checkpoints(checkpoint_a, checkpoint_b, **kw), out, name, "compare", recipe)
    _finish(res, out, name, no_plot)


@_of_analysis
@click.command("self")
@click.argument("checkpoint", type=click.Path())
@_cka_options
@_common
def self_cmd(checkpoint, n_images, batch_size, layers, biased, kernel, out, name, data_root, device, recipe, no_plot,
             quiet) -> None:
    """Cross-layer CKA of a checkpoint's layers against its own (Fig. 4); the same as `snncka compare CHECKPOINT`."""
    kw = _cka(n_images, batch_size, layers, biased, kernel, recipe, data_root, device, quiet)
    res = _run(lambda: A.compare_checkpoints(checkpoint, None, **kw), out, name, "self", recipe)
    _finish(res, out, name, no_plot)


@_of_analysis
@click.command("temporal")
@click.argument("checkpoint", type=click.Path())
@_cka_options
@_common
def temporal_cmd(checkpoint, n_images, batch_size, layers, biased, kernel, out, name, data_root, device, recipe,
                 no_plot, quiet) -> None:
    """T x T CKA between the time steps of every layer of an SNN checkpoint (Fig. 6)."""
    kw = _cka(n_images, batch_size, layers, biased, kernel, recipe, data_root, device, quiet)
    res = _run(lambda: A.temporal_checkpoint(checkpoint, **kw), out, name, "temporal", recipe)
    _finish(res, out, name, no_plot)


@_of_analysis
@click.command("blocks")
@click.argument("checkpoint_a", type=click.Path())
@click.argument("checkpoint_b", type=click.Path(), required=False)
@_cka_options
@_common
def blocks_cmd(checkpoint_a, checkpoint_b, n_images, batch_size, layers, biased, kernel, out, name, data_root,
               device, recipe, no_plot, quiet) -> None:
    """CKA per layer type inside residual blocks and the periodic pattern along depth (Fig. 3).

    CHECKPOINT_A may also be a saved compare result (compare.json).
    """

    def go() -> A.Result:
        src: Any = checkpoint_a
        if str(checkpoint_a).endswith(".json"):
            src = A.load_result(checkpoint_a)
            if not isinstance(src, A.CompareAnalysis):
                raise ValueError(f"{checkpoint_a} is a {src.analysis} result; blocks needs a compare result")
        res, _ = A.blocks(src, checkpoint_b,
                          **_cka(n_images, batch_size, layers, biased, kernel, recipe, data_root, device, quiet))
        return res

    res = _run(go, out, name, "blocks", recipe)
    _finish(res, out, name, no_plot)
    click.echo(
        f"periodic pattern: {res.periodic} (period {res.period}, block length {res.block_length}, "
        f"restore fraction {res.restore_fraction:.2f})"
    )


@_of_analysis
@click.command("robustness")
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path())
@click.option(
    "--eps",
    default=",".join(f"{e:g}" for e in A.DEFAULT_EPS),
    show_default=True,
    help="Comma-separated L-inf radii, increasing (normalised input space unless --pixel-std).",
)
@click.option("--steps", default=None, type=int, help="PGD iterations [default: the recipe's, 20].")
@click.option("--step-size", default=None, type=float, help="PGD step size [default: the recipe's, eps / 10].")
@click.option(
    "--random-start", is_flag=True, default=None,
    help="Start from a random point of the eps ball (Madry et al.) [default: the recipe's, no].",
)
@click.option(
    "--pixel-std",
    default=None,
    help="Per-channel std used to normalise the data, e.g. 0.247,0.243,0.261: eps is then a fraction "
    "of the [0, 1] pixel range.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the random start.")
@_cka_options
@_common
def robustness_cmd(checkpoints, eps, steps, step_size, random_start, pixel_std, seed, n_images, batch_size, layers,
                   biased, kernel, out, name, data_root, device, recipe, no_plot, quiet) -> None:
    """PGD robust accuracy per eps and CKA clean vs adversarial per layer, for each checkpoint (Fig. 8).

    Each eps is attacked on its own from the clean images with the recipe's PGD (both recipes: 20 steps of
    eps/10, no random start); robust accuracy on the whole test set unless --n-images is given."""
    kw = _cka(n_images, batch_size, layers, biased, kernel, recipe, data_root, device, quiet)
    res = _run(
        lambda: A.robustness(list(checkpoints), eps=_floats(eps, "--eps"), steps=steps, step_size=step_size,
                             random_start=random_start or None, pixel_std=_floats(pixel_std, "--pixel-std"),
                             seed=seed, **kw),
        out, name, "robustness", recipe,
    )
    _finish(res, out, name, no_plot)


@_of_analysis
@click.command("probe")
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path())
@click.option("--n-train", default=None, type=int, help="Training images for the probes (default: all).")
@click.option("--n-test", default=None, type=int, help="Test images (default: all).")
@click.option("--l2", default=1e-4, show_default=True, help="L2 penalty of the probes (>= 0).")
@click.option("--batch-size", default=256, show_default=True)
@_common
def probe_cmd(checkpoints, n_train, n_test, l2, batch_size, out, name, data_root, device, recipe, no_plot,
              quiet) -> None:
    """Linear probes on every residual block's pooled output: accuracy per block (Fig. A.6)."""
    res = _run(
        lambda: A.probe(list(checkpoints), n_train=n_train, n_test=n_test, l2=l2, batch_size=batch_size,
                        recipe=recipe, data_root=data_root, device=device, progress=not quiet),
        out, name, "probe", recipe,
    )
    _finish(res, out, name, no_plot)


@_of_analysis
@click.command("seeds")
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path())
@click.option("--no-self", is_flag=True, help="Leave out each model against itself.")
@_cka_options
@_common
def seeds_cmd(checkpoints, no_self, n_images, batch_size, layers, biased, kernel, out, name, data_root, device,
              recipe, no_plot, quiet) -> None:
    """CKA heatmaps for every pairing of the checkpoints, e.g. ANN and SNN from two seeds each (App. C)."""
    kw = _cka(n_images, batch_size, layers, biased, kernel, recipe, data_root, device, quiet)
    res = _run(lambda: A.seeds(list(checkpoints), include_self=not no_self, **kw), out, name, "seeds", recipe)
    _finish(res, out, name, no_plot)


@_of_analysis
@click.command("rates")
@click.argument("checkpoint", type=click.Path())
@click.option("--n-images", default=None, type=int, help="Test images (default: all).")
@click.option("--batch-size", default=256, show_default=True)
@_common
def rates_cmd(checkpoint, n_images, batch_size, out, name, data_root, device, recipe, no_plot, quiet) -> None:
    """Firing-rate statistics of every LIF layer of an SNN checkpoint."""
    res = _run(
        lambda: A.rates(checkpoint, n_images=n_images, batch_size=batch_size, recipe=recipe, data_root=data_root,
                        device=device, progress=not quiet),
        out, name, "rates", recipe,
    )
    _finish(res, out, name, no_plot)


@click.command("report")
@click.argument("run_dir", type=click.Path())
@click.option(
    "--out",
    default=None,
    type=click.Path(dir_okay=False),
    help="HTML file to write (default: RUN_DIR/report.html).",
)
@click.option("--title", default=None, help="Report title.")
def report_cmd(run_dir, out, title) -> None:
    """One self-contained HTML report of RUN_DIR: figures, accuracy and CKA tables, configs, environment.

    A file that cannot be read is skipped with a warning."""
    from ..report import build_report

    with user_errors():
        if out is not None:
            check_output_dir(Path(out).parent, "folder of --out")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            path = build_report(Path(run_dir), out, title=title)
    for w in caught:
        if issubclass(w.category, UserWarning):
            click.echo(f"Warning: {w.message}", err=True)
    click.echo(f"report: {path}")


def _settings(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``--set KEY=VALUE`` pairs as an analysis's settings; each VALUE read as a TOML value (``2.0``, ``true``,
    ``[1, 2]``, ``"text"``), else as text."""
    import tomllib

    out: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--set takes KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value
    return out


@functools.cache
def _generated(entry: registry.AnalysisEntry) -> click.Command:
    """The command of a registered per-model analysis (``needs="pair"|"snn"|"ann"``), made once from its entry."""
    takes = {"pair": "an SNN and an ANN checkpoint (either order)", "snn": "an SNN checkpoint",
             "ann": "an ANN checkpoint"}[entry.needs]
    doc = (entry.fn.__doc__ or "").strip().split("\n")[0]

    @click.command(entry.name, help=f"{doc} (Registered analysis {entry.name!r}: {takes}.)".strip())
    @click.argument("checkpoints", nargs=2 if entry.needs == "pair" else 1, type=click.Path())
    @click.option("--set", "pairs", multiple=True, metavar="KEY=VALUE",
                  help="A setting of the analysis, as in an experiment file's [[analysis]] entry (repeatable).")
    @click.option("--n-images", default=None, type=int,
                  help="Test images given to the analysis (the first N) [default: the recipe's CKA images].")
    @_common
    def cmd(checkpoints, pairs, n_images, out, name, data_root, device, recipe, no_plot, quiet) -> None:
        def go() -> A.Result:
            settings = _settings(pairs)
            check_settings(entry, settings, f"snncka {entry.name}")
            positive(n_images, "--n-images")
            subs = [A.Subject.load(c, data_root=data_root, device=device) for c in checkpoints]
            rec, _ = A.resolve_recipe(recipe, subs)
            model = " vs ".join(s.label for s in sorted(subs, key=lambda s: not s.spiking))  # e.g. SNN x vs ANN x
            return call_analysis(entry, subs, n_images or rec.cka_images, settings, model)

        res = _run(go, out, name, entry.name, recipe)
        _finish(res, out, name or entry.name, no_plot)  # named after the analysis, as the runner names it

    return cmd


def analysis_command(name: str) -> click.Command | None:
    """The command of registered analysis ``name``: its own (above) or, for a per-model analysis, one made from
    its function; None for an analysis that needs a whole experiment run (e.g. the paper's accuracy tables)."""
    entry = registry.analyses().get(name)
    if entry is None or not entry.on_checkpoints:
        return None
    return _COMMANDS.get(name) or (_generated(entry) if entry.needs != "all" else None)


class AnalysisGroup(click.Group):
    """A group that also has a command for every registered analysis that runs on checkpoints, a plugin's too:
    the ``--plugin`` modules are imported before a command is looked up."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *(n for n in registry.analyses() if analysis_command(n))})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or analysis_command(cmd_name)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if ctx.params.get("plugins"):
            from ..experiment import import_plugins

            with user_errors():
                import_plugins(list(ctx.params["plugins"]), Path.cwd())
        return super().resolve_command(ctx, args)


def register(group: click.Group) -> None:
    """Add ``snncka report`` to the group (an ``AnalysisGroup`` has the analyses' commands by itself)."""
    group.add_command(report_cmd)
