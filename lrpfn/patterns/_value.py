"""`lrpfn.patterns.Patterns`: the pattern value of the rules, plus `from_list`.

`Patterns.from_list(model, tensors)` reads patterns given as a list in the model's order
(TorchLRP's format: one array per `nn.Linear`/`nn.Conv2d`, as its `fit_patternnet` returns
and its example pickles them); `lrpfn.torchlrp.load_patterns` reads such a pickle. Naming
them needs the model's canonical graph, so it lives here, above the engine, and not
beside the value in `lrpfn.rules`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..engine import attribute, padded_convolution, prepare
from ..errors import InvalidRuleError
from ..rules import Gradient, Patterns as PatternValues

__all__ = ["Patterns"]


class Patterns(PatternValues):
    """The pattern $A$ of every fitted node, keyed by fx node name (see
    `lrpfn.rules.Patterns` for the attributes); `from_list` names a list of patterns."""

    @classmethod
    def from_list(cls, model: torch.nn.Module, tensors: Sequence[Any]) -> Patterns:
        """Patterns from a list in the model's order, one per dense or 2d-convolution node.

        TorchLRP's `fit_patternnet` returns, and its example pickles, one pattern per
        `Linear`/`Conv2d` of an `lrp.Sequential` in module order, each shaped like that
        layer's weight. This names them: the $i$-th array becomes the pattern of the $i$-th
        `F.linear`/`F.conv2d` node of the model's canonical graph, in graph (call) order,
        which for a `Sequential` is its module order.

        Arguments:
            model: the plain torch model the patterns belong to (`lrpfn.torchlrp.convert`
                turns a TorchLRP model into one).
            tensors: tensors or NumPy arrays, one per dense/convolution node.

        Returns:
            `Patterns` keyed by node name (kind "custom").
        """
        names_and_shapes = _dense_and_conv2d_nodes(model)
        if not isinstance(tensors, Sequence) or isinstance(tensors, (str, bytes)):
            raise InvalidRuleError(
                f"Patterns.from_list needs a list of tensors or arrays, got {type(tensors).__name__}."
            )
        if len(tensors) != len(names_and_shapes):
            described = ", ".join(f"{name} {shape}" for name, shape in names_and_shapes)
            raise InvalidRuleError(
                f"got {len(tensors)} patterns for a model with {len(names_and_shapes)} dense and "
                f"2d-convolution nodes ({described}). Fix: pass the patterns fitted on this "
                "model, one per Linear/Conv2d in module order."
            )
        named = {}
        for index, ((name, shape), value) in enumerate(zip(names_and_shapes, tensors, strict=True)):
            tensor = _as_tensor(value, index)
            if tuple(tensor.shape) != shape:
                raise InvalidRuleError(
                    f"pattern {index} has shape {tuple(tensor.shape)}, but node {name!r} "
                    f"(dense/conv node {index} in graph order) has weight shape {shape}. Fix: "
                    "pass the patterns fitted on this model, in its module order."
                )
            named[name] = tensor
        return cls(named)


def _as_tensor(value: Any, index: int) -> Tensor:
    if isinstance(value, Tensor):
        tensor = value
    else:
        try:
            tensor = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as error:
            raise InvalidRuleError(
                f"pattern {index} is a {type(value).__name__}, not a tensor or an array: {error}"
            ) from error
    if not tensor.is_floating_point():
        raise InvalidRuleError(f"pattern {index} must be floating, got dtype {tensor.dtype}.")
    return tensor


def _dense_and_conv2d_nodes(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """`(node name, weight shape)` of every `F.linear` and 2d-convolution node, in graph order."""
    import torch.nn.functional as F

    plan = prepare(model, Gradient())
    found = []
    for node in plan.module.graph.nodes:
        if node.name not in plan.rules:
            continue
        weight_node = node.args[1] if len(node.args) > 1 else None
        if (
            node.target in (F.linear, F.conv2d, padded_convolution)
            and getattr(weight_node, "op", None) == "get_attr"
        ):
            weight = attribute(plan.module, weight_node.target)
            if node.target is F.linear or weight.ndim == 4:
                found.append((node.name, tuple(weight.shape)))
    return found
