"""The atlas over transformer concepts: the MLP neurons and the attention heads of a
vision transformer (timm's ViT, float64, random weights).

`Neurons(name)` takes the last (feature) axis of a `(batch, tokens, features)` value as
the concepts, the tokens as their positions; `Heads(name, heads)` splits the features
into `heads` equal groups, a head's positions being its tokens and features. The
reference is a float64 NumPy computation from `lrpfn.relevances` and torch forward hooks.
"""

from __future__ import annotations

from pathlib import Path

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


class TokenMixer(torch.nn.Module):
    """Tokens `(batch, T, D)` -> token-wise dense, ReLU, dense -> mean over tokens -> dense.
    Without biases every layer conserves relevance under the epsilon rule (up to eps)."""

    def __init__(self) -> None:
        super().__init__()
        self.up = torch.nn.Linear(6, 10, bias=False)
        self.act = torch.nn.ReLU()
        self.down = torch.nn.Linear(10, 6, bias=False)
        self.head = torch.nn.Linear(6, 3, bias=False)

    def forward(self, x):
        return self.head(self.down(self.act(self.up(x))).mean(dim=1))


def test_a_neuron_condition_keeps_that_neurons_relevance_at_every_token() -> None:
    """Conservation: the conditional input relevance of neuron c of `act` sums to the
    relevance of that neuron summed over the tokens, $\\sum_t R_{t,c}$ (epsilon rule, no
    biases), and the heatmaps of all neurons add up to the unconditioned one."""
    torch.manual_seed(8)
    model = TokenMixer().double().eval()
    x = torch.randn((3, 5, 6), dtype=torch.float64)
    rules = lrpfn.rules.Epsilon(1e-12)
    target = torch.tensor([0, 2, 1])
    at_layer = lrpfn.relevances(model, x, rules, target=target)["act"]  # (3, 5, 10)
    conditions = [{concepts.Neurons("act"): [c]} for c in range(10)]
    maps = concepts.conditional(model, x, rules, conditions, target=target)  # (10, 3, 5, 6)
    expected = at_layer.sum(dim=1).T  # (10, 3): per neuron and sample
    torch.testing.assert_close(maps.sum(dim=(2, 3)), expected, rtol=1e-9, atol=1e-12)
    whole = lrpfn.lrp(model, x, rules, target=target)
    torch.testing.assert_close(maps.sum(dim=0), whole, rtol=1e-9, atol=1e-12)


def test_a_head_condition_is_the_condition_on_its_features() -> None:
    model, x = vit(), data(2).tensors[0]
    head = concepts.conditional(
        model, x, RULES, [{concepts.Heads("blocks.1.attn.norm", HEADS): [1]}], target=2
    )
    features = 192 // HEADS
    neurons = list(range(features, 2 * features))
    same = concepts.conditional(
        model, x, RULES, [{concepts.Neurons("blocks.1.attn.norm"): neurons}], target=2
    )
    assert head.abs().sum() > 0
    torch.testing.assert_close(head, same, rtol=1e-12, atol=1e-15)


def test_vit_references_are_conditional_heatmaps_of_the_neuron(tmp_path) -> None:
    model, dataset = vit(), data()
    layer = concepts.Neurons("blocks.0.mlp.act")
    atlas = concepts.atlas(
        model, dataset, RULES, [layer], tmp_path / "vit.zarr", k=4, target="label",
        batch_size=6, progress=False,
    )  # fmt: skip
    refs = atlas.references("blocks.0.mlp.act", [3, 100], n=3, size=(8, 8))
    x, labels = dataset.tensors
    for row, neuron in enumerate((3, 100)):
        chosen = torch.as_tensor(refs.indices[row])
        expected = concepts.conditional(
            model, x[chosen], RULES, [{layer: [neuron]}], target=labels[chosen]
        )[0]
        torch.testing.assert_close(refs.heatmaps[row], expected, rtol=1e-10, atol=1e-14)
    assert refs.images.shape == (2, 3, 8, 8, 3) and refs.token_relevance is None


transformers = pytest.importorskip("transformers", reason="transformers is a test extra")


class Tokens:
    """A tokenizer stand-in: token i is "t<i>"."""

    def convert_ids_to_tokens(self, ids):
        return [f"t{i}" for i in ids]


