"""Graph passes that bring a captured model into the form the traversal explains.

`canonicalize(gm)` returns a new `GraphModule`; the model it came from is untouched
(its modules, parameters and buffers are shared read-only, never written). The passes:

1. out-of-place: in-place ops (`ReLU(inplace=True)`, `F.relu(x, inplace=True)`,
   `x.relu_()`, `operator.iadd`) become out-of-place, so the activations kept for the
   relevance pass are not overwritten by later ops;
2. lower: `nn.Linear`, `nn.ConvNd`, `nn.ConvTransposeNd` and `nn.LayerNorm` calls become
   their functional form (`F.linear`, `F.conv2d`, ...) with the parameters as graph
   attributes (a convolution with a `padding_mode` other than "zeros" becomes
   `_ops.padded_convolution`). The source module's name and type
   are kept in `node.meta["lrpfn_source"]`, so rules still match by module name and type;
3. fold BatchNorm: an eval-mode BatchNorm whose input comes from a linear or convolution
   node used by nothing else is folded into it,
   $W' = W \\gamma / \\sqrt{\\sigma^2 + \\epsilon}$,
   $b' = (b - \\mu) \\gamma / \\sqrt{\\sigma^2 + \\epsilon} + \\beta$;
   any other BatchNorm becomes a per-channel affine node (`_ops.channel_affine`). The
   functional form `F.batch_norm(x, running_mean, running_var, weight, bias, False, ...)`
   (timm's `BatchNormAct2d`, and every BatchNorm captured by `torch.export`), in any mix
   of positional and keyword arguments, is folded or made affine exactly the same way
   when its statistics and parameters are module attributes (or None); otherwise the node
   stays and its handler makes it a per-channel affine layer at run time
   (`_families.normalization`).
"""

from __future__ import annotations

import copy
import operator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import fx, nn

from . import _attention_passes
from ._capture import draft_graph_module
from ._families.normalization import batch_norm_affine, batch_norm_arguments
from ._ops import channel_affine, padded_convolution
from .errors import TrainingModeError

__all__ = ["FOLDED", "SOURCE", "Source", "attribute", "canonicalize"]

SOURCE = "lrpfn_source"
FOLDED = "lrpfn_folded"
_NAME = "lrpfn_name"


class Source(NamedTuple):
    """The module a lowered node came from: qualified name and type."""

    name: str
    type: type


_CONV_FUNCTIONS = {
    nn.Conv1d: F.conv1d,
    nn.Conv2d: F.conv2d,
    nn.Conv3d: F.conv3d,
    nn.ConvTranspose1d: F.conv_transpose1d,
    nn.ConvTranspose2d: F.conv_transpose2d,
    nn.ConvTranspose3d: F.conv_transpose3d,
}
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_INPLACE_OPERATORS = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}


def canonicalize(gm: fx.GraphModule, *, owned: bool = False) -> fx.GraphModule:
    """Return a new, canonical GraphModule for `gm` (see the module docstring).

    `owned`: `gm` is a fresh capture no one else holds (lrpfn's own trace), whose graph
    the passes may edit in place; otherwise they edit a copy. Either way the result is a
    new GraphModule, and the modules, parameters and buffers of the model are untouched.
    """
    if owned:
        new = gm
    else:
        graph = fx.Graph()
        output = graph.graph_copy(gm.graph, {})
        graph.output(output)
        new = draft_graph_module(gm, graph, type(gm).__name__)
    _check_eval_mode(new)
    _out_of_place(new)
    _attention_passes.rewrite_attention(new)  # attention, RMSNorm, gates: ordinary ops
    _lower_affine_modules(new)
    _fold_batch_norms(new)
    new.graph.eliminate_dead_code()
    new = _renamed(new)
    new.graph.lint()
    return new


def _modules_of(gm: fx.GraphModule):
    for node in gm.graph.nodes:
        if node.op == "call_module":
            yield node, _submodule(gm, node.target)


def _submodule(gm: fx.GraphModule, target: str) -> nn.Module:
    """`gm.get_submodule(target)` by dictionary look-ups (it is called once per node)."""
    module = gm
    try:
        for part in target.split("."):
            module = module._modules[part]
    except KeyError:
        return gm.get_submodule(target)  # its error names what is missing
    return module


