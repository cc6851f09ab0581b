"""The `torch.export` front end: capture what `torch.fx.symbolic_trace` cannot.

`export_graph(model, example_input)` runs `torch.export.export(model, (x,), strict=False)`,
which records the ops a forward pass at `x` executes (Python control flow on shapes is
evaluated, so the graph is specialised to `x`'s shape), and normalises the result into
the form the rest of lrpfn explains:

- aten ops become the torch-level callables of the one handler table
  (`aten.conv2d` -> `F.conv2d`, `aten.linear` -> `F.linear`, `aten.relu` -> `torch.relu`,
  `aten.add.Tensor` -> `torch.add`, `aten.view` -> `torch.reshape`, `aten.batch_norm` ->
  `F.batch_norm` with its arguments reordered, `aten.addmm` -> `F.linear`, the attention
  ops -> `torch.matmul`, `torch.softmax`, `F.scaled_dot_product_attention`, ...); in-place
  variants (`aten.relu_`) become out-of-place; ops without a torch-level twin keep their
  `OpOverloadPacket` (`torch.ops.aten.slice`), which the table keys directly;
- export's guard call (`_guards_fn`) and its assertion nodes (nodes nothing uses) go;
- the module each node ran in is read from `node.meta["nn_module_stack"]`: where that
  module is a `torch.nn` layer (what `symbolic_trace` would keep as a leaf), its
  qualified name and type go into `node.meta["lrpfn_source"]`, so rules keyed by module
  name or type match as they do on an fx trace;
- a single output leaf is the output; a mapping output keeps its "logits" (see
  `capture.front_ends`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx

from .source import SOURCE, Source

__all__ = ["export_graph", "normalize_aten"]

aten = torch.ops.aten


Adapter = Callable[[tuple, dict], tuple[tuple, dict]]


def _batch_norm_args(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    # aten: (input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn)
    # F:    (input, running_mean, running_var, weight, bias, training, momentum, eps)
    padded = (*args, *([None] * (9 - len(args))))
    return (padded[0], padded[3], padded[4], padded[1], padded[2], *args[5:8]), {}


def _first(count: int) -> Adapter:
    return lambda args, kwargs: (tuple(args[:count]), {})


def _constant_pad(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    value = args[2] if len(args) > 2 else kwargs.get("value", 0.0)
    return (args[0], args[1], "constant", value), {}


def _upsample(mode: str, align_corners: bool) -> Adapter:
    """`aten.upsample_<mode>.vec(x, output_size[, align_corners], scale_factors)` as
    `F.interpolate(x, size=..., scale_factor=..., mode=...)` (the same aten call)."""

    def adapt(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        size, rest = args[1], list(args[2:])
        corners = rest.pop(0) if align_corners else None
        scale = rest[0] if rest else kwargs.get("scale_factors")
        interpolate_kwargs = {"size": size, "scale_factor": scale, "mode": mode}
        if align_corners:
            interpolate_kwargs["align_corners"] = corners
        return (args[0],), interpolate_kwargs

    return adapt


# aten packet -> (torch-level callable, argument adapter or None when the order matches)
_TORCH_LEVEL: dict[Any, tuple[Callable[..., Any], Adapter | None]] = {
    aten.linear: (F.linear, None),
    aten.conv1d: (F.conv1d, None),
    aten.conv2d: (F.conv2d, None),
    aten.conv3d: (F.conv3d, None),
    aten.conv_transpose1d: (F.conv_transpose1d, None),
    aten.conv_transpose2d: (F.conv_transpose2d, None),
    aten.conv_transpose3d: (F.conv_transpose3d, None),
    aten.batch_norm: (F.batch_norm, _batch_norm_args),
    aten.layer_norm: (F.layer_norm, _first(5)),
    aten.group_norm: (F.group_norm, _first(5)),
    aten.rms_norm: (F.rms_norm, None),
    aten.relu: (torch.relu, None),
    aten.relu6: (F.relu6, None),
    aten.hardtanh: (F.hardtanh, None),
    aten.gelu: (F.gelu, None),
    aten.silu: (F.silu, None),
    aten.mish: (F.mish, None),
    aten.sigmoid: (torch.sigmoid, None),
    aten.tanh: (torch.tanh, None),
    aten.hardswish: (F.hardswish, None),
    aten.hardsigmoid: (F.hardsigmoid, None),
    aten.leaky_relu: (F.leaky_relu, None),
    aten.softplus: (F.softplus, None),
    aten.clamp: (torch.clamp, None),
    aten.neg: (torch.neg, None),
    aten.pow: (torch.pow, None),
    aten.square: (torch.square, None),
    aten.dropout: (F.dropout, None),
    aten.add: (torch.add, None),
    aten.sub: (torch.sub, None),
    aten.mul: (torch.mul, None),
    aten.div: (torch.div, None),
    aten.addcmul: (torch.addcmul, None),
    aten.avg_pool1d: (F.avg_pool1d, None),
    aten.avg_pool2d: (F.avg_pool2d, None),
    aten.avg_pool3d: (F.avg_pool3d, None),
    aten.adaptive_avg_pool1d: (F.adaptive_avg_pool1d, None),
    aten.adaptive_avg_pool2d: (F.adaptive_avg_pool2d, None),
    aten.adaptive_avg_pool3d: (F.adaptive_avg_pool3d, None),
    aten.max_pool1d: (F.max_pool1d, None),
    aten.max_pool2d: (F.max_pool2d, None),
    aten.max_pool3d: (F.max_pool3d, None),
    aten.mean: (torch.mean, None),
    aten.sum: (torch.sum, None),
    aten.view: (torch.reshape, None),
    aten.reshape: (torch.reshape, None),
    aten.permute: (torch.permute, None),
    aten.transpose: (torch.transpose, None),
    aten.flatten: (torch.flatten, None),
    aten.unsqueeze: (torch.unsqueeze, None),
    aten.squeeze: (torch.squeeze, None),
    aten.cat: (torch.cat, None),
    aten.stack: (torch.stack, None),
    aten.split: (torch.split, None),
    aten.split_with_sizes: (torch.split, None),
    aten.chunk: (torch.chunk, None),
    aten.unbind: (torch.unbind, None),
    aten.flip: (torch.flip, None),
    aten.roll: (torch.roll, None),
    aten.narrow: (torch.narrow, None),
    aten.pad: (F.pad, None),
    aten.constant_pad_nd: (F.pad, _constant_pad),
    aten.pixel_shuffle: (F.pixel_shuffle, None),
    aten.pixel_unshuffle: (F.pixel_unshuffle, None),
    aten.tile: (torch.tile, None),
    aten.movedim: (torch.movedim, None),
    aten.matmul: (torch.matmul, None),
    aten.bmm: (torch.bmm, None),
    aten.mm: (torch.matmul, None),
    aten.einsum: (torch.einsum, None),
    aten.baddbmm: (torch.baddbmm, None),
    aten.softmax: (torch.softmax, _first(2)),
    aten._softmax: (torch.softmax, _first(2)),
    aten.scaled_dot_product_attention: (F.scaled_dot_product_attention, None),
    aten.masked_fill: (torch.masked_fill, None),
    aten.where: (torch.where, None),
    aten.upsample_nearest1d: (F.interpolate, _upsample("nearest", False)),
    aten.upsample_nearest2d: (F.interpolate, _upsample("nearest", False)),
    aten.upsample_nearest3d: (F.interpolate, _upsample("nearest", False)),
    aten.upsample_linear1d: (F.interpolate, _upsample("linear", True)),
    aten.upsample_bilinear2d: (F.interpolate, _upsample("bilinear", True)),
    aten.upsample_trilinear3d: (F.interpolate, _upsample("trilinear", True)),
    aten.upsample_bicubic2d: (F.interpolate, _upsample("bicubic", True)),
    aten.linalg_vector_norm: (torch.linalg.vector_norm, None),
}


def export_graph(model: torch.nn.Module, example_input: torch.Tensor) -> fx.GraphModule:
    """`model` captured by `torch.export` (non-strict) at `example_input`'s shape.

    Raises whatever `torch.export.export` raises; `_capture` wraps it.
    """
    program = torch.export.export(model, (example_input,), strict=False)
    gm = program.module()
    normalize_aten(gm, model)
    _structured_output(gm.graph, program.call_spec.out_spec)
    gm.recompile()
    return gm


def normalize_aten(gm: fx.GraphModule, model: torch.nn.Module) -> None:
    """Rewrite `gm`'s exported graph in place into torch-level ops (module docstring)."""
    graph = gm.graph
    writes = _writes_into_fresh_tensors(graph)
    for node in list(graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn":
            graph.erase_node(node)
            continue
        if node.op != "call_function":
            continue
        _record_source(node, model)
        if node in writes:
            continue  # kept as the in-place aten op (a handler, if data, must come from a user)
        packet = _packet(node.target)
        if packet is None:
            continue
        if packet is aten.addmm:
            _addmm_as_linear(graph, node)
            continue
        if packet in _TORCH_LEVEL:
            function, adapt = _TORCH_LEVEL[packet]
            node.target = function
            if adapt is not None:
                node.args, node.kwargs = adapt(node.args, dict(node.kwargs))
        else:
            node.target = packet
    _drop_unused(graph)
    graph.lint()
    gm.recompile()


def _writes_into_fresh_tensors(graph: fx.Graph) -> set[fx.Node]:
    """In-place aten ops whose result nothing uses, by what they write into.

    A write into a tensor the graph made (`rel = torch.zeros(...); rel[..., 2] = idx`, as
    in ConViT) is part of the computation: returned here and kept in place, in order. A
    write into a module's tensor or the input (a buffer updated in forward) would change
    the user's model or input: the node is erased (export's graph already uses the new
    value where the forward reassigned the attribute).
    """
    kept = set()
    for node in list(graph.nodes):
        target = node.target
        if (
            node.op != "call_function"
            or node.users
            or not isinstance(target, torch._ops.OpOverload)
        ):
            continue
        if not target._schema.is_mutable:
            continue
        root = node.args[0] if node.args else None
        while isinstance(root, fx.Node) and _is_view(root):
            root = root.args[0]
        if isinstance(root, fx.Node) and root.op in ("get_attr", "placeholder"):
            graph.erase_node(node)
        else:
            kept.add(node)
    return kept


def _is_view(node: fx.Node) -> bool:
    target = node.target
    if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
        return False
    returns = target._schema.returns
    return bool(returns) and returns[0].alias_info is not None and not target._schema.is_mutable


def _packet(target: Any) -> Any:
    """The out-of-place `OpOverloadPacket` of an aten op (`aten.relu_.default` -> `aten.relu`)."""
    if not isinstance(target, torch._ops.OpOverload):
        return None
    packet = target.overloadpacket
    name = packet.__name__
    if name.endswith("_") and not name.startswith("_") and hasattr(aten, name[:-1]):
        return getattr(aten, name[:-1])
    return packet


def _addmm_as_linear(graph: fx.Graph, node: fx.Node) -> None:
    """`addmm(b, x, Wt)` = `x @ Wt + b` = `F.linear(x, Wt.T, b)`, the weight a constant."""
    bias, x, transposed_weight = node.args[:3]
    beta, alpha = node.kwargs.get("beta", 1), node.kwargs.get("alpha", 1)
    if beta != 1 or alpha != 1:
        node.target = torch.addmm  # scaled forms stay as they are (no handler: reported)
        return
    with graph.inserting_before(node):
        weight = graph.call_function(torch.t, (transposed_weight,))
    node.target, node.args, node.kwargs = F.linear, (x, weight, bias), {}


def _record_source(node: fx.Node, model: torch.nn.Module) -> None:
    """Keep the innermost `torch.nn` layer a node ran in as its source module."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return
    path = list(stack.values())[-1][0]
    if not path:
        return
    try:
        module = model.get_submodule(path)
    except (AttributeError, TypeError):
        return
    if type(module).__module__.startswith("torch.nn.") and not isinstance(
        module, (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict)
    ):
        node.meta[SOURCE] = Source(path, type(module))


_COMPUTING = ("call_function", "call_method", "call_module", "get_attr")


def _drop_unused(graph: fx.Graph) -> None:
    """Remove nodes nothing uses (export's runtime assertions and dead shape code); the
    in-place writes into fresh tensors (`_writes_into_fresh_tensors`) stay."""
    changed = True
    while changed:
        changed = False
        for node in reversed(list(graph.nodes)):
            if node.op in _COMPUTING and not node.users and not _mutates(node):
                graph.erase_node(node)
                changed = True


def _mutates(node: fx.Node) -> bool:
    target = node.target
    if not isinstance(target, torch._ops.OpOverload):
        return False
    return target._schema.is_mutable and not target.__name__.startswith("_assert")


def _structured_output(graph: fx.Graph, spec: Any) -> None:
    """export returns a flat tuple of leaves; give the output back its structure where it
    is one tensor (that leaf) or a mapping (a `dict` of its keys, so that
    `capture.front_ends` can find "logits", as on an fx trace)."""
    output = next(node for node in graph.nodes if node.op == "output")
    leaves = output.args[0]
    if not isinstance(leaves, (tuple, list)):
        return
    if len(leaves) == 1 and spec is not None and spec.num_leaves == 1 and spec.is_leaf():
        output.args = (leaves[0],)
    elif spec is not None and isinstance(spec.context, list) and _is_mapping(spec.type):
        structured, start = {}, 0
        for key, child in zip(spec.context, spec.children(), strict=True):
            count = child.num_leaves
            structured[key] = leaves[start] if count == 1 and child.is_leaf() else None
            start += count
        output.args = ({key: value for key, value in structured.items() if value is not None},)


def _is_mapping(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, Mapping)
