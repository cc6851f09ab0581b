"""Whole torchvision models: a CI-sized subset of the zoo (benchmarks/zoo.py has them all).

Random weights (seeded), eval mode, float64, small inputs. For each model:

- lrpfn explains it under `epsilon_gamma_box`: a finite relevance shaped like the input;
- lrpfn's canonical graph (BatchNorm folded, in-place ops removed, layers lowered to their
  functional form) computes the model's output to 1e-10 relative;
- conservation: with every bias zero (and BatchNorm running means zero, so that folding
  adds no bias), LRP-0 (`Epsilon(0)`) on every node conserves relevance exactly: a linear
  node $z_j = \\sum_i a_i w_{ij}$ gives $\\sum_i R_i = \\sum_i a_i \\sum_j w_{ij} R_j / z_j
  = \\sum_j R_j$; activations pass relevance unchanged; a sum splits it in proportion to
  its summands; max-pooling routes it; a gating product gives all of it to the signal
  (`SignalTakesAll`). So the input relevance sums to the explained logit, up to rounding.

And resnet18 (randomized BatchNorm statistics) against zennit with its ResNetCanonizer,
under `epsilon_gamma_box` (the full zennit comparison is in test_zennit_oracle.py).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn
from zennit.attribution import Gradient as ZennitGradient
from zennit.composites import EpsilonGammaBox
from zennit.torchvision import ResNetCanonizer

import lrpfn
from lrpfn import composites, rules

DTYPE = torch.float64
BOUND = 3.0  # ZBox bounds; inputs are clamped to them
SLOW = {"vgg11_bn", "densenet121", "efficientnet_b0", "convnext_tiny"}  # 2-6 s each
SIZES = {  # the smallest convenient input: vgg's five poolings leave 1 x 1 at 32
    "resnet18": 64,
    "vgg11_bn": 32,
    "densenet121": 64,
    "mobilenet_v3_small": 64,
    "efficientnet_b0": 64,
    "convnext_tiny": 64,
    "squeezenet1_1": 64,
    "shufflenet_v2_x1_0": 64,
    "googlenet": 64,
}
BUILD_ARGUMENTS = {"googlenet": {"aux_logits": False, "init_weights": False}}
MODELS = [pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name for name in SIZES]


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None, **BUILD_ARGUMENTS.get(name, {}))
    return model.eval().to(DTYPE)


def image(name: str, batch: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    size = SIZES[name]
    x = torch.randn(batch, 3, size, size, generator=generator, dtype=DTYPE)
    return x.clamp(-BOUND, BOUND)


def without_biases(model: nn.Module) -> nn.Module:
    """A copy with every bias and BatchNorm running mean set to zero."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(getattr(module, "bias", None), torch.Tensor):
                module.bias.zero_()
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.zero_()
    return model


@pytest.mark.parametrize("name", MODELS)
def test_model_is_explained_and_its_canonical_graph_computes_its_output(name: str) -> None:
    model, x = build(name), image(name)
    plan = lrpfn.prepare(model, composites.epsilon_gamma_box(low=-BOUND, high=BOUND))
    with torch.no_grad():
        expected, canonical = model(x), plan.module(x)
    torch.testing.assert_close(canonical, expected, rtol=1e-10, atol=1e-10 * expected.abs().max())
    relevance = lrpfn.lrp(plan, x)
    assert relevance.shape == x.shape and relevance.dtype == DTYPE
    assert bool(torch.isfinite(relevance).all())
    assert relevance.abs().sum() > 0  # a relevance of zeros would explain nothing


@pytest.mark.parametrize("name", MODELS)
def test_lrp0_conserves_relevance_when_the_model_has_no_biases(name: str) -> None:
    model, x = without_biases(build(name)), image(name)
    with torch.no_grad():
        output = model(x)
    target = output.argmax(1)
    relevance = lrpfn.lrp(model, x, rules.Epsilon(0.0), target=target)
    logit = output.gather(1, target[:, None])[:, 0]
    # random weights can give tiny logits (efficientnet_b0: ~1e-14): compare relatively
    torch.testing.assert_close(
        relevance.sum((1, 2, 3)) / logit, torch.ones_like(logit), rtol=0, atol=1e-9
    )


def test_resnet18_with_batchnorm_statistics_matches_zennit_under_epsilon_gamma_box() -> None:
    """zennit's MergeBatchNorm keeps the BatchNorm's eps after merging (applying
    1/sqrt(var + eps) twice), so eps is set to 0 for both libraries to fold exactly."""
    model = build("resnet18")
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                channels = module.num_features
                module.running_mean.copy_(torch.randn(channels, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(channels, generator=generator) * 0.1)
                module.eps = 0.0
    x = image("resnet18", batch=1)
    with torch.no_grad():
        output = model(x)
    target = output.argmax(1)
    ours = lrpfn.lrp(model, x, composites.epsilon_gamma_box(low=-BOUND, high=BOUND), target=target)

    theirs_model = copy.deepcopy(model)  # zennit's canonizer rewrites the model while active
    composite = EpsilonGammaBox(
        low=torch.full_like(x, -BOUND),
        high=torch.full_like(x, BOUND),
        canonizers=[ResNetCanonizer()],
    )
    start = nn.functional.one_hot(target, output.shape[1]).to(DTYPE) * output
    with ZennitGradient(model=theirs_model, composite=composite) as attributor:
        _, theirs = attributor(x, start)
    assert theirs.norm() > 0
    assert float((ours - theirs).norm() / theirs.norm()) <= 1e-6