_DROPOUT_FUNCTIONS = {
    F.dropout: 2, F.dropout1d: 2, F.dropout2d: 2, F.dropout3d: 2,
    F.alpha_dropout: 2, F.feature_alpha_dropout: 2,
}  # fmt: skip
_STOCHASTIC_DEPTH = "torchvision.ops.stochastic_depth.stochastic_depth"


def _training_flag(node: fx.Node) -> bool:
    """True if a call_function node is a random op (dropout, stochastic depth) in training mode."""
    if node.op != "call_function":
        return False
    index = _DROPOUT_FUNCTIONS.get(node.target)
    name = f"{getattr(node.target, '__module__', '')}.{getattr(node.target, '__name__', '')}"
    if name == _STOCHASTIC_DEPTH:
        index = 3
    if node.target is F.batch_norm:
        return batch_norm_arguments(node.args, node.kwargs)["training"] is not False
    if index is None:
        return False
    training = node.args[index] if len(node.args) > index else node.kwargs.get("training", True)
    return training is not False


def _check_eval_mode(gm: fx.GraphModule) -> None:
    random_modules = (*_BATCH_NORMS, nn.modules.dropout._DropoutNd)
    training = [
        f"{node.name} ({type(module).__name__})"
        for node, module in _modules_of(gm)
        if module.training and isinstance(module, random_modules)
    ]
    on_data = _depends_on_input(gm)
    training += [
        f"{node.name} ({node.target.__name__}, training=True)"
        for node in gm.graph.nodes
        if node in on_data and _training_flag(node)
    ]
    if training:
        raise TrainingModeError(
            "the model is in training mode, where BatchNorm uses batch statistics and dropout "
            "and stochastic_depth drop units at random, so explanations would be random: "
            f"{', '.join(training)}. Fix: call model.eval() before explaining (lrpfn never "
            "changes your model's mode)."
        )


def _depends_on_input(gm: fx.GraphModule) -> set[fx.Node]:
    """The nodes computed from the explained input (the first placeholder). A batch norm
    in training mode elsewhere standardises weights (timm's `ScaledStdConv2d`): no data."""
    placeholder = next((node for node in gm.graph.nodes if node.op == "placeholder"), None)
    found = {placeholder} if placeholder is not None else set()
    for node in gm.graph.nodes:
        if any(item in found for item in node.all_input_nodes):
            found.add(node)
    return found


def _fresh_name(gm: fx.GraphModule, base: str) -> str:
    """An attribute name `base` + a number that `gm` does not use. The search starts at
    the number of `gm`'s modules and buffers, which every new name increases, so it
    rarely looks twice (starting at 0 looked n times for the n-th name)."""
    index = len(gm._modules) + len(gm._buffers)
    while _taken(gm, f"{base}{index}"):
        index += 1
    return f"{base}{index}"


def _taken(gm: fx.GraphModule, name: str) -> bool:
    """`hasattr(gm, name)` by dictionary look-ups: a miss through `nn.Module.__getattr__`
    raises and formats an AttributeError, and `_fresh_name` misses once per new name."""
    return (
        name in gm.__dict__
        or name in gm._modules
        or name in gm._parameters
        or name in gm._buffers
        or hasattr(type(gm), name)
    )


def _out_of_place(gm: fx.GraphModule) -> None:
    for node in list(gm.graph.nodes):
        if node.op == "call_module":
            module = _submodule(gm, node.target)
            if getattr(module, "inplace", False) is True and not list(module.parameters()):
                replacement = copy.copy(module)  # a new object: the user's module is untouched
                replacement.inplace = False
                name = _fresh_name(gm, "_lrpfn_out_of_place_")
                gm.add_module(name, replacement)
                node.meta[SOURCE] = Source(node.target, type(module))
                node.target = name
        elif node.op == "call_function":
            if node.target in _INPLACE_OPERATORS:
                node.target = _INPLACE_OPERATORS[node.target]
            elif node.kwargs.get("inplace") is True:
                node.kwargs = {**node.kwargs, "inplace": False}
        elif (
            node.op == "call_method"
            and node.target.endswith("_")
            and not node.target.startswith("_")
        ):
            out_of_place = node.target[:-1]
            if hasattr(torch.Tensor, out_of_place):
                node.target = out_of_place


