"""A handful of small timm models, explained end to end (random weights, small inputs).

Each covers an op family or front end the torchvision zoo does not: timm's functional
`BatchNormAct2d`, group norm, weight-standardised convolutions (a batch norm over the
weights), ConvNeXt-V2's global response normalisation (a norm held constant and
`addcmul`), ResMLP's `addcmul` affine layers, HRNet's upsampling, and TF "same" padding
computed from the input's shape (captured by `torch.export`), and SKNet's and ResNeSt's
split attention, whose softmax over branches gates the branches (`x * softmax(a)`: the
product rule gives all relevance to the branches, none to the gate). For each: the captured
graph reproduces the model's output; LRP-0 on a copy whose biases are zero conserves
relevance (the sum of the input relevance equals the logit, up to float32 rounding); the
model is unmodified (every module attribute and every tensor). The whole sample runs in
`benchmarks/zoo_timm.py`.
"""

from __future__ import annotations

import copy

import pytest
import torch

import lrpfn
from lrpfn import composites, rules

timm = pytest.importorskip("timm", reason="timm is a test extra (pip install timm)")

MODELS = {  # name: (create_model keyword arguments, input size, expected front end)
    "test_efficientnet": ({}, 32, "fx"),
    "test_efficientnet_gn": ({}, 32, "fx"),
    "test_resnet": ({}, 32, "fx"),
    "test_byobnet": ({}, 32, "fx"),
    "test_nfnet": ({}, 32, "fx"),
    "convnextv2_atto": ({}, 32, "fx"),
    "resmlp_12_224": ({"img_size": 32}, 32, "fx"),
    "hrnet_w18_small": ({}, 64, "fx"),
    # split attention: x * softmax over branches, the softmax a gate (branches take all)
    "skresnet18": ({}, 32, "fx"),
    "resnest14d": ({}, 32, "fx"),
    "tf_mobilenetv3_small_minimal_100": ({}, 32, "export"),
}


def build(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=5, **kwargs).eval()
    with torch.no_grad():  # zero-initialised heads would make every logit 0
        for parameter_name, parameter in model.named_parameters():
            if parameter_name.rsplit(".", 1)[-1] not in ("bias", "beta") and not parameter.any():
                parameter.normal_(0.0, 0.02)
    return model


def without_biases(model: torch.nn.Module) -> torch.nn.Module:
    model = copy.deepcopy(model)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if name.rsplit(".", 1)[-1] in ("bias", "beta", "running_mean"):
                tensor.zero_()
    return model


def snapshot(model: torch.nn.Module) -> tuple:
    attributes = [
        (name, key, id(value), [id(v) for v in value.values()] if isinstance(value, dict) else
         [id(v) for v in value] if isinstance(value, (list, set)) else None)
        for name, module in model.named_modules()
        for key, value in sorted(module.__dict__.items())
    ]  # fmt: skip
    tensors = [(name, t.clone(), t._version) for name, t in model.state_dict().items()]
    return attributes, tensors


def assert_unchanged(before: tuple, after: tuple) -> None:
    assert before[0] == after[0]
    for (name, old, old_version), (_, new, new_version) in zip(before[1], after[1], strict=True):
        assert torch.equal(old, new) and old_version == new_version, name


@pytest.mark.parametrize("name", list(MODELS))
def test_timm_model_is_explained_conserving_and_unmodified(name):
    kwargs, size, front_end = MODELS[name]
    model = build(name, **kwargs)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    before = snapshot(model)
    plan = lrpfn.prepare(model, composites.epsilon_plus(), example_input=x)
    assert plan.front_end == front_end
    with torch.no_grad():
        torch.testing.assert_close(plan.module(x), model(x), rtol=1e-4, atol=1e-5)
    relevance = lrpfn.lrp(plan, x, target=1)
    assert bool(torch.isfinite(relevance).all())
    bias_free = without_biases(model)
    with torch.no_grad():
        logits = bias_free(x)[:, 1]
    lrp0 = lrpfn.lrp(bias_free, x, rules.Epsilon(0.0), target=1)
    torch.testing.assert_close(lrp0.sum((1, 2, 3)), logits, rtol=1e-5, atol=0)
    assert_unchanged(before, snapshot(model))


def test_levit_attention_bias_cache_is_left_as_it_was():
    """LeViT caches its attention biases per device during forward; fx tracing used to
    leave a Proxy there, and the next call failed with a bare KeyError. Whatever the
    outcome of the explanation (it needs the attention handlers), it is the same twice
    and the model is unchanged."""
    model = build("levit_128s", img_size=64)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    before = snapshot(model)

    def outcome():
        try:
            return lrpfn.lrp(model, x, rules.Epsilon(), target=1)
        except lrpfn.errors.LRPError as error:
            return f"{type(error).__name__}: {str(error).splitlines()[0]}"

    first, second = outcome(), outcome()
    if isinstance(first, torch.Tensor):
        torch.testing.assert_close(first, second, rtol=0, atol=0)
    else:
        assert first == second
    assert_unchanged(before, snapshot(model))
    caches = [m.attention_bias_cache for m in model.modules() if hasattr(m, "attention_bias_cache")]
    assert caches and all(cache == {} for cache in caches)
