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

from ..errors import InvalidInputError, InvalidTargetError
from ._check import check_logits, own_logits
from ._pooling import pooled_tokens, rotate_back, rotate_to_last
from ._prepared import PreparedLanguageModel, check_ids, prepared
from ._render import to_html, to_terminal
from ._seq2seq import is_encoder_decoder, joint_embeddings, plan as encoder_decoder_plan, split
from ._walk import logit_starts, walk_from_output

__all__ = ["TokenRelevance", "explain", "explained_tokens"]


@dataclass(frozen=True)
class TokenRelevance:
    """The explanation of one logit per sample of a language model.

    Attributes:
        relevance: `(batch, tokens, hidden)`, the relevance of each token embedding.
        scores: `(batch, tokens)`, the relevance summed over the hidden axis.
        logit: `(batch,)`, the explained logit (for conservative rules `scores` sums to it).
        target: `(batch,)`, the explained class or vocabulary index.
        input_ids: `(batch, tokens)`, the token ids explained.
        position: the explained token position (None for a sequence classifier; a
            decoder position for an encoder-decoder).
        decoder_relevance: for an encoder-decoder, `(batch, decoder tokens, hidden)`, the
            relevance of each decoder token embedding (`relevance` is the encoder's);
            None otherwise. For conservative rules `scores` and `decoder_scores` together
            sum to `logit`.
        decoder_scores: `(batch, decoder tokens)`, its sum over the hidden axis, or None.
        decoder_input_ids: the decoder token ids explained, or None.
    """

    relevance: Tensor
    scores: Tensor
    logit: Tensor
    target: Tensor
    input_ids: Tensor
    position: int | None
    decoder_relevance: Tensor | None = None
    decoder_scores: Tensor | None = None
    decoder_input_ids: Tensor | None = None

    def to_html(self, tokenizer: Any = None, sample: int = 0) -> str:
        """A heatmap of the tokens of `sample` as an HTML fragment (see `lrpfn.text.to_html`)."""
        return to_html(self, tokenizer, sample)

    def to_terminal(self, tokenizer: Any = None, sample: int = 0) -> str:
        """The tokens of `sample` coloured for a terminal (see `lrpfn.text.to_terminal`)."""
        return to_terminal(self, tokenizer, sample)


def explain(
    model: nn.Module | PreparedLanguageModel,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    target: int | Tensor | None = None,
    position: int | None = -1,
    rules: Any = None,
    *,
    causal: bool | None = None,
    contrast: int | Tensor | None = None,
    decoder_input_ids: Tensor | None = None,
) -> TokenRelevance:
    """Explain a logit of a Hugging Face language model at its token embeddings.

    Arguments:
        model: a causal LM (`...ForCausalLM`), a masked LM or a sequence classifier, in
            eval mode; any module with `get_input_embeddings()` whose forward takes
            `inputs_embeds=` and returns `.logits`. Or a `PreparedLanguageModel` from
            `lrpfn.text.prepare`, which captures once per shape and reuses the capture.
        input_ids: `(batch, tokens)` token ids (all samples of one length: pad them).
        attention_mask: `(batch, tokens)`, 1 for tokens, 0 for padding (default: all 1).
        target: the vocabulary or class index to explain: None (the argmax), an int, or a
            LongTensor of shape `(batch,)`.
        position: the token position whose logits are explained (-1: the next-token
            prediction of a causal LM; a mask's position for a masked LM); None for a
            sequence classifier, whose logits have no token axis (set automatically).
        rules: a rule mapping (default `lrpfn.composites.attnlrp()`, for Mamba models
            `lrpfn.composites.mamba_lrp()`; None with a prepared model, which holds its
            rules).
        causal: whether the model attends causally (default: inferred, encoders with a
            masked-LM head attend both ways).
        contrast: a token (or class) index $b$, an int or `(batch,)`: then the explained
            quantity is the logit difference $z_a - z_b$ ("why a rather than b"), which
            the relevance sums to under conservative rules.
        decoder_input_ids: for an encoder-decoder (T5, BART), `(batch, decoder tokens)`:
            the logit at decoder `position` is explained over the encoder's tokens
            (`relevance`) and the decoder's (`decoder_relevance`).

    Returns:
        A `TokenRelevance` (`logit` holds $z_a - z_b$ with a contrast).

    Raises:
        InvalidInputError: `input_ids` is not a 2-d integer tensor, or the model has no
            input embeddings.
        ModelMismatchError: the explained logit differs from the model's own forward on
            `input_ids` (see `lrpfn.text._check`).
        NonFiniteOutputError: the model's own logit is NaN or infinite.
        UnsupportedModelError: the model builds its inputs in a way lrpfn cannot rebuild.
    """
    if decoder_input_ids is not None or is_encoder_decoder(model):
        return _explain_encoder_decoder(
            model, input_ids, attention_mask, decoder_input_ids, target, position, rules, contrast
        )
    held = prepared(model, rules, causal)
    explanation, _ = explained_tokens(held, input_ids, attention_mask, target, position, contrast)
    return explanation


