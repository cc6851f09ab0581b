"""Evaluating explanations: faithfulness by region perturbation, sanity by parameter
randomisation, and a comparison of methods.

    from lrpfn import evaluate

    result = evaluate.region_perturbation(model, x, relevance, patch=4, steps=16,
                                          order="morf", perturbation="uniform")
    result.curves, result.aopc              # (batch, steps + 1), (batch,)
    check = evaluate.parameter_randomisation(model, x, rules=composites.epsilon_plus())
    check.layers, check.similarity["spearman"]   # (layers, batch)
    table = evaluate.compare(model, x, {"epsilon": rules.Epsilon(), "plus": "epsilon_plus"})
    print(table); evaluate.plot_curves(table, "curves.png")

Everything runs batched on the model's own device; the model is never modified.
"""

from ._checks import InvalidEvaluationError
from ._compare import Comparison, MethodScores, compare, plot_curves
from ._perturbations import (
    Constant,
    GaussianBlur,
    Mean,
    Perturbation,
    UniformNoise,
    as_perturbation,
)
from ._randomisation import Randomisation, parameter_randomisation, parametrised_layers, reset
from ._randomisation_plot import plot_randomisation
from ._region import ORDERS, PerturbationCurves, region_perturbation
from ._similarity import average_ranks, spearman, ssim

__all__ = [
    "ORDERS",
    "Comparison",
    "Constant",
    "GaussianBlur",
    "InvalidEvaluationError",
    "Mean",
    "MethodScores",
    "Perturbation",
    "PerturbationCurves",
    "Randomisation",
    "UniformNoise",
    "as_perturbation",
    "average_ranks",
    "compare",
    "parameter_randomisation",
    "parametrised_layers",
    "plot_curves",
    "plot_randomisation",
    "region_perturbation",
    "reset",
    "spearman",
    "ssim",
]
