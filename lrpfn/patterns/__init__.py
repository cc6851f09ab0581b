r"""PatternNet and PatternAttribution: learned signal directions (Kindermans et al. 2018).

    import lrpfn
    from lrpfn.rules import PatternAttribution

    patterns = lrpfn.patterns.fit(model, loader, kind="positive")   # one pass over the data
    patterns.save("patterns.pt"); patterns = lrpfn.patterns.Patterns.load("patterns.pt")
    R = lrpfn.lrp(model, x, PatternAttribution(patterns), target=3)

`fit` estimates, for every dense and convolution node, a pattern $A$ shaped like its
weight (row $a_o$: the direction of the signal that output neuron $o$ detects); the rules
`rules.PatternNet` and `rules.PatternAttribution` propagate with $A$ or $W \odot A$ in
place of the weight. The estimators are documented in `_estimators`.

Reference:
    Kindermans et al. 2018, "Learning how to explain neural networks: PatternNet and
    PatternAttribution", ICLR.
"""

from ._estimators import (
    MEAN_Y as MEAN_Y,
    Moments as Moments,
    add_moments as add_moments,
    batch_moments as batch_moments,
    estimate as estimate,
)
from ._fit import KINDS as KINDS, fit as fit
from ._value import Patterns as Patterns
