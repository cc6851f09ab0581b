r"""The cascading model parameter randomisation test of Adebayo et al. (2018).

The layers with parameters are randomised one after another from the output backwards
(the order of the captured graph, not of module registration), cumulatively: step $k$
explains the model whose last $k$ layers have random parameters. Each step's explanation
is compared with the original one by similarities of the maps (`spearman`, `ssim`): an
explanation that stays similar while the model it explains is destroyed does not explain
the model.

The maps are the relevance summed over channels; with `absolute=True` (the default, as
Adebayo et al. and Quantus) their absolute values. For SSIM each map is divided by its
largest absolute value (data range 1 for absolute maps, 2 for signed ones).

The user's model is never modified: a deep copy is randomised, and the global random
state is restored afterwards (`torch.random.fork_rng`).

Reference: J. Adebayo, J. Gilmer, M. Muelly, I. Goodfellow, M. Hardt, B. Kim, "Sanity
checks for saliency maps", NeurIPS 2018.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..engine import TRACE_LOCK, capture, lrp
from ..errors import TrainingModeError
from ._checks import InvalidEvaluationError, check_images, heatmaps, target_index
from ._similarity import spearman, ssim

__all__ = ["Randomisation", "parameter_randomisation", "parametrised_layers", "reset"]

Explain = Callable[[nn.Module, Tensor, Tensor], Tensor]
Randomize = Callable[[nn.Module, int], None]


@dataclass(frozen=True)
class Randomisation:
    """The result of `parameter_randomisation`.

    Attributes:
        layers: the module randomised at each step (cumulatively), output layer first.
        similarity: `{name: (steps, batch)}`, each step's similarity to the original map.
        target: `(batch,)`, the explained class (the original model's, kept at every step).
    """

    layers: tuple[str, ...]
    similarity: Mapping[str, Tensor]
    target: Tensor


def reset(module: nn.Module, seed: int) -> None:
    """The default randomisation: the module's own initialisation (`reset_parameters`),
    seeded with `seed` (inside `parameter_randomisation`'s forked random state)."""
    if not hasattr(module, "reset_parameters"):
        raise InvalidEvaluationError(
            f"{type(module).__name__} has no reset_parameters(): pass randomize=, a function "
            "(module, seed) -> None that overwrites the module's parameters in place."
        )
    torch.manual_seed(seed)
    module.reset_parameters()


def parametrised_layers(model: nn.Module) -> tuple[str, ...]:
    """The qualified names of the modules that own parameters, in the order the captured
    graph calls them (each once)."""
    with TRACE_LOCK.tracing():
        graph = capture(model).module  # capture returns a Captured (the models branch)
    names: list[str] = []
    for node in graph.graph.nodes:
        if node.op != "call_module" or node.target in names:
            continue
        if any(True for _ in graph.get_submodule(node.target).parameters(recurse=False)):
            names.append(node.target)
    return tuple(names)


def parameter_randomisation(
    model: nn.Module,
    x: Tensor,
    rules: Any = None,
    target: int | Tensor | None = None,
    *,
    explain: Explain | None = None,
    similarity: Sequence[str] = ("spearman", "ssim"),
    absolute: bool = True,
    seed: int = 0,
    randomize: Randomize = reset,
) -> Randomisation:
    """Randomise the layers of a copy of `model` from the output backwards and compare
    each step's explanation with the original.

    Arguments:
        model: the classifier (never modified), in eval mode.
        x: the images, `(batch, C, H, W)`.
        rules: the rule mapping to explain with (`lrpfn.lrp(model, x, rules, target)`).
        target: the explained class: None (the original model's prediction), an int or a
            LongTensor `(batch,)`; the same class is explained at every step.
        explain: instead of `rules`, a function `(model, x, target) -> relevance`.
        similarity: names among "spearman" and "ssim".
        absolute: compare absolute maps.
        seed: layer k (0 = the output layer) is randomised with seed `seed + k`.
        randomize: `(module, seed) -> None`, overwrites a module's parameters in place
            (default: `reset`, the module's `reset_parameters`).

    Returns:
        `Randomisation` with `layers` and `similarity[name]` of shape `(layers, batch)`.
    """
    check_images(x)
    explain = _explainer(rules, explain)
    unknown = [name for name in similarity if name not in ("spearman", "ssim")]
    if unknown or not similarity:
        raise InvalidEvaluationError(
            f"similarity must name 'spearman' and/or 'ssim', got {list(similarity)!r}."
        )
    if model.training:
        raise TrainingModeError("the model is in training mode: call model.eval() first.")
    with torch.no_grad():
        index = target_index(target, model(x))
    layers = tuple(reversed(parametrised_layers(model)))
    original = _maps(explain(model, x, index), x, absolute)
    randomised = copy.deepcopy(model)
    scores: dict[str, list[Tensor]] = {name: [] for name in similarity}
    devices = [x.device] if x.device.type == "cuda" else []
    for step, name in enumerate(layers):
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            randomize(randomised.get_submodule(name), seed + step)
        maps = _maps(explain(randomised, x, index), x, absolute)
        for measure in similarity:
            scores[measure].append(_similarity(measure, original, maps, absolute))
    stacked = {name: torch.stack(values) for name, values in scores.items()}
    return Randomisation(layers, stacked, index)


def _explainer(rules: Any, explain: Explain | None) -> Explain:
    if (rules is None) == (explain is None):
        raise InvalidEvaluationError(
            "pass either rules= (a rule mapping for lrpfn.lrp) or explain= (a function "
            "(model, x, target) -> relevance), exactly one of them."
        )
    if explain is not None:
        return explain
    return lambda model, x, target: lrp(model, x, rules, target)


def _maps(relevance: Tensor, x: Tensor, absolute: bool) -> Tensor:
    maps = heatmaps(relevance.detach(), x).double()
    return maps.abs() if absolute else maps


def _similarity(measure: str, original: Tensor, maps: Tensor, absolute: bool) -> Tensor:
    if measure == "spearman":
        return spearman(original, maps)
    return ssim(_normalised(original), _normalised(maps), data_range=1.0 if absolute else 2.0)


def _normalised(maps: Tensor) -> Tensor:
    """Each map over its largest absolute value (an all-zero map stays zero)."""
    largest = maps.abs().flatten(1).amax(1)[:, None, None]
    return maps / torch.where(largest > 0, largest, torch.ones_like(largest))
