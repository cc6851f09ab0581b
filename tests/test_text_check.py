"""The explained logit is the model's own: sliding-window and hybrid masks, the logit
check, non-finite outputs, eager attention.

Windows (3) are shorter than the sequences (8), so full causal attention in place of a
window changes the logit (by 1e-2 to 1e-1 on these tiny models).
"""

from __future__ import annotations

import pytest
import torch

from lrpfn import composites, text
from lrpfn.errors import ModelMismatchError, NonFiniteOutputError, UnsupportedModelError
from lrpfn.text._check import check_logits, own_logits
from lrpfn.text._inputs import model_inputs
from lrpfn.text._wrapper import EmbeddingsToLogits

transformers = pytest.importorskip("transformers", reason="transformers is the [text] extra")

import text_families as families  # noqa: E402

WINDOWED = ["mistral", "qwen2", "phi3", "gemma2", "gemma3"]


def _ids(seed: int = 0, batch: int = 2, length: int = 8):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(2, families.VOCAB, (batch, length), generator=generator)


def _window_mask(length: int, window: int, padding: torch.Tensor) -> torch.Tensor:
    """Allowed (query i, key j): j <= i, i - j < window, j not padding (Mistral's window)."""
    i = torch.arange(length)[:, None]
    j = torch.arange(length)[None, :]
    return ((j <= i) & (i - j < window))[None, None] & padding[:, None, None, :].bool()


