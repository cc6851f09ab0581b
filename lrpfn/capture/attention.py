"""Graph passes that turn attention and its normalisations into ops with relevance handlers.

`rewrite_attention(gm)` edits a `GraphModule` that `canonicalize` has just copied (the
user's model is never touched):

1. `nn.MultiheadAttention` calls (a leaf module under `torch.fx`) whose attention weights
   are unused become linear projections, `split_heads`, `Q @ K.mT`, `masked_scores`
   (scale and masks), `softmax`, `P @ V`, `merge_heads` and the output projection;
2. `F.scaled_dot_product_attention` calls (attn_mask, is_causal, scale, grouped-query
   attention) become `repeat_heads` (grouped-query only), `Q @ K.mT`, `masked_scores`,
   `softmax` and `P @ V`;
   torchvision's Swin `shifted_window_attention` is decomposed likewise
   (`lrpfn/capture/window_attention.py`);
3. the computed RMSNorm `x * rsqrt(mean(x ** 2, -1, keepdim=True) + eps)` (as Llama,
   Mistral and T5 write it, with casts around it) becomes one `rms_normalize(x, eps)` node;
4. the computed tanh GELU `0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x ** 3)))`
   (GPT-2's `gelu_new`) becomes `F.gelu(x, approximate="tanh")`, an elementwise
   activation (AttnLRP's identity rule), instead of products and powers of `x`;
5. an elementwise product of two tensors of which exactly one is computed by an
   elementwise non-linearity (SwiGLU's `silu(gate) * up`) becomes
   `gated_product(gate, signal)`, so product rules know which operand is the gate.

The ops inserted are in `lrpfn.ops.attention_functional`; their handlers in `lrpfn.ops.attention`.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import TrainingModeError, UnsupportedNodeError
from ..ops import attention_functional as ops
from . import window_attention
from .source import NAME, SOURCE, Source

__all__ = ["rewrite_attention"]


def rewrite_attention(gm: fx.GraphModule) -> None:
    """Apply the passes of the module docstring to `gm` in place.

    Raises:
        UnsupportedNodeError: the graph holds the remains of a `vmap` (transformers builds
            its causal masks with one), which a captured graph cannot replay.
    """
    _refuse_vmap_remains(gm)
    _decompose_multihead_attention(gm)
    _decompose_scaled_dot_product_attention(gm)
    window_attention.decompose(gm)
    _fold_rms_norms(gm)
    _fold_tanh_gelus(gm)
    _mark_gated_products(gm)


_VMAP_REMAINS = ("_add_batch_dim", "_remove_batch_dim")


def _refuse_vmap_remains(gm: fx.GraphModule) -> None:
    found = [
        node.name
        for node in gm.graph.nodes
        if node.op == "call_function"
        and getattr(node.target, "__module__", "") == "torch._functorch.predispatch"
        and getattr(node.target, "__name__", "") in _VMAP_REMAINS
    ]
    if found:
        raise UnsupportedNodeError(
            f"the captured graph holds the batch-dimension ops of a vmap ({', '.join(found[:4])}"
            f"{', ...' if len(found) > 4 else ''}): the model builds a constant (for Hugging Face "
            "models, the causal attention mask) with torch.vmap, which the graph cannot replay. "
            "Fix: explain language models with lrpfn.text.explain(model, input_ids), which "
            "passes the mask in, or pass a 4-d attention_mask to the model yourself."
        )


def _fresh_name(gm: fx.GraphModule, base: str) -> str:
    index = 0
    while hasattr(gm, f"{base}{index}"):
        index += 1
    return f"{base}{index}"


def _constant(gm: fx.GraphModule, tensor: torch.Tensor | None, base: str) -> fx.Node | None:
    """A get_attr node for `tensor` (a new buffer of `gm`, never a parameter of the user's)."""
    if tensor is None:
        return None
    name = _fresh_name(gm, base)
    gm.register_buffer(name, tensor.detach())
    return gm.graph.get_attr(name)


_MHA_ARGS = (
    "query", "key", "value", "key_padding_mask", "need_weights", "attn_mask",
    "average_attn_weights", "is_causal",
)  # fmt: skip


def _bound(node: fx.Node, names: tuple[str, ...], defaults: dict[str, Any]) -> dict[str, Any]:
    bound = dict(defaults)
    bound.update(zip(names, node.args, strict=False))
    bound.update(node.kwargs)
    return bound


def _weights_unused(node: fx.Node) -> bool:
    """True if only `node[0]` is used (MHA returns `(output, weights)`)."""
    for user in node.users:
        if user.op != "call_function" or user.target is not operator.getitem:
            return False
        if user.args[1] != 0 and user.users:
            return False
    return True


def _projections(module: nn.MultiheadAttention) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    with torch.no_grad():
        if module._qkv_same_embed_dim:
            weights = module.in_proj_weight.chunk(3)
        else:
            weights = (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight)
        biases = (None,) * 3 if module.in_proj_bias is None else module.in_proj_bias.chunk(3)
    return list(zip(weights, biases, strict=True))


def _decompose_multihead_attention(gm: fx.GraphModule) -> None:
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        module = gm.get_submodule(node.target)
        if type(module) is not nn.MultiheadAttention or not _weights_unused(node):
            continue
        if module.bias_k is not None or module.add_zero_attn:
            continue  # left as is: reported as unsupported
        if module.training and module.dropout > 0:
            raise TrainingModeError(
                f"nn.MultiheadAttention {node.target!r} is in training mode with dropout "
                f"{module.dropout}, so its attention weights are random. Fix: call model.eval()."
            )
        bound = _bound(node, _MHA_ARGS, {"key_padding_mask": None, "attn_mask": None})
        graph = gm.graph
        with graph.inserting_before(node):
            heads = []
            for index, (weight, bias) in enumerate(_projections(module)):
                projected = graph.call_function(
                    F.linear,
                    (
                        bound[_MHA_ARGS[index]],
                        _constant(gm, weight, "_lrpfn_attention_weight_"),
                        _constant(gm, bias, "_lrpfn_attention_bias_"),
                    ),
                )
                projected.meta[SOURCE] = Source(node.target, type(module))
                heads.append(
                    graph.call_function(
                        ops.split_heads, (projected, module.num_heads, module.batch_first)
                    )
                )
            query, key, value = heads
            mask = graph.call_function(
                ops.attention_mask,
                (bound["attn_mask"], bound["key_padding_mask"], module.num_heads, weight.dtype),
            )
            scale = float(module.head_dim) ** -0.5
            output = _attention(graph, query, key, value, mask, False, scale, None)
            merged = graph.call_function(ops.merge_heads, (output, module.batch_first))
            out_proj = module.out_proj
            result = graph.call_function(
                F.linear,
                (
                    merged,
                    graph.get_attr(f"{node.target}.out_proj.weight"),
                    None
                    if out_proj.bias is None
                    else graph.get_attr(f"{node.target}.out_proj.bias"),
                ),
            )
            result.meta[SOURCE] = Source(f"{node.target}.out_proj", type(out_proj))
        for user in list(node.users):
            if user.args[1] == 0:
                user.replace_all_uses_with(result)
            graph.erase_node(user)
        graph.erase_node(node)


def _attention(graph, query, key, value, mask, is_causal, scale, head_dim) -> fx.Node:
    """`softmax(masked_scores(Q @ K.mT)) @ V` as graph nodes."""
    transposed = graph.call_method("transpose", (key, -2, -1))
    scores = graph.call_function(torch.matmul, (query, transposed))
    masked = graph.call_function(ops.masked_scores, (scores, scale, mask, is_causal, head_dim))
    weights = graph.call_function(torch.softmax, (masked, -1))
    return graph.call_function(torch.matmul, (weights, value))


_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
_SDPA_DEFAULTS = {
    "attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False,
}  # fmt: skip


def _decompose_scaled_dot_product_attention(gm: fx.GraphModule) -> None:
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not F.scaled_dot_product_attention:
            continue
        bound = _bound(node, _SDPA_ARGS, _SDPA_DEFAULTS)
        if not isinstance(bound["dropout_p"], (int, float)) or bound["dropout_p"] != 0:
            raise TrainingModeError(
                f"scaled_dot_product_attention node {node.name!r} has dropout_p="
                f"{bound['dropout_p']!r}: it drops attention weights at random (in any mode). "
                "Fix: call model.eval() (models pass dropout_p=0 in eval mode) or set it to 0."
            )
        query, key, value = bound["query"], bound["key"], bound["value"]
        with graph.inserting_before(node):
            head_dim = None
            if bound["scale"] is None:
                head_dim = graph.call_method("size", (query, -1))
            if bound["enable_gqa"]:
                # size()[-3], not size(-3): the traversal keeps only values derived from
                # shape queries (getitem), never a shape query's own result, for backward steps
                shape = graph.call_method("size", (query,))
                query_heads = graph.call_function(operator.getitem, (shape, -3))
                key = graph.call_function(ops.repeat_heads, (key, query_heads))
                value = graph.call_function(ops.repeat_heads, (value, query_heads))
            result = _attention(
                graph, query, key, value, bound["attn_mask"], bound["is_causal"],
                bound["scale"], head_dim,
            )  # fmt: skip
        result.meta = {**node.meta, NAME: node.name}
        node.replace_all_uses_with(result)
        graph.erase_node(node)


def _is(node: Any, targets: tuple) -> bool:
    return (
        isinstance(node, fx.Node)
        and node.op in ("call_function", "call_method")
        and (node.target in targets)
    )


aten = torch.ops.aten
# torch-level callables, method names, and the aten packets `torch.export` graphs keep
_POW = (operator.pow, torch.pow, "pow", aten.pow)
_MEAN = (torch.mean, "mean", aten.mean)
_RSQRT = (torch.rsqrt, "rsqrt", aten.rsqrt)
_ADD = (operator.add, torch.add, "add")
_MUL = (operator.mul, torch.mul, "mul")
_CASTS = ("to", "float", "type_as", "double", aten.to, aten._to_copy, aten.type_as)


def _uncast(node: Any) -> Any:
    while _is(node, _CASTS):
        node = node.args[0]
    return node


def _rms_of(node: Any) -> tuple[Any, float] | None:
    """`(x, eps)` if `node` is `rsqrt(mean(x ** 2, -1, keepdim=True) + eps)`, else None."""
    if not _is(node, _RSQRT) or not _is(node.args[0], _ADD):
        return None
    total = node.args[0]
    mean, eps = total.args[:2]
    if isinstance(mean, (int, float)):
        mean, eps = eps, mean
    if not _is(mean, _MEAN) or not isinstance(eps, (int, float)):
        return None
    dim = mean.args[1] if len(mean.args) > 1 else mean.kwargs.get("dim")
    keepdim = mean.args[2] if len(mean.args) > 2 else mean.kwargs.get("keepdim", False)
    if dim not in (-1, [-1], (-1,)) or not keepdim:
        return None
    square = mean.args[0]
    if not _is(square, _POW) or square.args[1] != 2:
        return None
    return square.args[0], float(eps)


def _fold_rms_norms(gm: fx.GraphModule) -> None:
    graph = gm.graph
    for node in list(graph.nodes):
        if not _is(node, _MUL) or len(node.args) != 2:
            continue
        for x, other in (node.args, tuple(reversed(node.args))):
            found = _rms_of(other)
            if found is None or _uncast(found[0]) is not _uncast(x):
                continue
            with graph.inserting_before(node):
                folded = graph.call_function(ops.rms_normalize, (x, found[1]))
            folded.meta = {**node.meta, NAME: node.name}
            node.replace_all_uses_with(folded)
            graph.erase_node(node)
            break


_TANH = (torch.tanh, "tanh", aten.tanh)


def _scaled_by(node: Any, factor: float) -> Any:
    """`x` if `node` is `x * factor` or `factor * x` (factor to 1e-6 relative), else None."""
    if not _is(node, _MUL) or len(node.args) != 2:
        return None
    for x, constant in (node.args, tuple(reversed(node.args))):
        if isinstance(constant, (int, float)) and abs(constant - factor) <= 1e-6 * factor:
            return x
    return None


def _plus(node: Any, constant: float) -> Any:
    if not _is(node, _ADD) or len(node.args) != 2:
        return None
    for x, value in (node.args, tuple(reversed(node.args))):
        if isinstance(value, (int, float)) and value == constant:
            return x
    return None


def _tanh_gelu_input(node: fx.Node) -> Any:
    """`x` if `node` computes `0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x ** 3)))`."""
    for half, rest in (node.args, tuple(reversed(node.args))):
        x = _scaled_by(half, 0.5)
        tanh = _plus(rest, 1.0)
        if x is None or not _is(tanh, _TANH):
            continue
        inner = _scaled_by(tanh.args[0], (2 / math.pi) ** 0.5)
        if not _is(inner, _ADD) or len(inner.args) != 2 or x not in inner.args:
            continue
        cubic = inner.args[1] if inner.args[0] is x else inner.args[0]
        cube = _scaled_by(cubic, 0.044715)
        if _is(cube, _POW) and cube.args[0] is x and cube.args[1] == 3:
            return x
    return None


def _fold_tanh_gelus(gm: fx.GraphModule) -> None:
    graph = gm.graph
    for node in list(graph.nodes):
        if not _is(node, _MUL) or len(node.args) != 2:
            continue
        x = _tanh_gelu_input(node)
        if x is None:
            continue
        with graph.inserting_before(node):
            gelu = graph.call_function(F.gelu, (x,), {"approximate": "tanh"})
        gelu.meta = {**node.meta, NAME: node.name}
        node.replace_all_uses_with(gelu)
        graph.erase_node(node)


_NONLINEAR_MODULES = (
    nn.SiLU, nn.GELU, nn.Sigmoid, nn.Hardsigmoid, nn.Tanh, nn.ReLU, nn.Mish, nn.Hardswish,
    nn.Softplus, nn.ELU,
)  # fmt: skip
_NONLINEAR = (
    F.silu, F.gelu, torch.sigmoid, F.sigmoid, F.hardsigmoid, torch.tanh, F.tanh, torch.relu,
    F.relu, F.mish, F.hardswish, F.softplus, F.elu,
    "silu", "sigmoid", "tanh", "relu",
)  # fmt: skip


def _is_nonlinearity(node: Any) -> bool:
    node = _uncast(node)
    if not isinstance(node, fx.Node):
        return False
    if node.op == "call_module":
        return isinstance(node.graph.owning_module.get_submodule(node.target), _NONLINEAR_MODULES)
    return node.op in ("call_function", "call_method") and node.target in _NONLINEAR


def _is_tensor_node(node: Any) -> bool:
    return isinstance(node, fx.Node) and node.op != "get_attr"


def _mark_gated_products(gm: fx.GraphModule) -> None:
    graph = gm.graph
    for node in list(graph.nodes):
        if not _is(node, _MUL) or len(node.args) != 2 or node.kwargs:
            continue
        first, second = node.args
        if not (_is_tensor_node(first) and _is_tensor_node(second)):
            continue
        gates = (_is_nonlinearity(first), _is_nonlinearity(second))
        if gates.count(True) != 1:
            continue
        gate, signal = (first, second) if gates[0] else (second, first)
        with graph.inserting_before(node):
            gated = graph.call_function(ops.gated_product, (gate, signal))
        gated.meta = {**node.meta, NAME: node.name}
        node.replace_all_uses_with(gated)
        graph.erase_node(node)
