r"""The rule names of TorchLRP (the seed), as string shortcuts for lrpfn's rules.

The keys take TorchLRP's names and values (every hyperparameter 0.1, biases ignored in
alpha-beta) but lrpfn's rules, which follow the literature: they do *not* reproduce
TorchLRP's numbers. "gamma" is the literature's $W + \gamma W^+$ (TorchLRP used
$W + \gamma W \odot W^+$), the stabilizers are lrpfn's $\epsilon\,\mathrm{sign}(z)$, and
`lrpfn.lrp` starts from the logit, not from 1. `lrpfn.torchlrp.lrp` reproduces TorchLRP
exactly; docs/torchlrp.md lists every difference, measured. The rule classes take any value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import InvalidRuleError
from ._lrp import Epsilon, Gradient
from ._pattern import PatternAttribution, PatternNet
from ._sign_split import AlphaBeta, Gamma

__all__ = ["RULE_KEYS", "rule_from_key"]

RULE_KEYS: dict[str, Callable[..., Any]] = {
    "gradient": lambda: Gradient(),
    "epsilon": lambda: Epsilon(epsilon=0.1),
    "gamma": lambda: Gamma(gamma=0.1),
    "gamma+epsilon": lambda: Gamma(gamma=0.1, stabilizer=0.1),
    "alpha1beta0": lambda: AlphaBeta(alpha=1.0, beta=0.0, ignore_bias=True),
    "alpha2beta1": lambda: AlphaBeta(alpha=2.0, beta=1.0, ignore_bias=True),
}


def rule_from_key(key: str, **options: Any) -> Any:
    """lrpfn's rule for a TorchLRP key ("epsilon", "alpha2beta1", "patternnet", ...).

    The literature's rule with TorchLRP's values, not TorchLRP's computation (see the module
    docstring; `lrpfn.torchlrp.lrp` gives TorchLRP's numbers).

    "patternnet" and "patternattribution" need `pattern=` (a `lrpfn.patterns.Patterns`).
    """
    if key in ("patternnet", "patternattribution"):
        if "pattern" not in options:
            raise InvalidRuleError(
                f"rule key {key!r} needs patterns: pass pattern=lrpfn.patterns.fit(model, data)."
            )
        if isinstance(options["pattern"], (list, tuple)):
            raise InvalidRuleError(
                f"rule key {key!r} got a list of patterns (TorchLRP's format); naming them "
                "needs the model: pass pattern=lrpfn.patterns.Patterns.from_list(model, "
                "patterns), or lrpfn.torchlrp.lrp(model, x, key, pattern=patterns) for "
                "TorchLRP's numbers."
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
