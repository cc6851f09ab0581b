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

from ..engine import Plan
from ..errors import UnsupportedModelError
from ._explain import TokenRelevance, explained_tokens
from ._layers import head_relevance, layer_nodes, stream_relevance, transformer_layers
from ._prepared import PreparedLanguageModel, prepared

__all__ = ["ConceptNodes", "InsideRelevance", "concept_nodes", "explain_inside"]


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


@dataclass(frozen=True)
class ConceptNodes:
    """What `lrpfn.concepts` needs to explain a language model by heads and neurons.

        nodes = text.concept_nodes(prepared, input_ids)
        heads = concepts.importance(nodes.plan, nodes.embeddings, None, nodes.heads[3])
        neurons = concepts.importance(
            nodes.plan, nodes.embeddings, None, nodes.neurons[3], channel_axis=-1
        )
        maps = concepts.conditional(nodes.plan, nodes.embeddings, None, [{nodes.heads[3]: [5]}])

    Attributes:
        plan: the plan of `embeddings -> logits[:, position]` for these ids and mask.
        embeddings: `(batch, tokens, hidden)`, the input of `plan`.
        heads: per layer, the node of the attention output `(batch, heads, tokens, head
            dim)`: the heads are its channel axis 1.
        neurons: per layer, the node of the MLP's neurons `(batch, tokens, neurons)`
            (`channel_axis=-1`), None where the layer has none.
        layers: the model's names of the layers.
    """

    plan: Plan
    embeddings: Tensor
    heads: tuple[str, ...]
    neurons: tuple[str | None, ...]
    layers: tuple[str, ...]


def concept_nodes(
    model: nn.Module | PreparedLanguageModel,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    position: int | None = -1,
    rules: Any = None,
) -> ConceptNodes:
    """The plan, its input and the head and neuron nodes of every layer, for
    `lrpfn.concepts.importance` and `conditional` (see `ConceptNodes`). A capture not
    yet checked against the model's own forward is checked first (one `explain`).

    Raises:
        UnsupportedModelError: a layer's attention output with a heads axis is not found.
        ModelMismatchError: the captured logits differ from the model's own.
    """
    held = prepared(model, rules)
    embeddings = held.embed(input_ids)
    constants = held.inputs(input_ids, attention_mask, embeddings.dtype)
    position = position if held.token_logits else None
    plan, check = held.checked_plan(embeddings, constants, position)
    if check is not None:
        explained_tokens(held, input_ids, attention_mask, None, position, None)
    layers = transformer_layers(held.model)
    heads = held.model.config.get_text_config().num_attention_heads
    found = [layer_nodes(plan, layer) for layer in layers]
    return ConceptNodes(
        plan=plan,
        embeddings=embeddings,
        heads=tuple(
            _heads_axis(plan, nodes.heads_input, heads, layer).name
            for nodes, layer in zip(found, layers, strict=True)
        ),
        neurons=tuple(
            None if nodes.mlp_neurons is None else nodes.mlp_neurons.name for nodes in found
        ),
        layers=tuple(layers),
    )


def _heads_axis(plan: Plan, node, heads: int, layer: str):
    """Back from the output projection's input through the reshapes to the node whose
    value is `(batch, heads, tokens, head dim)`."""
    for _ in range(8):
        shape = getattr(node.meta.get("val"), "shape", None)
        if shape is not None and len(shape) == 4 and shape[1] == heads:
            return node
        inputs = plan.data_inputs.get(node, ())
        if len(inputs) != 1:
            break
        node = inputs[0]
    raise UnsupportedModelError(
        f"layer {layer!r}: no attention output of shape (batch, {heads} heads, tokens, head "
        "dim) found before the output projection. Name the node you need from "
        "lrpfn.relevances on the plan instead."
    )
