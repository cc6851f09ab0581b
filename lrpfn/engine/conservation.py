r"""The conservation check: a warning when a conservative rule set makes relevance grow.

LRP's rules with $\alpha - \beta = 1$ (Epsilon, Gamma, AlphaBeta, ZPlus, ZBox, Flat, WSquare,
the product rules) conserve relevance layer by layer up to what biases and stabilizers
absorb, so the input relevance of such a rule set sums to at most about the output
relevance (for a one-hot target: the explained logit):
$$ \Big|\sum_i R_i\Big| \le \rho \sum_j |R^{\text{out}}_j|, \qquad \rho = 2. $$
A larger sum is created by the rules, never absorbed: a proportional split of a sum whose
terms nearly cancel (the parallel branches of a RepVGG block), or a sign-split rule on a
residual sum. `lrpfn.lrp` then warns with `lrpfn.errors.ConservationWarning`, naming the
rule set and the nodes where the sum first exceeds $\rho$ times the logit. Sums *below*
the logit are absorption by biases and stabilizers (docs/models.md measures how much per
model); they are expected and not reported.

Reference: Montavon et al. 2019, "Layer-wise relevance propagation: an overview", in
Explainable AI (LNCS 11700), Sec. 10.2.2 (conservation).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

from ..errors import ConservationWarning
from ..rules import (
    AlphaBeta,
    ConstantAttention,
    Epsilon,
    EqualSplit,
    Flat,
    Gamma,
    Pass,
    SignalTakesAll,
    UniformProduct,
    WSquare,
    ZBox,
    ZPlus,
)
from .plan import Plan

__all__ = ["GROWTH_LIMIT", "check_conservation"]

GROWTH_LIMIT = 2.0
"""$\\rho$: the largest ratio of input relevance sum to explained logit that passes."""

_CONSERVATIVE = (
    AlphaBeta, ConstantAttention, Epsilon, EqualSplit, Flat, Gamma, Pass, SignalTakesAll,
    UniformProduct, WSquare, ZBox, ZPlus,
)  # fmt: skip


def is_conservative(plan: Plan) -> bool:
    """Whether every rule of `plan` conserves relevance (up to absorption)."""
    return all(type(rule) in _CONSERVATIVE for rule in plan.rules.values())


def check_conservation(
    plan: Plan,
    initial: Tensor,
    result: Tensor,
    output_ndim: int,
    recorded: Callable[[], Mapping[str, Any]],
) -> None:
    """Warn if `result` sums to more than `GROWTH_LIMIT` times `initial` for some sample.

    Arguments:
        initial: the output relevance (one-hot times the logits), shape `(..., *output)`.
        result: the input relevance, shape `(..., *input)` with the same leading axes.
        output_ndim: the number of axes of the model output (batch included).
        recorded: the relevance of every node, `{name: relevance}` (called only to name
            the nodes once the check has failed).
    """
    if not is_conservative(plan) or not isinstance(result, Tensor):
        return
    lead = initial.ndim - output_ndim + 1  # the target axis (if any) and the batch axis
    logit = initial.double().flatten(lead).abs().sum(-1)  # |logit| for one-hot targets
    total = result.double().flatten(lead).sum(-1)
    if total.shape != logit.shape:  # an input whose leading axes are not the samples'
        logit, total, lead = logit.sum().reshape(1), total.sum().reshape(1), 0
    grown = total.abs() > GROWTH_LIMIT * logit.abs()
    if not bool(grown.any()):
        return
    worst = float((total.abs() / logit.abs()).masked_fill(~grown, 0).max())
    nodes = _where_it_grows(plan, recorded(), logit, lead)
    warnings.warn(
        f"the relevance sums to {worst:.3g} x the explained logit, where a conservative rule "
        f"set gives at most about 1 (rule set: {_rule_set(plan)}). It first exceeds "
        f"{GROWTH_LIMIT:g} x the logit in the step(s) {nodes}. Likely causes: a sign-split "
        "rule (AlphaBeta, ZPlus, Gamma) on a sum or pooling, where the presets in "
        "lrpfn.composites use rules.Epsilon; AlphaBeta's alpha term where a layer has no "
        "negative part; biases of the opposite sign to small pre-activations, which add "
        "relevance instead of absorbing it (see docs/rules.md, conservation).",
        ConservationWarning,
        stacklevel=4,
    )


def _where_it_grows(plan: Plan, recorded: Mapping[str, Any], logit: Tensor, lead: int) -> str:
    """The steps after which a node's relevance sum exceeds the limit while no user's does:
    `user (its rule) -> node` for each."""
    limit = GROWTH_LIMIT * logit.abs()
    nodes = {node.name: node for node in plan.module.graph.nodes}

    def grown(name: str) -> bool:
        value = recorded.get(name)
        if not isinstance(value, Tensor) or value.ndim < lead or name == "output":
            return False
        total = value.double().flatten(lead).sum(-1)
        if total.shape != limit.shape:  # a value whose leading axes are not the samples'
            return bool(value.double().sum().abs() > limit.sum())
        return bool((total.abs() > limit).any())

    steps = []
    for name in recorded:
        if name not in nodes or not grown(name):
            continue
        users = [user.name for user in nodes[name].users]
        if any(grown(user) for user in users):
            continue
        for user in users:
            rule = plan.rules.get(user)
            steps.append(
                f"{user} ({rule!r}) -> {name}" if rule is not None else f"{user} -> {name}"
            )
    return ", ".join(steps[:8]) + (f" and {len(steps) - 8} more" if len(steps) > 8 else "")


def _rule_set(plan: Plan) -> str:
    counts: dict[str, int] = {}
    for rule in plan.rules.values():
        counts[repr(rule)] = counts.get(repr(rule), 0) + 1
    return "; ".join(f"{rule} on {n} node(s)" for rule, n in counts.items())
