"""LRP rules: small immutable values, each a pure function `(layer, activations, relevance)`.

See `_base` for the generic step every rule shares and `docs/rules.md` for the formulas.
"""

from ._attention import (
    AttnSoftmax as AttnSoftmax,
    ConstantAttention as ConstantAttention,
    Product as Product,
    StopSoftmax as StopSoftmax,
    UniformProduct as UniformProduct,
)
from ._base import (
    Activations as Activations,
    Group as Group,
    LinearRule as LinearRule,
    Rule as Rule,
    Term as Term,
    epsilon_factor as epsilon_factor,
    stabilize as stabilize,
    stabilized_divide as stabilized_divide,
)
from ._keys import RULE_KEYS as RULE_KEYS, rule_from_key as rule_from_key
from ._lrp import (
    Epsilon as Epsilon,
    Flat as Flat,
    Gradient as Gradient,
    Pass as Pass,
    WSquare as WSquare,
    ZBox as ZBox,
)
from ._pattern import PatternAttribution as PatternAttribution, PatternNet as PatternNet
from ._pattern_values import Patterns as Patterns
from ._product import EqualSplit as EqualSplit, SignalTakesAll as SignalTakesAll
from ._sign_split import AlphaBeta as AlphaBeta, Gamma as Gamma, ZPlus as ZPlus


def is_signal_rule(rule: object) -> bool:
    """True for rules that propagate signals like a gradient (Gradient, PatternNet, ...)."""
    return bool(getattr(rule, "signal", False))
