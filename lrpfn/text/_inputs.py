"""What a language model is given besides its embeddings: masks, positions, options.

`model_inputs(model, input_ids, attention_mask, dtype, causal)` returns the constant
keyword arguments with which `inputs_embeds -> logits` reproduces the model's own
forward on `input_ids`:

- decoders get the attention mask as a 4-d additive mask (0 where a query may attend to
  a key, the dtype's minimum elsewhere), built outside the capture by the model's own
  mask code (`transformers.masking_utils`: causal, sliding-window or chunked, with the
  padding folded in). A model whose layers attend in several ways (Qwen2 with
  `max_window_layers`, Gemma2 and Gemma3 local and global layers) gets the mapping from
  layer type to mask that its forward accepts. The model uses a 4-d mask as given, so its
  own mask construction (built with `vmap`, with packed-sequence checks, neither of which
  a captured graph can replay) never runs inside the capture;
- decoders with padding get the positions `generate` gives them (the count of earlier
  tokens, padding excluded); a model that derives positions from `input_ids` (RoBERTa's
  padding index) gets them derived the same way, since `inputs_embeds` has no ids;
- `use_cache=False`.
"""

from __future__ import annotations

import copy
import inspect
import sys
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UnsupportedModelError

__all__ = ["accepts", "check_attention", "is_bidirectional", "model_inputs"]

# how a transformers modeling file says that its forward takes a mask per layer type
_MASK_PER_LAYER_TYPE = "causal_mask_mapping := attention_mask, dict"
# the mask-building function of `transformers.masking_utils` for each layer type
_MASK_FUNCTIONS = {
    "full_attention": "create_causal_mask",
    "sliding_attention": "create_sliding_window_causal_mask",
    "chunked_attention": "create_chunked_causal_mask",
}


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


def accepts(model: nn.Module, name: str) -> bool:
    """Whether `model.forward` takes the keyword argument `name`."""
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def _modeling_module(model: nn.Module):
    return sys.modules.get(type(model).__module__)


def _causal_mask(attention_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """The additive mask `(batch, 1, tokens, tokens)`: 0 where token i may attend to token
    j (j <= i and j not padding), the dtype's minimum elsewhere (for models that build
    their masks without `transformers.masking_utils`)."""
    length = attention_mask.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=attention_mask.device).tril()
    allowed = causal[None, None] & attention_mask[:, None, None, :].bool()
    zeros = torch.zeros(allowed.shape, dtype=dtype, device=attention_mask.device)
    return zeros.masked_fill(~allowed, torch.finfo(dtype).min)


def _layer_types(model: nn.Module, module) -> list[str]:
    """The attention kinds of the model's layers, as its forward chooses their masks."""
    config = model.config.get_text_config()
    if _MASK_PER_LAYER_TYPE in inspect.getsource(module):
        return sorted(set(getattr(config, "layer_types", None) or ["full_attention"]))
    if getattr(config, "sliding_window", None) is not None and hasattr(
        module, "create_sliding_window_causal_mask"
    ):  # Mistral, Phi3, Mixtral, Qwen3-MoE: one sliding-window mask for every layer
        return ["sliding_attention"]
    return ["full_attention"]


def decoder_masks(model: nn.Module, padding: Tensor, dtype: torch.dtype) -> Tensor | dict:
    """The additive 4-d mask of each layer type, as the model's own mask code builds it
    from the padding mask `(batch, tokens)`; one tensor for models that take one mask,
    a mapping from layer type to mask for models that take a mask per layer type."""
    module = _modeling_module(model)
    if module is None or not hasattr(module, "create_causal_mask"):
        _refuse_unbuilt_window(model)
        return _causal_mask(padding, dtype)
    from transformers import masking_utils

    config = copy.deepcopy(model.config.get_text_config())
    config._attn_implementation = "eager"  # additive float masks, never None
    batch, length = padding.shape
    arguments = {
        "config": config,
        "input_embeds": torch.zeros(batch, length, 1, dtype=dtype, device=padding.device),
        "attention_mask": padding,
        "cache_position": torch.arange(length, device=padding.device),
        "past_key_values": None,
    }
    masks = {}
    for layer_type in _layer_types(model, module):
        if layer_type not in _MASK_FUNCTIONS:
            raise UnsupportedModelError(
                f"{type(model).__name__} has layers of type {layer_type!r}, whose attention "
                "mask lrpfn.text does not build. Explain a model without such layers, or "
                "add the mask function to lrpfn/text/_inputs.py."
            )
        masks[layer_type] = getattr(masking_utils, _MASK_FUNCTIONS[layer_type])(**arguments)
    if _MASK_PER_LAYER_TYPE in inspect.getsource(module):
        return masks
    return next(iter(masks.values()))


