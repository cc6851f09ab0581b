r"""Attention ops: softmax, products of two activations, masks.

After the canonical passes (`capture.attention`) attention is ordinary ops:
linear projections, `Q @ K.mT`, a scale and mask, a softmax, `P @ V`. Two of them are
neither linear layers nor elementwise, and their relevance is the rule's choice, so each
forms a rule family of its own (`composites.SOFTMAX`, `composites.MATMUL`):

- softmax (`torch.softmax`, `F.softmax`, `Tensor.softmax`, `nn.Softmax`): a softmax rule
  `rule(x, s, R, dim)`, by default `rules.AttnSoftmax()`
  ($R_x = x \odot (R - s \sum R)$ over the softmax axis);
- products of activations (`torch.matmul`, `@`, `torch.bmm`, `torch.mm`, two-operand
  `torch.einsum`, `torch.baddbmm`): a product rule `rule(Product, R)`, by default
  `rules.UniformProduct()` ($R_i = u_i \odot f_i^\top(R / \mathrm{st}(n z))$). With one
  data operand (a constant matrix) this is LRP-$\epsilon$ on a linear op.

Elementwise products of two activations where one is computed by an elementwise
non-linearity (`silu(x W_g) * (x W_u)`) become `gated_product(gate, signal)` in the
canonical passes; the product rule (`composites.PRODUCT`) then knows which is the gate.

Masks (`masked_fill`, `torch.where` with a constant condition) route relevance exactly:
masked entries are constants and take none. The helpers the passes insert
(`ops.attention_functional`, `ops.window_functional` for Swin) are routes (head reshapes, grouped-query repeats) or pass
relevance unchanged (the scale and mask of the scores).

References:
    Achtibat et al. 2024, "AttnLRP: Attention-aware layer-wise relevance propagation for
    transformers", ICML.
    Ali et al. 2022, "XAI for transformers: better explanations through conservative
    propagation", ICML.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ..errors import NodeFailedError
from ..rules import Product
from . import attention_functional as ops, window_functional as windows
from .handler import PASS, ROUTE, Handler, Step

__all__ = ["HANDLERS", "MATMUL_FAMILY", "SOFTMAX_FAMILY", "FamilyHandler", "from_softmax"]

SOFTMAX_FAMILY = "softmax"
MATMUL_FAMILY = "matmul"


@dataclass(frozen=True)
class FamilyHandler(Handler):
    """A handler whose nodes take a rule of their own family (softmax, products of
    activations); composites key them by `family` and the step reads the node's output."""

    family: str = ""

    @property
    def needs_output(self) -> bool:
        return True


def _arg(step: Step, index: int, name: str, default: Any = None) -> Any:
    if len(step.args) > index:
        return step.args[index]
    return step.kwargs.get(name, default)


def _softmax_dim(step: Step) -> int:
    node = step.node
    if node.op == "call_module":
        dim = node.graph.owning_module.get_submodule(node.target).dim
    else:
        dim = _arg(step, 1, "dim")
    if dim is None:
        raise NodeFailedError(
            f"softmax node {node.name!r} has no dim (the deprecated implicit axis): lrpfn needs "
            "the axis. Fix: pass dim= to the softmax in the model."
        )
    return dim


def _softmax(step: Step) -> tuple:
    """The node's softmax rule with $x$, $s$ (the forward's output), $R$ and the axis."""
    x = step.inputs[0]
    s = step.output if step.output.dtype == x.dtype else step.output.to(x.dtype)
    return (step.rule(x, s, step.relevance, _softmax_dim(step)),)


_SOFTMAX_TARGETS = (torch.softmax, F.softmax, "softmax")
_aten = torch.ops.aten
# what may stand between a softmax and the product that reads its output (eager attention
# casts the weights back to the activations' dtype, `torch.export` leaves aten casts and
# copies): the operand is still the attention weights P
_TRANSPARENT = {
    F.dropout, "to", "float", "double", "half", "bfloat16", "type_as", "contiguous", "clone",
    "detach", "transpose", "permute", "view", "reshape", "expand", "flatten", "unflatten",
    torch.transpose, torch.permute, torch.reshape, torch.flatten,
    _aten.to, _aten._to_copy, _aten.type_as, _aten.clone, _aten.alias, _aten.contiguous,
    _aten.detach, _aten.lift_fresh_copy, _aten.dropout,
}  # fmt: skip


def _transparent(target: Any) -> bool:
    packet = getattr(target, "overloadpacket", None)  # aten.to.dtype -> aten.to
    return target in _TRANSPARENT or (packet is not None and packet in _TRANSPARENT)


