r"""Which nodes the folded walk (`engine.folded_walk`) folds: a static analysis for `prepare`.

Epsilon on a layer whose output $z$ passes a ReLU $v = \max(z, 0)$ into layers that
multiply by their input (Epsilon, or Gamma and AlphaBeta on inputs $\ge 0$) reads
$R = v \odot c$, where $c$ is the next layer's transposed op's result, and divides it by
$\mathrm{st}(z)$. The folded walk carries $c$ itself (a *coefficient*, relevance per
unit of $v$) and multiplies it by $F = v / \mathrm{st}(z)$, computed in the forward pass
where $z$ and $v$ are at hand: per layer one transposed op and one multiply, as the input
gradient (one transposed op and one `threshold_backward`), and the forward keeps $F$
instead of $z$. The same holds for the modified denominators of Gamma and AlphaBeta
(their modified forwards then run in the forward pass), for residual sums (each input's
coefficient is $s$ itself) and through ops that only move values (max-pooling, by the
forward's indices; reshapes), since $\mathrm{route}^\top(v \odot c) = u \odot
\mathrm{route}^\top(c)$ for the route's input $u$. Results are the plain walk's to
rounding ($c \cdot (v / d)$ instead of $(v c) / d$).

A node is *factored* (its relevance travels as a coefficient with respect to a `base`
node's value) when every consumer offers its contribution that way, all with one base:

- a *fast* linear node (`Folding.fast`: a convolution or dense layer whose rule `folds`,
  or a sum under `rules.Epsilon` with $\epsilon > 0$) offers base = its input;
- a factored elementwise pass (ReLU, dropout, ...) offers its own base;
- a factored route whose base is itself (max-pool, reshape) offers base = its input;

and the node itself can take a coefficient: a pass or route passes it on (its input must
be factored in turn), a fast linear node is *folded* (its terms' factors come from the
forward). A fast linear node that is not factored computes its denominators in the
forward pass and divides the arriving relevance by them; every other node takes the plain
step (`engine.walk`), reading the values the forward keeps for it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..ops.handler import Handler
from ..ops.linear import SUM, foldable_layer
from ..rules import Epsilon
from .memory import queries

__all__ = ["Folding", "folding"]

_RESHAPES = (torch.flatten, torch.reshape, "flatten", "view", "reshape")
_RELU = (nn.ReLU, F.relu, torch.relu, "relu")


@dataclass(frozen=True)
class Folding:
    """What the folded walk does at each node (see the module).

    Attributes:
        factored: `{node: base}`: nodes whose relevance travels as a coefficient $c$ with
            $R = v_{\\text{base}} \\odot c$.
        fast: linear and sum nodes whose terms come from the forward pass (folded where
            factored, else denominators the arriving relevance is divided by).
        relations: for each folded node, what its base is ("self", "relu", "zero_below",
            "other"; `rules.epsilon_factor`).
        lazy: fast nodes under `rules.Epsilon` that are not factored: the forward keeps
            their $z$ (as the plain walk does, and other steps may read it) and the walk
            computes $\\mathrm{st}(z)$ from it.
        routes: factored routes: "max_pool2d" (by the forward's indices) or "reshape".
        bases: `{base: folded nodes}`: the forward computes their factors when the base is
            computed.
        uses: how many steps of the folded walk read each node's value.
        recomputed: values the folded walk recomputes (`engine.memory`) instead of keeping.
    """

    factored: Mapping[fx.Node, fx.Node] = field(default_factory=dict)
    fast: frozenset = frozenset()
    lazy: frozenset = frozenset()
    relations: Mapping[fx.Node, str] = field(default_factory=dict)
    routes: Mapping[fx.Node, str] = field(default_factory=dict)
    bases: Mapping[fx.Node, tuple[fx.Node, ...]] = field(default_factory=dict)
    uses: Mapping[fx.Node, int] = field(default_factory=dict)
    recomputed: frozenset = frozenset()

    @property
    def keep(self) -> frozenset:
        """The values the folded forward keeps for the walk."""
        return frozenset(n for n, k in self.uses.items() if k > 0 and n not in self.recomputed)


def folding(
    gm: fx.GraphModule,
    handlers: Mapping[fx.Node, Handler],
    data_inputs: Mapping[fx.Node, tuple],
    rules: Mapping[str, Any],
    nonnegative: frozenset,
    zero_where_nonpositive: frozenset,
    recomputed: frozenset,
) -> Folding:
    """The folding of a canonical graph (see the module); empty where nothing folds."""
    analysis = _Analysis(gm, handlers, data_inputs, rules, nonnegative, zero_where_nonpositive)
    banned: set[fx.Node] = set()
    while True:  # a pass or route whose input cannot take its coefficient is banned; again
        factored, fast = analysis.assign(banned)
        wrong = {n for n in factored if n not in fast and not analysis.input_agrees(n, factored)}
        if not wrong:
            break
        banned |= wrong
    if not fast:
        return Folding()
    relations = {n: analysis.relation(n, factored[n]) for n in fast if n in factored}
    bases: dict[fx.Node, list[fx.Node]] = {}
    for n in relations:
        bases.setdefault(factored[n], []).append(n)
    lazy = {n for n in fast if n not in factored and isinstance(rules.get(n.name), Epsilon)}
    uses = _uses(handlers, data_inputs, factored, fast)
    uses.update(lazy)  # a lazy node's step reads its own z
    kept_recomputed = _recomputed(handlers, data_inputs, factored, fast, recomputed, uses)
    for query in queries(kept_recomputed):
        uses[query] += 1
    return Folding(
        factored=factored,
        fast=frozenset(fast),
        lazy=frozenset(lazy),
        relations=relations,
        routes={n: analysis.route(n) for n in factored if handlers[n].kind == "route"},
        bases={base: tuple(nodes) for base, nodes in bases.items()},
        uses=dict(uses),
        recomputed=kept_recomputed,
    )


class _Analysis:
    def __init__(self, gm, handlers, data_inputs, rules, nonnegative, zero_where_nonpositive):
        self.gm, self.handlers, self.data_inputs = gm, handlers, data_inputs
        self.rules, self.nonnegative, self.zwnp = rules, nonnegative, zero_where_nonpositive

    def assign(self, banned: set) -> tuple[dict, set]:
        """Reverse graph order: every consumer is decided before its inputs."""
        factored: dict[fx.Node, fx.Node] = {}
        fast: set[fx.Node] = set()
        for n in reversed(list(self.handlers)):
            base = None if n in banned else self._offered(n, factored, fast)
            if base is not None and self._takes(n, base):
                factored[n] = base
            if self._fast(n, factored.get(n)):
                fast.add(n)
        return factored, fast

    def _offered(self, n, factored, fast):
        users = list(n.users)
        if not users or any(u not in self.handlers for u in users):
            return None
        offers = {self._offer(u, n, factored, fast) for u in users}
        return offers.pop() if len(offers) == 1 else None

    def _offer(self, u, n, factored, fast):
        inputs = self.data_inputs[u]
        kind = self.handlers[u].kind
        if u in fast:
            return n if inputs.count(n) == 1 and (kind == "sum" or inputs == (n,)) else None
        if u in factored and inputs == (n,):
            if kind == "pass":
                return factored[u]
            if kind == "route" and factored[u] is u:
                return n
        return None

    def _takes(self, n, base) -> bool:
        """Whether `n` can take a coefficient with respect to `base`."""
        kind = self.handlers[n].kind
        if kind == "pass":
            return len(self.data_inputs[n]) == 1
        if kind == "route":
            return base is n and self.route(n) is not None
        return self._fast(n, base)

    def _fast(self, n, base) -> bool:
        handler, rule = self.handlers[n], self.rules.get(n.name)
        if handler is SUM:  # exactly Epsilon, as the plain step's own shortcut (ops.linear)
            return type(rule) is Epsilon and rule.epsilon > 0
        if foldable_layer(handler) is None or _padding(n) == "same":
            return False
        if len(self.data_inputs[n]) != 1 or n.args[0] is not self.data_inputs[n][0]:
            return False
        folds = getattr(rule, "folds", None)
        if folds is None:
            return False
        nonnegative = self.data_inputs[n][0] in self.nonnegative
        if base is None:  # not factored: R arrives as relevance
            return folds(nonnegative, n in self.zwnp, None)
        relation = self.relation(n, base)
        return folds(nonnegative, relation in ("relu", "zero_below"), relation)

    def input_agrees(self, n, factored) -> bool:
        """A pass or route hands its coefficient to an input factored with the right base."""
        (item,) = self.data_inputs[n]
        wanted = factored[n] if self.handlers[n].kind == "pass" else item
        return factored.get(item) is wanted

    def relation(self, n, base) -> str:
        """What `base` is of `n`'s output $z$ (`rules.epsilon_factor`)."""
        if base is n:
            return "self"
        chain, item = [], n
        while item is not base:
            users = list(item.users)
            if len(users) != 1 or self.handlers.get(users[0]) is None:
                return "other"
            item = users[0]
            chain.append(item)
        handlers = [self.handlers[item] for item in chain]
        if not handlers[0].zero_below or not all(h.zero_at_zero for h in handlers[1:]):
            return "other"
        return "relu" if len(chain) == 1 and _is_relu(self.gm, chain[0]) else "zero_below"

    def route(self, n) -> str | None:
        if n.op == "call_module":
            module = self.gm.get_submodule(n.target)
            if type(module) is nn.MaxPool2d and not module.return_indices:
                return "max_pool2d"
            return "reshape" if type(module) is nn.Flatten else None
        if n.target in _RESHAPES:
            return "reshape"
        return None


def _padding(n: fx.Node) -> Any:
    return n.kwargs.get("padding", n.args[4] if len(n.args) > 4 else 0)


def _is_relu(gm: fx.GraphModule, n: fx.Node) -> bool:
    if n.op == "call_module":
        return type(gm.get_submodule(n.target)) is nn.ReLU
    return n.target in _RELU


def _uses(handlers, data_inputs, factored, fast) -> Counter:
    """How many steps of the folded walk read each value."""
    uses: Counter = Counter()
    for n, handler in handlers.items():
        inputs = data_inputs[n]
        if n in fast:  # the forward keeps the terms; a plain input multiplies its share
            uses.update(item for item in inputs if item not in factored)
        elif n not in factored:  # the plain step (engine.walk), as analyses.backward_uses
            reads = list(inputs) if handler.keeps_inputs else []
            uses.update([*reads, n] if handler.needs_output else reads)
            if handler.keeps_inputs:
                uses.update(i for i in n.all_input_nodes if i in data_inputs and i not in inputs)
    return uses


def _recomputed(handlers, data_inputs, factored, fast, recomputed, uses) -> frozenset:
    """The plan's recomputed values whose inputs the folded walk still holds when they are
    read (`engine.memory`): an input read by its own plain step (its output $z$), or by the
    recomputed node's own plain step, or recomputed in turn."""
    kept: set[fx.Node] = set()
    for n in handlers:  # graph order: inputs first
        if n not in recomputed or uses[n] == 0:
            continue
        plain = n not in fast and n not in factored
        if all(
            item in kept
            or (plain and handlers[n].keeps_inputs)
            or (
                item in handlers
                and handlers[item].needs_output
                and item not in fast
                and item not in factored
            )
            for item in data_inputs[n]
        ):
            kept.add(n)
    return frozenset(kept)
