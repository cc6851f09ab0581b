"""The relevance handlers, to extend the dispatch table for custom ops.

    import lrpfn
    from lrpfn import handlers

    table = {**lrpfn.HANDLERS, MyActivation: handlers.PASS, my_gather: handlers.ROUTE}
    R = lrpfn.lrp(model, x, rules, handlers=table)

See `lrpfn.ops.handler` for what each handler does and docs/extending.md for writing one.
"""

from .ops.handler import (
    NONE as NONE,
    PASS as PASS,
    PASS_NONNEGATIVE as PASS_NONNEGATIVE,
    PASS_PRESERVING as PASS_PRESERVING,
    PASS_RELU as PASS_RELU,
    PASS_ZERO as PASS_ZERO,
    ROUTE as ROUTE,
    Handler as Handler,
    Step as Step,
    handler_for as handler_for,
)
from .ops.linear import DENSE as DENSE, POOL as POOL, PRODUCT as PRODUCT, SUM as SUM
from .ops.table import HANDLERS as HANDLERS
