"""Encoder-decoders (T5, BART): `text.explain(..., decoder_input_ids=...)` explains a
decoder position's logit over the encoder's tokens (`relevance`) and the decoder's
(`decoder_relevance`).
"""

from __future__ import annotations

import pytest
import torch

from lrpfn import composites, text
from lrpfn.errors import InvalidInputError, UnsupportedModelError

pytest.importorskip("transformers", reason="transformers is the [text] extra")

import text_families as families

SEQ2SEQ = sorted(families.SEQ2SEQ)


def _inputs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(2, families.VOCAB, (2, 6), generator=generator)
    decoder_input_ids = torch.randint(2, families.VOCAB, (2, 4), generator=generator)
    mask = torch.ones_like(input_ids)
    mask[1, 4:] = 0  # the second sample's encoder input is right-padded
    return input_ids, mask, decoder_input_ids


@pytest.mark.parametrize("family", SEQ2SEQ)
def test_cp_lrp_conserves_over_encoder_and_decoder_tokens(family):
    model = families.bias_free(families.build(family))
    input_ids, mask, decoder_input_ids = _inputs()
    explanation = text.explain(
        model,
        input_ids,
        mask,
        decoder_input_ids=decoder_input_ids,
        position=2,
        rules=composites.cp_lrp(epsilon=0.0),
    )
    assert explanation.relevance.shape == (2, 6, 16)
    assert explanation.decoder_relevance.shape == (2, 4, 16)
    with torch.no_grad():
        own = model(input_ids, attention_mask=mask, decoder_input_ids=decoder_input_ids).logits
    own = own[:, 2].gather(1, explanation.target[:, None])[:, 0]
    # T5 takes its RMS statistics in float32, the captured RMSNorm in the input's dtype
    torch.testing.assert_close(explanation.logit, own, rtol=1e-6, atol=1e-9)
    total = explanation.scores.sum(1) + explanation.decoder_scores.sum(1)
    torch.testing.assert_close(total, explanation.logit, rtol=1e-9, atol=1e-9)
    assert torch.all(explanation.relevance[1, 4:] == 0)  # encoder padding
    assert torch.all(explanation.decoder_relevance[:, 3:] == 0)  # after the position


@pytest.mark.slow
@pytest.mark.parametrize("family", SEQ2SEQ)
def test_attnlrp_in_float32(family):
    model = families.build(family, dtype=torch.float32)
    input_ids, mask, decoder_input_ids = _inputs(1)
    explanation = text.explain(model, input_ids, mask, decoder_input_ids=decoder_input_ids)
    assert torch.isfinite(explanation.relevance).all()
    assert torch.isfinite(explanation.decoder_relevance).all()
    assert explanation.decoder_scores.abs().sum() > 0 and explanation.scores.abs().sum() > 0


def test_an_encoder_decoder_without_decoder_ids_is_named():
    model = families.build("t5")
    with pytest.raises(InvalidInputError, match=r"T5ForConditionalGeneration.*decoder_input_ids"):
        text.explain(model, _inputs()[0])
    with pytest.raises(UnsupportedModelError, match="encoder-decoder"):
        text.prepare(model)
