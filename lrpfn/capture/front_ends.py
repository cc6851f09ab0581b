"""Capture a model as a flat `torch.fx` graph, with one of two front ends.

`capture(model, example_input)` returns a `Captured`: the `GraphModule`, the front end
that made it and the output it explains.

1. `torch.fx.symbolic_trace` (the default tracer: `torch.nn` layers stay leaves): the
   graph holds for every input shape.
2. When that fails and an example input is given, `torch.export.export(model, (x,),
   strict=False)` (see `capture.export`): it runs the forward at `x`, so Python control flow on
   shapes is evaluated and the graph is specialised to `x`'s shape.

A `GraphModule` passed in is used as is. Wrappers users hold are unwrapped first
(`torch.compile`'s `OptimizedModule` to `_orig_mod`, `DataParallel` and
`DistributedDataParallel` to `.module`); a TorchScript module is refused with what to pass
instead. Capture is pure: tracing runs the model's Python forward, and models that cache
values during forward (timm's LeViT keeps attention biases per device) would keep the
tracer's proxies; every attribute of every module is put back as it was (rebound
attributes and the contents of dicts, lists and sets held in attributes), and a model that
still holds a proxy from an earlier trace, or a graph that refers to another graph's
nodes, is a `TraceError` naming it. A failure of both front ends is one `TraceError`
listing both, each with the offending line of the user's code.
"""

from __future__ import annotations

import operator
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import fx

from ..errors import TraceError
from .export import export_graph
from .graph import draft_graph_module
from .output import select_output

__all__ = ["Captured", "capture", "unwrap"]


_WAYS_OUT = """Ways out:
  1. trace the model yourself, e.g. with `torch.fx.symbolic_trace(model, concrete_args={...})`
     to fix the value of a Python control-flow argument, and pass the GraphModule to lrpfn;
  2. make the untraceable part a leaf: move it into its own nn.Module and trace with a
     `torch.fx.Tracer` whose `is_leaf_module` returns True for it (then give that module a
     relevance handler, see docs/extending.md);
  3. wrap a free function with `torch.fx.wrap` so that it is recorded as one call."""


class Captured(NamedTuple):
    """A captured model.

    Attributes:
        module: the flat `GraphModule`.
        front_end: "fx" (`torch.fx.symbolic_trace`), "export" (`torch.export`, specialised
            to `input_shape`) or "graph" (a `GraphModule` passed in).
        input_shape: the shape the graph is specialised to ("export"), else None.
        output_key: the key or index of the explained output where the model returns a
            mapping or tuple (see `capture.output`), else None.
    """

    module: fx.GraphModule
    front_end: str
    input_shape: tuple[int, ...] | None = None
    output_key: str | int | None = None


