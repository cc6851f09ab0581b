r"""Merge parallel linear branches of one input into one convolution.

Re-parameterisable blocks (RepVGG, MobileOne, their kin) sum several linear branches of
the same input $x$: convolutions of different kernel sizes (3x3 and 1x1), each with its
folded BatchNorm, and often a BatchNorm of $x$ itself (the identity branch):
$$ y = \sum_k (W_k * x + b_k) + (s \odot x + t). $$
A sum of linear maps of one input is one linear map,
$$ y = W * x + b, \qquad W = \sum_k \mathrm{pad}(W_k) + \mathrm{diag}(s)\,\delta, \qquad
   b = \sum_k b_k + t, $$
where $\mathrm{pad}$ zero-pads a smaller kernel to the largest one (centred; exact when
the branches' paddings keep their outputs aligned) and $\delta$ is the identity kernel.
This pass rewrites every such sum into that one convolution before rules are assigned, as
the models' own `reparameterize()` does, and exactly as BatchNorm folding is exact. Why it
matters: the branches' outputs can nearly cancel, and a proportional split of their sum
divides by the small total (random repvgg_a1 under epsilon_gamma_box summed to 2.3e6 x
the logit); the merged convolution is explained by the convolution's rule, which sees the
whole map.

Branches are recognised through `nn.Identity` and eval-mode dropout modules, per-channel
affine nodes (unfolded BatchNorm, `ops.functional.channel_affine`) and `add` of a number.
A sum is merged only if every branch is linear in the same input node, the convolutions
share stride, dilation, groups and channels, and no intermediate value is read elsewhere
(shape queries such as `x.ndim` are read from the merged node instead).

Reference: Ding et al. 2021, "RepVGG: Making VGG-style ConvNets Great Again", CVPR (Sec.
3.3, structural re-parameterization).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from numbers import Number

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..ops.functional import channel_affine
from .edit import buffer_node, replace_node, submodule
from .source import SOURCE, attribute

__all__ = ["merge_parallel_branches"]

_CONVOLUTIONS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}
_ADDS = (operator.add, torch.add)
_PASS_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_SHAPE_QUERIES = {"ndim", "shape", "dtype", "device"}


@dataclass(frozen=True)
class _Geometry:
    """A convolution's static arguments, with its kernel's spatial size."""

    dims: int
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    kernel: tuple[int, ...]

    def offset(self) -> tuple[float, ...]:
        """Where the kernel's centre reads, relative to the output position times stride."""
        return tuple(
            d * (k - 1) / 2 - p
            for p, d, k in zip(self.padding, self.dilation, self.kernel, strict=True)
        )


@dataclass(frozen=True)
class _Branch:
    """A linear map of `source`: the convolution `weight` (with `geometry`), or where
    `weight` is None the identity times `identity_scale` per channel (None: 1); plus
    `bias` per output channel (None: 0). `nodes`: the graph nodes it replaces."""

    source: fx.Node
    weight: torch.Tensor | None
    identity_scale: torch.Tensor | None
    bias: torch.Tensor | None
    geometry: _Geometry | None
    nodes: tuple[fx.Node, ...]


def merge_parallel_branches(gm: fx.GraphModule) -> None:
    """Rewrite, in place, every sum of parallel linear branches of one input into one
    convolution (see the module docstring)."""
    for node in list(gm.graph.nodes):
        if node.graph is not gm.graph or not _is_add(node):
            continue
        if any(_is_add(user) for user in node.users):
            continue  # the top of a sum tree merges it whole
        terms = _sum_terms(gm, node)
        if terms is None or len(terms[0]) < 2:
            continue
        branches, constant, adds = terms
        merged = _merged(branches, constant)
        if merged is not None:
            _rewrite(gm, node, adds, branches, merged)


def _is_add(node) -> bool:
    return (
        isinstance(node, fx.Node)
        and node.op == "call_function"
        and node.target in _ADDS
        and len(node.args) == 2
        and not node.kwargs
    )


def _sum_terms(gm: fx.GraphModule, node: fx.Node):
    """`(branches, number added, add nodes)` of the add tree at `node`, or None."""
    branches, constant, adds = [], 0.0, [node]
    for operand in node.args:
        if isinstance(operand, Number) and not isinstance(operand, bool):
            constant += float(operand)
        elif isinstance(operand, fx.Node) and _inner_sum(gm, operand, node) is not None:
            passes, inner_add = _inner_sum(gm, operand, node)
            inner = _sum_terms(gm, inner_add)
            if inner is None:
                return None
            branches += inner[0]
            constant += inner[1]
            adds += [*passes, *inner[2]]
        elif isinstance(operand, fx.Node):
            branches.append(_branch(gm, operand, node))
        else:
            return None
    return branches, constant, adds


