"""The rule keys of TorchLRP (the seed), as string shortcuts.

TorchLRP fixed every hyperparameter to 0.1 and ignored biases in its alpha-beta rules;
the keys reproduce exactly that. The rule classes take any value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import InvalidRuleError
from ._lrp import AlphaBeta, Epsilon, Gamma

__all__ = ["RULE_KEYS", "rule_from_key"]

RULE_KEYS: dict[str, Callable[..., Any]] = {
    "epsilon": lambda: Epsilon(epsilon=0.1),
    "gamma": lambda: Gamma(gamma=0.1),
    "gamma+epsilon": lambda: Gamma(gamma=0.1, stabilizer=0.1),
    "alpha1beta0": lambda: AlphaBeta(alpha=1.0, beta=0.0, ignore_bias=True),
    "alpha2beta1": lambda: AlphaBeta(alpha=2.0, beta=1.0, ignore_bias=True),
}


def rule_from_key(key: str, **options: Any) -> Any:
    """The rule named by a TorchLRP key ("epsilon", "alpha2beta1", "patternnet", ...).

    "patternnet" and "patternattribution" need `pattern=` (a `lrpfn.patterns.Patterns`).
    """
    if key in ("patternnet", "patternattribution"):
        from ._pattern import PatternAttribution, PatternNet

        if "pattern" not in options:
            raise InvalidRuleError(
                f"rule key {key!r} needs patterns: pass pattern=lrpfn.patterns.fit(model, data)."
            )
        kind = PatternNet if key == "patternnet" else PatternAttribution
        options = dict(options)
        rule = kind(options.pop("pattern"))
        _no_options_left(key, options)
        return rule
    _no_options_left(key, options)
    if key not in RULE_KEYS:
        raise InvalidRuleError(
            f"unknown rule key {key!r}; known keys: {', '.join(sorted(RULE_KEYS))}, "
            f"patternnet, patternattribution, or a preset name from lrpfn.composites.PRESETS."
        )
    return RULE_KEYS[key]()


def _no_options_left(key: str, options: dict[str, Any]) -> None:
    if options:
        raise InvalidRuleError(
            f"rule key {key!r} takes no option(s) {', '.join(sorted(options))}; TorchLRP's keys "
            "fix their values. Build the rule class with the values you want instead, e.g. "
            "rules.Epsilon(epsilon=0.25)."
        )
