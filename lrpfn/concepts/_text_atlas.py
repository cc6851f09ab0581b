"""`text_atlas`: the concept atlas over the neurons of a Hugging Face language model.

    atlas = lrpfn.concepts.text_atlas(model, input_ids, [Neurons("bert.encoder.layer.1.intermediate")],
                                      "bert.atlas.zarr", tokenizer=tokenizer, k=20)
    refs = atlas.references("model.bert.encoder.layer.1.intermediate", 17, n=5)
    refs.token_relevance                     # (1, 5, tokens): which tokens the neuron reacts to

The model is explained at its token embeddings (as `lrpfn.text.explain` does): wrapped as
`embeddings -> logits` (a sequence classifier) or `-> logits[:, position]` (a language
model), the embeddings of all sequences computed once, and the atlas run over them as a
data set. Layer names are the model's module names; in the store they carry the
wrapper's prefix "model.". The store also holds `tokens (N, T)`, the token strings, and
`render_references` writes `references/token_relevance (C, n, T)` per layer.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..composites import attnlrp
from ..datasets import DatasetError
from ._atlas import atlas
from ._atlas_view import Atlas
from ._scores import Heads, Layer, Neurons

__all__ = ["text_atlas"]

PREFIX = "model."


class _EmbeddingsToLogits(nn.Module):
    """`embeddings -> logits` (or `logits[:, position]`), the other inputs fixed."""

    def __init__(self, model: nn.Module, mask: Tensor | None, position: int | None) -> None:
        super().__init__()
        self.model, self.position = model, position
        self.register_buffer("mask", mask, persistent=False)
        self.options = {"use_cache": False} if _accepts(model, "use_cache") else {}

    def forward(self, embeddings: Tensor) -> Tensor:
        mask = {} if self.mask is None else {"attention_mask": self.mask}
        logits = self.model(inputs_embeds=embeddings, **mask, **self.options).logits
        return logits if self.position is None else logits[:, self.position]


def _accepts(model: nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def _causal_mask(length: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The additive mask `(1, 1, T, T)`: 0 where token i may attend to token j <= i, the
    dtype's minimum elsewhere (the same for every sequence: no padding)."""
    allowed = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    zeros = torch.zeros((1, 1, length, length), dtype=dtype, device=device)
    return zeros.masked_fill(~allowed, torch.finfo(dtype).min)


def text_atlas(
    model: nn.Module,
    input_ids: Tensor,
    layers: Sequence[Layer],
    out: str | Path,
    *,
    rules: Any = None,
    labels: Tensor | None = None,
    tokenizer: Any = None,
    position: int | None = -1,
    causal: bool = False,
    k: int = 40,
    target: int | str | None = None,
    batch_size: int = 32,
    progress: bool = True,
    model_name: str | None = None,
) -> Atlas:
    """The atlas of `layers` of a Hugging Face model over the sequences `input_ids`.

    Arguments:
        model: a sequence classifier or a language model in eval mode (any module with
            `get_input_embeddings()` whose forward takes `inputs_embeds=` and returns
            `.logits`).
        input_ids: `(N, T)` token ids, all sequences of one length, without padding.
        layers: module names of `model` (a transformer's MLP: `Neurons(name)`), or
            graph node names (the heads' outputs before the attention's projection:
            `Heads(node, heads)`; an error names the candidate nodes of a module).
        out: the store's folder.
        rules: a rule mapping (default `lrpfn.composites.attnlrp()`).
        labels: `(N,)` class labels (for `target="label"`), else none.
        tokenizer: turns ids into the stored token strings (`convert_ids_to_tokens`);
            without one the ids are stored as strings.
        position: the token position whose logits a language model explains (-1: the
            next-token prediction); ignored for a sequence classifier.
        causal: whether the model attends causally (a decoder; then a causal mask is
            passed in), else it attends both ways.
        k, target, batch_size, progress, model_name: as for `atlas`.

    Returns:
        The `Atlas`; the module names among its layers carry the prefix "model.".
    """
    if not isinstance(input_ids, Tensor) or input_ids.ndim != 2 or input_ids.is_floating_point():
        raise DatasetError("input_ids must be an (N, tokens) integer tensor.")
    embedding = getattr(model, "get_input_embeddings", lambda: None)()
    if embedding is None:
        raise DatasetError(f"{type(model).__name__} has no get_input_embeddings().")
    with torch.no_grad():
        embeddings = embedding(input_ids).detach()
    length = input_ids.shape[1]
    mask = _causal_mask(length, embeddings.dtype, embeddings.device) if causal else None
    wrapper = _EmbeddingsToLogits(model, mask, None)
    with torch.no_grad():
        if wrapper(embeddings[:1]).ndim == 3:
            wrapper = _EmbeddingsToLogits(model, mask, position)
    modules = {name for name, _ in model.named_modules()}
    label = torch.full((len(input_ids),), -1) if labels is None else torch.as_tensor(labels)
    data = torch.utils.data.TensorDataset(embeddings, label)
    result = atlas(
        wrapper,
        data,
        attnlrp() if rules is None else rules,
        [_prefixed(layer, modules) for layer in layers],
        out,
        k=k,
        target=target,
        batch_size=batch_size,
        progress=progress,
        model_name=model_name or type(model).__name__,
        data_name=f"{len(input_ids)} sequences of {length} tokens",
    )
    _write_tokens(out, input_ids, tokenizer)
    return result


def _prefixed(layer: Layer, modules: set[str]) -> Layer:
    """A module name of the model as the wrapper names it; graph node names unchanged."""
    name = layer if isinstance(layer, str) else layer.name
    if name not in modules:
        return layer
    if isinstance(layer, Neurons):
        return Neurons(PREFIX + name)
    if isinstance(layer, Heads):
        return Heads(PREFIX + name, layer.heads)
    return PREFIX + name


def _write_tokens(out, input_ids: Tensor, tokenizer: Any) -> None:
    """The token strings `(N, T)` at the store's root (rank 0; the same on a rerun)."""
    import zarr

    if int(os.environ.get("RANK", "0")) != 0:
        return
    rows = input_ids.cpu().tolist()
    if tokenizer is not None:
        tokens = [list(map(str, tokenizer.convert_ids_to_tokens(row))) for row in rows]
    else:
        tokens = [[str(token) for token in row] for row in rows]
    group = zarr.open_group(str(out), mode="r+")
    values = np.array(tokens, dtype=str)
    group.create_array("tokens", shape=values.shape, dtype=str, fill_value="", overwrite=True)[
        ...
    ] = values
