"""Mixture-of-experts families (Mixtral, Qwen2-MoE with its shared expert, Qwen3-MoE): the routing decided by the forward for
the given input, the block computed densely (`lrpfn.text._experts`), and CP-LRP holding
the router weights constant, so the token scores sum to the explained logit (float64;
Qwen2-MoE's biases are in the queries and keys, which CP-LRP does not explain).
"""

from __future__ import annotations

import pytest
import torch

from lrpfn import composites, text
from lrpfn.errors import UnsupportedModelError
from lrpfn.text._experts import RoutedExperts, routed

pytest.importorskip("transformers", reason="transformers is the [text] extra")

import text_families as families

MIXTURES = sorted(families.MIXTURES)


def _ids(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(2, families.VOCAB, (2, 6), generator=generator)


@pytest.mark.parametrize("family", MIXTURES)
def test_routed_copy_computes_the_models_function_and_leaves_it_alone(family):
    model = families.build(family)
    copy = routed(model)
    blocks = [m for m in copy.modules() if isinstance(m, RoutedExperts)]
    assert len(blocks) == model.config.num_hidden_layers
    assert not any(isinstance(m, RoutedExperts) for m in model.modules())
    assert {id(p) for p in copy.parameters()} == {id(p) for p in model.parameters()}
    input_ids = _ids()
    with torch.no_grad():  # the router's softmax runs in float32 in the model
        torch.testing.assert_close(
            copy(input_ids).logits, model(input_ids).logits, rtol=1e-6, atol=1e-6
        )


@pytest.mark.parametrize("family", MIXTURES)
def test_cp_lrp_conserves_with_the_router_weights_held(family):
    model = families.build(family)
    input_ids = _ids(1)
    mask = torch.ones_like(input_ids)
    mask[1, :2] = 0
    explanation = text.explain(model, input_ids, mask, rules=composites.cp_lrp(epsilon=0.0))
    torch.testing.assert_close(explanation.scores.sum(1), explanation.logit, rtol=1e-9, atol=1e-9)
    assert torch.all(explanation.relevance[1, :2] == 0)
    with torch.no_grad():
        own = model(input_ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
    own = own.logits[:, -1].gather(1, explanation.target[:, None])[:, 0]
    torch.testing.assert_close(explanation.logit, own, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("family", MIXTURES)
def test_attnlrp_in_float32_sends_relevance_through_the_router_too(family):
    """AttnLRP splits each gated expert output equally (EqualSplit): the router's half
    reaches the tokens through the router softmax, so the scores differ from CP-LRP's."""
    model = families.build(family, dtype=torch.float32)
    input_ids = _ids(2)
    attn = text.explain(model, input_ids)
    cp = text.explain(model, input_ids, rules=composites.cp_lrp(), target=attn.target)
    assert torch.isfinite(attn.relevance).all()
    assert not torch.allclose(attn.scores, cp.scores, rtol=1e-3, atol=1e-5)


def test_a_window_the_model_builds_without_masking_utils_is_refused():
    """Qwen2-MoE (transformers 4.54) builds its masks itself, not with masking_utils: a
    configured sliding window is named rather than replaced by full attention."""
    model = families.build("qwen2_moe", use_sliding_window=True, sliding_window=3)
    with pytest.raises(UnsupportedModelError, match=r"Qwen2MoeForCausalLM.*sliding window"):
        text.explain(model, _ids())
