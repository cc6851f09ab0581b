"""Functional ops that the recurrent pass inserts (`lrpfn.capture.recurrent`); they never appear in
user code. Their relevance handlers are in `lrpfn.ops.recurrent`.

An unrolled recurrent layer is ordinary ops (`F.linear`, `torch.sigmoid`, `torch.tanh`,
`+`, `torch.cat`, `torch.stack`) and these five helpers: the input sequence split into its
time steps (`time_steps`, `step_at`), each gate's part of the gates' joint linear map
(`gate_slice`), the product of a gate and a signal (`gate_times`),
and the module's nested result where it is used whole (`recurrent_result`).
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from ..errors import InvalidInputError

__all__ = [
    "block_size",
    "gate_slice",
    "gate_times",
    "recurrent_result",
    "step_at",
    "time_steps",
]


def block_size(steps: int) -> int:
    """Steps per block of `time_steps`: about the square root of the length."""
    return max(1, math.isqrt(steps - 1) + 1) if steps > 1 else 1


def time_steps(x: Tensor, steps: int, axis: int) -> tuple[tuple[Tensor, ...], ...]:
    r"""`x.unbind(axis)` in blocks of `block_size(steps)` steps: the time steps of a
    sequence, checked against the length the graph was unrolled for.

    (Blocks, not one flat tuple: the walk adds up the relevance arriving from each step as
    tuples with one entry filled, which costs the tuple's length per step; in blocks that
    is about $2 \sqrt{T}$ instead of $T$.)

    Raises:
        InvalidInputError: `x` has another number of steps on `axis`.
    """
    if x.ndim <= axis or x.shape[axis] != steps:
        length = x.shape[axis] if x.ndim > axis else "no"
        raise InvalidInputError(
            f"this graph unrolls a recurrent layer over {steps} time steps (the sequence length "
            f"of the example input it was prepared with); its input has {length} steps on axis "
            f"{axis} (shape {tuple(x.shape)}). Fix: prepare a plan with an example_input of this "
            "length, or call lrpfn.lrp(model, x), which prepares at x's length."
        )
    parts, size = x.unbind(axis), block_size(steps)
    return tuple(parts[start : start + size] for start in range(0, steps, size))


def step_at(steps: tuple[tuple[Tensor, ...], ...], index: int, count: int) -> Tensor:
    """Step `index` of the `count` time steps made by `time_steps`."""
    size = block_size(count)
    return steps[index // size][index % size]


def gate_slice(z: Tensor, index: int, count: int) -> Tensor:
    """Gate `index` of `count` gates' pre-activations computed by one linear map: the
    `index`-th of `count` equal parts of the last axis of `z`."""
    width = z.shape[-1] // count
    return z.narrow(-1, index * width, width)


def gate_times(gate: Tensor, signal: Tensor) -> Tensor:
    """`gate * signal`: a sigmoid gate (or `1 - z` of a GRU's update gate) times the
    signal it lets through (a cell input, a cell state, a hidden state)."""
    return gate * signal


def recurrent_result(structure: Any) -> Any:
    """`structure` as it is: the nested tuple a recurrent module returns (`(output, (h_n,
    c_n))` for an LSTM), where the graph uses it whole rather than by its parts."""
    return structure
