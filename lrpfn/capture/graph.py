"""The one lock between lrpfn's forward passes and `torch.fx` tracing, and draft graphs.

`TRACE_LOCK` keeps every lrpfn forward pass out of the way of a trace (fx patches
`nn.Module.__call__` process-wide while it traces); `draft_graph_module` makes the
GraphModules the passes edit without generating their code until it is needed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import fx

__all__ = ["TRACE_LOCK", "draft_graph_module"]


class _TraceLock:
    """Keeps lrpfn's forward passes out of the way of `torch.fx` tracing.

    `fx.symbolic_trace` patches `nn.Module.__call__` and `__getattr__` for the whole
    process while it traces, so a module called from another thread at that moment would
    meet the tracer. A trace (`tracing`) waits for running passes and excludes new ones;
    passes (`running`) share the lock with each other. This synchronizes lrpfn's own calls
    only: a model run by other code in another thread during a trace is not protected.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._running = 0
        self._tracing = False

    @contextmanager
    def tracing(self) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: not self._tracing and self._running == 0)
            self._tracing = True
        try:
            yield
        finally:
            with self._condition:
                self._tracing = False
                self._condition.notify_all()

    @contextmanager
    def running(self) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: not self._tracing)
            self._running += 1
        try:
            yield
        finally:
            with self._condition:
                self._running -= 1
                self._condition.notify_all()


TRACE_LOCK = _TraceLock()


def draft_graph_module(root: torch.nn.Module, graph: fx.Graph, class_name: str) -> fx.GraphModule:
    """A GraphModule for a graph `prepare` edits or copies but never runs.

    `fx.GraphModule(root, graph)` generates and compiles the graph's Python code when it
    is made (`recompile`); torch's `_LazyGraphModule` does that on first use (a call,
    `.code`, printing, pickling), so it behaves the same. The trace and the graph the
    canonical passes edit are never run; on mobilenet_v2 the two `recompile`s took about
    a fifth of `prepare` (benchmarks/bench_lrp.py, prepare seconds). The plan's own
    GraphModule is an ordinary one.
    """
    try:
        from torch.fx._lazy_graph_module import _LazyGraphModule
    except ImportError:  # a torch without it: the ordinary GraphModule
        return fx.GraphModule(root, graph, class_name=class_name)
    return _LazyGraphModule(root, graph, class_name=class_name)
