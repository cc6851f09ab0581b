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

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..composites import attnlrp
from ..engine import lrp
from ..errors import InvalidInputError
from ._inputs import is_bidirectional, model_inputs
from ._render import to_html, to_terminal
from ._wrapper import EmbeddingsToLogits

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
        rules: a rule mapping (default `lrpfn.composites.attnlrp()`).
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
    causal = not is_bidirectional(model) if causal is None else causal
    constants = model_inputs(model, input_ids, attention_mask, embeddings.dtype, causal)
    with torch.no_grad():
        logits = EmbeddingsToLogits(model, constants, None)(embeddings)
    if logits.ndim == 2:
        position = None
    wrapper = EmbeddingsToLogits(model, constants, position)
    with torch.no_grad():
        explained = wrapper(embeddings)
    if target is None:
        target = explained.argmax(-1)
    target = torch.as_tensor(target, device=explained.device).long().expand(len(input_ids))
    relevance = lrp(wrapper, embeddings, attnlrp() if rules is None else rules, target=target)
    return TokenRelevance(
        relevance=relevance,
        scores=relevance.sum(-1),
        logit=explained.gather(1, target[:, None])[:, 0],
        target=target,
        input_ids=input_ids,
        position=position,
    )