def _get_attr(gm: fx.GraphModule, node: fx.Node, tensor: torch.Tensor | None, base: str):
    """A get_attr node before `node` for `tensor`, stored on `gm` as a buffer."""
    if tensor is None:
        return None
    name = _fresh_name(gm, base)
    gm.register_buffer(name, tensor)
    with gm.graph.inserting_before(node):
        return gm.graph.get_attr(name)


def _parameter_attr(gm: fx.GraphModule, node: fx.Node, path: str, value):
    if value is None:
        return None
    with gm.graph.inserting_before(node):
        return gm.graph.get_attr(path)


def _lower_affine_modules(gm: fx.GraphModule) -> None:
    for node, module in list(_modules_of(gm)):
        kind = type(module)
        if kind not in (nn.Linear, nn.LayerNorm, nn.GroupNorm) and kind not in _CONV_FUNCTIONS:
            continue
        weight = _parameter_attr(gm, node, f"{node.target}.weight", module.weight)
        bias = _parameter_attr(gm, node, f"{node.target}.bias", module.bias)
        (x,) = node.args
        if kind is nn.Linear:
            target, args, kwargs = F.linear, (x, weight, bias), {}
        elif kind is nn.LayerNorm:
            target, args = F.layer_norm, (x, module.normalized_shape, weight, bias, module.eps)
            kwargs = {}
        elif kind is nn.GroupNorm:
            target, args = F.group_norm, (x, module.num_groups, weight, bias, module.eps)
            kwargs = {}
        else:
            target, args, kwargs = _convolution_call(gm, node, module, x, weight, bias)
        with gm.graph.inserting_before(node):
            lowered = gm.graph.call_function(target, args, kwargs)
        lowered.meta = {**node.meta, SOURCE: Source(node.target, kind)}
        _replace(gm, node, lowered)


def _replace(gm: fx.GraphModule, old: fx.Node, new: fx.Node) -> None:
    """Replace `old` by `new`, which takes over its name (so names match the user's trace)."""
    new.meta[_NAME] = old.name
    old.replace_all_uses_with(new)
    gm.graph.erase_node(old)


def _renamed(gm: fx.GraphModule) -> fx.GraphModule:
    """A new GraphModule for `gm`'s graph, its replacement nodes carrying the names of the
    nodes they replaced.

    The names are set in place where they are unique (the replaced nodes are gone, and
    fx never hands out a name twice), which saves copying the graph; otherwise the graph
    is copied and fx's namespace makes them unique (`name_1`).
    """
    final = [node.meta.get(_NAME, node.name) for node in gm.graph.nodes]
    if len(set(final)) == len(final):
        for node, name in zip(list(gm.graph.nodes), final, strict=True):
            if node.name != name:
                node.name = name
        return fx.GraphModule(gm, gm.graph, class_name=type(gm).__name__)
    graph = fx.Graph()
    values: dict[fx.Node, fx.Node] = {}
    for node in gm.graph.nodes:
        args = fx.node.map_arg(node.args, values.__getitem__)
        kwargs = fx.node.map_arg(node.kwargs, values.__getitem__)
        copied = graph.create_node(
            node.op, node.target, args, kwargs, node.meta.get(_NAME, node.name), node.type
        )
        copied.meta = dict(node.meta)
        values[node] = copied
    return fx.GraphModule(gm, graph, class_name=type(gm).__name__)


def _convolution_call(gm, node, module, x, weight, bias):
    target = _CONV_FUNCTIONS[type(module)]
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        kwargs = {
            "stride": module.stride,
            "padding": module.padding,
            "output_padding": module.output_padding,
            "groups": module.groups,
            "dilation": module.dilation,
        }
        return target, (x, weight, bias), kwargs
    kwargs = {"stride": module.stride, "padding": module.padding, "dilation": module.dilation}
    kwargs["groups"] = module.groups
    if module.padding_mode != "zeros":  # pad and convolve in one node: rules see the real input
        kwargs["padding"] = tuple(module._reversed_padding_repeated_twice)
        kwargs["padding_mode"] = module.padding_mode
        target = padded_convolution
    return target, (x, weight, bias), kwargs


_FOLDABLE = (F.linear, F.conv1d, F.conv2d, F.conv3d)


