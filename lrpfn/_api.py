"""The entry points: `lrp`, `relevances` and `prepare`.

Everything is a pure function of its arguments: the model is captured and canonicalized
into a new graph (or a `Plan` made once by `prepare` is reused); nothing is stored on the
model, its modules or the rules, and the model's parameters, buffers, hooks, mode and
`requires_grad` flags are never touched.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ._canonical import FOLDED
from ._capture import TRACE_LOCK
from ._conservation import check_conservation
from ._handlers import Handler
from ._plan import Plan, prepare
from ._several_targets import walk_each_target
from ._traverse import backward, forward
from .errors import InvalidInputError, InvalidRuleError, InvalidTargetError

__all__ = ["lrp", "model_output", "prepare", "relevances"]

Target = int | Sequence[int] | Tensor | None


def lrp(
    model: torch.nn.Module | Plan,
    x: Tensor,
    rules: Any = None,
    target: Target = None,
    *,
    output_relevance: Tensor | None = None,
    handlers: Mapping[Any, Handler] | None = None,
    pattern: Any = None,
) -> Tensor:
    """Explain `model` at `x` with Layer-wise Relevance Propagation.

    Arguments:
        model: an `nn.Module` (captured with `torch.fx`), a `torch.fx.GraphModule`, or a
            `Plan` from `lrpfn.prepare` (then `rules` must be None).
        x: the input batch, a floating tensor.
        rules: a rule mapping: a rule, a dict of rules keyed by type, name, family,
            position or predicate, a `Composite`, or a rule key such as "alpha2beta1".
        target: the class to explain: None (each sample's argmax), an int (a NumPy
            integer too), a LongTensor, list or NumPy array of shape `(batch,)`, or of
            shape `(batch, k)` for k classes per sample at once.
        output_relevance: start from this relevance instead (shape of the model output).
        handlers: a dispatch table replacing `lrpfn.HANDLERS`.
        pattern: patterns for TorchLRP's keys, `lrp(model, x, "patternnet", pattern=p)`.

    Returns:
        The input relevance, shaped like `x` (with a leading axis of size k for targets of
        shape `(batch, k)`). For conservative rules it sums to the explained logit.
    """
    options = (rules, handlers, pattern)
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
) -> dict[str, Tensor]:
    """The relevance at every graph node, `{fx node name: relevance}` in graph order.

    The input (its placeholder name, e.g. "x") and the output (key "output") are
    included. A BatchNorm folded into the layer before it shares that layer's relevance.
    Arguments as in `lrp`.
    """
    options = (rules, handlers, pattern)
    _, recorded = _explain(model, x, options, target, output_relevance, keep_all=True)
    return recorded


def model_output(plan: Plan, x: Tensor) -> Tensor:
    """The model's output at `x`, computed node by node through the plan's graph.

    The same numbers as calling the model, but a failing op raises `NodeFailedError` naming
    the node, the op and the likely fix (a channel, dtype, size or device mismatch) instead
    of a bare error from deep inside the model: what applications built on the engine (the
    command line, `lrpfn.datasets`) call for the logits they need besides the relevance.
    """
    _check_input(x)
    _check_shape(plan, x)
    with torch.no_grad(), TRACE_LOCK.running():
        env, output_node = forward(plan, x)
    return env[output_node]


def _explain(model, x, options, target, output_relevance, keep_all, check=True):
    _check_input(x)
    plan = _as_plan(model, *options, example_input=x)
    _check_shape(plan, x)
    if plan.compiled is not None and not keep_all:  # prepare(..., compile=True)
        return plan.compiled.explain(plan, x, target, output_relevance), {}
    with torch.no_grad(), TRACE_LOCK.running():
        env, output_node = forward(plan, x)
        output = env[output_node]
        _check_output(output, x, output_relevance)
        initial = _initial_relevance(output, target, output_relevance)
        scale = _power_of_two_scale(initial, output.ndim)
        start = _rescaled(initial, scale.reciprocal())  # exact: scale is a power of two
        if initial.ndim == output.ndim + 1:  # several targets per sample
            result, recorded = walk_each_target(plan, env, output_node, start, keep_all)
        else:
            result, recorded = backward(plan, env, output_node, start, keep_all, owned=True)
        result = _rescaled(result, scale)
        recorded = {name: _rescaled(value, scale) for name, value in recorded.items()}
    if check and output_relevance is None:  # the logit of a target is the reference
        check_conservation(
            plan, initial, result, output.ndim,
            lambda: recorded if keep_all else _explain(
                plan, x, (None,) * 3, target, output_relevance, keep_all=True, check=False
            )[1],
        )  # fmt: skip
    if keep_all:
        recorded = _with_aliases(plan, recorded)
        recorded["output"] = initial
    return result, recorded


def _check_output(output: Tensor, x: Tensor, output_relevance: Tensor | None) -> None:
    if output.ndim < 2 and output_relevance is None:
        raise InvalidInputError(
            f"the model output has shape {tuple(output.shape)}, without a batch axis, for "
            f"x of shape {tuple(x.shape)}: x has probably lost its batch axis. Fix: "
            "explain a batch, e.g. x[None] for one sample, or pass output_relevance=."
        )


def _power_of_two_scale(initial: Tensor, output_ndim: int) -> Tensor:
    """A power of two near each sample's largest initial relevance (shape `(..., batch)`).

    Every rule is linear in the relevance, so the walk starts from `initial / scale` and
    its results are multiplied back: exact in floating point (only exponents change), and
    in float32 the ratios $R / (z \\pm \\epsilon)$ stay in range where $|R| \\gg |z|$.
    """
    if initial.dtype == torch.float64:
        return torch.ones((), dtype=initial.dtype, device=initial.device)
    axes = tuple(range(initial.ndim - output_ndim + 1, initial.ndim))
    largest = initial.abs().amax(dim=axes)
    scale = torch.ldexp(torch.ones_like(largest), torch.frexp(largest).exponent)
    return torch.where(largest > 0, scale, torch.ones_like(scale))


def _rescaled(value: Any, scale: Tensor) -> Any:
    """`value * scale`, the scale broadcast over the per-sample axes (tuples elementwise)."""
    if isinstance(value, (tuple, list)):
        return type(value)(_rescaled(item, scale) for item in value)
    if value is None or scale.ndim == 0:
        return value
    return value * scale.reshape(scale.shape + (1,) * (value.ndim - scale.ndim))


def _as_plan(model, rules, handlers, pattern, example_input=None) -> Plan:
    if isinstance(model, Plan):
        if rules is not None or handlers is not None or pattern is not None:
            raise InvalidRuleError(
                "this Plan already has its rules and handlers; pass rules=None, or prepare "
                "a new Plan with lrpfn.prepare(model, rules)."
            )
        return model
    if rules is None:
        raise InvalidRuleError(
            "no rules given: pass e.g. rules=lrpfn.rules.Epsilon() or a composite such as "
            "lrpfn.composites.epsilon_plus()."
        )
    return prepare(model, rules, handlers, pattern=pattern, example_input=example_input)


def _check_shape(plan: Plan, x: Tensor) -> None:
    if plan.input_shape is not None and tuple(x.shape) != plan.input_shape:
        raise InvalidInputError(
            f"this Plan was captured by torch.export at input shape {plan.input_shape} (fx "
            f"could not trace the model) and holds for that shape only; x has shape "
            f"{tuple(x.shape)}. Fix: prepare a plan with example_input of this shape, or "
            "call lrpfn.lrp(model, x), which captures at x's shape."
        )


def _check_input(x: Any) -> None:
    if not isinstance(x, Tensor):
        raise InvalidInputError(f"x must be a torch.Tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise InvalidInputError(
            f"x must be a floating tensor, got dtype {x.dtype}. Fix: x = x.float()."
        )
    if not bool(torch.isfinite(x).all()):
        raise InvalidInputError(
            "x contains NaN or inf; relevance of a non-finite input is undefined. "
            "Fix: clean the input (e.g. torch.nan_to_num)."
        )


def _initial_relevance(output: Tensor, target: Target, output_relevance: Tensor | None) -> Tensor:
    """One-hot(target) times the output, or the given output relevance."""
    if output_relevance is not None:
        if target is not None:
            raise InvalidTargetError("pass either target or output_relevance, not both.")
        if (
            not isinstance(output_relevance, Tensor)
            or output_relevance.shape[-output.ndim :] != output.shape
        ):
            shape = getattr(output_relevance, "shape", type(output_relevance).__name__)
            raise InvalidTargetError(
                f"output_relevance must have the model output's shape {tuple(output.shape)} "
                f"(optionally with a leading axis of targets), got {shape}."
            )
        return output_relevance.to(output.dtype)
    if output.ndim != 2:
        raise InvalidTargetError(
            f"target= needs a model output of shape (batch, classes), got {tuple(output.shape)}. "
            "Fix: pass output_relevance= of the output's shape."
        )
    batch, classes = output.shape
    index = _target_index(target, output, batch, classes)
    if index.ndim == 2:  # (batch, k) -> (k, batch, classes)
        mask = torch.nn.functional.one_hot(index.T, classes).to(output.dtype)
        return mask * output
    return torch.nn.functional.one_hot(index, classes).to(output.dtype) * output


def _target_index(target: Target, output: Tensor, batch: int, classes: int) -> Tensor:
    if target is None:
        return output.argmax(dim=1)
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        target = int(target)  # a NumPy integer
    elif _is_array_like(target):
        try:
            target = torch.as_tensor(target)
        except (TypeError, ValueError, RuntimeError) as error:
            raise InvalidTargetError(
                f"target must hold integer class indices, got {target!r}."
            ) from error
    if isinstance(target, bool) or not isinstance(target, (int, Tensor)):
        raise InvalidTargetError(
            f"target must be None, an int or a LongTensor, got {target!r} (a list of ints works too)."
        )
    index = torch.as_tensor(target, device=output.device)
    if index.is_floating_point() or index.dtype == torch.bool:
        raise InvalidTargetError(
            f"target must hold integer class indices, got dtype {index.dtype}."
        )
    if index.ndim == 0:
        index = index.expand(batch)
    if index.ndim not in (1, 2) or index.shape[0] != batch:
        raise InvalidTargetError(
            f"target must be an int or have shape (batch,) or (batch, k) with batch={batch}, "
            f"got shape {tuple(index.shape)}."
        )
    if bool(((index < 0) | (index >= classes)).any()):
        raise InvalidTargetError(
            f"target {index.tolist()} is out of range for {classes} classes (valid: 0..{classes - 1})."
        )
    return index.long()


def _is_array_like(target: Any) -> bool:
    """A list or tuple of class indices, or a NumPy array (without importing NumPy)."""
    return isinstance(target, (list, tuple)) or type(target).__module__ == "numpy"


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
