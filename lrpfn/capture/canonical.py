"""Graph passes that bring a captured model into the form the traversal explains.

`canonicalize(gm)` returns a new `GraphModule`; the model it came from is untouched
(its modules, parameters and buffers are shared read-only, never written). The passes:

1. out-of-place: in-place ops (`ReLU(inplace=True)`, `F.relu(x, inplace=True)`,
   `x.relu_()`, `operator.iadd`) become out-of-place, so the activations kept for the
   relevance pass are not overwritten by later ops;
2. lower: `nn.Linear`, `nn.ConvNd`, `nn.ConvTransposeNd` and `nn.LayerNorm` calls become
   their functional form (`F.linear`, `F.conv2d`, ...) with the parameters as graph
   attributes (a convolution with a `padding_mode` other than "zeros" becomes
   `ops.functional.padded_convolution`). The source module's name and type
   are kept in `node.meta["lrpfn_source"]`, so rules still match by module name and type;
3. fold BatchNorm: an eval-mode BatchNorm whose input comes from a linear or convolution
   node used by nothing else is folded into it,
   $W' = W \\gamma / \\sqrt{\\sigma^2 + \\epsilon}$,
   $b' = (b - \\mu) \\gamma / \\sqrt{\\sigma^2 + \\epsilon} + \\beta$;
   any other BatchNorm becomes a per-channel affine node (`ops.functional.channel_affine`). The
   functional form `F.batch_norm(x, running_mean, running_var, weight, bias, False, ...)`
   (timm's `BatchNormAct2d`, and every BatchNorm captured by `torch.export`), in any mix
   of positional and keyword arguments, is folded or made affine exactly the same way
   when its statistics and parameters are module attributes (or None); otherwise the node
   stays and its handler makes it a per-channel affine layer at run time
   (`ops.normalization`);
4. merge parallel branches: a sum of linear branches of one input (convolutions of
   compatible geometry, a smaller kernel zero-padded to the largest, per-channel affine
   or identity branches) becomes one convolution (`merge_branches`, RepVGG's
   re-parameterisation), so rules never split a sum whose terms nearly cancel.
"""

from __future__ import annotations

import copy
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import TrainingModeError
from ..ops.functional import padded_convolution
from ..ops.normalization import batch_norm_arguments
from .attention import rewrite_attention
from .batch_norm import BATCH_NORMS, fold_batch_norms
from .edit import fresh_name, modules_of, replace_node, submodule
from .graph import draft_graph_module
from .merge_branches import merge_parallel_branches
from .source import NAME, SOURCE, Source

__all__ = ["canonicalize"]


_CONV_FUNCTIONS = {
    nn.Conv1d: F.conv1d,
    nn.Conv2d: F.conv2d,
    nn.Conv3d: F.conv3d,
    nn.ConvTranspose1d: F.conv_transpose1d,
    nn.ConvTranspose2d: F.conv_transpose2d,
    nn.ConvTranspose3d: F.conv_transpose3d,
}

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
    rewrite_attention(new)  # attention, RMSNorm, gates: ordinary ops
    _lower_affine_modules(new)
    fold_batch_norms(new)
    merge_parallel_branches(new)  # RepVGG / MobileOne blocks: one convolution
    new.graph.eliminate_dead_code()
    new = _renamed(new)
    new.graph.lint()
    return new


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
    random_modules = (*BATCH_NORMS, nn.modules.dropout._DropoutNd)
    training = [
        f"{node.name} ({type(module).__name__})"
        for node, module in modules_of(gm)
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


def _out_of_place(gm: fx.GraphModule) -> None:
    for node in list(gm.graph.nodes):
        if node.op == "call_module":
            module = submodule(gm, node.target)
            if getattr(module, "inplace", False) is True and not list(module.parameters()):
                replacement = copy.copy(module)  # a new object: the user's module is untouched
                replacement.inplace = False
                name = fresh_name(gm, "_lrpfn_out_of_place_")
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


def _parameter_attr(gm: fx.GraphModule, node: fx.Node, path: str, value):
    if value is None:
        return None
    with gm.graph.inserting_before(node):
        return gm.graph.get_attr(path)


def _lower_affine_modules(gm: fx.GraphModule) -> None:
    for node, module in list(modules_of(gm)):
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
        replace_node(gm, node, lowered)


def _renamed(gm: fx.GraphModule) -> fx.GraphModule:
    """A new GraphModule for `gm`'s graph, its replacement nodes carrying the names of the
    nodes they replaced.

    The names are set in place where they are unique (the replaced nodes are gone, and
    fx never hands out a name twice), which saves copying the graph; otherwise the graph
    is copied and fx's namespace makes them unique (`name_1`).
    """
    final = [node.meta.get(NAME, node.name) for node in gm.graph.nodes]
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
            node.op, node.target, args, kwargs, node.meta.get(NAME, node.name), node.type
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
