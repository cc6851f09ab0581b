"""Small graph edits every capture pass shares: module look-ups, fresh buffer names,
constants as `get_attr` nodes, replacing a node by one that keeps its name."""

from __future__ import annotations

import torch
from torch import fx, nn

from .source import NAME

__all__ = ["buffer_node", "fresh_name", "modules_of", "replace_node", "submodule"]


def modules_of(gm: fx.GraphModule):
    for node in gm.graph.nodes:
        if node.op == "call_module":
            yield node, submodule(gm, node.target)


def submodule(gm: fx.GraphModule, target: str) -> nn.Module:
    """`gm.get_submodule(target)` by dictionary look-ups (it is called once per node)."""
    module = gm
    try:
        for part in target.split("."):
            module = module._modules[part]
    except KeyError:
        return gm.get_submodule(target)  # its error names what is missing
    return module


def fresh_name(gm: fx.GraphModule, base: str) -> str:
    """An attribute name `base` + a number that `gm` does not use. The search starts at
    the number of `gm`'s modules and buffers, which every new name increases, so it
    rarely looks twice (starting at 0 looked n times for the n-th name)."""
    index = len(gm._modules) + len(gm._buffers)
    while _taken(gm, f"{base}{index}"):
        index += 1
    return f"{base}{index}"


def _taken(gm: fx.GraphModule, name: str) -> bool:
    """`hasattr(gm, name)` by dictionary look-ups: a miss through `nn.Module.__getattr__`
    raises and formats an AttributeError, and `fresh_name` misses once per new name."""
    return (
        name in gm.__dict__
        or name in gm._modules
        or name in gm._parameters
        or name in gm._buffers
        or hasattr(type(gm), name)
    )


def buffer_node(gm: fx.GraphModule, node: fx.Node, tensor: torch.Tensor | None, base: str):
    """A get_attr node before `node` for `tensor`, stored on `gm` as a buffer."""
    if tensor is None:
        return None
    name = fresh_name(gm, base)
    gm.register_buffer(name, tensor)
    with gm.graph.inserting_before(node):
        return gm.graph.get_attr(name)


def replace_node(gm: fx.GraphModule, old: fx.Node, new: fx.Node) -> None:
    """Replace `old` by `new`, which takes over its name (so names match the user's trace)."""
    new.meta[NAME] = old.name
    old.replace_all_uses_with(new)
    gm.graph.erase_node(old)