@pytest.mark.parametrize("family", WINDOWED)
def test_windowed_models_are_explained_with_their_own_logit(family):
    model = families.build(family)
    input_ids = _ids()
    mask = torch.ones_like(input_ids)
    mask[1, :2] = 0
    explanation = text.explain(model, input_ids, mask, rules=composites.cp_lrp(epsilon=0.0))
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        own = model(input_ids, attention_mask=mask, position_ids=positions).logits[:, -1]
    own = own.gather(1, explanation.target[:, None])[:, 0]
    torch.testing.assert_close(explanation.logit, own, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(explanation.scores.sum(1), own, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("family", WINDOWED)
def test_full_causal_attention_in_place_of_the_window_is_refused(family):
    """The old behaviour (one causal mask for every layer) is what the check catches."""
    model = families.build(family)
    input_ids = _ids(1)
    embeddings = model.get_input_embeddings()(input_ids).detach()
    minimum = torch.finfo(torch.float64).min
    causal = torch.full((8, 8), minimum, dtype=torch.float64).triu(1)[None, None]
    full = EmbeddingsToLogits(model, {"attention_mask": causal.expand(2, 1, 8, 8)}, -1)
    with torch.no_grad():
        explained = full(embeddings)
    own = own_logits(model, input_ids, None, -1)
    with pytest.raises(ModelMismatchError, match=type(model).__name__):
        check_logits(model, explained, own, explained.argmax(-1))


def test_qwen2_gets_a_mask_per_layer_type():
    """`max_window_layers=1`: layer 0 attends fully, layer 1 in a window of 3; the model
    takes a mapping from layer type to mask, each as the window's definition says."""
    model = families.build("qwen2")
    assert model.config.layer_types == ["full_attention", "sliding_attention"]
    padding = torch.tensor([[1] * 8, [0, 0] + [1] * 6])
    masks = model_inputs(model, _ids(), padding, torch.float64, True)["attention_mask"]
    assert set(masks) == {"full_attention", "sliding_attention"}
    assert torch.equal(masks["sliding_attention"] == 0, _window_mask(8, 3, padding))
    assert torch.equal(masks["full_attention"] == 0, _window_mask(8, 8, padding))


def test_mistral_gets_one_window_mask():
    model = families.build("mistral")
    padding = torch.ones(1, 8, dtype=torch.long)
    mask = model_inputs(model, _ids(batch=1), padding, torch.float64, True)["attention_mask"]
    assert torch.equal(mask == 0, _window_mask(8, 3, padding))


def test_a_nan_in_the_models_output_is_named():
    model = families.build("llama")
    with torch.no_grad():
        model.lm_head.weight[5] = float("nan")
    with pytest.raises(NonFiniteOutputError, match=r"LlamaForCausalLM.*non-finite"):
        text.explain(model, _ids(), target=5)


def test_a_different_logit_is_named_with_the_samples():
    model = families.build("llama")
    own = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    explained = own + torch.tensor([[0.0, 0.0], [0.0, 1e-3]], dtype=torch.float64)
    check_logits(model, explained, own, torch.tensor([1, 0]))  # sample 1's class 0 agrees
    with pytest.raises(ModelMismatchError, match=r"sample\(s\) \[1\].*float64"):
        check_logits(model, explained, own, torch.tensor([1, 1]))


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_eager_attention_equals_sdpa_under_cp_lrp(family):
    """Eager attention computes softmax in float32 and casts P back (`aten.to`) before
    `P @ V`: P is still held constant. The graph computes the softmax in the input's
    dtype, so eager and sdpa give the same relevance; the eager model's own logit is
    within the check's tolerance of it (its float32 softmax)."""
    input_ids = _ids(2)
    relevance = {}
    for implementation in ("sdpa", "eager"):
        model = families.build(family)
        model.config._attn_implementation = implementation
        explanation = text.explain(model, input_ids, rules=composites.cp_lrp(epsilon=0.0))
        relevance[implementation] = explanation.relevance
        torch.testing.assert_close(explanation.scores.sum(1), explanation.logit, rtol=1e-6, atol=0)
    torch.testing.assert_close(relevance["eager"], relevance["sdpa"], rtol=0, atol=1e-12)


def test_gemma2_eager_attention_with_soft_capping_conserves():
    """Gemma2 soft-caps the attention logits (`tanh`) in eager attention only (sdpa has no
    soft-capping, a different function): CP-LRP holds P constant either way."""
    model = families.build("gemma2")
    model.config._attn_implementation = "eager"
    explanation = text.explain(model, _ids(3), rules=composites.cp_lrp(epsilon=0.0))
    torch.testing.assert_close(explanation.scores.sum(1), explanation.logit, rtol=1e-6, atol=0)


def test_llama4_gets_chunked_and_full_masks():
    """Llama4's chunked layers attend within chunks of `attention_chunk_size` tokens (the
    model itself is refused later, for its complex-valued rotary embedding)."""
    config = transformers.Llama4TextConfig(
        vocab_size=families.VOCAB, hidden_size=16, intermediate_size=32,
        intermediate_size_mlp=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=4, num_local_experts=2, num_experts_per_tok=1,
        attention_chunk_size=3, no_rope_layers=[1, 0],
    )  # fmt: skip
    model = transformers.Llama4ForCausalLM(config).double().eval()
    padding = torch.tensor([[1] * 8, [0, 0] + [1] * 6])
    masks = model_inputs(model, _ids(), padding, torch.float64, True)["attention_mask"]
    assert set(masks) == {"chunked_attention", "full_attention"}
    i, j = torch.arange(8)[:, None], torch.arange(8)[None, :]
    chunked = ((j <= i) & (i // 3 == j // 3))[None, None] & padding[:, None, None, :].bool()
    assert torch.equal(masks["chunked_attention"] == 0, chunked)
    assert torch.equal(masks["full_attention"] == 0, _window_mask(8, 8, padding))


def test_attention_other_than_eager_or_sdpa_is_named():
    model = families.build("llama")
    model.config._attn_implementation = "flex_attention"
    with pytest.raises(UnsupportedModelError, match=r"flex_attention.*attn_implementation='sdpa'"):
        text.explain(model, _ids())


def test_gemma2_eager_float64_padded_is_named_not_explained():
    """transformers' own Gemma2 returns NaN here (eager attention takes the softmax in
    float32, where float64's mask minimum is -inf, so padded query rows are all -inf):
    lrpfn's graph would compute finite logits, but there is nothing of the model's to
    explain."""
    model = families.build("gemma2")
    model.config._attn_implementation = "eager"
    input_ids = _ids(4)
    mask = torch.ones_like(input_ids)
    mask[1, :2] = 0
    with torch.no_grad():
        assert model(input_ids, attention_mask=mask).logits[1, -1].isnan().any()
    with pytest.raises(NonFiniteOutputError, match=r"sample\(s\) \[1\]"):
        text.explain(model, input_ids, mask)
