r"""The folded walk: `lrp`'s forward pass and reverse walk where `plan.folding` folds nodes.

The forward computes, for each fast linear node (`engine.folding`), its rule's transposed
terms $(W_k, t_k)$ (`rule.fold`): where the node is folded, $t_k$ is a factor
$v / \mathrm{st}(z_k)$ of its base value $v$, computed when $v$ is (the node's $z$ is held
until then); else a denominator. Max-pooling in the folded region keeps its indices,
reshapes their input's shape. The walk then visits nodes in reverse as `engine.walk` does:

- a fast linear node: $s_k = c \odot t_k$ (folded) or $R / t_k$, then
  $X = \sum_k f^\top(s_k; W_k)$ by the transposed op alone (it reads only the input's
  shape); a factored input takes $X$ as its coefficient, any other $a \odot X$;
- a fast sum: $s$ likewise, each input $\sigma_i s$ (times the input unless factored);
- a factored pass hands its coefficient on; a factored max-pool routes it by the
  forward's indices (`max_pool2d_with_indices_backward`), a reshape reshapes it back;
- every other node: the plain step of `engine.walk`, on the values the forward kept.

`lrpfn.relevances` (every node's relevance) runs the plain walk, since coefficients are
not relevances; so do 16-bit inputs (their rules compute in float32, `ops.apply_rule`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, fx

from ..errors import NodeFailedError
from ..ops.handler import Step
from ..ops.linear import foldable_layer, sum_signs
from ..rules import Activations, epsilon_factor
from .plan import Plan
from .walk import _accumulate, _node_function, _release, _step, _value, forward

__all__ = ["FoldedValues", "backward_folded", "forward_folded", "takes_folded_walk"]

_FOLDED_DTYPES = (torch.float32, torch.float64)


class FoldedValues(dict):
    """The forward's kept values (`{node: value}`) and, in `terms`, what the fast nodes and
    the factored routes need (`{node: record}`)."""

    terms: dict[fx.Node, Any]


def takes_folded_walk(plan: Plan, x: Tensor, keep_all: bool) -> bool:
    """Whether `lrp` runs the folded walk: the plan folds something, one relevance result
    is asked for, and the input is float32 or float64."""
    return bool(plan.folding.fast) and not keep_all and x.dtype in _FOLDED_DTYPES


def forward_folded(plan: Plan, x: Tensor) -> tuple[FoldedValues, fx.Node]:
    """`engine.walk.forward` keeping `plan.folding.keep` and computing the fast nodes' terms."""
    folding = plan.folding
    env = FoldedValues()
    env.terms = {}
    pending: dict[fx.Node, tuple] = {}

    def before(node: fx.Node, values: dict) -> bool:
        """A factored route: computed here (max-pooling with its indices)."""
        if node not in folding.routes:
            return False
        _record_route(plan, node, values, env.terms)
        return True

    def after(node: fx.Node, values: dict) -> None:
        """Called by the forward interpreter after each node, before values are dropped."""
        if node in folding.fast:
            _record_fast(plan, node, values, env.terms, pending)
        for folded in folding.bases.get(node, ()):
            _fold(plan, folded, values[node], env.terms, pending)

    kept, output_node = forward(plan, x, keep=folding.keep, before=before, after=after)
    env.update(kept)
    return env, output_node


def _record_route(plan: Plan, node: fx.Node, values: dict, terms: dict) -> None:
    (item,) = plan.data_inputs[node]
    shape = values[item].shape
    if plan.folding.routes[node] != "max_pool2d":
        args = fx.node.map_arg(node.args, values.__getitem__)
        kwargs = fx.node.map_arg(node.kwargs, values.__getitem__)
        values[node] = _node_function(plan, node)(*args, **kwargs)
        terms[node] = shape
        return
    pool = plan.module.get_submodule(node.target)
    kernel = _pair(pool.kernel_size)
    stride = _pair(pool.stride) if pool.stride else kernel
    arguments = (kernel, stride, _pair(pool.padding), _pair(pool.dilation), pool.ceil_mode)
    output, indices = torch.ops.aten.max_pool2d_with_indices(values[item], *arguments)
    values[node] = output  # the same values as the module's own call
    terms[node] = (shape, arguments, indices)


def _pair(value: Any) -> list[int]:
    return [value, value] if isinstance(value, int) else list(value)


def _record_fast(plan: Plan, node: fx.Node, values: dict, terms: dict, pending: dict) -> None:
    folding, rule = plan.folding, plan.rules[node.name]
    inputs = plan.data_inputs[node]
    z = values[node]
    if plan.handlers[node].kind == "sum":
        record = (sum_signs(node, plan.data_positions[node]), [values[i].shape for i in inputs])
        if node in folding.factored:
            pending[node] = (record, z)
        else:  # lazy: the walk divides by st(z), from the kept z
            terms[node] = (*record, None)
        return
    a = values[inputs[0]]
    args = fx.node.map_arg(node.args, values.__getitem__)
    kwargs = fx.node.map_arg(node.kwargs, values.__getitem__)
    nonnegative = inputs[0] in plan.nonnegative
    step = Step(node, args, kwargs, (a,), z, None, rule, None, (nonnegative,), (0,), inputs)
    layer = foldable_layer(plan.handlers[node])(step)
    if node in folding.factored:
        zero = folding.relations[node] in ("relu", "zero_below")
        pending[node] = (layer, Activations(a, z, nonnegative, zero))
    elif node in folding.lazy:  # the walk divides by st(z), from the kept z
        terms[node] = (layer, ((layer.weight, None),), a.shape)
    else:
        activations = Activations(a, z, nonnegative, node in plan.zero_where_nonpositive)
        terms[node] = (layer, rule.fold(layer, activations, None, "other"), a.shape)


