"""Concept Relevance Propagation: heatmaps conditioned on latent channels.

    from lrpfn import concepts

    relevance = concepts.importance(plan, x, None, "layer4")      # (batch, channels)
    top = concepts.top(relevance, 5)                               # the 5 most relevant
    maps = concepts.conditional(plan, x, None, top.conditions("layer4"))  # (5, *x.shape)
    where = concepts.receptive_field(maps)                         # (5, batch, H, W) bool

    atlas = concepts.atlas(model, dataset, rules, ["layer3", "layer4"], "r.atlas.zarr")
    indices, scores = atlas.top("layer4", "relevance_max")          # (channels, k) each
    refs = atlas.references("layer4", 312, n=8)                      # crops and heatmaps

A condition `{node: channels}` keeps the relevance of the listed channels at that node
and zeroes the rest before the walk goes on; k conditions are computed in one call, with
the forward pass shared and the k walks vmapped (Achtibat et al. 2023, Nature Machine
Intelligence 5). The atlas reduces a whole data set to every concept's top-k samples
(reference samples), into a Zarr store, in one process or under `torchrun`.
"""

from ..image import plot_atlas
from ._atlas import atlas
from ._atlas_view import Atlas, load_atlas
from ._conditional import conditional, importance
from ._nodes import InvalidConditionError
from ._prune import PruningError, prune, weight_magnitude
from ._references import References
from ._regions import TopConcepts, bounding_box, receptive_field, top
from ._scores import Heads, Neurons
from ._text_atlas import text_atlas

__all__ = [
    "Atlas",
    "Heads",
    "InvalidConditionError",
    "Neurons",
    "PruningError",
    "References",
    "TopConcepts",
    "atlas",
    "bounding_box",
    "conditional",
    "importance",
    "load_atlas",
    "plot_atlas",
    "prune",
    "receptive_field",
    "text_atlas",
    "top",
    "weight_magnitude",
]
