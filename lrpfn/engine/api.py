"""The entry points: `lrp`, `relevances` and `prepare`.

Everything is a pure function of its arguments: the model is captured and canonicalized
into a new graph (or a `Plan` made once by `prepare` is reused); nothing is stored on the
model, its modules or the rules, and the model's parameters, buffers, hooks, mode and
`requires_grad` flags are never touched.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..capture import FOLDED, TRACE_LOCK
from ..errors import InvalidInputError, InvalidRuleError, LowPrecisionWarning
from ..ops.handler import Handler
from .conservation import check_conservation
from .folded_walk import backward_folded, forward_folded, takes_folded_walk
from .plan import Plan
from .prepare import prepare
from .relevance import (
    Target,
    check_input,
    check_output,
    check_token_ids,
    initial_relevance,
    power_of_two_scale,
    rescaled,
)
from .several_targets import walk_each_target
from .walk import backward, forward

__all__ = ["as_plan", "lrp", "model_output", "prepare", "relevances"]


def lrp(
    model: torch.nn.Module | Plan,
    x: Tensor,
    rules: Any = None,
    target: Target = None,
    *,
    output_relevance: Tensor | None = None,
    handlers: Mapping[Any, Handler] | None = None,
    pattern: Any = None,
    output: str | int | None = None,
) -> Tensor:
    """Explain `model` at `x` with Layer-wise Relevance Propagation.

    Arguments:
        model: an `nn.Module` (captured with `torch.fx`), a `torch.fx.GraphModule`, or a
            `Plan` from `lrpfn.prepare` (then `rules` must be None).
        x: the input batch, a floating tensor; or integer token ids where the model's
            input feeds `nn.Embedding` or `F.embedding` lookups only (see Returns).
        rules: a rule mapping: a rule, a dict of rules keyed by type, name, family,
            position or predicate, a `Composite`, or a rule key such as "alpha2beta1".
        target: the class to explain: None (each sample's argmax), an int (a NumPy
            integer too), a LongTensor, list or NumPy array of shape `(batch,)`, or of
            shape `(batch, k)` for k classes per sample at once; for a dense output
            (segmentation, `(batch, classes, *spatial)`) a `lrpfn.Region(class, mask)`.
        output_relevance: start from this relevance instead (shape of the model output).
        handlers: a dispatch table replacing `lrpfn.HANDLERS`.
        pattern: patterns for TorchLRP's keys, `lrp(model, x, "patternnet", pattern=p)`.
        output: the key or index of the output to explain where the model returns a
            mapping or tuple (`output="out"` for torchvision's segmentation models).

    Returns:
        The input relevance, shaped like `x` (with a leading axis of size k for targets of
        shape `(batch, k)`). For conservative rules it sums to the explained logit.
        For integer token ids the explanation stops at the embedding output (ids carry
        no relevance): the result has shape `x.shape + (embedding_dim,)`, the relevance
        of each token's each embedding dimension; `.sum(-1)` gives the relevance per
        token (shape `x.shape`). Where the ids feed several lookups, theirs are added.
    """
    options = (rules, handlers, pattern, output)
    result, _ = _explain(model, x, options, target, output_relevance, keep_all=False)
    return result


def relevances(
    model: torch.nn.Module | Plan,
    x: Tensor,
    rules: Any = None,
    target: Target = None,
    *,
    output_relevance: Tensor | None = None,
    handlers: Mapping[Any, Handler] | None = None,
    pattern: Any = None,
    output: str | int | None = None,
) -> dict[str, Tensor]:
    """The relevance at every graph node, `{fx node name: relevance}` in graph order.

    The input (its placeholder name, e.g. "x") and the output (key "output") are
    included. A BatchNorm folded into the layer before it shares that layer's relevance.
    Arguments as in `lrp`.
    """
    options = (rules, handlers, pattern, output)
    _, recorded = _explain(model, x, options, target, output_relevance, keep_all=True)
    return recorded


def model_output(plan: Plan, x: Tensor) -> Tensor:
    """The model's output at `x`, computed node by node through the plan's graph.

    The same numbers as calling the model, but a failing op raises `NodeFailedError` naming
    the node, the op and the likely fix (a channel, dtype, size or device mismatch) instead
    of a bare error from deep inside the model: what applications built on the engine (the
    command line, `lrpfn.datasets`) call for the logits they need besides the relevance.
    """
    check_input(x)
    _check_shape(plan, x)
    _check_batch_axis(plan, x)
    with torch.no_grad(), TRACE_LOCK.running():
        env, output_node = forward(plan, x)
    return env[output_node]


def _explain(model, x, options, target, output_relevance, keep_all, check=True):
    check_input(x, token_ids=True)
    plan = as_plan(model, *options, example_input=x)
    check_token_ids(plan, x)
    _check_shape(plan, x)
    _check_batch_axis(plan, x)
    if check and x.dtype in (torch.float16, torch.bfloat16):
        warnings.warn(
            f"x is {x.dtype}: the relevance is computed in {x.dtype} and differs from "
            "float32's by up to a few percent (4% measured on a small CNN). For reference "
            "numbers explain a float32 copy: lrpfn.lrp(model.float(), x.float(), ...).",
            LowPrecisionWarning,
            stacklevel=3,
        )
    if plan.compiled is not None and not keep_all:  # prepare(..., compile=True)
        return plan.compiled.explain(plan, x, target, output_relevance), {}
    with torch.no_grad(), TRACE_LOCK.running():
        folded = takes_folded_walk(plan, x, keep_all)  # engine.folded_walk
        env, output_node = (forward_folded if folded else forward)(plan, x)
        output = env[output_node]
        check_output(output, x, output_relevance)
        initial = initial_relevance(output, target, output_relevance)
        scale = power_of_two_scale(initial, output.ndim)
        if keep_all:  # node values need not have a batch axis: one scale for the batch
            scale = torch.full_like(scale, scale.max()) if scale.ndim else scale
        start = rescaled(initial, scale.reciprocal())  # exact: scale is a power of two
        if folded:
            result, recorded = backward_folded(plan, env, output_node, start), {}
        elif initial.ndim == output.ndim + 1:  # several targets per sample
            result, recorded = walk_each_target(plan, env, output_node, start, keep_all)
        else:
            result, recorded = backward(plan, env, output_node, start, keep_all, owned=True)
        result = rescaled(result, scale)
        recorded = {name: rescaled(value, scale) for name, value in recorded.items()}
    if check and output_relevance is None:  # the logit of a target is the reference
        check_conservation(
            plan, initial, result, output.ndim,
            lambda: recorded if keep_all else _explain(
                plan, x, (None,) * 4, target, output_relevance, keep_all=True, check=False
            )[1],
        )  # fmt: skip
    if keep_all:
        recorded = _with_aliases(plan, recorded)
        recorded["output"] = initial
    return result, recorded


def as_plan(
    model: torch.nn.Module | Plan,
    rules: Any,
    handlers: Mapping[Any, Handler] | None,
    pattern: Any,
    output: str | int | None = None,
    example_input: Tensor | None = None,
) -> Plan:
    """`model` itself if it is a `Plan` (then rules, handlers, pattern and output must be
    None), else `prepare(model, rules, handlers, pattern=pattern, output=output,
    example_input=example_input)`."""
    if isinstance(model, Plan):
        if rules is not None or handlers is not None or pattern is not None or output is not None:
            raise InvalidRuleError(
                "this Plan already has its rules, handlers and output; pass rules=None, or "
                "prepare a new Plan with lrpfn.prepare(model, rules)."
            )
        return model
    if rules is None:
        raise InvalidRuleError(
            "no rules given: pass e.g. rules=lrpfn.rules.Epsilon() or a composite such as "
            "lrpfn.composites.epsilon_plus()."
        )
    return prepare(
        model, rules, handlers, pattern=pattern, example_input=example_input, output=output
    )


_CONVOLUTION_DIMS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}


def _check_batch_axis(plan: Plan, x: Tensor) -> None:
    """A convolution reading the input takes (batch, channels, *spatial): a sample without
    its batch axis would run unbatched through it and fail later, in a dense layer."""
    first = next(
        (
            node
            for node in plan.module.graph.nodes
            if node.target in _CONVOLUTION_DIMS
            and isinstance(node.args[0], torch.fx.Node)
            and node.args[0].op == "placeholder"
        ),
        None,
    )
    if first is not None and x.ndim == _CONVOLUTION_DIMS[first.target] + 1:
        raise InvalidInputError(
            f"x has shape {tuple(x.shape)}, but the model's first convolution ({first.name}) "
            f"takes {x.ndim + 1} axes (batch, channels, ...): add a batch axis, x[None] "
            "(or x.unsqueeze(0)) for one sample."
        )


def _check_shape(plan: Plan, x: Tensor) -> None:
    if plan.input_shape is not None and tuple(x.shape) != plan.input_shape:
        raise InvalidInputError(
            f"this Plan was captured by torch.export at input shape {plan.input_shape} (fx "
            f"could not trace the model) and holds for that shape only; x has shape "
            f"{tuple(x.shape)}. Fix: prepare a plan with example_input of this shape, or "
            "call lrpfn.lrp(model, x), which captures at x's shape."
        )


def _with_aliases(plan: Plan, recorded: dict[str, Any]) -> dict[str, Any]:
    folded = {
        node.name: node.meta[FOLDED] for node in plan.module.graph.nodes if FOLDED in node.meta
    }
    result = {}
    for name, value in recorded.items():
        result[name] = value
        if name in folded:
            result[folded[name]] = value
    return result