def from_softmax(node: Any, depth: int = 4) -> bool:
    """Whether `node` is a softmax's output, through dropouts, casts, copies and reshapes."""
    for _ in range(depth + 1):
        if not isinstance(node, fx.Node):
            return False
        if node.op == "call_module":
            module = node.graph.owning_module.get_submodule(node.target)
            if isinstance(module, nn.Softmax):
                return True
            if not isinstance(module, (nn.Dropout, nn.Identity)):
                return False
        elif node.target in _SOFTMAX_TARGETS:
            return True
        elif not _transparent(node.target):
            return False
        node = node.args[0] if node.args else None
    return False


def _matmul_transpose(step: Step):
    """$f_i^\\top(s)$ of `matmul(a, b)` by the transposed products (no forward re-run)."""
    a, b = _arg(step, 0, "input"), _arg(step, 1, "other")
    positions = step.data_positions

    def transpose(s: Tensor, wanted: tuple[bool, ...]) -> tuple:
        result = []
        for position, want in zip(positions, wanted, strict=True):
            if not want:
                result.append(None)
            elif position == 0:
                result.append((s @ b.mT).sum_to_size(a.shape))
            else:
                result.append((a.mT @ s).sum_to_size(b.shape))
        return tuple(result)

    return transpose


def _vjp_transpose(step: Step):
    """$f_i^\\top(s)$ by the op's vector-Jacobian product (einsum, baddbmm, 1-d matmul)."""

    def transpose(s: Tensor, wanted: tuple[bool, ...]) -> tuple:
        _, vjp = torch.func.vjp(step.call, *step.inputs)
        return tuple(c if want else None for c, want in zip(vjp(s), wanted, strict=True))

    return transpose


_MATMULS = (torch.matmul, operator.matmul, torch.bmm, torch.mm, "matmul", "bmm", "mm")


def _product_of_activations(step: Step) -> tuple:
    """The node's product rule on a `Product` record of its data operands."""
    target = step.node.target
    if target in ("baddbmm", torch.baddbmm) and 0 in step.data_positions:
        raise NodeFailedError(
            f"baddbmm node {step.node.name!r} adds a data tensor to the product; lrpfn explains "
            "baddbmm(c, a, b) with a constant c. Fix: write it as c + a @ b in the model."
        )
    if target in (torch.einsum, "einsum") and len(step.inputs) > 2:
        raise NodeFailedError(
            f"einsum node {step.node.name!r} multiplies {len(step.inputs)} activations; lrpfn's "
            "product rules explain products of one or two. Fix: split it into two einsums."
        )
    two_dimensional = all(t.ndim >= 2 for t in step.args[:2] if isinstance(t, Tensor))
    if target in _MATMULS and two_dimensional:
        transpose = _matmul_transpose(step)
    else:
        transpose = _vjp_transpose(step)
    softmax_operands = tuple(from_softmax(node) for node in step.input_nodes)
    product = Product(step.inputs, step.output, transpose, softmax_operands)
    return step.rule(product, step.relevance)


def _gated_product(step: Step) -> tuple:
    """`gated_product(gate, signal)`: the node's product rule, told which operand is the
    gate; with one data operand the other is a constant factor and relevance passes."""
    if len(step.inputs) == 1:
        return (step.relevance.sum_to_size(step.inputs[0].shape),)
    return step.rule(step.inputs, step.output, step.relevance, (True, False))


SOFTMAX = FamilyHandler(
    "product", _softmax, rule="default", nonnegative="always", family=SOFTMAX_FAMILY
)
MATMUL = FamilyHandler("product", _product_of_activations, rule="default", family=MATMUL_FAMILY)

_PRODUCTS = (
    *_MATMULS,
    torch.einsum,
    "einsum",
    torch.baddbmm,
    "baddbmm",
)
_MASKS = (torch.masked_fill, "masked_fill", torch.where, "where")

HANDLERS: Mapping[Any, Handler] = {
    nn.Softmax: SOFTMAX,
    **dict.fromkeys(_SOFTMAX_TARGETS, SOFTMAX),
    **dict.fromkeys(_PRODUCTS, MATMUL),
    **dict.fromkeys(_MASKS, ROUTE),
    ops.split_heads: ROUTE,
    ops.merge_heads: ROUTE,
    ops.repeat_heads: ROUTE,
    ops.masked_scores: PASS,  # adds constants: not zero where the scores are
    windows.window_partition: ROUTE,
    windows.window_heads: ROUTE,
    windows.merge_window_heads: ROUTE,
    windows.window_reverse: ROUTE,
    windows.window_scores: PASS,
    "torchvision.models.swin_transformer._patch_merging_pad": ROUTE,  # pad, slice, cat
    ops.gated_product: Handler("product", _gated_product, rule="product"),
}
"""The attention family's handlers (merged into `lrpfn.HANDLERS`)."""
