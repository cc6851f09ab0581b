"""TorchLRP's explanation procedure on lrpfn's graph walk: `lrp`.

TorchLRP explains with autograd: `lrp.Linear` and `lrp.Conv2d` replace their backward by
the rule, and every other module (ReLU, max- and average-pooling, flatten, dropout)
backpropagates its plain gradient. It starts from relevance 1 at each sample's largest
output. For "patternnet" and "patternattribution" it rescales the gradient arriving at
the input of every module except ReLU and max-pooling to largest magnitude 1 per sample
(tensors of two dimensions excepted). `lrp` reproduces that with lrpfn's public pieces:
rule values on the dense and 2d-convolution nodes, and a handler table in which every
other op is routed by its own vector-Jacobian product (`handlers.ROUTE`, the gradient).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine import (
    HANDLERS,
    ROUTE,
    Handler,
    Step,
    check_input,
    lrp as engine_lrp,
    padded_convolution,
    prepare,
)
from ..errors import InvalidInputError, InvalidRuleError, UnsupportedNodeError
from ..patterns import Patterns
from ..rules import PatternAttribution, PatternNet
from ._models import convert, has_torchlrp_modules
from ._rules import RULES, UnitMaxRescaled, rescale_to_unit_max

__all__ = ["RULE_NAMES", "lrp", "torchlrp_handlers"]

RULE_NAMES = (*RULES, "patternnet", "patternattribution")
"""Every rule name of TorchLRP's README."""

_KERNELS = (F.linear, F.conv2d, padded_convolution)  # lrp.Linear, lrp.Conv2d after lowering
_NOT_RESCALED = ("relu", "maxp")  # TorchLRP skips modules whose repr starts so


def lrp(model: nn.Module, x: Tensor, rule: str, pattern: Any = None) -> Tensor:
    """TorchLRP's explanation of each sample's largest output, as its `x.grad`.

    The same numbers as TorchLRP's

        y = model.forward(x, explain=True, rule=rule, pattern=pattern)
        y[torch.arange(len(x)), y.max(1)[1]].sum().backward(); explanation = x.grad

    for `rule` in "gradient", "epsilon", "gamma", "gamma+epsilon", "alpha1beta0",
    "alpha2beta1", "patternnet", "patternattribution" (see docs/torchlrp.md for how each
    differs from lrpfn's own keys). Every `nn.Linear` and `nn.Conv2d` is explained as
    TorchLRP's `lrp.Linear`/`lrp.Conv2d` (as `lrp.convert_vgg` makes them); every other
    module propagates its gradient. One extra forward pass finds the argmax.

    Arguments:
        model: a TorchLRP model (converted with `convert`, the original is not modified)
            or a plain torch model, e.g. a torchvision VGG (as TorchLRP's `convert_vgg`
            of it). Models with BatchNorm are refused: lrpfn folds BatchNorm into the
            layer before it, TorchLRP backpropagated its gradient.
        x: the input batch.
        rule: one of `RULE_NAMES`.
        pattern: for the pattern rules: TorchLRP's list of patterns (tensors or arrays,
            one per Linear/Conv2d in module order), or `lrpfn.patterns.Patterns`.

    Returns:
        The explanation, shaped like `x`.
    """
    if not isinstance(rule, str) or rule not in RULE_NAMES:
        raise InvalidRuleError(
            f"unknown TorchLRP rule {rule!r}; TorchLRP's rules are {', '.join(RULE_NAMES)}."
        )
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if has_torchlrp_modules(model):
        model = convert(model)
    _refuse_batchnorm(model)
    value = _rule_value(model, rule, pattern)
    # every check (trace, handlers, training mode) before anything runs
    plan = prepare(model, value, torchlrp_handlers(rescaled=rule.startswith("pattern")))
    check_input(x)
    with torch.no_grad():
        output = model(x)
    if not isinstance(output, Tensor) or output.ndim != 2:
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise InvalidInputError(
            f"TorchLRP explains the argmax of an output of shape (batch, classes); the model "
            f"returns {shape}."
        )
    start = F.one_hot(output.argmax(1), output.shape[1]).to(output.dtype)
    return engine_lrp(plan, x, output_relevance=start)


def _rule_value(model: nn.Module, rule: str, pattern: Any) -> Any:
    if rule in RULES:
        if pattern is not None:
            raise InvalidRuleError(
                f"TorchLRP's rule {rule!r} takes no pattern; pattern= goes with 'patternnet' "
                "and 'patternattribution'."
            )
        return RULES[rule]()
    if pattern is None:
        raise InvalidRuleError(
            f"TorchLRP's rule {rule!r} needs pattern=: TorchLRP's list of patterns (or "
            "lrpfn.torchlrp.load_patterns(path, model), or lrpfn.patterns.fit(model, data))."
        )
    if isinstance(pattern, (list, tuple)):
        pattern = Patterns.from_list(model, pattern)
    elif isinstance(pattern, Mapping) and not isinstance(pattern, Patterns):
        pattern = Patterns(pattern)
    kind = PatternNet if rule == "patternnet" else PatternAttribution
    return UnitMaxRescaled(kind(pattern))


def _refuse_batchnorm(model: nn.Module) -> None:
    found = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
    ]
    if found:
        raise UnsupportedNodeError(
            f"the model has BatchNorm modules ({', '.join(found)}): TorchLRP backpropagated "
            "their plain gradient after the rule of the layer before, lrpfn folds them into "
            "that layer, so TorchLRP's numbers cannot be reproduced here. Explain it with "
            "lrpfn's own rules (lrpfn.lrp(model, x, 'epsilon'))."
        )


def _rescaled_route(step: Step) -> tuple:
    return tuple(
        None if relevance is None else rescale_to_unit_max(relevance)
        for relevance in ROUTE.backward(step)
    )


_RESCALED_ROUTE = Handler("route", _rescaled_route, nonnegative="preserves")


@functools.cache
def torchlrp_handlers(rescaled: bool = False) -> Mapping[Any, Handler]:
    """lrpfn's handler table with TorchLRP's treatment of every op but dense and conv2d.

    Every op that carries relevance is routed by its own vector-Jacobian product (its
    gradient, as TorchLRP's autograd does); the dense and 2d-convolution nodes keep their
    handler, so the rule applies there. With `rescaled`, a module whose type name does not
    start with "relu" or "maxp" rescales the gradient it returns (`rescale_to_unit_max`),
    as TorchLRP's pattern rules do.

    Arguments:
        rescaled: rescale as TorchLRP's "patternnet" and "patternattribution" do.

    Returns:
        A read-only table for `lrpfn.lrp(..., handlers=)`.
    """
    table: dict[Any, Handler] = {}
    for key, handler in HANDLERS.items():
        if key in _KERNELS or handler.kind == "none":
            table[key] = handler
        elif rescaled and isinstance(key, type) and not _skips_rescaling(key):
            table[key] = _RESCALED_ROUTE
        else:
            table[key] = ROUTE
    return MappingProxyType(table)


def _skips_rescaling(kind: type) -> bool:
    return kind.__name__[:4].lower() in _NOT_RESCALED
