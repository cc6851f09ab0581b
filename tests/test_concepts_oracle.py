"""Concept Relevance Propagation agrees with zennit-crp 0.6 (on zennit 0.5.1) in float64.

zennit-crp registers a mask hook on each conditioned layer's output gradient and, with
`exclude_parallel=True`, starts a second backward pass at the layer's output so that
relevance bypassing the layer is left out; it computes the k conditions as k copies of
the input in one batch. lrpfn masks the relevance at the graph node and vmaps the k
walks. Both explain with EpsilonPlusFlat (zennit's canonizers fold the BatchNorms; the
BatchNorms have eps = 0 so that both fold exactly, see `test_zennit_oracle.py`).

Agreement is $\\|R_{\\text{lrpfn}} - R_{\\text{crp}}\\| / \\|R_{\\text{crp}}\\|$ over all k heatmaps,
at most 1e-10 for every concept (in practice 1e-15 to 1e-14).
"""

from __future__ import annotations

import pytest
import torch
import zennit.composites as zc
from crp.attribution import CondAttribution
from test_zennit_oracle import DTYPE, resnet18, vgg16_bn
from torch import Tensor, nn
from zennit.torchvision import ResNetCanonizer, VGGCanonizer

from lrpfn import composites, concepts

TOLERANCE = 1e-10
TARGET = 3


class _InputRelevance(CondAttribution):
    """zennit-crp returning the full input relevance, not its sum over colour channels."""

    def heatmap_modifier(self, data, on_device=None):
        return data.grad.detach().clone()


def crp_heatmaps(model: nn.Module, x: Tensor, conditions, canonizer, exclude_parallel) -> Tensor:
    """zennit-crp's input relevance per condition, as `(k, batch, *x.shape[1:])`."""
    attribution = _InputRelevance(model)
    # every sample under every condition, sample-major: row i * k + j is condition j of
    # sample i (crp pairs sample i with condition i when their numbers are equal)
    data = x.repeat_interleave(len(conditions), dim=0).requires_grad_(True)
    with_target = [{**condition, "y": [TARGET]} for condition in conditions] * x.shape[0]
    composite = zc.EpsilonPlusFlat(canonizers=[canonizer])
    result = attribution(data, with_target, composite, exclude_parallel=exclude_parallel)
    heatmap = result.heatmap.reshape(x.shape[0], len(conditions), *x.shape[1:])
    return heatmap.transpose(0, 1)


def relative_error(ours: Tensor, theirs: Tensor) -> float:
    """The largest relative error over the k concepts (each compared as a whole batch)."""
    assert ours.shape == theirs.shape and ours.dtype == DTYPE
    norms = theirs.flatten(1).norm(dim=1)
    assert bool((norms > 0).all())  # a concept without relevance would prove nothing
    return float(((ours - theirs).flatten(1).norm(dim=1) / norms).max())


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return resnet18()


@pytest.fixture(scope="module")
def vgg() -> nn.Module:
    return vgg16_bn()


def _input(shape, seed: int) -> Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


RESNET_CONDITIONS = {
    # one layer inside a residual block: the skip around it is excluded
    "conv": [{"layer3.1.conv2": [c]} for c in (0, 5, 17, 200)],
    # a whole stage (the block container's output): several channels per concept
    "stage": [{"layer4": [1, 2, 3]}, {"layer4": [100]}, {"layer4": list(range(0, 512, 7))}],
    # hierarchical: a concept of layer4.0.conv2 and sub-concepts of layer3.0.conv1 below it
    "two_layers": [
        {"layer4.0.conv2": list(range(0, 512, 2)), "layer3.0.conv1": list(range(c, 256, 5))}
        for c in (0, 3)
    ],
    "three_layers": [
        {
            "layer4.1.conv1": list(range(1, 512, 2)),
            "layer3.1.conv2": list(range(c, 256, 3)),
            "layer2.0.conv1": list(range(0, 128, 4)),
        }
        for c in (0, 2)
    ],
}


@pytest.mark.parametrize("exclude_parallel", [True, False])
@pytest.mark.parametrize("case", list(RESNET_CONDITIONS))
def test_resnet18_matches_zennit_crp(resnet, case: str, exclude_parallel: bool) -> None:
    x = _input((2, 3, 64, 64), 1)
    conditions = RESNET_CONDITIONS[case]
    ours = concepts.conditional(
        resnet,
        x,
        composites.epsilon_plus_flat(),
        conditions,
        target=TARGET,
        exclude_parallel=exclude_parallel,
    )
    theirs = crp_heatmaps(resnet, x, conditions, ResNetCanonizer(), exclude_parallel)
    assert relative_error(ours, theirs) <= TOLERANCE


VGG_CONDITIONS = {
    "conv": [{"features.37": [c]} for c in (0, 31, 255)],
    # a dense layer's neurons, and a convolution below it
    "dense_and_conv": [
        {"classifier.3": list(range(n, 4096, 9)), "features.24": [1, 2, 3]} for n in (0, 4)
    ],
}


@pytest.mark.parametrize("case", list(VGG_CONDITIONS))
def test_vgg16_bn_matches_zennit_crp(vgg, case: str) -> None:
    x = _input((1, 3, 32, 32), 2)
    conditions = VGG_CONDITIONS[case]
    ours = concepts.conditional(vgg, x, composites.epsilon_plus_flat(), conditions, target=TARGET)
    theirs = crp_heatmaps(vgg, x, conditions, VGGCanonizer(), exclude_parallel=True)
    assert relative_error(ours, theirs) <= TOLERANCE
