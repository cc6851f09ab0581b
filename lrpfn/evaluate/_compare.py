r"""Compare explanation methods on one model and data: AOPC, conservation, time.

For each method, the relevance of the batch is timed, its conservation error measured,
$\frac{1}{N} \sum_i |\sum_j R_{ij} - f_{t_i}(x_i)| \,/\, |f_{t_i}(x_i)|$ (0 for a
conservative rule without biases), and region perturbation run most relevant first and
least relevant first; one random order is the baseline (where $f_{t_i}(x_i) = 0$ the
conservation error is the absolute one). `plot_curves` draws the mean curves.
"""

from __future__ import annotations

import csv
import functools
import inspect
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..engine import lrp, prepare
from ..image import finish_figure
from ._checks import InvalidEvaluationError, check_images, explained_logit, target_index
from ._perturbations import Perturbation
from ._region import PerturbationCurves, region_perturbation

__all__ = ["Comparison", "MethodScores", "compare", "plot_curves"]

CSV_COLUMNS = ("method", "aopc_morf", "aopc_lerf", "conservation_error", "ms_per_sample")


@dataclass(frozen=True)
class MethodScores:
    """One method's row of a `Comparison` (AOPC and errors are means over the samples;
    the time is that of explaining the whole batch at once, over the batch size)."""

    name: str
    aopc_morf: float
    aopc_lerf: float
    conservation_error: float
    seconds_per_sample: float
    morf: PerturbationCurves
    lerf: PerturbationCurves


