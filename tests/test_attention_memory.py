"""The forward keeps one (heads, tokens, tokens) tensor per attention layer: the softmax output.

The walk reads the raw scores $q k^\\top$, the scaled and the masked scores and the softmax
input; `lrpfn.engine.memory` drops them in the forward and recomputes them from the kept $q$ and
$k$ when the softmax step first reads them. The result must be exactly that of a walk that
keeps every value (the same ops on the same values), and the walk must free what it no
longer reads when `lrpfn.lrp` hands it the forward's values.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from attention_models import Decoder, Encoder, tiny_vit

import lrpfn
from lrpfn import composites
from lrpfn.engine import backward, forward
from lrpfn.engine.memory import attention_scores

MODELS = {
    "decoder": (lambda: Decoder(width=16, heads=4, kv_heads=2, layers=2, length=6), (2, 6, 16)),
    "encoder": (lambda: Encoder(width=16, heads=2, layers=2, length=6), (2, 6, 16)),
    "torchvision_vit": (lambda: tiny_vit().double(), (2, 3, 32, 32)),
    "torchvision_swin": (lambda: _swin().double(), (2, 3, 32, 32)),
}


def _swin():
    """`tiny_swin` with 4 heads in its second stage: head width 8, not 16 like the 4 x 4
    windows' token count, so that only attention weights are (tokens x tokens)."""
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    return SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
        num_classes=5,
    ).eval()  # fmt: skip


def _setup(name: str):
    factory, shape = MODELS[name]
    torch.manual_seed(0)
    model = factory()
    return model, torch.randn(*shape, dtype=torch.float64)


def _softmax_nodes(plan) -> list:
    return [n for n, h in plan.handlers.items() if getattr(h, "family", "") == "softmax"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_forward_keeps_only_the_softmax_output_of_each_attention_layer(name):
    model, x = _setup(name)
    plan = lrpfn.prepare(model, composites.attnlrp())
    softmaxes = _softmax_nodes(plan)
    chains = attention_scores(plan.handlers, plan.data_inputs)
    # each softmax input is recomputed back to the product q @ k^T that makes the scores
    assert chains <= plan.recomputed
    assert sum(plan.handlers[node].kind == "product" for node in chains) >= len(softmaxes)
    env, _ = forward(plan, x)
    assert not set(env) & chains
    shapes = {env[node].shape for node in softmaxes}  # (batch, heads, tokens, tokens)
    square = {
        value.untyped_storage().data_ptr()
        for node, value in env.items()
        if node in plan.handlers and isinstance(value, torch.Tensor) and value.shape in shapes
    }
    assert square == {env[node].untyped_storage().data_ptr() for node in softmaxes}
    # keeping everything, the same forward holds the scores too (at least two more per layer)
    keeping_all = dataclasses.replace(plan, recomputed=frozenset())
    env_all, _ = forward(keeping_all, x)
    kept_all = {node for node in env_all if node in plan.handlers}
    assert len(kept_all & chains) >= 2 * len(softmaxes)


@pytest.mark.parametrize("mapping", ["attnlrp", "cp_lrp"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_recomputing_the_scores_gives_exactly_the_kept_scores_result(name, mapping):
    model, x = _setup(name)
    plan = lrpfn.prepare(model, getattr(composites, mapping)())
    keeping_all = dataclasses.replace(plan, recomputed=frozenset())
    target = torch.tensor([0, 2])
    assert torch.equal(lrpfn.lrp(plan, x, target=target), lrpfn.lrp(keeping_all, x, target=target))
    ours = lrpfn.relevances(plan, x, target=target)
    kept = lrpfn.relevances(keeping_all, x, target=target)
    assert ours.keys() == kept.keys()
    assert all(torch.equal(ours[key], kept[key]) for key in ours)


def test_an_owned_walk_frees_the_forward_values_and_a_lent_one_leaves_them():
    model, x = _setup("decoder")
    plan = lrpfn.prepare(model, composites.attnlrp())
    env, output_node = forward(plan, x)
    initial = torch.zeros_like(env[output_node])
    initial[:, 0] = env[output_node][:, 0]
    lent = dict(env)
    lent_result, _ = backward(plan, lent, output_node, initial, False)
    assert lent.keys() == env.keys()
    owned_result, _ = backward(plan, env, output_node, initial, False, owned=True)
    assert torch.equal(owned_result, lent_result)
    read = {node for node, count in plan.backward_uses.items() if count}
    held = {node.name for node in set(env) & read if isinstance(env[node], torch.Tensor)}
    assert not held  # every tensor a step read is gone after its last step (dtypes stay)
