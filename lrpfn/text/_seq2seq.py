"""Encoder-decoder models (T5, BART): a decoder logit over the encoder's and the decoder's
tokens.

The explained module takes one tensor, the encoder's token embeddings followed by the
decoder's along the token axis, `(batch, encoder tokens + decoder tokens, hidden)`, and
returns the logits at a decoder position:

    [E; D] -> model(inputs_embeds=E, decoder_inputs_embeds=D, attention_mask=m).logits[:, p]

so one walk gives the relevance of every encoder and decoder token, which `split` cuts
apart. The encoder's padding mask is a constant; the decoder attends causally as the
model builds it (these models build their masks without `vmap`). Each side's embeddings
come from its own embedding module (BART scales them there), so the model computes on
`[E; D]` what it computes on the ids.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..composites import attnlrp
from ..engine import Plan, prepare
from ..errors import InvalidInputError, UnsupportedModelError
from ._experts import routed
from ._inputs import accepts, check_attention

__all__ = ["EncoderDecoderToLogits", "is_encoder_decoder", "joint_embeddings", "plan", "split"]


def is_encoder_decoder(model: nn.Module) -> bool:
    """Whether the model is a transformers encoder-decoder (T5, BART, ...)."""
    return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))


def _embedding(model: nn.Module, side: str) -> nn.Module:
    stack = getattr(model, f"get_{side}", lambda: None)()
    embedding = getattr(stack, "embed_tokens", None)
    return model.get_input_embeddings() if embedding is None else embedding


def joint_embeddings(model: nn.Module, input_ids: Tensor, decoder_input_ids: Tensor) -> Tensor:
    """`[E; D]`: the encoder's and the decoder's token embeddings along the token axis."""
    if (
        not isinstance(decoder_input_ids, Tensor)
        or decoder_input_ids.ndim != 2
        or decoder_input_ids.is_floating_point()
        or len(decoder_input_ids) != len(input_ids)
    ):
        raise InvalidInputError(
            f"decoder_input_ids must be a ({len(input_ids)}, decoder tokens) integer tensor "
            "(one row per sample of input_ids), e.g. the decoder start token followed by the "
            "tokens generated so far."
        )
    with torch.no_grad():
        encoder = _embedding(model, "encoder")(input_ids)
        decoder = _embedding(model, "decoder")(decoder_input_ids)
    if encoder.shape[-1] != decoder.shape[-1] or encoder.dtype != decoder.dtype:
        raise UnsupportedModelError(
            f"{type(model).__name__}'s encoder and decoder embeddings differ in size or dtype "
            f"({tuple(encoder.shape)} {encoder.dtype}, {tuple(decoder.shape)} {decoder.dtype}): "
            "lrpfn.text explains both sides as one tensor. Explain the encoder alone with "
            "lrpfn.lrp on a module of your own."
        )
    return torch.cat([encoder, decoder], 1).detach()


class EncoderDecoderToLogits(nn.Module):
    """`[E; D] -> logits[:, position]` with the encoder's padding mask fixed (module
    docstring)."""

    def __init__(
        self, model: nn.Module, encoder_tokens: int, attention_mask: Tensor | None, position: int
    ):
        super().__init__()
        self.model = model
        self.encoder_tokens = encoder_tokens
        self.position = position
        self.register_buffer("attention_mask", attention_mask, persistent=False)
        self.options: dict[str, Any] = {"use_cache": False} if accepts(model, "use_cache") else {}

    def forward(self, embeddings: Tensor) -> Tensor:
        logits = self.model(
            inputs_embeds=embeddings[:, : self.encoder_tokens],
            decoder_inputs_embeds=embeddings[:, self.encoder_tokens :],
            attention_mask=self.attention_mask,
            **self.options,
        ).logits
        return logits[:, self.position]


def plan(
    model: nn.Module,
    embeddings: Tensor,
    encoder_tokens: int,
    attention_mask: Tensor | None,
    position: int,
    rules: Any,
) -> Plan:
    """The plan explaining `EncoderDecoderToLogits` at `embeddings`' shape."""
    check_attention(model)
    wrapper = EncoderDecoderToLogits(routed(model), encoder_tokens, attention_mask, position)
    return prepare(wrapper, attnlrp() if rules is None else rules, example_input=embeddings)


def split(relevance: Tensor, encoder_tokens: int) -> tuple[Tensor, Tensor]:
    """The encoder's and the decoder's parts of a relevance `(batch, tokens, hidden)`."""
    return relevance[:, :encoder_tokens], relevance[:, encoder_tokens:]
