"""lrpfn: functional Layer-wise Relevance Propagation for PyTorch.

    import lrpfn
    from lrpfn import rules, composites

    R = lrpfn.lrp(model, x, rules.Epsilon(1e-6))                 # input relevance
    R = lrpfn.lrp(model, x, composites.epsilon_gamma_box(low=-3.0, high=3.0), target=3)
    every = lrpfn.relevances(model, x, rules.Epsilon(1e-6))      # relevance at every node

The model is captured once as a flat `torch.fx` graph; an explicit reverse walk over it
applies a pure rule `(layer, activations, relevance) -> relevance` per node. The model is
never modified and no global state exists.
"""

from . import (
    composites,
    concepts,
    datasets,
    errors,
    evaluate,
    handlers,
    layers,
    patterns,
    rules,
    torchlrp,
)
from ._version import __version__
from .engine.api import lrp, prepare, relevances
from .engine.plan import Plan
from .engine.relevance import Region
from .ops.handler import Handler
from .ops.table import HANDLERS

__all__ = [
    "HANDLERS",
    "Handler",
    "Plan",
    "Region",
    "__version__",
    "composites",
    "concepts",
    "datasets",
    "errors",
    "evaluate",
    "handlers",
    "layers",
    "lrp",
    "patterns",
    "prepare",
    "relevances",
    "rules",
    "torchlrp",
]
