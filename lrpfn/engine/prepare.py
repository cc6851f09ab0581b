"""Prepare a model for explanation: capture, canonicalize, check, assign rules.

`prepare(model, rules)` does everything that depends on the model and the rules but not on
the input, once, and returns an immutable `Plan`. Every problem is found here, before
anything runs: all nodes without a handler are reported in one `UnsupportedNodeError`,
all parametrised nodes without a rule in one `UnassignedRuleError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import torch
from torch import fx

from ..capture import SOURCE, TRACE_LOCK, canonicalize, capture
from ..capture.recurrent import unroll_recurrent
from ..capture.state_space import hold_selection_parameters
from ..composites import resolve
from ..errors import InvalidRuleError, UnsupportedNodeError
from ..ops import HANDLERS
from ..ops.handler import ROUTE, Handler, handler_for
from ..rules import Gradient, is_signal_rule, rule_from_key
from .analyses import backward_uses, data_flow, nonnegative_nodes, zero_where_nonpositive
from .compiled import CompiledWalk
from .folding import folding
from .memory import queries, recomputed_nodes
from .plan import Plan

__all__ = ["prepare"]


def prepare(
    model: torch.nn.Module,
    rules: Any,
    handlers: Mapping[Any, Handler] | None = None,
    *,
    pattern: Any = None,
    example_input: torch.Tensor | None = None,
    compile: bool | str | Callable = False,
    output: str | int | None = None,
) -> Plan:
    """Capture `model`, canonicalize it, check every node and resolve `rules`.

    When a signal rule (`rules.Gradient`, `rules.PatternNet`, ...) is assigned, elementwise
    activations propagate like a gradient (times their derivative) and parameter-free
    linear nodes default to `rules.Gradient()`.

    Arguments:
        model: an `nn.Module` or a `torch.fx.GraphModule` (never modified).
        rules: a rule mapping (see `lrpfn.composites`).
        handlers: a dispatch table replacing `lrpfn.HANDLERS` (e.g. extended with
            `{MyModule: lrpfn.handlers.PASS}`).
        pattern: the `lrpfn.patterns.Patterns` for TorchLRP's keys "patternnet" and
            "patternattribution" (`prepare(model, "patternnet", pattern=patterns)`).
        example_input: an input batch. Where `torch.fx.symbolic_trace` cannot trace the
            model, `torch.export` captures it at this input's shape (the plan then
            explains inputs of that shape only; `lrpfn.lrp(model, x)` passes its `x`).
        compile: opt in to `torch.compile` of the whole forward and walk: True (backend
            "inductor"), a backend name such as "aot_eager", or a backend function. The
            first call at each input shape, dtype and device compiles (seconds to
            minutes); later calls reuse it. Same results as the plain plan;
            `lrpfn.relevances` runs the plain walk. See `lrpfn.engine.compiled` and
            docs/design.md for the measured costs.
        output: where the model returns a mapping or a tuple, the key or index of the
            output to explain (`output="out"` for torchvision's segmentation models;
            without it a mapping's "logits", or its only entry, is chosen).

    Raises:
        TraceError: neither `torch.fx` nor `torch.export` captures the model.
        TrainingModeError: a BatchNorm, dropout or stochastic depth is in training mode.
        UnsupportedNodeError: nodes without a handler (all of them listed).
        UnassignedRuleError: nodes with parameters that no key of `rules` matches.
    """
    table = HANDLERS if handlers is None else handlers
    if pattern is not None:
        if not isinstance(rules, str):
            raise InvalidRuleError(
                "pattern= goes with the rule keys 'patternnet' and 'patternattribution'; "
                "with rule values pass rules.PatternNet(patterns) in the mapping instead."
            )
        rules = rule_from_key(rules, pattern=pattern)
    with TRACE_LOCK.tracing():  # fx patches torch.nn.Module process-wide while tracing
        captured = capture(model, example_input, output)
        gm = canonicalize(captured.module, owned=captured.front_end == "fx")
        gm = unroll_recurrent(gm, example_input)  # LSTM, GRU, RNN: per-step ops
        gm = hold_selection_parameters(gm)  # Mamba: the scan is linear in its input
    data_inputs, positions = data_flow(gm)
    node_handlers, unsupported = {}, []
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output") or node not in data_inputs:
            continue
        handler = handler_for(node, gm, table)
        if handler is None:
            unsupported.append(node)
        else:
            node_handlers[node] = handler
    if unsupported:
        raise UnsupportedNodeError(_unsupported_message(gm, unsupported))
    data_inputs = {node: inputs for node, inputs in data_inputs.items() if node in node_handlers}
    table_of_rules = resolve(gm, node_handlers, rules)
    if any(is_signal_rule(rule) for rule in table_of_rules.values()):
        node_handlers = {
            node: ROUTE if handler.kind == "pass" else handler
            for node, handler in node_handlers.items()
        }
        table_of_rules = resolve(gm, node_handlers, rules, default_rule=Gradient())
    uses = backward_uses(node_handlers, data_inputs)
    recomputed = recomputed_nodes(node_handlers, data_inputs, uses)
    for query in queries(recomputed):  # kept for the walk's recomputation, never released
        uses[query] = uses.get(query, 0) + 1
    nonnegative = nonnegative_nodes(gm, node_handlers, data_inputs)
    zero = zero_where_nonpositive(node_handlers, table_of_rules)
    folded = folding(gm, node_handlers, data_inputs, table_of_rules, nonnegative, zero, recomputed)
    return Plan(
        module=gm,
        rules=MappingProxyType(table_of_rules),
        handlers=MappingProxyType(node_handlers),
        data_inputs=MappingProxyType(data_inputs),
        data_positions=MappingProxyType(positions),
        nonnegative=nonnegative,
        zero_where_nonpositive=zero,
        backward_uses=MappingProxyType(uses),
        recomputed=recomputed,
        front_end=captured.front_end,
        input_shape=captured.input_shape,
        output_key=captured.output_key,
        compiled=_compiled_walk(compile),
        folding=folded,
    )


def _compiled_walk(compile: bool | str | Callable) -> CompiledWalk | None:
    if compile is False or compile is None:
        return None
    return CompiledWalk("inductor" if compile is True else compile)


def _unsupported_message(gm: fx.GraphModule, nodes: list[fx.Node]) -> str:
    lines = []
    for node in nodes:
        target = node.target
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            described = (
                f"module {node.target!r} ({type(module).__module__}.{type(module).__name__})"
            )
        else:
            described = f"{node.op} {getattr(target, '__name__', target)!s}"
        source = node.meta.get(SOURCE)
        lines.append(f"  - {node.name}: {described}" + (f" from {source.name!r}" if source else ""))
    return (
        f"{len(nodes)} graph node(s) have no relevance handler:\n" + "\n".join(lines) + "\n"
        "Fix: pass handlers={**lrpfn.HANDLERS, <module type, function or method name>: "
        "<handler>} with one of lrpfn.handlers.PASS (elementwise), lrpfn.handlers.ROUTE "
        "(moves or selects values), lrpfn.handlers.POOL (parameter-free linear op), or a "
        "handler of your own (docs/extending.md); or trace the model so that the op is "
        "expressed by supported ops."
    )
