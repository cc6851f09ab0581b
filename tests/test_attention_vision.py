"""Vision transformers through `lrpfn.lrp` and the command line (random weights, tiny configs).

torchvision's ViT (`nn.MultiheadAttention`, decomposed), Swin (`shifted_window_attention`,
decomposed) and MaxViT (`einsum`-free attention by explicit ops), and timm's ViT and DeiT
(`F.scaled_dot_product_attention`, decomposed). For each: the canonical graph computes the
model's function, and AttnLRP and CP-LRP give finite relevance shaped like the image. The
command line's `--rules attnlrp` must give what the library gives.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lrpfn
from lrpfn import composites
from lrpfn.cli import main

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import attention_models  # noqa: E402

torchvision = pytest.importorskip("torchvision")


def _maxvit():
    from torchvision.models.maxvit import MaxVit

    torch.manual_seed(0)
    return MaxVit(
        input_size=(32, 32), stem_channels=8, partition_size=2, block_channels=[16, 32],
        block_layers=[1, 1], head_dim=8, stochastic_depth_prob=0.0, num_classes=5,
    ).eval()  # fmt: skip


def _timm(name: str):
    timm = pytest.importorskip("timm", reason="timm is a test extra")
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=5, img_size=32, depth=1).eval()


MODELS = {
    "torchvision_vit": (attention_models.tiny_vit, 32),
    "torchvision_swin": (attention_models.tiny_swin, 32),
    "torchvision_swin_padded": (attention_models.tiny_swin, 36),  # windows need padding
    "torchvision_maxvit": (_maxvit, 32),
    "timm_vit": (lambda: _timm("vit_tiny_patch16_224"), 32),
    "timm_deit_distilled": (lambda: _timm("deit_tiny_distilled_patch16_224"), 32),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_vision_transformer_is_explained(name):
    factory, size = MODELS[name]
    model = factory()
    x = torch.randn(2, 3, size, size)
    plan = lrpfn.prepare(model, composites.attnlrp(gamma=0.25))
    torch.testing.assert_close(plan.module(x), model(x), rtol=1e-5, atol=1e-6)
    for rules in (plan, composites.cp_lrp()):
        relevance = lrpfn.lrp(plan, x, target=1) if rules is plan else lrpfn.lrp(model, x, rules)
        assert relevance.shape == x.shape
        assert torch.isfinite(relevance).all() and relevance.abs().sum() > 0


def test_gamma_applies_to_the_dense_layers_and_patch_embedding():
    plan = lrpfn.prepare(attention_models.tiny_vit(), composites.attnlrp(gamma=0.25))
    assert type(plan.rules["conv_proj"]) is lrpfn.rules.Gamma
    kinds = {type(rule).__name__ for rule in plan.rules.values()}
    assert {"Gamma", "UniformProduct", "AttnSoftmax", "Epsilon"} <= kinds


def test_command_line_attnlrp_equals_the_library(tmp_path):
    picture, out = tmp_path / "x.png", tmp_path / "out"
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(picture)
    model = f"{HERE / 'attention_models.py'}:tiny_vit"
    command = f"explain --model {model} --input {picture} --rules attnlrp --out {out} --save-npy"
    assert main(command.split()) == 0
    x = (torch.tensor(pixels, dtype=torch.float32).permute(2, 0, 1) / 255.0).unsqueeze(0)
    expected = lrpfn.lrp(attention_models.tiny_vit(), x, composites.attnlrp())[0]
    np.testing.assert_allclose(np.load(out / "x.npy"), expected.numpy(), rtol=1e-4, atol=1e-6)
