"""Select the one output to explain of a model that returns a mapping or a tuple.

`select_output(gm, output)` returns a copy of the graph whose output is the entry `output`
(a key of a returned dict or Hugging Face `ModelOutput`, or an index into a returned tuple
or list), and the key it chose. Without `output`, a mapping's "logits" entry is chosen (a
warning says so), and so is the only entry of a one-entry mapping (torchvision's
segmentation models return `{"out": ...}`); anything else is left for the forward pass to
refuse with the list of entries.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from torch import fx

from ..errors import InvalidTargetError

__all__ = ["entries", "select_output"]


def entries(gm: fx.GraphModule) -> Any:
    """The value the graph returns: a node, or a mapping / tuple of them."""
    return next(node for node in gm.graph.nodes if node.op == "output").args[0]


def select_output(gm: fx.GraphModule, output: str | int | None) -> tuple[fx.GraphModule, Any]:
    """`(graph returning only entry `output`, the key or index chosen)`; `gm` itself and
    None where nothing is selected."""
    value = entries(gm)
    if output is None:
        if isinstance(value, Mapping) and isinstance(value.get("logits"), fx.Node):
            warnings.warn(
                "the model returns a mapping; lrpfn explains its 'logits' entry.", stacklevel=6
            )
            output = "logits"
        elif isinstance(value, Mapping) and len(value) == 1:
            output = next(iter(value))
        else:
            return gm, None
    if isinstance(value, fx.Node):
        raise InvalidTargetError(
            f"output={output!r}, but the model returns one tensor: pass output=None."
        )
    try:
        entry = value[output]
    except (KeyError, IndexError, TypeError) as error:
        known = list(value) if isinstance(value, Mapping) else list(range(len(value)))
        raise InvalidTargetError(
            f"output={output!r} is not among the model's outputs ({known}); pass one of them."
        ) from error
    if not isinstance(entry, fx.Node):
        raise InvalidTargetError(
            f"output={output!r} is {type(entry).__name__}, not one tensor: select further "
            "in a wrapper module, or pick another output."
        )
    graph = fx.Graph()
    values: dict[fx.Node, fx.Node] = {}
    copied = graph.graph_copy(gm.graph, values)
    graph.output(copied[output])
    return fx.GraphModule(gm, graph, class_name=type(gm).__name__), output
