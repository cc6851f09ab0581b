"""Which activations the forward pass drops and the backward walk recomputes.

An input gradient keeps one tensor per ReLU; LRP reads both a layer's output $z$ (the
denominator) and the next layer's input $a = g(z)$ after an elementwise activation $g$.
Nothing forces it to keep both: $z$ is kept for its own layer's rule anyway, so $a$ is
recomputed from it in one elementwise pass when the walk first needs it, and freed after
its last read. Results are identical (the same op on the same value); peak memory holds
about one tensor per layer instead of two.

A node is recomputed when all of these hold:

- its handler passes relevance elementwise (kind "pass": ReLU, GELU, dropout in eval,
  ...), so that its own backward step reads no value;
- its only input node is read by that input's own backward step (a linear, sum or
  product node reads its output $z$): the walk reaches the input's step only after every
  step that reads the activation (they all come later in the graph), so $z$ is still held
  whenever $a$ is recomputed;
- some backward step reads it.

A product with one data input (a constant scale: ConvNeXt's layer scale $\\gamma \\odot x$)
is recomputed too: its own step reads only its input's shape, its input (kept for that
step) is held until the walk reaches it, after every later step that reads the product,
and its other operands are parameters. A recomputed value may be computed from another
(the walk recomputes recursively), e.g. an identity after the layer scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import fx

from ._handlers import Handler

__all__ = ["recomputed_nodes"]


def recomputed_nodes(
    handlers: Mapping[fx.Node, Handler],
    backward_uses: Mapping[fx.Node, int],
    data_inputs: Mapping[fx.Node, Sequence[fx.Node]] | None = None,
) -> frozenset:
    """The elementwise nodes whose value the walk recomputes from their kept input."""
    recomputed = set(_constant_scales(handlers, backward_uses, data_inputs or {}))
    for node, handler in handlers.items():
        if handler.kind != "pass" or node not in backward_uses:
            continue
        inputs = node.all_input_nodes
        if len(inputs) != 1 or inputs[0] not in handlers:
            continue
        source = handlers[inputs[0]]
        if source.needs_output:
            recomputed.add(node)
    return frozenset(recomputed)


def _constant_scales(
    handlers: Mapping[fx.Node, Handler],
    backward_uses: Mapping[fx.Node, int],
    data_inputs: Mapping[fx.Node, Sequence[fx.Node]],
) -> set:
    """Products of one data input and parameters whose data input their own step keeps."""
    found = set()
    for node, handler in handlers.items():
        inputs = data_inputs.get(node, ())
        if handler.kind != "product" or not handler.keeps_inputs or len(inputs) != 1:
            continue
        source = handlers.get(inputs[0])
        if source is None or source.kind in ("pass", "product"):  # kept, not recomputed
            continue
        others = [item for item in node.all_input_nodes if item is not inputs[0]]
        if node in backward_uses and all(item.op == "get_attr" for item in others):
            found.add(node)
    return found
