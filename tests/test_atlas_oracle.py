"""The atlas's top-k agree with zennit-crp 0.6's `FeatureVisualization` in float64.

zennit-crp finds reference samples with forward and backward hooks on each layer: per
batch it sorts every channel's normalised score (`abs_norm`: the channel's sum or max
over positions divided by the sum of absolute values over the layer's channels) over
the batch and keeps the 40 best across batches, for the relevance explaining each
sample's label (with parallel paths kept) and for the activation. The atlas computes
the same scores from one forward pass and one reverse walk per batch and merges them
into a running top-k. Both explain with EpsilonPlusFlat (zennit's canonizers fold the
BatchNorms, which have eps = 0 so that both libraries fold exactly).

Compared: the scores of the 40 best samples of every channel (float64 per-sample rows at
1e-9 relative; the float32 `scores` array at float32 rounding), and their indices wherever
a score is not tied with another one in the list.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import zarr
import zennit.composites as zc
from crp.attribution import CondAttribution
from crp.concepts import ChannelConcept
from crp.visualization import FeatureVisualization
from torch import nn
from zennit.torchvision import ResNetCanonizer, VGGCanonizer

from lrpfn import composites, concepts

pytestmark = pytest.mark.slow  # two models, each through zennit-crp twice (about 30 s)

DTYPE = torch.float64
K = 40  # zennit-crp's fixed SAMPLE_SIZE
CLASSES = 5


class SmallVGG(nn.Module):
    """conv-BN-ReLU blocks with max-pooling, then two dense layers (VGG's layout)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 12, 3, padding=1),
            nn.BatchNorm2d(12),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(12 * 4 * 4, 24), nn.ReLU(), nn.Linear(24, CLASSES)
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def _eps_free(model: nn.Module, seed: int) -> nn.Module:
    """Random BatchNorm statistics and affine parameters with eps = 0, non-zero biases."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(size, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(size, generator=generator))
                module.weight.copy_(0.5 + torch.rand(size, generator=generator))
                module.bias.copy_(0.1 * torch.randn(size, generator=generator))
                module.eps = 0.0
            elif isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
                module.bias.copy_(0.05 * torch.randn(module.bias.shape, generator=generator))
    return model.to(DTYPE).eval()


def small_vgg() -> nn.Module:
    torch.manual_seed(11)
    return _eps_free(SmallVGG(), 11)


def small_resnet() -> nn.Module:
    torch.manual_seed(12)
    blocks = torchvision.models.resnet.BasicBlock
    return _eps_free(torchvision.models.ResNet(blocks, [1, 1, 1, 1], num_classes=CLASSES), 12)


def images(count: int, seed: int) -> torch.utils.data.TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((count, 3, 16, 16), generator=generator, dtype=DTYPE)
    labels = torch.randint(0, CLASSES, (count,), generator=generator)
    return torch.utils.data.TensorDataset(x, labels)


def crp_top(model, dataset, layers, canonizer, folder: Path) -> dict:
    """zennit-crp's 40 best (indices, scores) per layer and ordering, as `(C, 40)`."""
    attribution = CondAttribution(copy.deepcopy(model))
    visualization = FeatureVisualization(
        attribution,
        dataset,
        {layer: ChannelConcept() for layer in layers},
        path=str(folder),
        max_target="sum",
    )
    found = {}
    for reduction in ("sum", "max"):
        visualization.RelMax.max_target = visualization.ActMax.max_target = reduction
        composite = zc.EpsilonPlusFlat(canonizers=[canonizer])
        visualization.run(composite, 0, len(dataset), batch_size=16, checkpoint=500)
        for source, prefix in (("relevance", "RelMax"), ("activation", "ActMax")):
            sub = folder / f"{prefix}_sum_normed"
            for layer in layers:
                indices = np.load(sub / f"{layer}_data.npy").T
                scores = np.load(sub / f"{layer}_rel.npy").T
                found[(layer, f"{source}_{reduction}")] = (indices, scores)
    return found


def assert_agree(ours_store: Path, layer: str, ordering: str, theirs) -> tuple[int, int]:
    group = zarr.open_group(str(ours_store), mode="r")
    indices = np.asarray(group[f"layers/{layer}/{ordering}/indices"][...])
    stored = np.asarray(group[f"layers/{layer}/{ordering}/scores"][...])
    samples = np.asarray(group[f"layers/{layer}/{ordering}/samples"][...])
    their_indices, their_scores = theirs
    assert indices.shape == their_indices.shape == (samples.shape[1], K)
    assert samples.dtype == np.float64
    ours = np.take_along_axis(samples.T, indices, axis=1)  # float64 scores of our top-k
    scale = np.abs(their_scores).max()
    assert scale > 0  # a comparison of zeros would prove nothing
    np.testing.assert_allclose(ours, their_scores, rtol=1e-9, atol=1e-12 * scale)
    np.testing.assert_allclose(stored, their_scores.astype(np.float32), rtol=1e-6, atol=1e-30)
    gaps = np.abs(their_scores[:, :, None] - their_scores[:, None, :])
    gaps = np.where(np.eye(K, dtype=bool), np.inf, gaps)
    # a score tied with another in the list, or with the last one (which may tie with
    # samples outside the list), may be any of the tied samples
    above_last = their_scores - their_scores[:, -1:] > 1e-9 * scale
    untied = (gaps.min(axis=2) > 1e-9 * scale) & above_last
    np.testing.assert_array_equal(indices[untied], their_indices[untied])
    return int(untied.sum()), untied.size


CASES = {
    "vgg": (small_vgg, VGGCanonizer, ["features.0", "features.4", "classifier.0"]),
    "resnet": (small_resnet, ResNetCanonizer, ["layer1.0.conv1", "layer2", "layer3.0.conv2"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_atlas_top_k_matches_zennit_crp(case: str, tmp_path: Path) -> None:
    build, canonizer, layers = CASES[case]
    model, dataset = build(), images(56, seed=len(case))
    store = tmp_path / "atlas.zarr"
    concepts.atlas(
        model,
        dataset,
        composites.epsilon_plus_flat(),
        layers,
        store,
        k=K,
        target="label",
        batch_size=24,
        progress=False,
    )
    theirs = crp_top(model, dataset, layers, canonizer(), tmp_path / "crp")
    assert len(theirs) == 4 * len(layers)
    for key, found in theirs.items():
        compared, positions = assert_agree(store, *key, found)
        # ties are zeros of dead units (up to 60% of a dense layer's top 40); the rest is compared
        assert compared >= 0.4 * positions, key
