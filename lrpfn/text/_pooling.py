"""The token a decoder sequence classifier pools, which `inputs_embeds` cannot show it.

transformers' decoder classifiers (`...ForSequenceClassification` of Llama, Qwen2,
GPT-2, ...) return the logits of the last token that is not `config.pad_token_id`,
found from `input_ids`; given `inputs_embeds` they take the last position. So that the
explained logit is the pooled one with right padding too, each sample is rotated along
the token axis until its pooled token p is last, with the tokens after p masked (a causal
model's token p never sees them): the model then computes, at the last position, what
it computes at p on the ids (the same tokens, masks and positions). The relevance is
rotated back; the tokens after p get none.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import InvalidInputError

__all__ = ["pooled_tokens", "rotate_back", "rotate_to_last"]


def pooled_tokens(model: nn.Module, input_ids: Tensor) -> Tensor | None:
    """`(batch,)`: the index of the rightmost token that is not the pad token (what the
    classifier pools); None where it pools the last position (no pad token, batch 1)."""
    pad = getattr(model.config, "pad_token_id", None)
    if pad is None:
        if len(input_ids) > 1:
            raise InvalidInputError(
                f"{type(model).__name__} pools the last token that is not config.pad_token_id, "
                "which is None, and transformers refuses batches without it. Set "
                "model.config.pad_token_id = tokenizer.pad_token_id (or explain one sample)."
            )
        return None
    indices = torch.arange(input_ids.shape[1], device=input_ids.device)
    return (indices * (input_ids != pad)).argmax(-1)


def _rotation(pooled: Tensor, length: int, inverse: bool) -> Tensor:
    """Source indices `(batch, tokens)` of the rotation moving token `pooled` to the end."""
    shift = (length - 1 - pooled)[:, None]
    indices = torch.arange(length, device=pooled.device)[None]
    return (indices + shift if inverse else indices - shift) % length


def _gather_tokens(tensor: Tensor, source: Tensor) -> Tensor:
    index = source.reshape(*source.shape, *(1,) * (tensor.ndim - 2)).expand_as(tensor)
    return tensor.gather(1, index)


def rotate_to_last(
    input_ids: Tensor, attention_mask: Tensor | None, pooled: Tensor
) -> tuple[Tensor, Tensor]:
    """The ids and the mask rotated so that each sample's pooled token is last, the tokens
    after it masked."""
    length = input_ids.shape[1]
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    seen = torch.arange(length, device=input_ids.device)[None] <= pooled[:, None]
    source = _rotation(pooled, length, inverse=False)
    return _gather_tokens(input_ids, source), _gather_tokens(mask * seen, source)


def rotate_back(tensor: Tensor, pooled: Tensor) -> Tensor:
    """A `(batch, tokens, ...)` tensor of the rotated samples in the original order."""
    return _gather_tokens(tensor, _rotation(pooled, tensor.shape[1], inverse=True))