@dataclass(frozen=True)
class Comparison:
    """The result of `compare`: a row per method and the random-order baseline.

    `str(comparison)` is the table; `to_csv(path)` writes it (the baseline is the row
    "random order", whose AOPC fills both AOPC columns).
    """

    methods: tuple[MethodScores, ...]
    random: PerturbationCurves

    def __str__(self) -> str:
        width = max([len("random order"), *(len(row.name) for row in self.methods)])
        lines = [
            f"{'method':<{width}}  {'AOPC MoRF':>9}  {'AOPC LeRF':>9}  "
            f"{'conservation error':>18}  {'ms/sample':>9}"
        ]
        for row in self.methods:
            lines.append(
                f"{row.name:<{width}}  {row.aopc_morf:9.3f}  {row.aopc_lerf:9.3f}  "
                f"{row.conservation_error:18.2e}  {1e3 * row.seconds_per_sample:9.3f}"
            )
        baseline = float(self.random.aopc.mean())
        lines.append(f"{'random order':<{width}}  {baseline:9.3f}  {baseline:9.3f}")
        return "\n".join(lines)

    def to_csv(self, path: str | Path) -> Path:
        """Write the table as CSV (columns `CSV_COLUMNS`) and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        baseline = float(self.random.aopc.mean())
        with path.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(CSV_COLUMNS)
            for row in self.methods:
                writer.writerow(
                    [row.name, row.aopc_morf, row.aopc_lerf, row.conservation_error,
                     1e3 * row.seconds_per_sample]
                )  # fmt: skip
            writer.writerow(["random order", baseline, baseline, "", ""])
        return path


def compare(
    model: nn.Module,
    x: Tensor,
    methods: Mapping[str, Any],
    target: int | Tensor | None = None,
    *,
    patch: int | tuple[int, int] = 8,
    steps: int | None = None,
    perturbation: float | str | Perturbation = "uniform",
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> Comparison:
    """Score every method of `methods` on the images `x` with region perturbation.

    Arguments:
        model: the classifier, in eval mode.
        x: the images, `(batch, C, H, W)`.
        methods: `{name: method}`; a method is a rule mapping (explained with
            `lrpfn.lrp`, prepared once, outside the timing), or a function with one
            required argument `explain(x) -> relevance` (explaining each sample's
            prediction) or two, `explain(x, target) -> relevance`.
        target: the explained class: None (each sample's prediction), an int or a
            LongTensor `(batch,)`.
        patch, steps, perturbation, seed, batch_size: as in `region_perturbation`.
        progress: a progress bar over the methods on stderr.

    Returns:
        A `Comparison`.
    """
    check_images(x)
    if not methods:
        raise InvalidEvaluationError("methods is empty: pass {name: rules or function}.")
    with torch.no_grad():
        logits = model(x)
    index = target_index(target, logits)
    logit = explained_logit(logits, index)
    options = dict(patch=patch, steps=steps, perturbation=perturbation, seed=seed)
    options["batch_size"] = batch_size
    rows = []
    from tqdm import tqdm

    bar = tqdm(methods.items(), unit="method", file=sys.stderr, disable=not progress or None)
    for name, method in bar:
        bar.set_postfix_str(name)
        explain = _explainer(name, method, model, target)
        relevance, seconds = _timed(explain, x, index)
        error = _conservation_error(relevance, logit)
        morf = region_perturbation(model, x, relevance, index, order="morf", **options)
        lerf = region_perturbation(model, x, relevance, index, order="lerf", **options)
        rows.append(
            MethodScores(
                name, float(morf.aopc.mean()), float(lerf.aopc.mean()), float(error.mean()),
                seconds / len(x), morf, lerf,
            )
        )  # fmt: skip
    unordered = torch.zeros_like(x[:, 0])
    random = region_perturbation(model, x, unordered, index, order="random", **options)
    return Comparison(tuple(rows), random)


def _explainer(name: str, method: Any, model: nn.Module, target) -> Callable:
    """`(x, target) -> relevance` for a rule mapping or an explanation function."""
    arity = _required_arguments(method)
    if arity == 1:
        if target is not None:
            raise InvalidEvaluationError(
                f"method {name!r} takes only x, so it explains the prediction, but target= "
                "was given: make it a function (x, target) -> relevance."
            )
        return lambda x, index: method(x)
    if arity == 2:
        return method
    plan = prepare(model, method)
    return lambda x, index: lrp(plan, x, target=index)


def _required_arguments(method: Any) -> int | None:
    """The number of required positional arguments of a plain function, bound method or
    partial; None for anything else (rules, dicts, composites, names)."""
    plain = inspect.isfunction(method) or inspect.ismethod(method)
    if not plain and not isinstance(method, functools.partial):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(
        1
        for parameter in inspect.signature(method).parameters.values()
        if parameter.kind in kinds and parameter.default is inspect.Parameter.empty
    )


def _conservation_error(relevance: Tensor, logit: Tensor) -> Tensor:
    """$|\\sum_j R_{ij} - f(x_i)| / |f(x_i)|$ per sample; the absolute error where
    $f(x_i) = 0$ (never a division by zero)."""
    error = (relevance.flatten(1).sum(1).to(logit.dtype) - logit).abs()
    scale = logit.abs()
    return torch.where(scale > 0, error / torch.where(scale > 0, scale, 1.0), error)


def _timed(explain: Callable, x: Tensor, index: Tensor) -> tuple[Tensor, float]:
    """The relevance of `x` and the seconds it took, after an untimed warm-up call on
    the first sample (first-call costs are not per-sample costs)."""
    explain(x[:1], index[:1])
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    started = time.perf_counter()
    relevance = explain(x, index)
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    return relevance.detach(), time.perf_counter() - started


def plot_curves(
    comparison: Comparison, path: str | Path | None = None, *, title: str | None = None
):
    """The mean curves $\\frac{1}{N} \\sum_i f(x_i^k)$ over the steps k: most relevant
    first (left) and least relevant first (right), one line per method, the random order
    dashed. Needs matplotlib (imported here only).

    Arguments:
        comparison: the result of `compare`.
        path: where to save the figure (PNG); None to only return it.
        title: a title above both panels.

    Returns:
        The `matplotlib.figure.Figure`.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(11, 4.6))
    axes = figure.subplots(1, 2, sharey=True)
    colours = colormaps["tab20"]
    baseline = comparison.random.curves.double().mean(0).cpu()
    for axis, direction in zip(axes, ("morf", "lerf"), strict=True):
        for number, row in enumerate(comparison.methods):
            result = row.morf if direction == "morf" else row.lerf
            mean = result.curves.double().mean(0).cpu()
            aopc = row.aopc_morf if direction == "morf" else row.aopc_lerf
            axis.plot(mean, color=colours(number % 20), label=f"{row.name} ({aopc:.2f})")
        random_aopc = float(comparison.random.aopc.mean())
        axis.plot(baseline, "k--", label=f"random order ({random_aopc:.2f})")
        heading = "most relevant first" if direction == "morf" else "least relevant first"
        axis.set_title(f"{heading} (AOPC in brackets)", fontsize=9)
        axis.set_xlabel("perturbation steps k (patches perturbed)")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6, ncol=1 if len(comparison.methods) < 9 else 2, loc="lower left")
    axes[0].set_ylabel("mean explained logit f(x^k)")
    return finish_figure(figure, path, title, title_size=10, dpi=110)