def _fold(plan: Plan, node: fx.Node, base: Tensor, terms: dict, pending: dict) -> None:
    """The folded node's factors, now that its base value is computed."""
    rule, relation = plan.rules[node.name], plan.folding.relations[node]
    if plan.handlers[node].kind == "sum":
        (signs, shapes), z = pending.pop(node)
        terms[node] = (signs, shapes, epsilon_factor(z, rule.epsilon, base, relation))
        return
    layer, activations = pending.pop(node)
    factors = rule.fold(layer, activations, base, relation)
    terms[node] = (layer, factors, activations.input.shape)


def backward_folded(plan: Plan, env: FoldedValues, output_node: fx.Node, start: Tensor) -> Tensor:
    """The folded walk from `start` (rescaled output relevance); the input relevance.

    `env` is consumed (values and terms are freed after their last use). A start with a
    leading axis of k targets walks each in turn over the same forward values."""
    output = env[output_node]
    if start.ndim == output.ndim + 1:
        each = []
        for one in start:
            copy = FoldedValues(env)
            copy.terms = dict(env.terms)
            each.append(_walk(plan, copy, output_node, one))
        return torch.stack(each)
    return _walk(plan, env, output_node, start)


def _walk(plan: Plan, env: FoldedValues, output_node: fx.Node, start: Tensor) -> Tensor:
    folding = plan.folding
    plain = replace(plan, backward_uses=folding.uses, recomputed=folding.recomputed)
    uses = dict(folding.uses)
    relevance: dict[fx.Node, Any] = {output_node: start}
    nodes = list(plan.module.graph.nodes)
    placeholder = next(node for node in nodes if node.op == "placeholder")
    x = env[placeholder]
    for node in reversed(nodes):
        if node not in plan.handlers:
            continue
        incoming = relevance.pop(node, None)
        if node in folding.fast or node in folding.factored:
            if incoming is not None:
                try:
                    contributions = _folded_step(plain, env, uses, node, incoming)
                except Exception as error:
                    raise NodeFailedError(
                        f"the folded relevance step failed at node {node.format_node()}: "
                        f"{type(error).__name__}: {error}"
                    ) from error
                for item, contribution in contributions:
                    relevance[item] = _accumulate(relevance.get(item), contribution)
            env.terms.pop(node, None)
            if node in folding.fast:
                _release_inputs(plain, env, uses, node)
            continue
        if incoming is not None:
            _step(plain, env, uses, node, incoming, relevance)
        _release(plain, env, uses, node)
    result = relevance.get(placeholder)
    return torch.zeros_like(x) if result is None else result


def _folded_step(plan: Plan, env: FoldedValues, uses: dict, node: fx.Node, c: Tensor) -> list:
    folding = plan.folding
    inputs = plan.data_inputs[node]
    kind = plan.handlers[node].kind
    if kind == "pass":
        return [(inputs[0], c)]
    if kind == "route":
        record = env.terms[node]
        if folding.routes[node] == "reshape":
            return [(inputs[0], c.reshape(record))]
        shape, arguments, indices = record
        like = c.new_empty(()).expand(shape)  # only its shape is read
        routed = torch.ops.aten.max_pool2d_with_indices_backward(c, like, *arguments, indices)
        return [(inputs[0], routed)]
    factored = node in folding.factored
    if kind == "sum":
        signs, shapes, t = env.terms[node]
        if t is None:
            t = _denominator(plan, env, uses, node)
        s = c * t if factored else c / t
        result = []
        for item, sign, shape in zip(inputs, signs, shapes, strict=True):
            share = s if sign == 1 else s * sign
            if item not in folding.factored:
                share = share * _value(plan, env, uses, item)
            result.append((item, share.sum_to_size(shape)))
        return result
    layer, terms, shape = env.terms[node]
    like = c.new_empty(()).expand(shape)  # the transposed ops read only its shape
    total = None
    for weight, t in terms:
        if t is None:
            t = _denominator(plan, env, uses, node)
        transposed = layer.transpose(c * t if factored else c / t, like, weight)
        total = transposed if total is None else total.add_(transposed)
    if inputs[0] not in folding.factored:
        total = total.mul_(_value(plan, env, uses, inputs[0]))
    return [(inputs[0], total)]


def _denominator(plan: Plan, env: dict, uses: dict, node: fx.Node) -> Tensor:
    r"""A lazy node's $\mathrm{st}(z)$ from its kept $z$ (released after this last read)."""
    denominator = epsilon_factor(_value(plan, env, uses, node), plan.rules[node.name].epsilon)
    uses[node] -= 1
    if uses[node] == 0:
        env.pop(node, None)
    return denominator


def _release_inputs(plan: Plan, env: dict, uses: dict, node: fx.Node) -> None:
    """Free the fast node's plain inputs after their last read."""
    for item in plan.data_inputs[node]:
        if item not in plan.folding.factored:
            uses[item] -= 1
            if uses[item] == 0:
                env.pop(item, None)
