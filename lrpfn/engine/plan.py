"""`Plan`: a model ready to explain, the immutable value `prepare` returns.

`prepare` (engine.prepare) does everything that depends on the model and the rules but not
on the input, once, and returns a `Plan`: the canonical graph, the handler and rule of
every node, and what the static analyses (engine.analyses) found.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import fx

from ..ops.handler import Handler
from .folding import Folding

__all__ = ["Plan"]


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
            kept values (elementwise ops, attention scores; `lrpfn.engine.memory`).
        front_end: the capture that made the graph: "fx" (`torch.fx.symbolic_trace`),
            "export" (`torch.export`, specialised to `input_shape`) or "graph" (a
            `GraphModule` passed in).
        input_shape: the input shape an "export" graph is specialised to, else None.
        output_key: "logits" where the model returns a mapping (a dict, a Hugging Face
            `ModelOutput`) and its logits are explained, else None.
        compiled: the cache of compiled graphs where prepared with `compile=`, else None
            (`lrpfn.engine.compiled`).
        folding: what `lrp`'s folded walk folds (`lrpfn.engine.folding`).
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
    compiled: Any = None  # an engine.compiled.CompiledWalk
    folding: Folding = field(default_factory=Folding)

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
