"""Resolving a rule mapping against a graph: which rule explains which node.

`resolve(gm, handlers, mapping)` returns the assignment `{node name: rule}` as a plain dict
that can be printed (the mapping forms are in the package docstring). When several keys
match a node, a name beats a position or predicate, which beats a type or family; among
keys of one kind the first listed wins. A node with parameters (dense, convolution,
unfolded BatchNorm) that no key matches is an error listing every such node;
parameter-free linear nodes (pooling, sums) fall back to `DEFAULT_RULE`, products,
softmaxes and matrix products of activations to their family's default.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import fx

from ..capture import SOURCE
from ..errors import InvalidRuleError, UnassignedRuleError
from ..ops.handler import Handler
from ..rules import RULE_KEYS
from ._composite import DEFAULT_RULE, FAMILY_DEFAULTS, Composite, composite_of
from ._matching import NodeInfo, family_of
from ._presets import PRESETS, key_composite

__all__ = ["as_composite", "node_infos", "resolve"]


def as_composite(mapping: Any) -> Composite:
    """Turn any rule mapping (rule, dict, key string, preset name, Composite) into a
    `Composite`."""
    if isinstance(mapping, str):
        if mapping == "epsilon_gamma_box":
            raise InvalidRuleError(
                "the preset 'epsilon_gamma_box' needs the input bounds: pass "
                "composites.epsilon_gamma_box(low=..., high=...) instead of its name."
            )
        if mapping in PRESETS:
            return PRESETS[mapping]()
        return key_composite(mapping)
    if not isinstance(mapping, (Composite, str, Mapping)) and not callable(mapping):
        raise InvalidRuleError(
            f"rules must be a rule, a dict of rules, a Composite or a rule key, got {mapping!r}. "
            f"Known keys: {', '.join([*RULE_KEYS, *PRESETS])}."
        )
    return composite_of(mapping)


def node_infos(gm: fx.GraphModule, handlers: Mapping[fx.Node, Handler]) -> tuple[NodeInfo, ...]:
    """A `NodeInfo` for each node that takes a rule, in graph order."""
    infos = []
    for node, handler in handlers.items():
        if handler.rule is None:
            continue
        source = node.meta.get(SOURCE)
        module = source.name if source else (node.target if node.op == "call_module" else None)
        module_type = (
            source.type
            if source
            else (type(gm.get_submodule(node.target)) if node.op == "call_module" else None)
        )
        infos.append(
            NodeInfo(
                node.name, module, module_type, node.target, family_of(node, handler), len(infos)
            )
        )
    return tuple(infos)


def resolve(
    gm: fx.GraphModule,
    handlers: Mapping[fx.Node, Handler],
    mapping: Any,
    default_rule: Any = DEFAULT_RULE,
) -> dict[str, Any]:
    """The rule of every node that takes one, `{node name: rule}` in graph order.

    Raises:
        UnassignedRuleError: nodes with parameters that no key matches (all listed).
    """
    composite = as_composite(mapping)
    infos = node_infos(gm, handlers)
    by_name = {node.name: handler for node, handler in handlers.items()}
    table, missing = {}, []
    for info in infos:
        rule = composite.rule_for(info, infos)
        if rule is None:
            if by_name[info.name].rule == "required":
                missing.append(info)
                continue
            rule = FAMILY_DEFAULTS.get(info.family, default_rule)
        table[info.name] = rule
    if missing:
        lines = "\n".join(
            f"  - {info.name}: {info.family}"
            + (f" from module {info.module!r} ({info.module_type.__name__})" if info.module else "")
            for info in missing
        )
        raise UnassignedRuleError(
            f"{len(missing)} node(s) with parameters match no key of the rule mapping, and lrpfn "
            f"never falls back to the plain gradient silently:\n{lines}\n"
            "Fix: add a key for them, by node or module name, by type (e.g. torch.nn.Linear), "
            "by family (composites.DENSE, composites.CONVOLUTION), or pass a single rule."
        )
    return table
