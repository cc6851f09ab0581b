"""What a language model is given besides its embeddings: masks, positions, options.

`model_inputs(model, input_ids, attention_mask, dtype, causal)` returns the constant
keyword arguments with which `inputs_embeds -> logits` reproduces the model's own
forward on `input_ids`: for decoders the causal and padding mask as one 4-d additive mask
(the model uses it as given, and transformers' own mask construction, built with `vmap`
and with packed-sequence checks that a captured graph cannot replay, never runs), the
positions where padding shifts them, and `use_cache=False`.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["accepts", "is_bidirectional", "model_inputs"]


def is_bidirectional(model: nn.Module) -> bool:
    """Encoders (models with a masked-LM head in transformers, not configured as decoders)
    attend both ways; every other language model is causal."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_decoder", False):
        return False
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES
    except ImportError:  # pragma: no cover - transformers is what gives models a config
        return False
    return getattr(config, "model_type", None) in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def _causal_mask(attention_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """The additive mask `(batch, 1, tokens, tokens)`: 0 where token i may attend to token
    j (j <= i and j not padding), the dtype's minimum elsewhere."""
    length = attention_mask.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=attention_mask.device).tril()
    allowed = causal[None, None] & attention_mask[:, None, None, :].bool()
    zeros = torch.zeros(allowed.shape, dtype=dtype, device=attention_mask.device)
    return zeros.masked_fill(~allowed, torch.finfo(dtype).min)


def accepts(model: nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def model_inputs(model, input_ids, attention_mask, dtype, causal) -> dict[str, Any]:
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    constants: dict[str, Any] = {}
    if causal:
        constants["attention_mask"] = _causal_mask(mask, dtype)
        if attention_mask is not None and accepts(model, "position_ids"):
            constants["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
    elif attention_mask is not None:
        constants["attention_mask"] = attention_mask
    if accepts(model, "use_cache"):
        constants["use_cache"] = False
    return constants
