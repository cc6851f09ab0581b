r"""A graph pass for MambaLRP: the selection parameters of Mamba mixers held constant.

In a Hugging Face Mamba mixer (`MambaMixer`, the sequential pure-torch path) the
projection `x_proj(u)` computes the step size $\Delta$ (through `dt_proj` and softplus) and
the matrices $B$ and $C$ from the mixer's input $u$. MambaLRP (Jafari et al. 2024,
NeurIPS) holds them constant, which makes the selective scan linear in $u$:
`hold_selection_parameters(gm)` wraps each such projection's output in
`ops.state_space.held_constant`, so everything computed from it ($\bar A = \exp(\Delta A)$,
$\bar B = \Delta B$, $C$) is a constant for the relevance pass, and the products
$\bar A_t h_{t-1}$, $\bar B_t u_t$ and $C_t h_t$ pass relevance to $h$ and $u$ alone.

In a Mamba2 mixer (`Mamba2Mixer`, its chunked pure-torch path) the step size is the last
part of the split of `in_proj`'s output and $B$, $C$ the last two parts of the split of the
activated convolution's output: those parts are held.

A mixer is recognised by its names, as transformers gives them: a node lowered from a
module `<path>.x_proj` where the graph also reads `<path>.A_log` and `<path>.dt_proj.*`
(Mamba), or from `<path>.in_proj` and `<path>.act` where it reads `<path>.A_log` and
`<path>.dt_bias` (Mamba2). The graph is edited in place; the user's model is untouched.
"""

from __future__ import annotations

import operator

from torch import fx

from ..ops.state_space import held_constant
from .source import SOURCE

__all__ = ["hold_selection_parameters"]


def hold_selection_parameters(gm: fx.GraphModule) -> fx.GraphModule:
    """Wrap every Mamba and Mamba2 mixer's selection parameters in `held_constant` (see
    the module docstring)."""
    attributes = {node.target for node in gm.graph.nodes if node.op == "get_attr"}
    held = []
    for node in list(gm.graph.nodes):
        source = node.meta.get(SOURCE)
        if source is None or "." not in source.name:
            continue
        mixer, leaf = source.name.rsplit(".", 1)
        if f"{mixer}.A_log" not in attributes:
            continue
        if leaf == "x_proj" and any(name.startswith(f"{mixer}.dt_proj.") for name in attributes):
            held.append(node)  # Mamba: x_proj(u) = (dt, B, C)
        elif f"{mixer}.dt_bias" in attributes and leaf in ("in_proj", "act"):
            held += _split_parts(node, last_only=leaf == "in_proj")  # Mamba2
    for node in held:
        with gm.graph.inserting_after(node):
            constant = gm.graph.call_function(held_constant, (node,))
        for user in [user for user in node.users if user is not constant]:
            user.replace_input_with(node, constant)
    if held:
        gm.graph.lint()
        gm.recompile()
    return gm


def _split_parts(node: fx.Node, last_only: bool) -> list[fx.Node]:
    """Mamba2: the parts of the split of `node` that are selection parameters. Of
    `in_proj`'s split `(..., gate, xBC, dt)` the last, `dt`; of the activated convolution's
    split `(x, B, C)` the last two."""
    parts = []
    for user in node.users:
        if user.op not in ("call_function", "call_method") or "split" not in str(user.target):
            continue
        taken = [item for item in user.users if item.target is operator.getitem]
        count = max((item.args[1] for item in taken), default=-1) + 1
        wanted = {count - 1} if last_only else {count - 2, count - 1}
        if not last_only and count != 3:
            continue
        parts += [item for item in taken if item.args[1] in wanted]
    return parts
