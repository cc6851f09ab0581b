"""`Patterns`: the fitted signal directions of a model, one tensor per affine node.

An immutable value: a read-only mapping from graph node name (the names of
`lrpfn.prepare(model, rules).rules`) to a tensor shaped like that node's weight, plus how it
was made. It is saved as a plain dict of tensors and strings, so that
`torch.load(path, weights_only=True)` can read it back without unpickling code.

`Patterns.from_list(model, tensors)` reads patterns given as a list in the model's order
(TorchLRP's format: one array per `nn.Linear`/`nn.Conv2d`, as its `fit_patternnet` returns
and its example pickles them); `lrpfn.torchlrp.load_patterns` reads such a pickle.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from ..errors import InvalidInputError, InvalidRuleError

__all__ = ["Patterns"]

_FORMAT = "lrpfn.patterns"
_VERSION = 1


@dataclass(frozen=True, eq=False)
class Patterns:
    """The pattern $A$ of every fitted node, keyed by fx node name.

    `patterns[name]` is shaped like the node's (BatchNorm-folded) weight: row $o$ is the
    signal direction $a_o$ of output neuron (channel) $o$. Build one with
    `lrpfn.patterns.fit`, or from any tensors with `Patterns({name: tensor})`.

    Attributes:
        tensors: `{node name: pattern}`, read-only; the tensors are private copies.
        kind: "linear", "positive" (from `fit`) or "custom".
        mean_y: for `kind="positive"`, the definition of $\\bar y$ used: "regime" or "all".
        samples: the number of input samples the patterns were fitted on (0 if not fitted).
    """

    tensors: Mapping[str, Tensor]
    kind: str = "custom"
    mean_y: str | None = None
    samples: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.tensors, (list, tuple)):
            raise InvalidRuleError(
                f"Patterns got a {type(self.tensors).__name__} of {len(self.tensors)} patterns; a "
                "list (TorchLRP's format, one per Linear/Conv2d in the model's order) needs the "
                "model to name its nodes. Fix: lrpfn.patterns.Patterns.from_list(model, tensors)."
            )
        if not isinstance(self.tensors, Mapping):
            raise InvalidRuleError(
                f"Patterns needs a mapping {{node name: tensor}}, got {type(self.tensors).__name__}."
            )
        copied = {}
        for name, tensor in self.tensors.items():
            if not isinstance(name, str) or not isinstance(tensor, Tensor):
                raise InvalidRuleError(
                    f"Patterns maps node names (str) to tensors, got {name!r}: "
                    f"{type(tensor).__name__}."
                )
            if not tensor.is_floating_point():
                raise InvalidRuleError(
                    f"the pattern of node {name!r} must be a floating tensor, got {tensor.dtype}."
                )
            copied[name] = tensor.detach().clone()
        object.__setattr__(self, "tensors", MappingProxyType(copied))

    def __getitem__(self, name: str) -> Tensor:
        return self.tensors[name]

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def keys(self):
        return self.tensors.keys()

    def items(self):
        return self.tensors.items()

    def __repr__(self) -> str:
        shapes = ", ".join(f"{name}: {tuple(t.shape)}" for name, t in self.tensors.items())
        how = f"kind={self.kind!r}" + (f", mean_y={self.mean_y!r}" if self.mean_y else "")
        return f"Patterns({how}, samples={self.samples}, {{{shapes}}})"

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

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> Patterns:
        """A copy with every tensor moved to `device` and/or cast to `dtype`."""
        moved = {name: t.to(device=device, dtype=dtype) for name, t in self.tensors.items()}
        return Patterns(moved, self.kind, self.mean_y, self.samples)

    def save(self, path: str | os.PathLike) -> None:
        """Write the patterns to `path` (`torch.save` of a plain dict; see `load`)."""
        torch.save(
            {
                "format": _FORMAT,
                "version": _VERSION,
                "kind": self.kind,
                "mean_y": self.mean_y,
                "samples": self.samples,
                "tensors": dict(self.tensors),
            },
            path,
        )

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: Any = None) -> Patterns:
        """Read patterns written by `save`, with `torch.load(..., weights_only=True)`."""
        content = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(content, dict) or content.get("format") != _FORMAT:
            raise InvalidInputError(
                f"{os.fspath(path)!r} is not an lrpfn patterns file (written by "
                "Patterns.save); got a file without the 'lrpfn.patterns' format tag."
            )
        if content.get("version") != _VERSION:
            raise InvalidInputError(
                f"{os.fspath(path)!r} has patterns format version {content.get('version')!r}; "
                f"this lrpfn reads version {_VERSION}. Fit the patterns again."
            )
        return cls(content["tensors"], content["kind"], content["mean_y"], content["samples"])


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

    from .._api import prepare  # late: the rules import this module
    from .._canonical import attribute
    from .._ops import padded_convolution
    from ..rules import Gradient

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