def _batch_norm_affine(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with BN(x) = x * scale + shift per channel, in eval mode."""
    with torch.no_grad():
        mean, var = module.running_mean, module.running_var
        scale = torch.rsqrt(var + module.eps)
        if module.weight is not None:
            scale = scale * module.weight
        shift = -mean * scale
        if module.bias is not None:
            shift = shift + module.bias
    return scale, shift  # new tensors (computed under no_grad), never the module's own


def _fold_batch_norms(gm: fx.GraphModule) -> None:
    _fold_functional_batch_norms(gm)
    for node, module in list(_modules_of(gm)):
        if not isinstance(module, _BATCH_NORMS):
            continue
        if module.running_mean is None:
            raise TrainingModeError(
                f"BatchNorm node {node.name!r} ({node.target}) has track_running_stats=False, so "
                "it normalises with batch statistics even in eval mode and mixes samples. "
                "Fix: explain a copy of the model with running statistics."
            )
        scale, shift = _batch_norm_affine(module)
        (x,) = node.args
        _fold_or_affine(gm, node, x, scale, shift, Source(node.target, type(module)))


def _fold_functional_batch_norms(gm: fx.GraphModule) -> None:
    """`F.batch_norm` nodes (eval mode) whose statistics and parameters are module
    attributes: folded into the layer before, or a per-channel affine node, as modules are."""
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not F.batch_norm:
            continue
        arguments = batch_norm_arguments(node.args, node.kwargs)
        constants = {}
        for key in ("running_mean", "running_var", "weight", "bias"):
            value = arguments[key]
            if isinstance(value, fx.Node) and value.op == "get_attr":
                constants[key] = attribute(gm, value.target)
            elif value is None and key in ("weight", "bias"):
                constants[key] = None
            else:
                break  # computed or missing statistics: the handler makes it affine at run time
        else:
            with torch.no_grad():
                scale, shift = batch_norm_affine({**arguments, **constants})
            _fold_or_affine(gm, node, arguments["input"], scale, shift, node.meta.get(SOURCE))


def _fold_or_affine(gm, node, x, scale, shift, source) -> None:
    if _foldable(x):
        _fold_into(gm, x, scale, shift)
        x.meta[FOLDED] = node.name
        node.replace_all_uses_with(x)
        gm.graph.erase_node(node)
        return
    scale_node = _get_attr(gm, node, scale, "_lrpfn_bn_scale_")
    shift_node = _get_attr(gm, node, shift, "_lrpfn_bn_shift_")
    with gm.graph.inserting_before(node):
        affine = gm.graph.call_function(channel_affine, (x, scale_node, shift_node))
    affine.meta = dict(node.meta)
    if source is not None:
        affine.meta[SOURCE] = source
    _replace(gm, node, affine)


def _foldable(x) -> bool:
    return (
        isinstance(x, fx.Node)
        and x.op == "call_function"
        and x.target in _FOLDABLE
        and len(x.users) == 1
        and isinstance(x.args[1], fx.Node)
        and x.args[1].op == "get_attr"
    )


def _fold_into(gm: fx.GraphModule, affine: fx.Node, scale: torch.Tensor, shift: torch.Tensor):
    weight = attribute(gm, affine.args[1].target)
    bias_arg = affine.args[2] if len(affine.args) > 2 else affine.kwargs.get("bias")
    bias = attribute(gm, bias_arg.target) if bias_arg is not None else None
    with torch.no_grad():  # arithmetic makes new tensors: the module's are never written
        view = (-1,) + (1,) * (weight.ndim - 1)
        folded_weight = weight * scale.reshape(view)
        folded_bias = shift if bias is None else bias * scale + shift
    weight_node = _get_attr(gm, affine, folded_weight, "_lrpfn_folded_weight_")
    bias_node = _get_attr(gm, affine, folded_bias, "_lrpfn_folded_bias_")
    args = list(affine.args)
    args[1] = weight_node
    kwargs = dict(affine.kwargs)
    if len(args) > 2:
        args[2] = bias_node
    else:
        kwargs["bias"] = bias_node
    affine.args, affine.kwargs = tuple(args), kwargs


def attribute(module: torch.nn.Module, path: str):
    """The attribute at dotted `path` of `module` (tensors detached, never copied)."""
    value = module
    for part in path.split("."):
        value = getattr(value, part)
    return value.detach() if isinstance(value, torch.Tensor) else value
