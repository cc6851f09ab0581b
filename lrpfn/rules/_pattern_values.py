"""`Patterns`: the fitted signal directions of a model, one tensor per affine node.

The value the pattern rules (`rules.PatternNet`, `rules.PatternAttribution`) read; it
lives beside them, below everything that captures models. `lrpfn.patterns.Patterns` is
this value plus `from_list`, which names a list of patterns by capturing the model.

An immutable value: a read-only mapping from graph node name (the names of
`lrpfn.prepare(model, rules).rules`) to a tensor shaped like that node's weight, plus how it
was made. It is saved as a plain dict of tensors and strings, so that
`torch.load(path, weights_only=True)` can read it back without unpickling code.

"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
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

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> Patterns:
        """A copy with every tensor moved to `device` and/or cast to `dtype`."""
        moved = {name: t.to(device=device, dtype=dtype) for name, t in self.tensors.items()}
        return type(self)(moved, self.kind, self.mean_y, self.samples)

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
