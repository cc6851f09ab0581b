"""TorchLRP compatibility: its numbers, its pattern files and its models.

lrpfn's own rules follow the literature; TorchLRP, lrpfn's seed, computed some of them
differently (a quadratic gamma, float32 constants, relevance 1 at the argmax, rescaled
pattern signals, gradients through average pooling). This module gives a TorchLRP user
their old numbers back, to compare:

    import lrpfn.torchlrp as torchlrp

    model = torchlrp.convert(lrp_model)                    # plain torch, same state_dict
    patterns = torchlrp.load_patterns("pattern_pos.pkl", model)
    R = torchlrp.lrp(model, x, "alpha2beta1")              # TorchLRP's x.grad
    R = torchlrp.lrp(model, x, "patternattribution", pattern=patterns)

docs/torchlrp.md lists each difference, measured, with its reason.
"""

from ._explain import RULE_NAMES as RULE_NAMES, lrp as lrp, torchlrp_handlers as torchlrp_handlers
from ._models import (
    convert as convert,
    has_torchlrp_modules as has_torchlrp_modules,
    is_torchlrp_module as is_torchlrp_module,
)
from ._patterns import load_patterns as load_patterns
from ._rules import (
    RULES as RULES,
    TORCHLRP_EPSILON as TORCHLRP_EPSILON,
    TORCHLRP_GAMMA_STABILIZER as TORCHLRP_GAMMA_STABILIZER,
    TorchLRPGamma as TorchLRPGamma,
    UnitMaxRescaled as UnitMaxRescaled,
    rescale_to_unit_max as rescale_to_unit_max,
)
