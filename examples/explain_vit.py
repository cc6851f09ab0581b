"""Explain a vision transformer with AttnLRP and CP-LRP: pixel and patch heatmaps.

    python examples/explain_vit.py --weights vit_b_16.pth --images DIR
    python examples/explain_vit.py --smoke      # a tiny random ViT on generated images

Explains torchvision's `vit_b_16` (its `nn.MultiheadAttention` is decomposed into ordinary
ops; nothing is patched). Weights come from a local state dict (e.g.
`torch.save(torchvision.models.vit_b_16(weights="DEFAULT").state_dict(), "vit_b_16.pth")`
on a machine with internet); without one the weights are random and the heatmaps mean
nothing. Images from `--images DIR` are resized to 224 x 224 and normalised as ImageNet.

Writes `out/vit_explanations.png`: per image, the image, AttnLRP (gamma on the dense layers,
as the AttnLRP paper recommends for ViTs) per pixel and summed per patch, and CP-LRP.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

import lrpfn
from lrpfn import composites, image

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def patch_heatmap(relevance: torch.Tensor, patch: int) -> torch.Tensor:
    """The relevance summed over each patch, spread back over the patch's pixels."""
    summed = torch.nn.functional.avg_pool2d(relevance.sum(1, keepdim=True), patch) * patch**2
    return summed.repeat_interleave(patch, -2).repeat_interleave(patch, -1)


def smoke_setup():
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
        num_classes=10,
    )  # fmt: skip
    torch.nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision starts it at zero
    return model.eval(), torch.rand(2, 3, 32, 32), 8


def _load(path: Path) -> torch.Tensor:
    """An image as a (3, 224, 224) tensor of pixels in [0, 1]."""
    from PIL import Image

    with Image.open(path) as picture:
        pixels = np.asarray(picture.convert("RGB").resize((224, 224)), dtype=np.float32)
    return torch.from_numpy(pixels).permute(2, 0, 1) / 255.0


def setup(args):
    import torchvision

    model = torchvision.models.vit_b_16()
    if args.weights:
        model.load_state_dict(torch.load(args.weights, map_location="cpu"))
    else:
        print("warning: no --weights: vit_b_16 has RANDOM weights", file=sys.stderr)
    paths = sorted(
        p for p in Path(args.images).rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg")
    )
    if not paths:
        raise SystemExit(f"no images under {args.images}")
    pictures = [_load(path) for path in paths[:4]]
    return model.eval(), torch.stack(pictures), 16


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="a local vit_b_16 state dict")
    parser.add_argument("--images", help="a folder of images")
    parser.add_argument("--out", default="out/vit_explanations.png")
    parser.add_argument("--smoke", action="store_true", help="a tiny random ViT")
    args = parser.parse_args(argv)
    if args.smoke:
        model, pixels, patch = smoke_setup()
    elif args.images:
        model, pixels, patch = setup(args)
    else:
        parser.error("pass --images DIR (and --weights FILE), or --smoke")
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    x = (pixels - mean) / std
    attnlrp = lrpfn.lrp(model, x, composites.attnlrp(gamma=0.25))
    cp_lrp = lrpfn.lrp(model, x, composites.cp_lrp())
    rows = []
    for index in range(len(x)):
        shown = (pixels[index].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        maps = [attnlrp[index], patch_heatmap(attnlrp[index : index + 1], patch)[0], cp_lrp[index]]
        rows.append(np.concatenate([shown, *(image.heatmap(m) for m in maps)], axis=1))
    figure = image.upscale(np.concatenate(rows, axis=0), max(1, 128 // x.shape[-1]))
    path = image.save_png(figure, args.out)
    print(f"explained {len(x)} image(s) with attnlrp(gamma=0.25) and cp_lrp; wrote {path}")


if __name__ == "__main__":
    main()
