"""`explain_inside`: a logit explained at every layer of the model, from one walk.

Besides the token relevance (as `explain`), the walk records the relevance of every
node, from which `text._layers` reads, for each transformer layer $l$:

- `residual[l]`: the relevance entering layer $l$ per token, summed over the hidden axis
  (row 0 is the embeddings, the token scores); each row sums to the explained logit
  under conservative rules, since each layer's input is a cut of the graph;
- `heads[l]`: the relevance of each attention head (the head's slice of the input of the
  attention output projection, summed over tokens and the head dimension);
- `neurons[l]`: the relevance of each MLP neuron (the input of the MLP's output
  projection, summed over tokens).

Achtibat et al. (2024), "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for
Transformers", ICML.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ._explain import TokenRelevance, explained_tokens
from ._layers import head_relevance, layer_nodes, stream_relevance, transformer_layers
from ._prepared import PreparedLanguageModel, prepared

__all__ = ["InsideRelevance", "explain_inside"]


@dataclass(frozen=True)
class InsideRelevance:
    """The relevance of one logit per sample, inside the model.

    Attributes:
        tokens: the `TokenRelevance` at the embeddings (as `explain` returns it).
        residual: `(layers, batch, tokens)`, the relevance entering each layer per token.
        heads: `(layers, batch, heads)`, the relevance of each attention head.
        neurons: `(layers, batch, neurons)`, the relevance of each MLP neuron.
        layers: the model's names of the layers (e.g. "model.layers.0").
    """

    tokens: TokenRelevance
    residual: Tensor
    heads: Tensor
    neurons: Tensor | None
    layers: tuple[str, ...]


def explain_inside(
    model: nn.Module | PreparedLanguageModel,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    target: int | Tensor | None = None,
    position: int | None = -1,
    rules: Any = None,
    *,
    contrast: int | Tensor | None = None,
) -> InsideRelevance:
    """Explain a logit as `lrpfn.text.explain` does, and read the relevance of every
    layer's residual stream, attention heads and MLP neurons off the same walk.

    Arguments are those of `lrpfn.text.explain`.

    Returns:
        An `InsideRelevance`.

    Raises:
        UnsupportedModelError: the layers, their residual stream or their attention
            cannot be found in the captured graph (the message says what is missing).
    """
    held = prepared(model, rules)
    tokens, recorded = explained_tokens(
        held, input_ids, attention_mask, target, position, contrast, keep_all=True
    )
    plan = recorded["plan"]
    layers = transformer_layers(held.model)
    heads = held.model.config.get_text_config().num_attention_heads
    residual, per_head, neurons = [], [], []
    for layer in layers:
        nodes = layer_nodes(plan, layer)
        residual.append(stream_relevance(recorded, nodes.stream, tokens.scores))
        per_head.append(head_relevance(recorded, nodes.heads_input, heads, len(input_ids)))
        if nodes.mlp_neurons is not None:
            neuron = recorded.get(nodes.mlp_neurons.name)
            if neuron is not None:
                neurons.append(neuron.reshape(len(input_ids), -1, neuron.shape[-1]).sum(1))
    return InsideRelevance(
        tokens=tokens,
        residual=torch.stack(residual),
        heads=torch.stack(per_head),
        neurons=torch.stack(neurons) if len(neurons) == len(layers) else None,
        layers=tuple(layers),
    )
