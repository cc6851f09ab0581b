r"""A graph pass for MambaLRP: the selection parameters of Mamba mixers held constant.

In a Hugging Face Mamba mixer (`MambaMixer`, the sequential pure-torch path) the
projection `x_proj(u)` computes the step size $\Delta$ (through `dt_proj` and softplus) and
the matrices $B$ and $C$ from the mixer's input $u$. MambaLRP (Jafari et al. 2024,
NeurIPS) holds them constant, which makes the selective scan linear in $u$:
`hold_selection_parameters(gm)` wraps each such projection's output in
`ops.state_space.held_constant`, so everything computed from it ($\bar A = \exp(\Delta A)$,
$\bar B = \Delta B$, $C$) is a constant for the relevance pass, and the products
$\bar A_t h_{t-1}$, $\bar B_t u_t$ and $C_t h_t$ pass relevance to $h$ and $u$ alone.

A mixer is recognised by its names: a linear node lowered from a module `<path>.x_proj`
where the graph also reads `<path>.A_log` and `<path>.dt_proj` (as transformers names
them). The graph is edited in place; the user's model is untouched.
"""

from __future__ import annotations

from torch import fx

from ..ops.state_space import held_constant
from .source import SOURCE

__all__ = ["hold_selection_parameters"]


def hold_selection_parameters(gm: fx.GraphModule) -> fx.GraphModule:
    """Wrap the output of every Mamba mixer's `x_proj` in `held_constant` (see the module)."""
    attributes = {node.target for node in gm.graph.nodes if node.op == "get_attr"}
    changed = False
    for node in list(gm.graph.nodes):
        source = node.meta.get(SOURCE)
        if source is None or not source.name.endswith(".x_proj"):
            continue
        mixer = source.name[: -len(".x_proj")]
        if f"{mixer}.A_log" not in attributes or not any(
            name.startswith(f"{mixer}.dt_proj.") for name in attributes
        ):
            continue
        with gm.graph.inserting_after(node):
            held = gm.graph.call_function(held_constant, (node,))
        for user in [user for user in node.users if user is not held]:
            user.replace_input_with(node, held)
        changed = True
    if changed:
        gm.graph.lint()
        gm.recompile()
    return gm
