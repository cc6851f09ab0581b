"""Capture: a model becomes a flat, canonical `torch.fx` graph.

The front ends (`front_ends`: `torch.fx.symbolic_trace`, else `torch.export` at the
input's shape, `export` bringing aten ops to torch-level callables) make a GraphModule;
the canonical passes (`canonical`: in-place ops made out-of-place, affine modules lowered
to functional calls, `batch_norm` folding, `attention` and `window_attention`
decomposition) bring it to the one form the op table explains. Every pass is a function
from GraphModule to GraphModule; the user's model is never written. `source` holds what a
canonical node remembers of where it came from.
"""

from .canonical import canonicalize
from .front_ends import Captured, capture, unwrap
from .graph import TRACE_LOCK, draft_graph_module
from .source import FOLDED, NAME, SOURCE, Source, attribute

__all__ = [
    "FOLDED",
    "NAME",
    "SOURCE",
    "TRACE_LOCK",
    "Captured",
    "Source",
    "attribute",
    "canonicalize",
    "capture",
    "draft_graph_module",
    "unwrap",
]