def explained_tokens(
    held: PreparedLanguageModel,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    target: int | Tensor | None,
    position: int | None,
    contrast: int | Tensor | None,
    keep_all: bool = False,
) -> tuple[TokenRelevance, dict[str, Any]]:
    """`explain` on a prepared decoder or encoder; with `keep_all` also every node's
    relevance `{node name: relevance}` of the walk, and the plan under the key "plan"."""
    pooled = None  # a decoder classifier's pooled tokens, rotated to the end (`_pooling`)
    graph_ids, graph_mask = input_ids, attention_mask
    if not held.token_logits and held.causal:
        check_ids(input_ids)
        pooled = pooled_tokens(held.model, input_ids)
        if pooled is not None:
            graph_ids, graph_mask = rotate_to_last(input_ids, attention_mask, pooled)
    embeddings = held.embed(graph_ids)
    constants = held.inputs(graph_ids, graph_mask, embeddings.dtype)
    if not held.token_logits:
        position = None
    plan, check = held.checked_plan(embeddings, constants, position)
    positions = constants.get("position_ids")
    if pooled is not None and positions is not None:
        positions = rotate_back(positions, pooled)
    own = None  # with prepare(check=False): only the graph's logits are checked (finite)
    if check is not None:
        own = own_logits(
            held.model,
            input_ids,
            attention_mask,
            position,
            position_ids=positions,
            logits_to_keep=1 if position == -1 else None,  # the LM head on the last token
        )
    relevance, explained, chosen, recorded = _walk_checked(
        held.model, plan, embeddings, own, target, contrast, keep_all
    )
    if check is not None:
        held.verified.add(check)  # the check passed (it raises otherwise)
    if pooled is not None:
        relevance = rotate_back(relevance, pooled)
    explanation = TokenRelevance(
        relevance=relevance,
        scores=relevance.sum(-1),
        logit=explained,
        target=chosen,
        input_ids=input_ids,
        position=position,
    )
    return explanation, ({**recorded, "plan": plan} if keep_all else {})


def _walk_checked(model, plan, embeddings, own, target, contrast, keep_all=False) -> tuple:
    """One forward and walk of `plan`; the graph's logits are checked against the model's
    own (`own`) before the walk. Returns the relevance, the explained logit (minus the
    contrast's), the target indices and (with `keep_all`) every node's relevance."""
    chosen: dict[str, Tensor] = {}

    def starts(logits: Tensor) -> Tensor:
        chosen["target"] = _indices(target, logits, len(embeddings), "target")
        chosen["contrast"] = _indices(contrast, logits, len(embeddings), "contrast")
        for index in (chosen["target"], chosen["contrast"]):
            if index is not None:
                check_logits(model, logits, logits if own is None else own, index)
        return logit_starts(logits, chosen["target"], chosen["contrast"])

    logits, relevance, recorded = walk_from_output(plan, embeddings, starts, keep_all)
    explained = logits.gather(1, chosen["target"][:, None])[:, 0]
    if chosen["contrast"] is not None:
        explained = explained - logits.gather(1, chosen["contrast"][:, None])[:, 0]
    return relevance, explained, chosen["target"], recorded


def _explain_encoder_decoder(
    model, input_ids, attention_mask, decoder_input_ids, target, position, rules, contrast
) -> TokenRelevance:
    """`explain` for T5, BART and other encoder-decoders (see `lrpfn.text._seq2seq`)."""
    if isinstance(model, PreparedLanguageModel) or decoder_input_ids is None:
        raise InvalidInputError(
            f"{type(getattr(model, 'model', model)).__name__} is an encoder-decoder: pass the "
            "model itself (not a prepared one) and decoder_input_ids=..., e.g. "
            "torch.full((batch, 1), model.config.decoder_start_token_id)."
        )
    check_ids(input_ids)
    position = -1 if position is None else position
    embeddings = joint_embeddings(model, input_ids, decoder_input_ids)
    encoder_tokens = input_ids.shape[1]
    plan = encoder_decoder_plan(model, embeddings, encoder_tokens, attention_mask, position, rules)
    own = own_logits(
        model, input_ids, attention_mask, position, decoder_input_ids=decoder_input_ids
    )
    relevance, explained, chosen, _ = _walk_checked(model, plan, embeddings, own, target, contrast)
    encoder, decoder = split(relevance, encoder_tokens)
    return TokenRelevance(
        relevance=encoder,
        scores=encoder.sum(-1),
        logit=explained,
        target=chosen,
        input_ids=input_ids,
        position=position,
        decoder_relevance=decoder,
        decoder_scores=decoder.sum(-1),
        decoder_input_ids=decoder_input_ids,
    )


def _indices(index: int | Tensor | None, logits: Tensor, batch: int, name: str) -> Tensor | None:
    """`index` as a LongTensor `(batch,)` in range (None: the argmax for a target)."""
    if index is None:
        return logits.argmax(-1) if name == "target" else None
    index = torch.as_tensor(index, device=logits.device)
    if index.is_floating_point() or index.ndim > 1 or index.numel() not in (1, batch):
        raise InvalidTargetError(
            f"{name} must be an int or an integer tensor of shape ({batch},), got {index!r}."
        )
    if index.min() < 0 or index.max() >= logits.shape[-1]:
        raise InvalidTargetError(
            f"{name} {index.tolist()} is out of range for {logits.shape[-1]} logits."
        )
    return index.long().expand(batch)
