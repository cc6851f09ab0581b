"""Sequence classifiers: the explained logit is the one transformers pools.

Decoder classifiers pool the last token that is not the pad token, found from the ids
(which `inputs_embeds` hides); with right padding that is not the last position. BERT
pools its first token.
"""

from __future__ import annotations

import pytest
import torch

from lrpfn import composites, text
from lrpfn.errors import InvalidInputError

pytest.importorskip("transformers", reason="transformers is the [text] extra")

import text_families as families

pytestmark = pytest.mark.filterwarnings(
    "ignore:`encoder_attention_mask` is deprecated:FutureWarning"  # inside transformers' BERT
)


def _right_padded():
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(2, families.VOCAB, (3, 7), generator=generator)
    input_ids[1, 4:] = 1  # pad token 1: sample 1 pools token 3, sample 2 token 5
    input_ids[2, 6:] = 1
    return input_ids, (input_ids != 1).long()


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2", "bert"])
@pytest.mark.parametrize("with_mask", [True, False], ids=["mask", "no_mask"])
def test_the_pooled_logit_is_explained(family, with_mask):
    model = families.classifier(family)
    input_ids, mask = _right_padded()
    attention_mask = mask if with_mask else None
    rules = composites.cp_lrp(epsilon=0.0)
    explanation = text.explain(model, input_ids, attention_mask, rules=rules)
    with torch.no_grad():
        own = model(input_ids, attention_mask=attention_mask).logits
    own = own.gather(1, explanation.target[:, None])[:, 0]
    torch.testing.assert_close(explanation.logit, own, rtol=1e-10, atol=1e-10)
    assert explanation.position is None
    if family != "bert":  # a causal token never sees the tokens after it
        assert torch.all(explanation.relevance[1, 4:] == 0)
        assert torch.all(explanation.relevance[2, 6:] == 0)
    if family == "llama":  # bias-free: conservative
        torch.testing.assert_close(explanation.scores.sum(1), own, rtol=1e-9, atol=1e-9)


def test_a_pooled_sample_is_explained_as_alone():
    """Sample 1 explained in the padded batch equals it explained alone without padding."""
    model = families.classifier("llama")
    input_ids, mask = _right_padded()
    batch = text.explain(model, input_ids, mask, target=2)
    alone = text.explain(model, input_ids[1:2, :4], target=2)
    torch.testing.assert_close(batch.relevance[1, :4], alone.relevance[0], rtol=1e-9, atol=1e-12)


def test_a_batch_without_a_pad_token_is_named():
    model = families.classifier("llama")
    model.config.pad_token_id = None
    with pytest.raises(InvalidInputError, match="pad_token_id"):
        text.explain(model, _right_padded()[0])
