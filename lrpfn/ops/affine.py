r"""Elementwise affine ops of a tensor and constants: `torch.addcmul`.

`torch.addcmul(input, tensor1, tensor2, value=v)` $= \text{input} + v \cdot
\text{tensor1} \odot \text{tensor2}$. With one data operand and the others constants
(parameters) it is an affine layer (ResMLP's `Affine`, $z = \alpha \odot x + \beta$;
ConvNeXt-V2's response normalisation), explained by the node's rule like any linear
layer (Montavon et al. 2019, section 10: LRP for linear layers):

- data in `tensor1` or `tensor2`: $z = x \odot w + b$ with $w = v \cdot$ (the other
  factor), $b$ = `input` (`layers.ElementwiseAffine`);
- data in `input`: $z = x + b$ with $b = v \cdot \text{tensor1} \odot \text{tensor2}$, a
  sum with a constant.

Two data operands (a product of activations) are not an affine op: the handler says so.

Reference: Montavon et al. 2019, "Layer-wise relevance propagation: an overview", in
Explainable AI: Interpreting, Explaining and Visualizing Deep Learning, Springer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..errors import UnsupportedNodeError
from ..layers import ElementwiseAffine, Layer
from .handler import Handler, Step
from .linear import linear_handler

__all__ = ["HANDLERS"]


def _addcmul_layer(step: Step) -> Layer:
    operands = dict(zip(("input", "tensor1", "tensor2"), step.args, strict=False))
    operands.update(
        {key: step.kwargs[key] for key in ("input", "tensor1", "tensor2") if key in step.kwargs}
    )
    value = step.kwargs.get("value", 1)
    x = step.inputs[0]
    if len(step.inputs) != 1:
        raise UnsupportedNodeError(
            f"node {step.node.name!r}: torch.addcmul of {len(step.inputs)} activations is not "
            "an affine op; lrpfn explains addcmul with one activation and constant operands. "
            "Fix: write it as an addition and a product (x + a * b), whose handlers apply."
        )
    names = ("input", "tensor1", "tensor2")
    data = names[step.data_positions[0]] if step.data_positions[0] < 3 else "input"
    if data == "input":
        bias = value * operands["tensor1"] * operands["tensor2"]
        weight = torch.ones((), dtype=x.dtype, device=x.device)
    else:
        other = operands["tensor2" if data == "tensor1" else "tensor1"]
        weight, bias = value * torch.as_tensor(other, dtype=x.dtype), operands["input"]
    return Layer(ElementwiseAffine(), weight, bias, step.node.name)


ADDCMUL = linear_handler(_addcmul_layer)

HANDLERS: Mapping[Any, Handler] = {torch.addcmul: ADDCMUL, "addcmul": ADDCMUL}
