"""`Composite`: an ordered mapping from keys to rules, and the rules no key gives.

`a | b` is a new composite where the entries of `b` take precedence over those of `a`.
A parameter-free linear node (pooling, sums) that no key matches takes `DEFAULT_RULE`,
a product of two tensors `DEFAULT_PRODUCT_RULE`, a softmax `DEFAULT_SOFTMAX_RULE` and a
matrix product of activations `DEFAULT_MATMUL_RULE` (AttnLRP's rules).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRuleError
from ..rules import (
    RULE_KEYS,
    AttnSoftmax,
    ConstantAttention,
    Epsilon,
    SignalTakesAll,
    StopSoftmax,
    UniformProduct,
    rule_from_key,
)
from ._matching import ANY, MATMUL, SOFTMAX, Family, NodeInfo, level, matches

__all__ = [
    "DEFAULT_MATMUL_RULE",
    "DEFAULT_PRODUCT_RULE",
    "DEFAULT_RULE",
    "DEFAULT_SOFTMAX_RULE",
    "FAMILY_DEFAULTS",
    "Composite",
    "composite_of",
]


DEFAULT_RULE = Epsilon(1e-6)
"""The rule of parameter-free linear nodes no key matches (zennit's `Norm`)."""


DEFAULT_PRODUCT_RULE = SignalTakesAll()
"""The rule of products of two tensors no key matches: the signal takes all relevance."""


DEFAULT_SOFTMAX_RULE = AttnSoftmax()
"""The rule of softmax nodes no key matches (AttnLRP's softmax rule)."""


DEFAULT_MATMUL_RULE = UniformProduct(1e-6)
"""The rule of matrix products of activations no key matches (AttnLRP's uniform rule)."""


FAMILY_DEFAULTS = {
    "product": DEFAULT_PRODUCT_RULE,
    "softmax": DEFAULT_SOFTMAX_RULE,
    "matmul": DEFAULT_MATMUL_RULE,
}


@dataclass(frozen=True)
class Composite:
    """An ordered mapping from keys to rules (see the module docstring).

    `a | b` is a new composite where the entries of `b` take precedence over those of `a`.
    """

    entries: tuple[tuple[Any, Any], ...]

    def __post_init__(self) -> None:
        entries = []
        for key, rule in self.entries:
            level(key)
            if isinstance(rule, str):  # a rule key: {CONVOLUTION: "gamma"}
                rule = rule_from_key(rule)
            _check_rule(rule, f"the value for key {key!r}")
            entries.append((key, rule))
        object.__setattr__(self, "entries", tuple(entries))

    def __or__(self, other: Any) -> Composite:
        return Composite(composite_of(other).entries + self.entries)

    def rule_for(self, info: NodeInfo, infos: tuple[NodeInfo, ...]) -> Any | None:
        matching = [
            (level(key), index, rule)
            for index, (key, rule) in enumerate(self.entries)
            if matches(key, info, infos)
        ]
        return min(matching, key=lambda match: match[:2])[2] if matching else None


def _single_rule_family(rule: Any) -> Family:
    """The nodes a single rule applies to: its own family for the attention rules, else
    every linear node."""
    if isinstance(rule, (AttnSoftmax, StopSoftmax)):
        return SOFTMAX
    if isinstance(rule, (UniformProduct, ConstantAttention)):
        return MATMUL
    return ANY


def _check_rule(rule: Any, where: str) -> None:
    if isinstance(rule, type):
        raise InvalidRuleError(
            f"{where} is the class {rule.__name__}, not a rule: pass an instance, e.g. "
            f"{rule.__name__}() (with its hyperparameters) instead of {rule.__name__}."
        )
    if not callable(rule):
        raise InvalidRuleError(
            f"{where} is not a rule: {rule!r}. Fix: a rule such as rules.Epsilon(), or a rule "
            f"key ({', '.join(RULE_KEYS)})."
        )


def composite_of(mapping: Any) -> Composite:
    """A `Composite` from a Composite, a dict, a single rule or a rule key string (preset
    names are looked up by `composites.as_composite`, which the presets sit below)."""
    if isinstance(mapping, Composite):
        return mapping
    if isinstance(mapping, str):
        return Composite(((ANY, rule_from_key(mapping)),))
    if isinstance(mapping, Mapping):
        return Composite(tuple(mapping.items()))
    if callable(mapping):
        _check_rule(mapping, "rules")
        return Composite(((_single_rule_family(mapping), mapping),))
    raise InvalidRuleError(
        f"rules must be a rule, a dict of rules, a Composite or a rule key, got {mapping!r}."
    )