def unwrap(model: Any) -> Any:
    """The module a user's wrapper holds: `torch.compile` -> `_orig_mod`, `DataParallel`
    and `DistributedDataParallel` -> `.module` (repeatedly, for nested wrappers)."""
    while True:
        if isinstance(model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
            model = model.module
        elif _is_compiled(model):
            model = model._orig_mod
        else:
            return model


def _is_compiled(model: Any) -> bool:
    dynamo = sys.modules.get("torch._dynamo.eval_frame")
    return dynamo is not None and isinstance(model, dynamo.OptimizedModule)


def capture(
    model: torch.nn.Module, example_input: torch.Tensor | None = None, output: Any = None
) -> Captured:
    """Return `model` as a flat graph, tracing it with fx or, failing that, `torch.export`.

    Arguments:
        model: an `nn.Module` (or a wrapper of one, see `unwrap`) or a `GraphModule`.
        example_input: an input batch; needed only when fx cannot trace the model (the
            `torch.export` graph is specialised to its shape).
        output: the key or index of the output to explain where the model returns a
            mapping or a tuple (`capture.output.select_output`).

    Returns:
        The `Captured` graph. `model` is left exactly as it was.

    Raises:
        TraceError: neither front end captures the model (both failures listed), the model
            is a TorchScript module, or it holds values of an earlier trace.
    """
    model = unwrap(model)
    if isinstance(model, fx.GraphModule):
        return _checked(Captured(model, "graph"), model, output)
    if isinstance(model, torch.jit.ScriptModule):
        raise TraceError(
            f"{type(model).__name__} is a TorchScript module; its Python forward is gone, so "
            "neither torch.fx nor torch.export can capture it. Fix: pass the original "
            "nn.Module (the model before torch.jit.script / torch.jit.trace)."
        )
    if not isinstance(model, torch.nn.Module):
        raise TraceError(
            f"lrpfn explains a torch.nn.Module or a torch.fx.GraphModule, got "
            f"{type(model).__name__}. Wrap a plain function in an nn.Module whose forward calls it."
        )
    _check_no_proxies(model)
    with _restored(model):  # the caller holds TRACE_LOCK.tracing()
        try:
            captured = Captured(_symbolic_trace(model), "fx")
        except Exception as fx_error:  # fx raises many types: TraceError, TypeError, ...
            captured = _export_or_raise(model, example_input, fx_error)
    return _checked(captured, model, output)


def _symbolic_trace(model: torch.nn.Module) -> fx.GraphModule:
    """`torch.fx.symbolic_trace(model)`, its GraphModule's code generated on first use."""
    tracer = fx.Tracer()
    graph = tracer.trace(model)
    return draft_graph_module(tracer.root, graph, type(model).__name__)


def _export_or_raise(model: torch.nn.Module, x: Any, fx_error: BaseException) -> Captured:
    name = type(model).__name__
    fx_part = f"torch.fx.symbolic_trace: {_summary(fx_error)}\n{_offending_line(fx_error)}"
    if not isinstance(x, torch.Tensor):
        raise TraceError(
            f"torch.fx could not trace {name}, and torch.export needs an example input:\n"
            f"  {fx_part}Fix: pass example_input=x to lrpfn.prepare (lrpfn.lrp passes its x), "
            f"so that torch.export can capture the model at x's shape.\n{_WAYS_OUT}"
        ) from fx_error
    try:
        gm = export_graph(model, x)
    except Exception as export_error:
        shape = tuple(x.shape)
        raise TraceError(
            f"torch.fx could not trace {name}, and torch.export could not capture it:\n"
            f"  1. {fx_part}"
            f"  2. torch.export.export (non-strict, input shape {shape}): "
            f"{_summary(export_error)}\n{_offending_line(export_error)}{_WAYS_OUT}"
        ) from export_error
    return Captured(gm, "export", tuple(x.shape))


def _summary(error: BaseException, lines: int = 6) -> str:
    text = str(error).strip().splitlines()
    shown = "\n     ".join(text[:lines]) + ("\n     ..." if len(text) > lines else "")
    return f"{type(error).__name__}: {shown}"


def _checked(captured: Captured, model: torch.nn.Module, output: Any = None) -> Captured:
    """Refuse graphs that refer to other graphs' nodes; select the output to explain."""
    graph = captured.module.graph
    for node in graph.nodes:
        for item in node.all_input_nodes:
            if item.graph is not graph:
                raise TraceError(
                    f"the captured graph of {type(model).__name__} uses node {item.name!r} of "
                    f"another graph (at {node.format_node()}): the model keeps a value of an "
                    "earlier torch.fx trace (an fx Proxy cached in an attribute). Fix: rebuild "
                    "or reload the model, or clear the cache attribute that holds the proxy."
                )
    module, key = select_output(captured.module, output)
    return captured._replace(module=module, output_key=key)


# -- purity: every module attribute as it was ---------------------------------------------

_CONTAINERS = (dict, list, set)


@contextmanager
def _restored(model: torch.nn.Module) -> Iterator[None]:
    """Put every attribute of every module of `model` back as it was on exit.

    Rebound or new attributes are reset or removed; dicts, lists and sets held in
    attributes (caches) get their old contents back, in the same objects. Items are
    compared by identity (values may be tensors); a module whose attributes and
    containers are as they were (almost all of them) is checked with C-level
    comparisons only.
    """
    saved = []
    for module in model.modules():
        attributes = module.__dict__.copy()
        contents = [
            (value, _copied(value))
            for value in attributes.values()
            if isinstance(value, _CONTAINERS)
        ]
        saved.append((module, attributes, contents))
    try:
        yield
    finally:
        for module, attributes, contents in saved:
            _put_back(module.__dict__, attributes)
            for container, old in contents:
                if not _same_items(container, old):
                    _refill(container, old)


def _put_back(current: dict, attributes: dict) -> None:
    if current.keys() == attributes.keys() and all(
        map(operator.is_, current.values(), attributes.values())
    ):
        return
    for key in set(current) - set(attributes):
        del current[key]
    for key, value in attributes.items():
        if current.get(key) is not value:
            current[key] = value


def _copied(container: Any) -> Any:
    return dict(container) if isinstance(container, dict) else list(container)


def _same_items(container: Any, old: Any) -> bool:
    """The same items (and keys, in order) as `old`, compared by identity."""
    if len(container) != len(old):
        return False
    if not old:
        return True
    if isinstance(container, dict):
        return list(container) == list(old) and all(
            map(operator.is_, container.values(), old.values())
        )
    if isinstance(container, set):
        return {id(item) for item in container} == {id(item) for item in old}
    return all(map(operator.is_, container, old))


def _refill(container: Any, old: Any) -> None:
    container.clear()
    if isinstance(container, dict):
        container.update(old)
    elif isinstance(container, list):
        container.extend(old)
    else:
        container.update(old)


def _check_no_proxies(model: torch.nn.Module) -> None:
    """A proxy left in a module by an earlier trace (not lrpfn's: it restores) is an error."""
    for name, module in model.named_modules():
        for key, value in module.__dict__.items():
            if isinstance(value, fx.Proxy) or (
                isinstance(value, _CONTAINERS) and value and _holds_proxy(value)
            ):
                raise TraceError(
                    f"module {name or type(model).__name__!r} ({type(module).__name__}) holds "
                    f"a torch.fx Proxy in its attribute {key!r}, left there by an earlier "
                    "trace; the model's forward would return it. Fix: clear that attribute "
                    "(e.g. a cache dict) or rebuild the model."
                )


def _holds_proxy(container: Any) -> bool:
    items = container.values() if isinstance(container, dict) else container
    return any(isinstance(item, fx.Proxy) for item in items)


# -- the offending line of a failure ---------------------------------------------------------

_LIBRARY_DIRECTORIES = (
    str(Path(torch.__file__).resolve().parent),
    str(Path(__file__).resolve().parent),
)


def _in_library(filename: str) -> bool:
    """A frame of torch or of lrpfn itself, by their real package directories (never a path
    substring: a virtual environment named after the project holds the user's code too)."""
    try:
        path = str(Path(filename).resolve())
    except (OSError, RuntimeError):
        return False
    return any(path.startswith(directory + "/") for directory in _LIBRARY_DIRECTORIES)


def _offending_line(error: BaseException) -> str:
    """The last frame of the traceback outside torch and lrpfn: the user's line that failed."""
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if not _in_library(frame.filename) and not frame.filename.startswith("<")
    ]
    if not frames:
        return ""
    frame = frames[-1]
    return f"     Offending line ({frame.filename}:{frame.lineno}):\n         {frame.line}\n"
