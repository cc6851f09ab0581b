r"""Recurrent ops: the time steps of a sequence and the gate x signal products.

After the recurrent pass (`lrpfn.capture.recurrent`) an LSTM, GRU or RNN is ordinary ops whose
handlers exist already (`F.linear` takes the node's linear rule, sigmoid and tanh pass
relevance on, the cell sum `f * c + i * g` splits in proportion to its terms), plus the
helpers of `lrpfn.ops.recurrent_functional`:

- `time_steps(x, steps, axis)` (the steps in blocks) and `step_at(steps, t, count)` route
  relevance exactly: the relevance of step $t$ goes to position $t$ of the sequence (no
  relevance: zero);
  `gate_slice(z, k, count)` likewise puts gate $k$'s relevance in its part of the gates'
  joint pre-activations $z$ (one linear map for all gates, whose rule then sees
  $R_z$ zero on the gates that took none: the same as one map per gate);
- `gate_times(gate, signal)` takes the node's product rule (`composites.PRODUCT`), told
  which operand is the gate: `rules.SignalTakesAll` (the default) gives
  $R_{\text{signal}} = R$, $R_{\text{gate}} = 0$, `rules.EqualSplit` half to each (Arras et
  al. 2017; 2019). Where the signal is a constant (an initial state that is not computed
  from the input, the bias of a GRU's candidate when the state is zero) its share is
  absorbed, as the bias share of a linear map is; it is never handed to the gate;
- `recurrent_result(structure)` hands the relevance of each part of a module's nested
  result back to the node that computed that part.

References:
    Arras et al. 2017, "Explaining recurrent neural network predictions in sentiment
    analysis", WASSA.
    Arras et al. 2019, "Evaluating recurrent neural network explanations", BlackboxNLP.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from . import recurrent_functional as ops
from .handler import Handler, Step

__all__ = ["HANDLERS"]


def _time_steps(step: Step) -> tuple:
    """The per-step relevances stacked on the time axis (zeros where none arrived)."""
    _, steps, axis = step.node.args
    size = ops.block_size(steps)
    blocks = [(None,) * size if block is None else block for block in step.relevance]
    parts = [part for block in blocks for part in block][:steps]
    present = next(part for part in parts if part is not None)
    zeros = torch.zeros_like(present)
    return (torch.stack([zeros if part is None else part for part in parts], axis),)


def _step_at(step: Step) -> tuple:
    """Relevance for step `t` of the `count` steps, None (no relevance) for the others and
    for the blocks without step `t`."""
    _, index, count = step.node.args
    size = ops.block_size(count)
    block: list[Tensor | None] = [None] * min(size, count - index // size * size)
    block[index % size] = step.relevance
    blocks: list[tuple | None] = [None] * -(-count // size)
    blocks[index // size] = tuple(block)
    return (tuple(blocks),)


def _gate_slice(step: Step) -> tuple:
    """Relevance of one gate's slice, placed in its part of the joint pre-activations."""
    _, index, count = step.node.args
    relevance = step.relevance
    width = relevance.shape[-1]
    full = relevance.new_zeros((*relevance.shape[:-1], width * count))
    full.narrow(-1, index * width, width).copy_(relevance)
    return (full,)


def _gate_times(step: Step) -> tuple:
    """The node's product rule on `(gate, signal)`, both at the output's shape (so the
    rule's choice of the signal never rests on a broadcast shape); each data operand's
    share summed back to its own shape, a constant operand's share absorbed."""
    shape = step.output.shape
    operands = tuple(
        operand if operand.shape == shape else operand.expand(shape) for operand in step.args[:2]
    )
    shares = step.rule(operands, step.output, step.relevance, (True, False))
    return tuple(
        shares[position].sum_to_size(step.args[position].shape)
        if shares[position] is not None
        else None
        for position in step.data_positions
    )


def _leaves(structure: Any) -> list:
    if isinstance(structure, (tuple, list)):
        return [leaf for item in structure for leaf in _leaves(item)]
    return [structure]


def _recurrent_result(step: Step) -> tuple:
    """Each input node's relevance: the relevance of the parts of the result it is."""
    pairs = zip(_leaves(step.node.args[0]), _leaves(step.relevance), strict=True)
    found: dict[Any, Tensor] = {}
    for node, relevance in pairs:
        if relevance is not None:
            found[node] = relevance if node not in found else found[node] + relevance
    return tuple(found.get(node) for node in step.input_nodes)


HANDLERS: Mapping[Any, Handler] = {
    ops.time_steps: Handler("route", _time_steps, keeps_inputs=False),
    ops.step_at: Handler("route", _step_at, keeps_inputs=False),
    ops.gate_slice: Handler("route", _gate_slice, keeps_inputs=False),
    ops.gate_times: Handler("product", _gate_times, rule="product"),
    ops.recurrent_result: Handler("route", _recurrent_result, keeps_inputs=False),
}
"""The recurrent family's handlers (merged into `lrpfn.HANDLERS`)."""