class Logits(torch.nn.Module):
    """`embeddings -> logits` of a Hugging Face classifier (captured by torch.export)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, embeddings):
        return self.model(inputs_embeds=embeddings).logits


def bert() -> torch.nn.Module:
    config = transformers.BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16, num_labels=3,
    )  # fmt: skip
    torch.manual_seed(7)
    return transformers.BertForSequenceClassification(config).eval().double()


def test_text_atlas_of_bert_neurons_with_token_contexts(tmp_path) -> None:
    import warnings

    import zarr

    model = bert()
    ids = torch.randint(0, 40, (10, 6), generator=torch.Generator().manual_seed(1))
    labels = torch.arange(10) % 3
    with warnings.catch_warnings():  # transformers' own deprecation notices while exporting
        warnings.simplefilter("ignore", FutureWarning)
        atlas = concepts.text_atlas(
            model, ids, [concepts.Neurons("bert.encoder.layer.1.intermediate")],
            tmp_path / "bert.zarr", labels=labels, tokenizer=Tokens(), k=4, target="label",
            batch_size=4, progress=False,
        )  # fmt: skip
        layer = "model.bert.encoder.layer.1.intermediate"
        assert atlas.layers == [layer] and atlas.kind(layer) == "neuron"
        # the reference: activations by a forward hook, relevance by lrpfn.relevances
        embeddings = model.get_input_embeddings()(ids).detach()
        seen = {}
        handle = model.bert.encoder.layer[1].intermediate.register_forward_hook(
            lambda _, __, output: seen.__setitem__("value", output.detach())
        )
        with torch.no_grad():
            model(inputs_embeds=embeddings)
        handle.remove()
        name = concepts._nodes.resolve_node(atlas.plan, layer).name  # its graph node
        relevance = lrpfn.relevances(Logits(model), embeddings, RULES, target=labels)
        refs = atlas.references(layer, [0, 7], n=3)
    rows = np.arange(10)
    for source, value in (("activation", seen["value"]), ("relevance", relevance[name])):
        score = value.numpy().sum(axis=1)  # (N, neurons): the sum over tokens
        score = score / (np.abs(score).sum(1, keepdims=True) + 1e-10)
        expected = np.stack([np.lexsort((rows, -column))[:4] for column in score.T])
        np.testing.assert_array_equal(atlas.top(layer, f"{source}_sum")[0], expected)
    group = zarr.open_group(str(tmp_path / "bert.zarr"), mode="r")
    assert group["tokens"].shape == (10, 6)
    assert group["tokens"][0].tolist() == [f"t{i}" for i in ids[0].tolist()]
    assert refs.token_relevance.shape == (2, 3, 6) and refs.images is None
    np.testing.assert_allclose(refs.token_relevance, refs.heatmaps.sum(-1).numpy())


def vit_images() -> torch.utils.data.TensorDataset:
    """10 generated 32x32 images in float32, for the command line test."""
    generator = torch.Generator().manual_seed(9)
    x = torch.rand((10, 3, 32, 32), generator=generator)
    return torch.utils.data.TensorDataset(x, torch.arange(10) % 5)


def test_the_command_line_takes_transformer_neurons(tmp_path, capsys) -> None:
    import zarr

    from lrpfn.cli import main

    here = Path(__file__).resolve().parent
    out = tmp_path / "vit.zarr"
    status = main([
        "atlas", "--model", f"{here / 'attention_models.py'}:tiny_vit",
        "--data", "test_atlas_transformers:vit_images", "--rules", "attnlrp",
        "--neurons", "encoder.layers.encoder_layer_0.mlp.1", "--out", str(out), "--k", "3",
        "--batch-size", "4", "--references", "2", "--size", "8", "--quiet",
    ])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    layer = zarr.open_group(str(out), mode="r")["layers/encoder.layers.encoder_layer_0.mlp.1"]
    assert layer.attrs["kind"] == "neuron" and layer.attrs["channels"] == 32
    assert layer["references/images"].shape == (32, 2, 8, 8, 3)
    assert main(["atlas", "--model", "x:y", "--data", "digits", "--out", "o", "--heads", "a"]) == 1
    assert "--heads takes NAME:H" in capsys.readouterr().err
