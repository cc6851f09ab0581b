"""`lrpfn.text.explain_inside`: relevance at each layer's residual stream, of each
attention head and MLP neuron, from the walk that explains the tokens.

Tiny random-weight Llama (bias-free: CP-LRP conserves) and GPT-2 (`Conv1D` projections,
seen as `addmm` in the graph), float64.
"""

from __future__ import annotations

import pytest
import torch

from lrpfn import composites, concepts, text
from lrpfn.errors import UnsupportedModelError

transformers = pytest.importorskip("transformers", reason="transformers is the [text] extra")

VOCAB = 40
HEADS = 4


def _llama():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=HEADS, num_key_value_heads=2, max_position_embeddings=32,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config).double().eval()


def test_every_layers_residual_stream_carries_the_whole_logit():
    """Each layer's input is a cut of the graph: under CP-LRP (conservative on a
    bias-free model) every row of `residual` sums to the explained logit, and the first
    row is the token scores."""
    model = _llama()
    input_ids = torch.randint(0, VOCAB, (2, 6))
    inside = text.explain_inside(model, input_ids, rules=composites.cp_lrp(epsilon=0.0))
    assert inside.residual.shape == (2, 2, 6)
    assert inside.heads.shape == (2, 2, HEADS)
    assert inside.neurons.shape == (2, 2, 32)
    assert inside.layers == ("model.layers.0", "model.layers.1")
    logit = inside.tokens.logit.expand(2, 2)
    torch.testing.assert_close(inside.residual.sum(-1), logit, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(inside.residual[0], inside.tokens.scores, rtol=0, atol=0)
    plain = text.explain(model, input_ids, rules=composites.cp_lrp(epsilon=0.0))
    torch.testing.assert_close(inside.tokens.relevance, plain.relevance, rtol=0, atol=0)


def test_a_head_the_projection_ignores_has_no_relevance():
    """Zero the output projection's columns of head 1 in layer 1: the head's output
    reaches nothing, so its relevance is exactly 0 (R_in = a * W^T s); likewise an MLP
    neuron whose down-projection column is zero."""
    model = _llama()
    width = 16 // HEADS
    with torch.no_grad():
        model.model.layers[1].self_attn.o_proj.weight[:, width : 2 * width] = 0
        model.model.layers[0].mlp.down_proj.weight[:, 5] = 0
    inside = text.explain_inside(model, torch.randint(0, VOCAB, (2, 6)))
    assert torch.all(inside.heads[1, :, 1] == 0)
    assert torch.all(inside.heads[1, :, [0, 2, 3]] != 0)
    assert torch.all(inside.neurons[0, :, 5] == 0)
    assert torch.all(inside.neurons[0, :, 6] != 0)


def test_gpt2_heads_through_conv1d():
    """GPT-2's projections are `Conv1D` (`addmm` in the graph), weight (in, out): zero
    the rows of head 0 in layer 0's `c_proj`."""
    torch.manual_seed(1)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2)
    model = transformers.GPT2LMHeadModel(config).double().eval()
    with torch.no_grad():
        model.transformer.h[0].attn.c_proj.weight[:8] = 0
    inside = text.explain_inside(model, torch.randint(0, VOCAB, (1, 5)))
    assert inside.layers == ("transformer.h.0", "transformer.h.1")
    assert inside.heads.shape == (2, 1, 2)
    assert torch.all(inside.heads[0, :, 0] == 0) and torch.all(inside.heads[0, :, 1] != 0)


def test_a_model_without_a_list_of_layers_is_named():
    model = _llama()
    model.config.num_hidden_layers = 3  # no ModuleList of 3 layers
    with pytest.raises(UnsupportedModelError, match="ModuleList"):
        text.explain_inside(model, torch.randint(0, VOCAB, (1, 4)))


def test_concepts_on_heads_and_neurons_agree_with_the_inside_walk():
    """`lrpfn.concepts.importance` at a layer's attention output (heads on axis 1) and
    MLP neurons (`channel_axis=-1`) gives what `explain_inside` reads off its own walk;
    a head's conditional heatmap sums to that head's relevance (CP-LRP, bias-free)."""
    model = _llama()
    prepared = text.prepare(model, rules=composites.cp_lrp(epsilon=0.0))
    input_ids = torch.randint(0, VOCAB, (2, 6))
    inside = text.explain_inside(prepared, input_ids)
    nodes = text.concept_nodes(prepared, input_ids)
    for layer in range(2):
        heads = concepts.importance(nodes.plan, nodes.embeddings, None, nodes.heads[layer])
        torch.testing.assert_close(heads, inside.heads[layer], rtol=1e-10, atol=1e-13)
        neurons = concepts.importance(
            nodes.plan, nodes.embeddings, None, nodes.neurons[layer], channel_axis=-1
        )
        torch.testing.assert_close(neurons, inside.neurons[layer], rtol=1e-10, atol=1e-13)
    maps = concepts.conditional(
        nodes.plan, nodes.embeddings, None, [{nodes.heads[1]: [h]} for h in range(HEADS)]
    )
    assert maps.shape == (HEADS, 2, 6, 16)
    torch.testing.assert_close(maps.sum((2, 3)), inside.heads[1].T, rtol=1e-9, atol=1e-12)
    neuron_maps = concepts.conditional(
        nodes.plan, nodes.embeddings, None, [{nodes.neurons[0]: [3, 4]}], channel_axis=-1
    )
    torch.testing.assert_close(
        neuron_maps.sum((2, 3))[0], inside.neurons[0][:, 3:5].sum(1), rtol=1e-9, atol=1e-12
    )
