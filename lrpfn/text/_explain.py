"""`explain`: a Hugging Face language model explained at its token embeddings.

The model is wrapped as `embeddings -> logits[:, position]` (or `-> logits` for a sequence
classifier) with the token ids' attention mask fixed as a constant, captured once
(`torch.export` where `torch.fx` cannot trace it) and explained by `lrpfn.lrp`. For
decoders the wrapper passes the causal and padding mask as one 4-d additive mask: the
model then uses it as given, and transformers' own mask construction (built with `vmap`,
with packed-sequence checks, neither of which a captured graph can replay) never runs.
Nothing in transformers is patched.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..composites import attnlrp, mamba_lrp
from ..engine import lrp
from ..errors import InvalidInputError
from ._render import to_html, to_terminal

__all__ = ["TokenRelevance", "explain"]


@dataclass(frozen=True)
class TokenRelevance:
    """The explanation of one logit per sample of a language model.

    Attributes:
        relevance: `(batch, tokens, hidden)`, the relevance of each token embedding.
        scores: `(batch, tokens)`, the relevance summed over the hidden axis.
        logit: `(batch,)`, the explained logit (for conservative rules `scores` sums to it).
        target: `(batch,)`, the explained class or vocabulary index.
        input_ids: `(batch, tokens)`, the token ids explained.
        position: the explained token position (None for a sequence classifier).
    """

    relevance: Tensor
    scores: Tensor
    logit: Tensor
    target: Tensor
    input_ids: Tensor
    position: int | None

    def to_html(self, tokenizer: Any = None, sample: int = 0) -> str:
        """A heatmap of the tokens of `sample` as an HTML fragment (see `lrpfn.text.to_html`)."""
        return to_html(self, tokenizer, sample)

    def to_terminal(self, tokenizer: Any = None, sample: int = 0) -> str:
        """The tokens of `sample` coloured for a terminal (see `lrpfn.text.to_terminal`)."""
        return to_terminal(self, tokenizer, sample)


class _EmbeddingsToLogits(nn.Module):
    """`embeddings -> logits[:, position]` (or `-> logits`) with every other input fixed."""

    def __init__(self, model: nn.Module, constants: dict[str, Any], position: int | None):
        super().__init__()
        self.model = model
        self.position = position
        self.constants = {}
        for name, value in constants.items():
            if isinstance(value, Tensor):
                self.register_buffer(f"_{name}", value, persistent=False)
            else:
                self.constants[name] = value

    def forward(self, embeddings: Tensor) -> Tensor:
        tensors = {name[1:]: value for name, value in self.named_buffers(recurse=False)}
        logits = self.model(inputs_embeds=embeddings, **tensors, **self.constants).logits
        return logits if self.position is None else logits[:, self.position]


def _bidirectional(model: nn.Module) -> bool:
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


def _state_space(model: nn.Module) -> bool:
    """A state-space language model (Mamba), which takes no 4-d attention mask."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return model_type in ("mamba", "mamba2", "falcon_mamba")


def _causal_mask(attention_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """The additive mask `(batch, 1, tokens, tokens)`: 0 where token i may attend to token
    j (j <= i and j not padding), the dtype's minimum elsewhere."""
    length = attention_mask.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=attention_mask.device).tril()
    allowed = causal[None, None] & attention_mask[:, None, None, :].bool()
    zeros = torch.zeros(allowed.shape, dtype=dtype, device=attention_mask.device)
    return zeros.masked_fill(~allowed, torch.finfo(dtype).min)


def _accepts(model: nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def _constants(model, input_ids, attention_mask, dtype, causal) -> dict[str, Any]:
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    constants: dict[str, Any] = {}
    if causal:
        constants["attention_mask"] = _causal_mask(mask, dtype)
        if attention_mask is not None and _accepts(model, "position_ids"):
            constants["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
    elif attention_mask is not None:
        constants["attention_mask"] = attention_mask
    if _accepts(model, "use_cache"):
        constants["use_cache"] = False
    return constants


def explain(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    target: int | Tensor | None = None,
    position: int | None = -1,
    rules: Any = None,
    *,
    causal: bool | None = None,
) -> TokenRelevance:
    """Explain a logit of a Hugging Face language model at its token embeddings.

    Arguments:
        model: a causal LM (`...ForCausalLM`), a masked LM or a sequence classifier, in
            eval mode; any module with `get_input_embeddings()` whose forward takes
            `inputs_embeds=` and returns `.logits`.
        input_ids: `(batch, tokens)` token ids (all samples of one length: pad them).
        attention_mask: `(batch, tokens)`, 1 for tokens, 0 for padding (default: all 1).
        target: the vocabulary or class index to explain: None (the argmax), an int, or a
            LongTensor of shape `(batch,)`.
        position: the token position whose logits are explained (-1: the next-token
            prediction of a causal LM; a mask's position for a masked LM); None for a
            sequence classifier, whose logits have no token axis (set automatically).
        rules: a rule mapping (default `lrpfn.composites.attnlrp()`; for Mamba models
            `lrpfn.composites.mamba_lrp()`).
        causal: whether the model attends causally (default: inferred, encoders with a
            masked-LM head attend both ways).

    Returns:
        A `TokenRelevance`.

    Raises:
        InvalidInputError: `input_ids` is not a 2-d integer tensor, or the model has no
            input embeddings.
    """
    if not isinstance(input_ids, Tensor) or input_ids.ndim != 2 or input_ids.is_floating_point():
        raise InvalidInputError(
            "input_ids must be a (batch, tokens) integer tensor, e.g. "
            "tokenizer(texts, return_tensors='pt', padding=True).input_ids."
        )
    embedding = getattr(model, "get_input_embeddings", lambda: None)()
    if embedding is None:
        raise InvalidInputError(
            f"{type(model).__name__} has no get_input_embeddings(): lrpfn.text explains Hugging "
            "Face language models at their token embeddings. For other models use lrpfn.lrp."
        )
    with torch.no_grad():
        embeddings = embedding(input_ids).detach()
    causal = not _bidirectional(model) if causal is None else causal
    if _state_space(model):  # no attention: the model takes its 2-d padding mask as it is
        causal = False
    constants = _constants(model, input_ids, attention_mask, embeddings.dtype, causal)
    with torch.no_grad():
        logits = _EmbeddingsToLogits(model, constants, None)(embeddings)
    if logits.ndim == 2:
        position = None
    wrapper = _EmbeddingsToLogits(model, constants, position)
    with torch.no_grad():
        explained = wrapper(embeddings)
    if target is None:
        target = explained.argmax(-1)
    target = torch.as_tensor(target, device=explained.device).long().expand(len(input_ids))
    if rules is None:
        rules = mamba_lrp() if _state_space(model) else attnlrp()
    relevance = lrp(wrapper, embeddings, rules, target=target)
    return TokenRelevance(
        relevance=relevance,
        scores=relevance.sum(-1),
        logit=explained.gather(1, target[:, None])[:, 0],
        target=target,
        input_ids=input_ids,
        position=position,
    )