def _refuse_unbuilt_window(model: nn.Module) -> None:
    config = model.config.get_text_config()
    if getattr(config, "use_sliding_window", False) and config.sliding_window is not None:
        raise UnsupportedModelError(
            f"{type(model).__name__} is configured with a sliding window "
            f"(use_sliding_window=True, sliding_window={config.sliding_window}) but builds "
            "its masks without transformers.masking_utils, so lrpfn.text cannot build the "
            "mask it would use. Explain it with use_sliding_window=False (the same model on "
            "prompts no longer than the window), or with a transformers version whose "
            f"{config.model_type} uses masking_utils."
        )


def decoder_positions(padding: Tensor) -> Tensor:
    """The positions `generate` gives a padded batch: the count of earlier tokens
    (padding excluded), 1 at padding."""
    positions = padding.long().cumsum(-1) - 1
    return positions.masked_fill(padding == 0, 1)


def _encoder_positions(model: nn.Module, input_ids: Tensor) -> Tensor | None:
    """The positions a model derives from `input_ids` (RoBERTa-style: counted from the
    padding index, padding at the padding index), which `inputs_embeds` cannot give."""
    make = getattr(_modeling_module(model), "create_position_ids_from_input_ids", None)
    padding_index = getattr(model.config, "pad_token_id", None)
    if make is None or padding_index is None or not accepts(model, "position_ids"):
        return None
    return make(input_ids, padding_index)


_CAPTURED_ATTENTION = (None, "eager", "sdpa")


def check_attention(model: nn.Module) -> None:
    """Raise unless the model attends with eager or sdpa attention (what lrpfn explains)."""
    config = getattr(model, "config", None)
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in _CAPTURED_ATTENTION:
        raise UnsupportedModelError(
            f"{type(model).__name__} runs attn_implementation={implementation!r}: lrpfn.text "
            "explains the graph of eager or sdpa attention (whose softmax and products it "
            "sees), and builds additive masks for them. Load the model with "
            "attn_implementation='sdpa' (or 'eager'); the weights are the same."
        )


def model_inputs(model, input_ids, attention_mask, dtype, causal) -> dict[str, Any]:
    """The keyword arguments besides `inputs_embeds` that reproduce `model(input_ids,
    attention_mask=attention_mask)` (see the module docstring).

    Raises:
        UnsupportedModelError: the model attends with another implementation than eager
            or sdpa, or with a window or layer type whose mask lrpfn cannot build.
    """
    check_attention(model)
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    constants: dict[str, Any] = {}
    if causal:
        constants["attention_mask"] = decoder_masks(model, mask, dtype)
        if accepts(model, "position_ids"):
            constants["position_ids"] = decoder_positions(mask)
    else:
        if attention_mask is not None:
            constants["attention_mask"] = attention_mask
        positions = _encoder_positions(model, input_ids)
        if positions is not None:
            constants["position_ids"] = positions
    if accepts(model, "use_cache"):
        constants["use_cache"] = False
    return constants


def is_state_space(model: nn.Module) -> bool:
    """A state-space language model (Mamba), which attends nowhere and takes its 2-d
    padding mask as it is (no 4-d attention mask)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return model_type in ("mamba", "mamba2", "falcon_mamba")
