r"""PatternNet and PatternAttribution: signal rules with learned patterns.

Both are *signal* rules (like `Gradient`): activations propagate by their derivative (a
ReLU passes the signal where its input was positive) and pooling by its gradient. At each
dense or convolution node they use the node's pattern $A$ (`lrpfn.patterns.fit`), looked
up by the node name `layer.name`, converted to the layer's device and dtype. Parameter-free
linear nodes (pooling, sums) have no pattern: there both rules equal `Gradient`.

Reference:
    Kindermans et al. 2018, "Learning how to explain neural networks: PatternNet and
    PatternAttribution", ICLR, Sec. 5.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from ..errors import InvalidRuleError
from ..layers import Layer
from ._base import Activations
from ._pattern_values import Patterns

__all__ = ["PatternAttribution", "PatternNet"]


def _as_patterns(rule: str, patterns: object) -> Patterns:
    if isinstance(patterns, Patterns):
        return patterns
    if isinstance(patterns, Mapping):
        return Patterns(patterns)
    raise InvalidRuleError(
        f"{rule} needs patterns, got {type(patterns).__name__}. Fix: "
        f"{rule}(lrpfn.patterns.fit(model, data)) or {rule}(lrpfn.patterns.Patterns({{name: tensor}}))."
    )


def pattern_for(patterns: Patterns, layer: Layer, rule: str) -> Tensor:
    """The pattern of `layer` on its device and dtype; `InvalidRuleError` if it is missing
    or not shaped like the layer's weight."""
    expected = tuple(layer.weight.shape)
    if layer.name not in patterns:
        known = ", ".join(patterns.keys()) or "none"
        raise InvalidRuleError(
            f"{rule} has no pattern for node {layer.name!r} (expected shape {expected}); "
            f"the patterns cover: {known}. Fix: fit the patterns on this model "
            "(lrpfn.patterns.fit covers dense and convolution nodes), or give this node "
            "another rule, e.g. {name: lrpfn.rules.Gradient()} in a composite."
        )
    pattern = patterns[layer.name]
    if tuple(pattern.shape) != expected:
        raise InvalidRuleError(
            f"the pattern of node {layer.name!r} has shape {tuple(pattern.shape)}, but {rule} "
            f"needs the shape of its weight {expected}. Fix: fit the patterns on this model."
        )
    return pattern.to(device=layer.weight.device, dtype=layer.weight.dtype)


@dataclass(frozen=True, eq=False)
class PatternNet:
    r"""PatternNet: the signal backpropagated through the patterns.

    Definition:
        $$ R_{\text{in}} = f^\top(R; A) $$
        the transposed layer with the pattern $A$ in place of the weight $W$. At the input
        this estimates the signal component of $x$ that the explained output detects.

    Arguments:
        patterns: a `lrpfn.patterns.Patterns` (or a mapping `{node name: tensor}`).

    Reference:
        Kindermans et al. 2018, ICLR, Sec. 5 (PatternNet).
    """

    patterns: Patterns
    signal: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "patterns", _as_patterns("PatternNet", self.patterns))

    def __call__(self, layer: Layer, activations: Activations, relevance: Tensor) -> Tensor:
        if not layer.has_parameters:
            return layer.transpose(relevance, activations.input)
        pattern = pattern_for(self.patterns, layer, "PatternNet")
        return layer.transpose(relevance, activations.input, pattern)


@dataclass(frozen=True, eq=False)
class PatternAttribution:
    r"""PatternAttribution: the backward pass with the weights times the patterns.

    Definition:
        $$ R_{\text{in}} = f^\top(R; W \odot A) $$
        For one neuron $y = w^\top x$ with $R = y$ this is $y\,(w \odot a)$
        $= w \odot (x - x_0)$: the deep Taylor decomposition at the root point
        $x_0 = x - a\,y$, which removes the signal $a y$ the neuron detects.

    Arguments:
        patterns: a `lrpfn.patterns.Patterns` (or a mapping `{node name: tensor}`).

    Reference:
        Kindermans et al. 2018, ICLR, Sec. 5 (PatternAttribution).
    """

    patterns: Patterns
    signal: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "patterns", _as_patterns("PatternAttribution", self.patterns))

    def __call__(self, layer: Layer, activations: Activations, relevance: Tensor) -> Tensor:
        if not layer.has_parameters:
            return layer.transpose(relevance, activations.input)
        pattern = pattern_for(self.patterns, layer, "PatternAttribution")
        return layer.transpose(relevance, activations.input, layer.weight * pattern)
