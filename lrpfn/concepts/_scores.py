"""Which axis of a layer holds its concepts, and each sample's score per concept.

A layer's concepts are its channels (a convolution's axis 1), its neurons (a dense
layer's axis 1; a transformer's feature axis, the last) or its attention heads (a
transformer's features split into `heads` equal groups). Per sample, a layer's value
$v$ (its activation or its relevance) gives each concept $c$ two scores over the
positions $p$ of that concept (spatial positions, tokens, a head's features):

$$ s^{\\text{sum}}_c = \\sum_p v_{c,p}, \\qquad s^{\\text{max}}_c = \\max_p v_{c,p}, $$

each normalised per sample by the sum of absolute scores over the layer's concepts,
$\\hat s_c = s_c / (\\sum_{c'} |s_{c'}| + 10^{-10})$, as zennit-crp's `abs_norm` does
(Achtibat et al. 2023, "From attribution maps to human-understandable explanations
through Concept Relevance Propagation", Nature Machine Intelligence 5).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ._nodes import InvalidConditionError

__all__ = [
    "NORMALISER",
    "Heads",
    "Layer",
    "Neurons",
    "concept_axis",
    "layer_name",
    "normalised",
    "scores",
]

NORMALISER = 1e-10  # zennit-crp's constant in abs_norm


@dataclass(frozen=True)
class Neurons:
    """The neurons of a transformer layer: its last (feature) axis, e.g. the hidden units
    of an MLP `(batch, tokens, features)`; positions are the tokens.

    Attributes:
        name: the node or module name.
    """

    name: str
    kind = "neuron"


@dataclass(frozen=True)
class Heads:
    """The attention heads of a transformer layer whose last axis holds `heads` heads'
    features side by side (`(batch, tokens, heads * head_dim)`, e.g. the input of the
    attention's output projection); positions are the tokens and a head's features.

    Attributes:
        name: the node or module name.
        heads: the number of heads.
    """

    name: str
    heads: int
    kind = "head"

    def __post_init__(self) -> None:
        if isinstance(self.heads, bool) or not isinstance(self.heads, int) or self.heads < 1:
            raise InvalidConditionError(f"heads must be a positive int, got {self.heads!r}.")


Layer = str | Neurons | Heads


def layer_name(layer: Layer) -> str:
    return layer if isinstance(layer, str) else layer.name


def concept_axis(layer: Layer, value: Tensor) -> tuple[Tensor, str]:
    """`value` as `(batch, concepts, positions)`, and the kind of concept."""
    if not isinstance(value, Tensor) or value.ndim < 2:
        shape = getattr(value, "shape", type(value).__name__)
        raise InvalidConditionError(
            f"layer {layer_name(layer)!r} has a value of shape {shape}, without a concept axis."
        )
    batch = value.shape[0]
    if isinstance(layer, Neurons):
        return value.movedim(-1, 1).reshape(batch, value.shape[-1], -1), "neuron"
    if isinstance(layer, Heads):
        if value.shape[-1] % layer.heads:
            raise InvalidConditionError(
                f"layer {layer.name!r} has {value.shape[-1]} features, not a multiple of "
                f"heads={layer.heads}."
            )
        split = value.reshape(*value.shape[:-1], layer.heads, -1).movedim(-2, 1)
        return split.reshape(batch, layer.heads, -1), "head"
    kind = "neuron" if value.ndim == 2 else "channel"
    return value.reshape(batch, value.shape[1], -1), kind


def normalised(scores: Tensor) -> Tensor:
    """$s_c / (\\sum_{c'} |s_{c'}| + 10^{-10})$ per sample (row)."""
    return scores / (scores.abs().sum(dim=1, keepdim=True) + NORMALISER)


def scores(layer: Layer, value: Tensor) -> tuple[Tensor, Tensor]:
    """The normalised sum and max scores `(batch, concepts)` of a layer's value."""
    flat, _ = concept_axis(layer, value)
    return normalised(flat.sum(dim=2)), normalised(flat.amax(dim=2))
