"""`lrpfn.text`: Hugging Face language models explained at their token embeddings.

Tiny random-weight models built from config classes (no downloads): a Llama (RMSNorm,
rotary embeddings, grouped-query attention, SwiGLU), GPT-2 (LayerNorm, `Conv1D` as
`addmm`, the computed tanh GELU) and BERT (an encoder with a classifier and a masked-LM
head). The models are captured by `torch.export` (fx cannot trace them); nothing in
transformers is patched. Agreement with lxt runs each model in a subprocess, since lxt
patches transformers process-wide.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lrpfn
from lrpfn import composites, text
from lrpfn.errors import InvalidInputError

transformers = pytest.importorskip("transformers", reason="transformers is the [text] extra")

pytestmark = pytest.mark.filterwarnings(
    "ignore:`encoder_attention_mask` is deprecated:FutureWarning"  # inside transformers' BERT
)

VOCAB = 40


def _llama():
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config)


def _gpt2():
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=16
    )
    return transformers.GPT2LMHeadModel(config)


def _bert_config():
    return transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16, num_labels=3,
    )  # fmt: skip


def test_cp_lrp_conserves_on_a_bias_free_llama():
    """Llama has no biases and CP-LRP holds attention weights and gates constant: the
    token scores sum to the explained logit (float64)."""
    torch.manual_seed(0)
    model = _llama().double().eval()
    input_ids = torch.randint(0, VOCAB, (2, 6))
    explanation = text.explain(model, input_ids, rules=composites.cp_lrp(epsilon=0.0))
    with torch.no_grad():
        logits = model(input_ids).logits[:, -1]
    assert explanation.relevance.shape == (2, 6, 16)
    assert explanation.scores.shape == (2, 6)
    torch.testing.assert_close(
        explanation.logit, logits.gather(1, explanation.target[:, None])[:, 0]
    )
    torch.testing.assert_close(explanation.scores.sum(1), explanation.logit, rtol=1e-9, atol=1e-12)
    assert torch.equal(explanation.target, logits.argmax(-1))


def test_padding_gets_no_relevance():
    """Left padding: padded tokens are masked as keys, so no relevance reaches them."""
    torch.manual_seed(1)
    model = _llama().double().eval()
    input_ids = torch.randint(0, VOCAB, (2, 6))
    attention_mask = torch.ones(2, 6, dtype=torch.long)
    attention_mask[1, :2] = 0
    explanation = text.explain(model, input_ids, attention_mask, target=3)
    assert torch.all(explanation.relevance[1, :2] == 0)
    assert torch.all(explanation.target == 3)
    with torch.no_grad():  # the unpadded sample is explained as without a mask
        alone = text.explain(model, input_ids[:1], target=3)
    torch.testing.assert_close(explanation.relevance[0], alone.relevance[0])


def test_gpt2_and_bert_are_explained():
    torch.manual_seed(2)
    input_ids = torch.randint(0, VOCAB, (2, 5))
    for model, position in (
        (_gpt2(), -1),
        (transformers.BertForMaskedLM(_bert_config()), 2),
        (transformers.BertForSequenceClassification(_bert_config()), -1),
    ):
        explanation = text.explain(model.eval(), input_ids, position=position)
        assert explanation.relevance.shape == (2, 5, 16)
        assert torch.isfinite(explanation.relevance).all()
        assert explanation.scores.abs().sum() > 0
    assert explanation.position is None  # a sequence classifier has no token axis


def test_untouched_model():
    model = _llama().eval()
    before = {name: (p.clone(), p._version) for name, p in model.state_dict().items()}
    text.explain(model, torch.randint(0, VOCAB, (1, 4)))
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name][0]) and value._version == before[name][1]


def test_a_hugging_face_decoder_outside_text_gets_a_named_error():
    class Logits(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, embeddings):
            return self.model(inputs_embeds=embeddings).logits[:, -1]

    with pytest.raises(lrpfn.errors.UnsupportedNodeError, match=r"lrpfn\.text\.explain"):
        lrpfn.lrp(Logits(_llama().eval()), torch.randn(1, 4, 16), composites.attnlrp())


def test_invalid_input_ids():
    with pytest.raises(InvalidInputError, match="input_ids"):
        text.explain(_llama().eval(), torch.randn(1, 4))


class _Tokenizer:
    def convert_ids_to_tokens(self, ids):
        return [f"<{index}&>" for index in ids]


def _explanation():
    scores = torch.tensor([[1.0, -0.5, 0.0]])
    return text.TokenRelevance(
        relevance=scores[..., None],
        scores=scores,
        logit=scores.sum(1),
        target=torch.tensor([0]),
        input_ids=torch.tensor([[4, 5, 6]]),
        position=-1,
    )


def test_html_heatmap():
    html = _explanation().to_html(_Tokenizer())
    assert html.count("<span") == 3
    assert "&lt;4&amp;&gt;" in html  # tokens are escaped
    assert "rgb(255, 0, 0)" in html  # the largest positive score is full red
    assert "rgb(128, 128, 255)" in html  # half the largest magnitude, negative: half blue
    assert "rgb(255, 255, 255)" in html  # zero: white
    assert 'title="-0.5"' in html


def test_terminal_heatmap():
    shown = text.to_terminal(_explanation())
    assert shown.count("\x1b[0m") == 3
    assert "\x1b[48;2;255;0;0m" in shown and "[4]" in shown


HF_ORACLE = Path(__file__).with_name("hf_lxt_oracle.py")


@pytest.mark.slow
@pytest.mark.parametrize(
    "pairs", [("llama:attnlrp", "gpt2:cp_lrp")], ids=["llama_attnlrp-gpt2_cp_lrp"]
)
def test_agrees_with_lxt_on_hugging_face_models(pairs):
    """One subprocess (lxt patches process-wide), each model once; the other two pairs
    are measured by `benchmarks/agreement_transformers.py`."""
    pytest.importorskip("lxt.efficient", reason="lxt (the oracle) is a test extra")
    result = subprocess.run(
        [sys.executable, str(HF_ORACLE), *pairs],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(lrpfn.__file__).parents[1])},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert len(rows) == len(pairs)
    for row in rows:
        assert row["relative_error"] < 1e-6, row
