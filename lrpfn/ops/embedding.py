r"""Embeddings: where an explanation of a model fed token ids ends.

A lookup `E[ids]` (`nn.Embedding`, `F.embedding`) selects rows of a weight by integer ids,
which carry no relevance: the explanation of such a model stops at the embedding output.
The handler hands that relevance, of shape `ids.shape + (embedding_dim,)`, to the ids
unchanged, so `lrpfn.lrp(model, ids, ...)` returns the relevance of every token's every
embedding dimension (as Hugging Face models are explained at `inputs_embeds`, Arras et al.
2017 explain an LSTM at its word vectors); summed over the last axis it is the relevance
per token.

`takes_token_ids(gm)` tells whether a graph's input feeds embeddings only (then integer
inputs are accepted).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import fx, nn

from .handler import Handler, Step

__all__ = ["HANDLERS", "takes_token_ids"]


def _at_embedding_output(step: Step) -> tuple:
    """The relevance at the embedding output, for the ids (the weight is a constant)."""
    return (step.relevance,) + (None,) * (len(step.input_nodes) - 1)


EMBEDDING = Handler("route", _at_embedding_output, keeps_inputs=False)


def _is_embedding(node: fx.Node) -> bool:
    if node.op == "call_module":
        module = node.graph.owning_module.get_submodule(node.target)
        return isinstance(module, nn.Embedding)
    return node.op == "call_function" and node.target is F.embedding


def takes_token_ids(gm: fx.GraphModule) -> bool:
    """The graph's first input is used by embedding lookups only, as their ids."""
    placeholder = next((node for node in gm.graph.nodes if node.op == "placeholder"), None)
    if placeholder is None or not placeholder.users:
        return False
    return all(
        _is_embedding(user)
        and (user.args[:1] == (placeholder,) or user.kwargs.get("input") is placeholder)
        for user in placeholder.users
    )


HANDLERS: Mapping[Any, Handler] = {nn.Embedding: EMBEDDING, F.embedding: EMBEDDING}
"""The embedding family's handlers (merged into `lrpfn.HANDLERS`)."""