def _inner_sum(gm: fx.GraphModule, operand: fx.Node, reader: fx.Node):
    """`(identity modules, add)` where `operand` is an add read only by `reader`, seen
    through identity modules (timm's `drop_path`); else None."""
    passes, above = [], reader
    while (
        operand.op == "call_module"
        and isinstance(submodule(gm, operand.target), _PASS_MODULES)
        and len(operand.args) == 1
        and isinstance(operand.args[0], fx.Node)
        and _private(operand, {above})
    ):
        passes.append(operand)
        above, operand = operand, operand.args[0]
    if _is_add(operand) and _private(operand, {above}):
        return passes, operand
    return None


def _private(node: fx.Node, readers: set) -> bool:
    """`node` is read only by `readers` and by shape queries."""
    return all(user in readers or _shape_query(user) for user in node.users)


def _shape_query(user: fx.Node) -> bool:
    if user.op == "call_function" and user.target is getattr:
        return user.args[1] in _SHAPE_QUERIES
    return user.op == "call_method" and user.target in ("size", "dim")


def _branch(gm: fx.GraphModule, operand: fx.Node, reader: fx.Node) -> _Branch:
    """`operand` as a linear map of the first node below it that is not private to the
    sum or not linear (identity modules, constant per-channel affine nodes, and a
    convolution with constant weights at the bottom)."""
    nodes, affines = [], []
    current, above = operand, reader
    weight = bias = geometry = None
    while _private(current, {above}):
        below = _linear_step(gm, current)
        if below is None:
            convolution = _convolution(gm, current)
            if convolution is not None:
                nodes.append(current)
                current, weight, bias, geometry = convolution
            break
        nodes.append(current)
        if current.op == "call_function":  # channel_affine
            affines.append(
                (attribute(gm, current.args[1].target), attribute(gm, current.args[2].target))
            )
        above, current = current, below
    identity_scale = None
    with torch.no_grad():
        for scale, shift in reversed(affines):  # the lowest affine map applies first
            if weight is None:
                identity_scale = scale if identity_scale is None else identity_scale * scale
            else:
                weight = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
            bias = shift if bias is None else bias * scale + shift
    return _Branch(current, weight, identity_scale, bias, geometry, tuple(nodes))


def _linear_step(gm: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    """The input of `node` if `node` is an identity module or a constant per-channel
    affine node; else None."""
    if node.op == "call_module" and isinstance(submodule(gm, node.target), _PASS_MODULES):
        return node.args[0] if len(node.args) == 1 and not node.kwargs else None
    if node.op == "call_function" and node.target is channel_affine and len(node.args) == 3:
        x, scale, shift = node.args
        if _constant(scale) and _constant(shift) and isinstance(x, fx.Node):
            return x
    return None


def _constant(value) -> bool:
    return isinstance(value, fx.Node) and value.op == "get_attr"


def _convolution(gm: fx.GraphModule, node: fx.Node):
    """`(input, weight, bias, geometry)` of a convolution node with constant weights."""
    if node.op != "call_function" or node.target not in _CONVOLUTIONS:
        return None
    dims = _CONVOLUTIONS[node.target]
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    defaults = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
    arguments = {**defaults, **dict(zip(names, node.args, strict=False)), **node.kwargs}
    if not _constant(arguments["weight"]) or not (
        arguments["bias"] is None or _constant(arguments["bias"])
    ):
        return None
    if isinstance(arguments["padding"], str) or not isinstance(arguments["input"], fx.Node):
        return None
    weight = attribute(gm, arguments["weight"].target)
    bias = None if arguments["bias"] is None else attribute(gm, arguments["bias"].target)
    geometry = _Geometry(
        dims,
        _tuple(arguments["stride"], dims),
        _tuple(arguments["padding"], dims),
        _tuple(arguments["dilation"], dims),
        int(arguments["groups"]),
        tuple(weight.shape[2:]),
    )
    return arguments["input"], weight, bias, geometry


def _tuple(value, dims: int) -> tuple[int, ...]:
    return (
        tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),) * dims
    )


@dataclass(frozen=True)
class _Merged:
    weight: torch.Tensor
    bias: torch.Tensor | None
    geometry: _Geometry
    source: fx.Node
    meta_from: fx.Node


