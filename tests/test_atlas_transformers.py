"""The atlas over transformer concepts: the MLP neurons and the attention heads of a
vision transformer (timm's ViT, float64, random weights).

`Neurons(name)` takes the last (feature) axis of a `(batch, tokens, features)` value as
the concepts, the tokens as their positions; `Heads(name, heads)` splits the features
into `heads` equal groups, a head's positions being its tokens and features. The
reference is a float64 NumPy computation from `lrpfn.relevances` and torch forward hooks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lrpfn
from lrpfn import composites, concepts

timm = pytest.importorskip("timm", reason="timm is a test extra")

RULES = composites.attnlrp()
HEADS = 3


def vit() -> torch.nn.Module:
    torch.manual_seed(5)
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=4, img_size=32, depth=2
    )
    return model.eval().double()


def data(count: int = 12) -> torch.utils.data.TensorDataset:
    generator = torch.Generator().manual_seed(6)
    x = torch.randn((count, 3, 32, 32), generator=generator, dtype=torch.float64)
    return torch.utils.data.TensorDataset(x, torch.arange(count) % 4)


def reference(model, x, labels, module: str, node: str, split) -> dict[str, np.ndarray]:
    """Per ordering, every sample's normalised scores `(N, concepts)`."""
    relevance = lrpfn.relevances(model, x, RULES, target=labels)[node]
    seen = {}
    handle = model.get_submodule(module).register_forward_hook(
        lambda _, __, output: seen.__setitem__("value", output.detach())
    )
    with torch.no_grad():
        model(x)
    handle.remove()
    found = {}
    for source, value in (("relevance", relevance), ("activation", seen["value"])):
        flat = split(value.numpy())
        for reduction, score in (("sum", flat.sum(2)), ("max", flat.max(2))):
            found[f"{source}_{reduction}"] = score / (np.abs(score).sum(1, keepdims=True) + 1e-10)
    return found


def neurons(value: np.ndarray) -> np.ndarray:  # (N, T, D) -> (N, D, T)
    return value.transpose(0, 2, 1)


def heads(value: np.ndarray) -> np.ndarray:  # (N, T, H * d) -> (N, H, T * d)
    n, tokens, features = value.shape
    split = value.reshape(n, tokens, HEADS, features // HEADS).transpose(0, 2, 1, 3)
    return split.reshape(n, HEADS, -1)


def test_vit_mlp_neurons_and_attention_heads(tmp_path) -> None:
    model, dataset = vit(), data()
    layers = [
        concepts.Neurons("blocks.0.mlp.act"),
        concepts.Heads("blocks.1.attn.norm", HEADS),  # the heads' outputs before `proj`
    ]
    atlas = concepts.atlas(
        model, dataset, RULES, layers, tmp_path / "vit.zarr", k=5, target="label",
        batch_size=5, progress=False,
    )  # fmt: skip
    assert atlas.kind("blocks.0.mlp.act") == "neuron" and atlas.kind("blocks.1.attn.norm") == "head"
    x, labels = dataset.tensors
    cases = {
        "blocks.0.mlp.act": reference(
            model, x, labels, "blocks.0.mlp.act", "blocks_0_mlp_act", neurons
        ),
        "blocks.1.attn.norm": reference(
            model, x, labels, "blocks.1.attn.norm", "blocks_1_attn_norm", heads
        ),
    }
    for layer, orderings in cases.items():
        for ordering, scores in orderings.items():
            indices, stored = atlas.top(layer, ordering)
            rows = np.arange(len(scores))
            expected = np.stack([np.lexsort((rows, -column))[:5] for column in scores.T])
            np.testing.assert_array_equal(indices, expected, err_msg=f"{layer} {ordering}")
            best = np.take_along_axis(scores.T, expected, axis=1).astype(np.float32)
            np.testing.assert_allclose(stored, best, rtol=1e-6, atol=1e-30)
    assert atlas.top("blocks.0.mlp.act")[0].shape == (768, 5)
    assert atlas.top("blocks.1.attn.norm")[0].shape == (HEADS, 5)


def test_heads_must_divide_the_features(tmp_path) -> None:
    with pytest.raises(concepts.InvalidConditionError, match="not a multiple of heads=5"):
        concepts.atlas(
            vit(), data(2), RULES, [concepts.Heads("blocks.1.attn.norm", 5)], tmp_path / "a",
            progress=False,
        )  # fmt: skip
