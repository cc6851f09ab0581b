"""Prepare a model for explanation: capture, canonicalize, check, assign rules.

`prepare(model, rules)` does everything that depends on the model and the rules but not on
the input, once, and returns an immutable `Plan`. Every problem is found here, before
anything runs: all nodes without a handler are reported in one `UnsupportedNodeError`,
all parametrised nodes without a rule in one `UnassignedRuleError`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import torch
from torch import fx

from ._canonical import SOURCE, canonicalize
from ._capture import TRACE_LOCK, capture
from ._families import HANDLERS, exported
from ._families.normalization import CONSTANT_STATISTIC_METHODS, CONSTANT_STATISTICS
from ._handlers import ROUTE, Handler, handler_for, is_tensor_attribute
from ._memory import queries, recomputed_nodes
from ._recurrent import unroll_recurrent
from .composites import resolve
from .errors import InvalidRuleError, UnsupportedNodeError
from .rules import Gradient, is_signal_rule, rule_from_key

if TYPE_CHECKING:
    from ._compiled import CompiledWalk

__all__ = ["Plan", "prepare"]


@dataclass(frozen=True)
class Plan:
    """A model ready to explain: its canonical graph, handlers and rules.

    Attributes:
        module: the canonical `GraphModule` (BatchNorm folded, in-place ops removed).
        rules: `{node name: rule}` for every node that takes a rule, in graph order.
        handlers: the handler of every node that carries relevance.
        data_inputs: for each such node, its input nodes that carry relevance.
        nonnegative: nodes whose output the graph guarantees to be >= 0.
        zero_where_nonpositive: nodes whose relevance the graph guarantees to be 0
            wherever their output is <= 0.
        backward_uses: how many backward steps read each node's value (the forward keeps
            those values, the walk frees each after its last read).
        recomputed: nodes whose value the forward drops and the walk recomputes from
            kept values (elementwise ops, attention scores; `lrpfn._memory`).
        front_end: the capture that made the graph: "fx" (`torch.fx.symbolic_trace`),
            "export" (`torch.export`, specialised to `input_shape`) or "graph" (a
            `GraphModule` passed in).
        input_shape: the input shape an "export" graph is specialised to, else None.
        output_key: "logits" where the model returns a mapping (a dict, a Hugging Face
            `ModelOutput`) and its logits are explained, else None.
        compiled: the cache of compiled graphs where prepared with `compile=`, else None
            (`lrpfn._compiled`).
    """

    module: fx.GraphModule
    rules: Mapping[str, Any]
    handlers: Mapping[fx.Node, Handler]
    data_inputs: Mapping[fx.Node, tuple[fx.Node, ...]]
    data_positions: Mapping[fx.Node, tuple[int, ...]]
    nonnegative: frozenset
    zero_where_nonpositive: frozenset = frozenset()
    backward_uses: Mapping[fx.Node, int] = field(default_factory=dict)
    recomputed: frozenset = frozenset()
    front_end: str = "fx"
    input_shape: tuple[int, ...] | None = None
    output_key: str | None = None
    compiled: CompiledWalk | None = None

    def __repr__(self) -> str:
        lines = "\n".join(f"  {name}: {rule!r}" for name, rule in self.rules.items())
        captured = f"front_end={self.front_end!r}"
        if self.input_shape is not None:
            captured += f", input_shape={self.input_shape}"
        if self.output_key is not None:
            captured += f", output_key={self.output_key!r}"
        if self.compiled is not None:
            captured += f", compiled={self.compiled.backend!r}"
        return f"Plan({type(self.module).__name__}, {captured}, rules={{\n{lines}\n}})"


def prepare(
    model: torch.nn.Module,
    rules: Any,
    handlers: Mapping[Any, Handler] | None = None,
    *,
    pattern: Any = None,
    example_input: torch.Tensor | None = None,
    compile: bool | str | Callable = False,
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
            `lrpfn.relevances` runs the plain walk. See `lrpfn._compiled` and
            docs/design.md for the measured costs.

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
        captured = capture(model, example_input)
        gm = canonicalize(captured.module, owned=captured.front_end == "fx")
        gm = unroll_recurrent(gm, example_input)  # LSTM, GRU, RNN: per-step ops
    data_inputs, positions = _data_flow(gm)
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
    uses = _backward_uses(node_handlers, data_inputs)
    recomputed = recomputed_nodes(node_handlers, data_inputs, uses)
    for query in queries(recomputed):  # kept for the walk's recomputation, never released
        uses[query] = uses.get(query, 0) + 1
    return Plan(
        module=gm,
        rules=MappingProxyType(table_of_rules),
        handlers=MappingProxyType(node_handlers),
        data_inputs=MappingProxyType(data_inputs),
        data_positions=MappingProxyType(positions),
        nonnegative=_nonnegative(gm, node_handlers, data_inputs),
        zero_where_nonpositive=_zero_where_nonpositive(node_handlers, table_of_rules),
        backward_uses=MappingProxyType(uses),
        recomputed=recomputed,
        front_end=captured.front_end,
        input_shape=captured.input_shape,
        output_key=captured.output_key,
        compiled=_compiled_walk(compile),
    )


def _compiled_walk(compile: bool | str | Callable) -> CompiledWalk | None:
    if compile is False or compile is None:
        return None
    from ._compiled import CompiledWalk  # imports the walk, which imports this module

    return CompiledWalk("inductor" if compile is True else compile)


def _data_flow(gm: fx.GraphModule):
    """The nodes that depend on the input, with their data inputs in argument order.

    Flow stops at ops whose result is not a tensor (`x.size()`, `x.shape`).
    """
    data: set[fx.Node] = set()
    inputs: dict[fx.Node, tuple[fx.Node, ...]] = {}
    positions: dict[fx.Node, tuple[int, ...]] = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":  # the first is the explained input; any other one is a
            if not data:  # constant (a default, or a concrete_args value fixed by the trace)
                data.add(node)
            continue
        found, where = [], []
        for index, arg in enumerate((*node.args, *node.kwargs.values())):
            for item in _nodes_in(arg):
                if item in data:
                    found.append(item)
                    where.append(index)
        if found and node.op != "output":
            inputs[node] = tuple(found)
            positions[node] = tuple(where)
            if not _is_shape_query(node):
                data.add(node)
    return inputs, positions


def _nodes_in(arg: Any) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg(arg, found.append)
    return found


_SHAPE_QUERIES = {"size", "dim", "numel", "get_device", "stride", "__len__"}
_SHAPE_FUNCTIONS = frozenset(exported.SHAPE_QUERIES)


def _is_shape_query(node: fx.Node) -> bool:
    """A node whose result carries no relevance: a shape (`x.size()`, `x.shape`, export's
    `sym_size`) or a statistic held constant (a vector norm, see `_families.normalization`)."""
    if node.op == "call_method":
        return node.target in _SHAPE_QUERIES or node.target in CONSTANT_STATISTIC_METHODS
    if node.op != "call_function":
        return False
    if getattr(node.target, "__name__", "") in ("getattr", "len"):
        return not is_tensor_attribute(node)  # x.shape is a query, x.mT is data
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        target = target.overloadpacket  # aten.sym_size.int -> aten.sym_size
    try:
        return target in _SHAPE_FUNCTIONS or target in CONSTANT_STATISTICS
    except TypeError:  # unhashable target
        return False


def _nonnegative(gm, handlers, data_inputs) -> frozenset:
    known: set[fx.Node] = set()
    for node, handler in handlers.items():
        if handler.nonnegative == "always":
            known.add(node)
        elif handler.nonnegative == "preserves" and all(i in known for i in data_inputs[node]):
            subtracts = node.target in (operator.sub, torch.sub, "sub")
            has_constant = len(node.args) > len(data_inputs[node]) and handler.kind == "sum"
            if not (subtracts or has_constant):
                known.add(node)
    return frozenset(known)


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


def _zero_where_nonpositive(
    handlers: Mapping[fx.Node, Handler], rules: Mapping[str, Any]
) -> frozenset:
    """Nodes whose relevance is 0 wherever their value is <= 0, by static analysis.

    Walking in reverse, a node's relevance is 0 wherever its value is 0 (set `at_zero`) if
    every consumer sends nothing there: a rule that multiplies by its input (Epsilon,
    Gamma, AlphaBeta, ZPlus), or a selection (view, max-pool, cat) or an elementwise op
    with $g(0) = 0$ whose own output is in `at_zero`. It is 0 wherever its value is <= 0
    if every consumer is a ReLU in `at_zero`. The output node is never in the sets, since
    `output_relevance` may be anything. Signal rules (gradients) make no such promise.
    """
    if any(is_signal_rule(rule) for rule in rules.values()):
        return frozenset()
    at_zero: set[fx.Node] = set()
    below: set[fx.Node] = set()
    for node in reversed(list(handlers)):
        consumers = list(node.users)
        if not consumers or any(user not in handlers for user in consumers):
            continue
        if all(_sends_zero_at_zero(user, handlers[user], rules, at_zero) for user in consumers):
            at_zero.add(node)
        if all(handlers[user].zero_below and user in at_zero for user in consumers):
            below.add(node)
    return frozenset(below)


def _sends_zero_at_zero(user: fx.Node, handler: Handler, rules, at_zero: set) -> bool:
    if handler.kind in ("linear", "sum"):
        return bool(getattr(rules.get(user.name), "multiplies_input", False))
    if handler.kind == "pass":
        return handler.zero_at_zero and user in at_zero
    if handler.kind in ("route", "product"):
        return user in at_zero
    return handler.kind == "none"


def _backward_uses(handlers: Mapping[fx.Node, Handler], data_inputs) -> dict[fx.Node, int]:
    """How many backward steps read each node. A shape query used as a constant argument
    (`x.view(x.size(0), -1)`, export's `sym_size`) is read by its consumer's step too: it
    is counted once more, so the forward keeps it (it is never released: a few ints)."""
    uses: dict[fx.Node, int] = {}
    for node, handler in handlers.items():
        reads = list(data_inputs[node]) if handler.keeps_inputs else []
        for item in [*reads, node] if handler.needs_output else reads:
            uses[item] = uses.get(item, 0) + 1
        if handler.keeps_inputs:
            for item in node.all_input_nodes:
                if item in data_inputs and _is_shape_query(item):
                    uses[item] = uses.get(item, 0) + 1
    return uses
