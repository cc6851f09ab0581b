"""TorchLRP's VGG / ImageNet example with lrpfn: explain VGG16 on ImageNet-style images.

No conversion of the model is needed (TorchLRP needed `lrp.convert_vgg`): lrpfn explains
the torchvision model as it is. Weights come from a local file (a state dict, e.g.
`torch.save(torchvision.models.vgg16(weights="DEFAULT").state_dict(), "vgg16.pth")` on a
machine with internet); without one the weights are random and the heatmaps mean nothing.

Images come from `--imagenet-dir DIR` (its `val/` subfolder if there is one, else DIR;
searched recursively, e.g. `val/n01440764/*.JPEG`) or, as in TorchLRP, from the
`ImageNetDir` entry of a `config.ini`:

    [DEFAULT]
    ImageNetDir = /home/user/example/data

    python examples/explain_vgg.py --imagenet-dir ~/imagenet --weights vgg16.pth
    python examples/explain_vgg.py --weights vgg16.pth --pattern-batches 8  # with patterns
    python examples/explain_vgg.py --smoke --imagenet-dir DIR               # vgg11, 32 px

Writes `out/vgg16_explanations.png`: one row per image, one column per method.
"""

from __future__ import annotations

import argparse
import configparser
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _digits

import lrpfn
from lrpfn import cli, composites, image, rules


def image_folder(args: argparse.Namespace) -> Path:
    """The ImageNet-style folder: --imagenet-dir, else ImageNetDir from config.ini."""
    folder = args.imagenet_dir
    if folder is None and Path(args.config).is_file():
        config = configparser.ConfigParser()
        config.read(args.config)
        folder = config["DEFAULT"].get("ImageNetDir")
    if folder is None:
        raise SystemExit(
            "no images: pass --imagenet-dir DIR, or write ImageNetDir = DIR under [DEFAULT] "
            f"in {args.config}."
        )
    root = Path(folder).expanduser()
    return root / "val" if (root / "val").is_dir() else root


def methods_for(model, preprocessing, patterns=None) -> dict[str, _digits.Method]:
    """TorchLRP's methods and two composites; the z^B box is the normalised pixel range."""
    mean, std = preprocessing.mean, preprocessing.std
    mappings = {
        "epsilon": "epsilon",
        "gamma+epsilon": "gamma+epsilon",
        "alpha1beta0": "alpha1beta0",
        "alpha2beta1": "alpha2beta1",
        "epsilon_gamma_box": cli.make_rules("epsilon_gamma_box", mean, std),
        "epsilon_plus_flat": composites.epsilon_plus_flat(),
    }
    if patterns is not None:
        patterns_all, patterns_positive = patterns
        mappings["PatternNet (all)"] = rules.PatternNet(patterns_all)
        mappings["PatternNet (pos)"] = rules.PatternNet(patterns_positive)
        mappings["PatternAttribution (all)"] = rules.PatternAttribution(patterns_all)
        mappings["PatternAttribution (pos)"] = rules.PatternAttribution(patterns_positive)
    plans = {name: lrpfn.prepare(model, mapping) for name, mapping in mappings.items()}
    methods = {"gradient x input": _digits.gradient_times_input(model)}
    methods.update({name: (lambda x, p=plan: lrpfn.lrp(p, x)) for name, plan in plans.items()})
    return methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--imagenet-dir", help="ImageNet-style image folder")
    parser.add_argument("--config", default="config.ini", help="read ImageNetDir from here")
    parser.add_argument("--model", default="vgg16", help="a torchvision model name (vgg16)")
    parser.add_argument("--weights", help="local state-dict file for the model")
    parser.add_argument("--samples", type=int, default=4, help="images to explain")
    parser.add_argument("--pattern-batches", type=int, default=0, help="fit patterns on N batches")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default=None, help="default out/<model>_explanations.png")
    parser.add_argument("--smoke", action="store_true", help="vgg11 on 32x32 crops: seconds")
    args = parser.parse_args()
    preprocessing = cli.imagenet_preprocessing()
    if args.smoke:
        args.model, args.samples = "vgg11", 2
        preprocessing = cli.imagenet_preprocessing(resize=40, crop=32)
    torch.manual_seed(0)

    _root, files = cli.find_images(str(image_folder(args)))
    model, _ = cli.load_model(f"torchvision:{args.model}", args.weights)
    print(f"{args.model}: {len(files)} images found")

    patterns = None
    if args.pattern_batches > 0:
        from lrpfn import patterns as pattern_fitting

        needed = files[: args.pattern_batches * args.batch_size]
        data = [
            torch.stack([preprocessing.load(path) for path in needed[i : i + args.batch_size]])
            for i in range(0, len(needed), args.batch_size)
        ]
        patterns = tuple(
            pattern_fitting.fit(model, data, kind=kind, progress=True)
            for kind in ("linear", "positive")
        )

    x = torch.stack([preprocessing.load(path) for path in files[: args.samples]])
    with torch.no_grad():
        logits = model(x)
    heatmaps = {}
    for name, explain in methods_for(model, preprocessing, patterns).items():
        heatmaps[name] = image.heatmap(explain(x), "bwr")
        print(f"  explained with {name}")
    rows = [
        f"{path.parent.name}/{path.name}\npred {int(c)}"
        for path, c in zip(files, logits.argmax(1), strict=False)
    ]
    path = Path(args.out or f"out/{args.model}_explanations.png")
    pixels = image.to_pixels(x, preprocessing.mean, preprocessing.std)
    image.plot_grid(pixels, heatmaps, path, row_titles=rows, cell_size=1.6)
    print(f"wrote {path.resolve()}")


if __name__ == "__main__":
    try:
        main()
    except cli.CLIError as error:  # a missing folder or weights file, an unknown model
        raise SystemExit(f"explain_vgg.py: {error}") from None
