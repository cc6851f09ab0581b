"""`lrpfn.text` on every supported family: tiny random configs (`text_families.py`).

For each family, in float64 with CP-LRP on a bias-free copy (biases and absolute position
embeddings zeroed, so the logit is a sum over the token embeddings only) the token scores
sum to the explained logit; in float32 with AttnLRP and the other padding side the
explanation is finite and padding gets none. In both, the explained logit is the model's
own (a plain forward on the ids with the mask, computed here).
"""

from __future__ import annotations

import inspect

import pytest
import torch

from lrpfn import composites, text

transformers = pytest.importorskip("transformers", reason="transformers is the [text] extra")

import text_families as families  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:`encoder_attention_mask` is deprecated:FutureWarning"  # inside transformers' BERT
)

SUPPORTED = sorted({**families.DECODERS, **families.ENCODERS})
LENGTH = 8  # longer than the sliding windows (3)


def _padded(side: str, seed: int = 0):
    """Two samples of LENGTH ids; the second has two padding tokens on `side`."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(2, families.VOCAB, (2, LENGTH), generator=generator)
    mask = torch.ones_like(input_ids)
    padded = slice(0, 2) if side == "left" else slice(LENGTH - 2, LENGTH)
    mask[1, padded] = 0
    input_ids[1, padded] = 1  # the pad token of the configs that name one
    return input_ids, mask


def _own_logits(model, input_ids, mask, position):
    """A plain forward on the ids; decoders at the positions `generate` gives padding."""
    arguments = {"input_ids": input_ids, "attention_mask": mask}
    if _is_decoder(model) and "position_ids" in inspect.signature(model.forward).parameters:
        arguments["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return model(**arguments).logits[:, position]


def _is_decoder(model) -> bool:
    return type(model).__name__.endswith("CausalLM") or "LMHead" in type(model).__name__


@pytest.mark.parametrize("family", SUPPORTED)
def test_cp_lrp_conserves_the_models_own_logit(family):
    model = families.bias_free(families.build(family))
    decoder = family in families.DECODERS
    input_ids, mask = _padded("left" if decoder else "right")
    position = -1 if decoder else 3
    explanation = text.explain(
        model, input_ids, mask, position=position, rules=composites.cp_lrp(epsilon=0.0)
    )
    own = _own_logits(model, input_ids, mask, position)
    torch.testing.assert_close(
        explanation.logit, own.gather(1, explanation.target[:, None])[:, 0], rtol=1e-9, atol=1e-9
    )
    torch.testing.assert_close(explanation.scores.sum(1), explanation.logit, rtol=1e-9, atol=1e-9)
    assert torch.all(explanation.relevance[1][mask[1] == 0] == 0)


@pytest.mark.parametrize("family", SUPPORTED)
def test_attnlrp_in_float32_with_the_other_padding(family):
    model = families.build(family, dtype=torch.float32)
    decoder = family in families.DECODERS
    input_ids, mask = _padded("right" if decoder else "left")
    position = LENGTH - 3 if decoder else 4  # a token of both samples
    explanation = text.explain(model, input_ids, mask, position=position)
    own = _own_logits(model, input_ids, mask, position)
    torch.testing.assert_close(
        explanation.logit, own.gather(1, explanation.target[:, None])[:, 0], rtol=1e-4, atol=1e-4
    )
    assert explanation.relevance.dtype == torch.float32
    assert torch.isfinite(explanation.relevance).all()
    assert explanation.scores.abs().sum() > 0
    assert torch.all(explanation.relevance[1][mask[1] == 0] == 0)


def test_opt_without_a_mask():
    """OPT computes positions from the attention mask; without one it is explained too."""
    model = families.build("opt")
    input_ids = _padded("left")[0]
    explanation = text.explain(model, input_ids, rules=composites.cp_lrp(epsilon=0.0))
    with torch.no_grad():
        own = model(input_ids).logits[:, -1].gather(1, explanation.target[:, None])[:, 0]
    torch.testing.assert_close(explanation.logit, own, rtol=1e-9, atol=1e-9)
