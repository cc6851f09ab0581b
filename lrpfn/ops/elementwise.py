r"""Elementwise powers as activations: `x ** 2`, `torch.pow`, `torch.square`.

MetaFormer's StarReLU ($s \cdot \mathrm{relu}(x)^2 + b$, PoolFormerV2, ConvFormer,
CAFormer) squares an activation elementwise. Like every elementwise non-linearity
(ReLU, GELU, tanh) it passes relevance: $R_x = R$, the identity rule for elementwise
layers (Montavon et al. 2019, section 10.2; Achtibat et al. 2024 use the same identity for
the non-linearities of transformers). The relevance goes to the base `x`; an exponent
computed from the input (`2 ** x`) passes it to the exponent instead, as the only data
operand. A power inside a computed statistic (`x.pow(2).mean()` of a hand-written norm)
is no exception: the division by that statistic is then not linear and is reported.

References: Montavon et al. 2019, "Layer-wise relevance propagation: an overview", in
Explainable AI, Springer; Achtibat et al. 2024, "AttnLRP: attention-aware layer-wise
relevance propagation for transformers", ICML.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

import torch

from .handler import PASS, Handler

__all__ = ["HANDLERS"]

HANDLERS: Mapping[Any, Handler] = dict.fromkeys(
    (operator.pow, torch.pow, torch.square, "pow", "square"), PASS
)
