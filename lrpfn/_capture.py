"""Capture a model as a flat `torch.fx` graph.

`capture(model)` returns a `GraphModule` whose graph keeps `torch.nn` layers as leaves
(the default fx tracer). A `GraphModule` passed in is used as is. Tracing failures are
wrapped in `TraceError` with the offending line and the ways out.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import fx

from .errors import TraceError

__all__ = ["TRACE_LOCK", "capture"]


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

_WAYS_OUT = """Ways out:
  1. trace the model yourself, e.g. with `torch.fx.symbolic_trace(model, concrete_args={...})`
     to fix the value of a Python control-flow argument, and pass the GraphModule to lrpfn;
  2. make the untraceable part a leaf: move it into its own nn.Module and trace with a
     `torch.fx.Tracer` whose `is_leaf_module` returns True for it (then give that module a
     relevance handler, see docs/extending.md);
  3. wrap a free function with `torch.fx.wrap` so that it is recorded as one call."""


def capture(model: torch.nn.Module) -> fx.GraphModule:
    """Return `model` as a `torch.fx.GraphModule`, tracing it if needed.

    Arguments:
        model: an `nn.Module` (traced with `torch.fx.symbolic_trace`) or a `GraphModule`.

    Returns:
        The graph module. `model` itself is never modified.

    Raises:
        TraceError: the model cannot be traced symbolically.
    """
    if isinstance(model, fx.GraphModule):
        return model
    if not isinstance(model, torch.nn.Module):
        raise TraceError(
            f"lrpfn explains a torch.nn.Module or a torch.fx.GraphModule, got "
            f"{type(model).__name__}. Wrap a plain function in an nn.Module whose forward calls it."
        )
    try:
        return fx.symbolic_trace(model)  # the caller holds TRACE_LOCK.tracing()
    except Exception as error:  # fx raises many types: TraceError, TypeError, AttributeError...
        raise TraceError(
            f"torch.fx could not trace {type(model).__name__}: {type(error).__name__}: {error}\n"
            f"{_offending_line(error)}{_WAYS_OUT}"
        ) from error


def _offending_line(error: BaseException) -> str:
    """The last frame of the traceback outside torch: the user's line that failed."""
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if "/torch/" not in frame.filename and "lrpfn" not in frame.filename
    ]
    if not frames:
        return ""
    frame = frames[-1]
    return f"Offending line ({frame.filename}:{frame.lineno}):\n    {frame.line}\n"
