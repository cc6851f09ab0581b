"""`explain_generation`: every generated token of a causal LM explained in one call.

A causal LM's forward over the whole generated sequence gives the logits of every
position at once: position $t$ sees tokens $\\le t$ only, so the logits at position
$L + j - 1$ (prompt length $L$) are the ones from which generated token $j$ was chosen.
So one capture and one forward over the sequence less its last token (which predicts
nothing explained), with the LM head on the last k positions only (transformers'
`logits_to_keep`) and the explained logits gathered from them (so each start is
`(batch, k, 1)`, or `(batch, k, 2)` with a contrast, not `(batch, k, vocab)`), and k walks from the k (position, token) starts over that forward,
through the engine's several-targets walk (vmapped, or in turn where k times the largest
activation exceeds malloc's mmap threshold on the CPU: `lrpfn.engine.several_targets`).

Row $j$ of the matrix holds the relevance of every token for generated token $j$:

$$ M_{b,j,t} = \\sum_h R^{(j)}_{b,t,h}, \\qquad R^{(j)} = \\mathrm{LRP}\\big(z_{b,L+j-1,a_j}\\,
e_{(L+j-1, a_j)}\\big), \\qquad \\sum_t M_{b,j,t} = z_{b,L+j-1,a_j} $$

(the sum for conservative rules; tokens $t \\ge L + j$ get 0 by causality). With a
contrast token $c_j$ the start is $z_{a_j} e_{a_j} - z_{c_j} e_{c_j}$ and the rows sum to
$z_{a_j} - z_{c_j}$.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InvalidInputError, InvalidTargetError
from ._check import check_logits, own_logits
from ._prepared import PreparedLanguageModel, check_ids, prepared
from ._render_generation import generation_html, generation_terminal
from ._walk import walk_from_output

__all__ = ["GenerationRelevance", "explain_generation"]


@dataclass(frozen=True)
class GenerationRelevance:
    """The explanation of each generated token by every token before it.

    Attributes:
        sequences: `(batch, prompt + new)`, the prompt followed by the generated tokens.
        prompt_length: the number of prompt tokens L (padding included).
        matrix: `(batch, new, prompt + new)`: row j, the relevance of each token for the
            logit of generated token j (0 for tokens from j's own position on).
        logits: `(batch, new)`, the explained logits (minus the contrast's, with one).
        contrast: `(batch, new)`, the contrast token of each step, or None.
        attention_mask: `(batch, prompt + new)`, 0 at the prompt's padding.
    """

    sequences: Tensor
    prompt_length: int
    matrix: Tensor
    logits: Tensor
    contrast: Tensor | None
    attention_mask: Tensor

    @property
    def generated_ids(self) -> Tensor:
        """`(batch, new)`, the generated tokens."""
        return self.sequences[:, self.prompt_length :]

    def to_html(self, tokenizer: Any = None, sample: int = 0) -> str:
        """A self-contained HTML page: select a generated token to shade its sources."""
        return generation_html(self, tokenizer, sample)

    def to_terminal(self, tokenizer: Any = None, sample: int = 0, step: int | None = None) -> str:
        """One line per generated token (or only `step`), its sources coloured."""
        return generation_terminal(self, tokenizer, sample, step)


def explain_generation(
    model: nn.Module | PreparedLanguageModel,
    input_ids: Tensor,
    max_new_tokens: int | None = None,
    attention_mask: Tensor | None = None,
    rules: Any = None,
    contrast: int | Tensor | None = None,
    generated_ids: Tensor | None = None,
) -> GenerationRelevance:
    """Generate greedily (or take `generated_ids`) and explain every generated token.

    Arguments:
        model: a Hugging Face causal LM in eval mode, or a `PreparedLanguageModel`.
        input_ids: `(batch, L)` prompt ids (left-padded for a batch of several lengths).
        max_new_tokens: how many tokens to generate greedily (`model.generate` with
            `do_sample=False`, end-of-sequence suppressed so that every row has them all).
        attention_mask: `(batch, L)`, 1 for tokens, 0 for padding (default: all 1).
        rules: a rule mapping (default AttnLRP; None with a prepared model).
        contrast: a token $c$ whose logit is subtracted at every step: an int, `(batch,)`,
            or `(batch, new)` for a token per step.
        generated_ids: `(batch, new)` tokens generated elsewhere (e.g. sampled), explained
            instead of generating; then `max_new_tokens` is None or their number.

    Returns:
        A `GenerationRelevance`.

    Raises:
        InvalidInputError: not a causal LM, bad ids, `max_new_tokens` or `generated_ids`.
        ModelMismatchError, NonFiniteOutputError: the explained logits differ from the
            model's own forward over the sequence, or are not finite (`text._check`).
    """
    held = prepared(model, rules)
    if not held.causal or not held.token_logits:
        raise InvalidInputError(
            f"explain_generation explains a causal language model's next-token logits; "
            f"{type(held.model).__name__} is not one (use lrpfn.text.explain)."
        )
    check_ids(input_ids)
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    new = _generated(held.model, input_ids, mask, max_new_tokens, generated_ids)
    count = new.shape[1]
    sequences = torch.cat([input_ids, new.to(input_ids.device)], 1)
    full_mask = torch.cat([mask, torch.ones_like(new)], 1)
    fed, fed_mask = sequences[:, :-1], full_mask[:, :-1]
    embeddings = held.embed(fed)
    constants = held.inputs(fed, None if attention_mask is None else fed_mask, embeddings.dtype)
    head = held.model.get_output_embeddings()
    vocab = head.weight.shape[0] if head is not None else held.model.config.vocab_size
    other = _contrast(contrast, new.shape, vocab, new.device)
    select = new[..., None] if other is None else torch.stack([new, other], -1)
    plan, check = held.checked_plan(embeddings, constants, None, last=count, select=select)

    def starts(chosen: Tensor) -> Tensor:  # (batch, k, m) -> (k, batch, k, m)
        signs = torch.tensor([1.0, -1.0][: chosen.shape[-1]], dtype=chosen.dtype)
        steps = torch.eye(count, dtype=chosen.dtype, device=chosen.device)
        return steps[:, None, :, None] * (chosen * signs.to(chosen.device))[None]

    chosen, relevance, _ = walk_from_output(plan, embeddings, starts)
    explained = chosen[..., 0] if other is None else chosen[..., 0] - chosen[..., 1]
    if check is not None:
        own = own_logits(
            held.model,
            fed,
            None if attention_mask is None else fed_mask,
            None,
            position_ids=constants.get("position_ids"),
            logits_to_keep=count,
        )[:, -count:]
        logits = torch.zeros_like(own).scatter(-1, select, chosen.to(own.dtype))
        indices = (new, other)
    else:  # prepare(check=False): the graph's own logits, checked for being finite only
        logits = own = chosen  # (batch, k, 1 or 2): the token's, then the contrast's
        indices = (torch.zeros_like(new), None if other is None else torch.ones_like(other))
    for index in indices:
        if index is not None:
            check_logits(held.model, logits.flatten(0, 1), own.flatten(0, 1), index.flatten())
    if check is not None:
        held.verified.add(check)  # the check passed (it raises otherwise)
    scores = relevance.sum(-1).transpose(0, 1)  # (batch, k, L + k - 1)
    matrix = torch.cat([scores, scores.new_zeros((*scores.shape[:2], 1))], -1)
    return GenerationRelevance(
        sequences=sequences,
        prompt_length=input_ids.shape[1],
        matrix=matrix,
        logits=explained,
        contrast=other,
        attention_mask=full_mask,
    )


def _generated(model, input_ids, mask, max_new_tokens, generated_ids) -> Tensor:
    """The tokens to explain: `generated_ids`, or `max_new_tokens` greedy ones."""
    if generated_ids is not None:
        if (
            not isinstance(generated_ids, Tensor)
            or generated_ids.ndim != 2
            or generated_ids.is_floating_point()
            or len(generated_ids) != len(input_ids)
            or generated_ids.shape[1] == 0
            or max_new_tokens not in (None, generated_ids.shape[1])
        ):
            raise InvalidInputError(
                f"generated_ids must be a ({len(input_ids)}, new tokens) integer tensor of at "
                "least one token (the new tokens only, without the prompt), and "
                "max_new_tokens None or its number of tokens."
            )
        return generated_ids.long()
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InvalidInputError(
            f"max_new_tokens must be a positive int (or pass generated_ids=), got "
            f"{max_new_tokens!r}."
        )
    config = model.generation_config
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    with torch.no_grad():
        sequences = model.generate(
            input_ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
        )
    return sequences[:, input_ids.shape[1] :]


def _contrast(contrast, shape, vocab: int, device) -> Tensor | None:
    """The contrast token of each step as `(batch, k)`, or None."""
    if contrast is None:
        return None
    index = torch.as_tensor(contrast, device=device)
    if index.is_floating_point() or index.ndim > 2:
        raise InvalidTargetError(
            f"contrast must be an int or an integer tensor (batch,) or (batch, new), got {index!r}."
        )
    index = index.long()
    if index.ndim == 1:
        index = index[:, None]
    try:
        index = index.expand(shape)
    except RuntimeError as error:
        raise InvalidTargetError(
            f"contrast of shape {tuple(index.shape)} does not fit {tuple(shape)} (batch, new)."
        ) from error
    if index.min() < 0 or index.max() >= vocab:
        raise InvalidTargetError(f"contrast {index.tolist()} is out of range for {vocab} logits.")
    return index
