r"""State-space models (Mamba): the selection parameters held constant.

MambaLRP (Jafari et al. 2024, "MambaLRP: Explaining selective state space sequence
models", NeurIPS) explains a selective SSM as a map that is linear in its input $u$: the
parameters computed from the input, the step size $\Delta$ and the matrices $B$ and $C$
(and with them $\bar A = \exp(\Delta A)$, $\bar B = \Delta B$), are held constant, so
$h_t = \bar A_t h_{t-1} + \bar B_t u_t$ and $y_t = C_t h_t + D u_t$ pass relevance to $u$
and the earlier states only. The canonical pass (`lrpfn.capture.state_space`) wraps the
projection that computes them in `held_constant`, a node the relevance pass treats as a
constant (as it treats a vector norm: `lrpfn.ops.normalization.CONSTANT_STATISTICS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from .handler import NONE, Handler

__all__ = ["HANDLERS", "held_constant"]


def held_constant(x: Tensor) -> Tensor:
    """`x` itself; for relevance a constant (no relevance flows into or through it)."""
    return x


HANDLERS: Mapping[Any, Handler] = {
    # zeros made in the shape of a data tensor (Mamba2's initial chunk state): constants
    torch.zeros_like: NONE,
    torch.ops.aten.zeros_like: NONE,  # as torch.export records it
    "zeros_like": NONE,
    "new_zeros": NONE,
}
"""The state-space family's handlers (merged into `lrpfn.HANDLERS`)."""