def _merged(branches: list[_Branch], constant: float) -> _Merged | None:
    """The one convolution equal to the sum of `branches` plus `constant`, or None where
    the branches do not merge exactly."""
    source = branches[0].source
    convolutions = [b for b in branches if b.weight is not None]
    if not convolutions or any(b.source is not source for b in branches):
        return None
    first = convolutions[0]
    geometry, weight = first.geometry, first.weight
    for branch in convolutions[1:]:
        other = branch.geometry
        if (
            (other.dims, other.stride, other.dilation, other.groups, other.offset())
            != (
                geometry.dims,
                geometry.stride,
                geometry.dilation,
                geometry.groups,
                geometry.offset(),
            )
            or branch.weight.shape[:2] != weight.shape[:2]
            or branch.weight.dtype != weight.dtype
            or any((a - b) % 2 for a, b in zip(other.kernel, geometry.kernel, strict=True))
        ):
            return None
    kernel = tuple(max(b.geometry.kernel[i] for b in convolutions) for i in range(geometry.dims))
    identities = [b for b in branches if b.weight is None]
    channels, per_group = weight.shape[0], weight.shape[1]
    if identities and not (
        all(s == 1 for s in geometry.stride)
        and all(v == 0 for v in geometry.offset())
        and all(k % 2 for k in kernel)
        and per_group * geometry.groups == channels
    ):
        return None
    with torch.no_grad():
        total = sum(_padded(b.weight, kernel) for b in convolutions)
        for branch in identities:
            total = total + _identity_kernel(branch, channels, per_group, kernel, weight)
        biases = [b.bias for b in branches if b.bias is not None]
        bias = sum(biases) + constant if biases else None
        if bias is None and constant:
            bias = torch.full((channels,), constant, dtype=weight.dtype, device=weight.device)
    padding = tuple(
        int(d * (k - 1) / 2 - o)
        for d, k, o in zip(geometry.dilation, kernel, geometry.offset(), strict=True)
    )
    widest = max(convolutions, key=lambda b: b.geometry.kernel)
    merged = _Geometry(
        geometry.dims, geometry.stride, padding, geometry.dilation, geometry.groups, kernel
    )
    return _Merged(total, bias, merged, source, widest.nodes[-1])


def _padded(weight: torch.Tensor, kernel: tuple[int, ...]) -> torch.Tensor:
    """`weight` zero-padded, centred, to the spatial size `kernel`."""
    pads = []
    for size, target in reversed(list(zip(weight.shape[2:], kernel, strict=True))):
        pads += [(target - size) // 2, (target - size) // 2]
    return F.pad(weight, pads) if any(pads) else weight


def _identity_kernel(branch, channels, per_group, kernel, like) -> torch.Tensor:
    """The kernel of `x -> identity_scale * x` for a convolution with these groups."""
    scale = branch.identity_scale
    if scale is None:
        scale = torch.ones(channels, dtype=like.dtype, device=like.device)
    identity = torch.zeros((channels, per_group, *kernel), dtype=like.dtype, device=like.device)
    index = torch.arange(channels, device=like.device)
    centre = tuple(k // 2 for k in kernel)
    identity[(index, index % per_group, *centre)] = scale.to(like.dtype)
    return identity


def _rewrite(gm, top, adds, branches, merged: _Merged) -> None:
    """Replace the add tree at `top` and its branches by the merged convolution."""
    replaced = {*adds, *(node for branch in branches for node in branch.nodes)}
    order = {node: index for index, node in enumerate(gm.graph.nodes)}
    earliest = min(replaced, key=order.__getitem__)
    weight = buffer_node(gm, earliest, merged.weight, "_lrpfn_merged_weight_")
    bias = buffer_node(gm, earliest, merged.bias, "_lrpfn_merged_bias_")
    target = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[merged.geometry.dims]
    kwargs = {
        "stride": merged.geometry.stride,
        "padding": merged.geometry.padding,
        "dilation": merged.geometry.dilation,
        "groups": merged.geometry.groups,
    }
    with gm.graph.inserting_before(earliest):
        convolution = gm.graph.call_function(target, (merged.source, weight, bias), kwargs)
    convolution.meta = dict(top.meta)
    if SOURCE in merged.meta_from.meta:
        convolution.meta[SOURCE] = merged.meta_from.meta[SOURCE]
    replace_node(gm, top, convolution)
    for node in sorted(replaced - {top}, key=order.__getitem__, reverse=True):
        node.replace_all_uses_with(convolution)  # shape queries read the merged node
        gm.graph.erase_node(node)
