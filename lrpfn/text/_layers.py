"""The nodes of a captured transformer's layers: residual stream, heads, MLP neurons.

One forward and one walk that records every node's relevance (`keep_all`, as
`lrpfn.relevances`) give, besides the token relevance (`text.explain_inside`):

- the residual stream: the hidden state entering decoder (or encoder) layer $l$ is a cut
  of the graph (every path from the embeddings to the logit passes through it), so its
  relevance summed over the hidden axis, $r^l_{b,t} = \\sum_h R(h^l)_{b,t,h}$, is the
  share of token $t$'s position at depth $l$; under conservative rules each layer's row
  sums to the explained logit;
- the heads: the attention output projection $o = W [a^1; \\dots; a^H]$ reads the heads'
  outputs side by side, so the relevance of its input, split into the H head slices and
  summed over tokens and the head dimension, is the relevance of each head,
  $\\rho^l_{b,i} = \\sum_{t} \\sum_{d \\in \\text{head } i} R(a^l)_{b,t,d}$.

The layers are found in the captured graph by the modules each node ran in (torch.export
records them in `node.meta["nn_module_stack"]`): the model's list of layers is its
`ModuleList` of `config.num_hidden_layers` modules, the attention is the child of a layer
named like "attn"/"attention" (not a norm), its output projection the last linear node
inside it. Cf. Achtibat et al. (2024), "AttnLRP: Attention-Aware Layer-Wise Relevance
Propagation for Transformers", ICML, for relevance of heads and latent positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ..engine import Plan
from ..errors import UnsupportedModelError

__all__ = [
    "LayerNodes",
    "head_relevance",
    "layer_nodes",
    "stream_relevance",
    "transformer_layers",
]

_STACK = "nn_module_stack"


@dataclass(frozen=True)
class LayerNodes:
    """The graph nodes of one transformer layer that `explain_inside` reads.

    Attributes:
        stream: the node whose value enters the layer (the residual stream).
        heads_input: the input node of the attention output projection.
        mlp_neurons: the input of the layer's last linear node outside the attention (the
            MLP's output projection), whose last axis holds the MLP's neurons.
    """

    stream: fx.Node
    heads_input: fx.Node
    mlp_neurons: fx.Node | None


def transformer_layers(model: nn.Module) -> list[str]:
    """The qualified names of the model's layers: its `ModuleList` whose length is
    `config.num_hidden_layers` (e.g. "model.layers", "transformer.h")."""
    config = model.config.get_text_config()
    count = getattr(config, "num_hidden_layers", None)
    lists = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) == count and count
    ]
    if len(lists) != 1:
        raise UnsupportedModelError(
            f"{type(model).__name__}: lrpfn.text finds a model's layers as its one ModuleList "
            f"of config.num_hidden_layers ({count}) modules, and found {lists or 'none'}. "
            "Read the nodes you need from lrpfn.relevances on the prepared plan instead."
        )
    return [f"{lists[0]}.{index}" for index in range(count)]


def layer_nodes(plan: Plan, layer: str, prefix: str = "model.") -> LayerNodes:
    """The nodes of layer `layer` (a name from `transformer_layers`) in `plan`, whose
    wrapper holds the model as the attribute `prefix`."""
    path = prefix + layer
    nodes = [node for node in plan.module.graph.nodes if node in plan.handlers]
    inside = [node for node in nodes if _ran_in(node, path)]
    entering = {  # nodes lrpfn's passes add (attention scores) record no module: skipped
        source
        for node in inside
        for source in plan.data_inputs.get(node, ())
        if not _ran_in(source, path) and (_paths(source) or source.op == "placeholder")
    }
    attention = _child(inside, path, ("attn", "attention"))
    if len(entering) != 1 or attention is None:
        raise UnsupportedModelError(
            f"layer {layer!r}: lrpfn.text expects one residual stream entering it (found "
            f"{sorted(node.name for node in entering)}) and an attention module named like "
            f"'attn' or 'attention' (found {attention}). Read the nodes you need from "
            "lrpfn.relevances on the prepared plan instead."
        )
    return LayerNodes(
        stream=next(iter(entering)),
        heads_input=_projection_input(plan, inside, attention),
        mlp_neurons=_mlp_neurons(plan, inside, attention),
    )


def stream_relevance(recorded: dict[str, Any], node: fx.Node, like: Tensor) -> Tensor:
    """`(batch, tokens)`: the relevance at a residual-stream node, summed over hidden."""
    relevance = recorded.get(node.name)
    if relevance is None:
        return like.new_zeros(like.shape[:2])
    return relevance.reshape(like.shape[0], like.shape[1], -1).sum(-1)


def head_relevance(recorded: dict[str, Any], node: fx.Node, heads: int, batch: int) -> Tensor:
    """`(batch, heads)`: the relevance of each head's slice of the output projection's
    input, summed over tokens and the head dimension."""
    relevance = recorded.get(node.name)
    if relevance is None:
        return torch.zeros(batch, heads)
    width = relevance.shape[-1]
    return relevance.reshape(batch, -1, heads, width // heads).sum((1, 3))


def _paths(node: fx.Node) -> list[str]:
    return [path for path, _ in (node.meta.get(_STACK) or {}).values()]


def _ran_in(node: fx.Node, path: str) -> bool:
    return any(name == path or name.startswith(path + ".") for name in _paths(node))


def _child(inside: list[fx.Node], path: str, words: tuple[str, ...]) -> str | None:
    """The first child module of `path` (in graph order) named with one of `words`."""
    for node in inside:
        for name in _paths(node):
            if not name.startswith(path + "."):
                continue
            child = name[len(path) + 1 :].split(".")[0]
            if "norm" not in child.lower() and any(word in child.lower() for word in words):
                return f"{path}.{child}"
    return None


def _mlp_neurons(plan: Plan, inside: list[fx.Node], attention: str) -> fx.Node | None:
    linears = [
        node
        for node in inside
        if node.target is F.linear and not _ran_in(node, attention) and plan.data_inputs.get(node)
    ]
    return plan.data_inputs[linears[-1]][0] if linears else None


def _projection_input(plan: Plan, inside: list[fx.Node], module: str) -> fx.Node:
    """The data input of the last linear node that ran inside `module`."""
    linears = [
        node
        for node in inside
        if node.target is F.linear and _ran_in(node, module) and plan.data_inputs.get(node)
    ]
    if not linears:
        raise UnsupportedModelError(
            f"no linear projection found inside {module!r} of the captured graph."
        )
    return plan.data_inputs[linears[-1]][0]
