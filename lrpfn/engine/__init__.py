"""The engine: a `Plan` made once, a forward pass, and the reverse relevance walk.

This module is the one interface that everything built on the engine imports
(`concepts`, `datasets`, `evaluate`, `patterns`, `text`, `torchlrp`, `cli`):

- entry points: `lrp`, `relevances`, `prepare`, `Plan`, `as_plan`, `model_output` (the
  model's output through the plan's graph: failures name the node, op and likely fix);
- the two halves of a call, for applications that run their own walks: `forward`
  (the values the walk needs) and `backward` (the reverse walk from a start relevance),
  or `walk_each_target` (k walks from k start relevances over one forward), under
  `TRACE_LOCK.running()`;
- where the walk starts (`engine.relevance`): `check_input`, `check_output`,
  `initial_relevance`, `power_of_two_scale`, `rescaled`, `Target`;
- what applications read of a canonical graph: `SOURCE`, `FOLDED`, `attribute`,
  `capture`, `TRACE_LOCK`, and the op table's `HANDLERS`, `Handler`, `Step`, `ROUTE`,
  `padded_convolution`.

Inside the engine: `prepare` (capture, canonicalize, check, resolve rules, the static
`analyses`), `walk` (the forward interpreter and the reverse walk), `memory` (values the
forward drops and the walk recomputes), `several_targets` (k targets over one forward),
`compiled` (the opt-in compiled walk).
"""

from ..capture import FOLDED, SOURCE, TRACE_LOCK, attribute, capture
from ..ops import HANDLERS
from ..ops.functional import padded_convolution
from ..ops.handler import ROUTE, Handler, Step
from .api import as_plan, lrp, model_output, relevances
from .plan import Plan
from .prepare import prepare
from .relevance import (
    Region,
    Target,
    check_input,
    check_output,
    initial_relevance,
    power_of_two_scale,
    rescaled,
)
from .several_targets import walk_each_target
from .walk import backward, forward

__all__ = [
    "FOLDED",
    "HANDLERS",
    "ROUTE",
    "SOURCE",
    "TRACE_LOCK",
    "Handler",
    "Plan",
    "Region",
    "Step",
    "Target",
    "as_plan",
    "attribute",
    "backward",
    "capture",
    "check_input",
    "check_output",
    "forward",
    "initial_relevance",
    "lrp",
    "model_output",
    "padded_convolution",
    "power_of_two_scale",
    "prepare",
    "relevances",
    "rescaled",
    "walk_each_target",
]
