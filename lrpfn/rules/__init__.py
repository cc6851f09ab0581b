"""LRP rules: small immutable values, each a pure function `(layer, activations, relevance)`.

See `_base` for the generic step every rule shares and `docs/rules.md` for the formulas.
"""

from ._base import (
    Activations as Activations,
)
from ._base import (
    Group as Group,
)
from ._base import (
    LinearRule as LinearRule,
)
from ._base import (
    Rule as Rule,
)
from ._base import (
    Term as Term,
)
from ._base import (
    stabilize as stabilize,
)
from ._base import (
    stabilized_divide as stabilized_divide,
)
from ._keys import RULE_KEYS as RULE_KEYS
from ._keys import rule_from_key as rule_from_key
from ._lrp import AlphaBeta as AlphaBeta
from ._lrp import Epsilon as Epsilon
from ._lrp import Flat as Flat
from ._lrp import Gamma as Gamma
from ._lrp import Pass as Pass
from ._lrp import WSquare as WSquare
from ._lrp import ZBox as ZBox
from ._lrp import ZPlus as ZPlus
