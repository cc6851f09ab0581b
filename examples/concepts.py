"""Concept Relevance Propagation on the digits CNN: which channels carry a prediction,
and where in the image each one was found.

    python examples/concepts.py                    # train 20 epochs on 8x8 digits
    python examples/concepts.py --smoke            # seconds
    python examples/concepts.py --out docs/img/concepts.png

The model is `_digits.make_cnn` (conv - ReLU - max-pool - conv - ReLU - max-pool - dense).
For each test image the script ranks the channels of the second convolution (module "3"
of the Sequential) by their relevance, computes the conditional heatmap of the top k in
one call, prints each heatmap's sum beside its channel's relevance (equal but for what
the layers' biases absorb on the way to the input), finds each concept's
receptive field, and for the strongest concept asks which channels of the first
convolution it is made of (the hierarchical case). Writes one sample's row of concept
heatmaps (`lrpfn.image.plot_concepts`) to `--out`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _digits

import lrpfn
from lrpfn import composites, concepts, image

LAYER, LOWER = "3", "0"  # the second and the first convolution of the Sequential


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--k", type=int, default=4, help="concepts per image")
    parser.add_argument("--samples", type=int, default=4, help="test images to explain")
    parser.add_argument("--sample", type=int, default=0, help="the image drawn in the figure")
    parser.add_argument("--out", default="out/concepts.png")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: seconds")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)

    data = _digits.load_digits()
    train_x, train_y = data.x_train, data.y_train
    if args.smoke:
        args.epochs, train_x, train_y = 1, train_x[:256], train_y[:256]
    model = _digits.make_cnn(size=8)
    _digits.train(model, train_x, train_y, args.epochs, progress=not args.smoke)
    print(f"test accuracy: {_digits.accuracy(model, data.x_test, data.y_test):.3f}")

    x = data.x_test[: args.samples].double()
    plan = lrpfn.prepare(model.double(), composites.epsilon_plus_flat())

    # the three-line workflow: rank the channels, pick the top k, one heatmap per concept
    relevance = concepts.importance(plan, x, None, LAYER)  # (samples, channels)
    top = concepts.top(relevance, args.k)  # (samples, k) each
    maps = concepts.conditional(plan, x, None, top.conditions(LAYER))  # (k, samples, 1, 8, 8)

    fields = concepts.receptive_field(maps, 0.2)  # (k, samples, 8, 8)
    boxes = concepts.bounding_box(fields)
    sums = maps.flatten(2).sum(2).T  # (samples, k): each heatmap's total
    for sample in range(x.shape[0]):
        print(f"image {sample} (label {int(data.y_test[sample])}):")
        for j in range(args.k):
            channel, share = int(top.channels[sample, j]), float(top.share[sample, j])
            top_row, left, bottom, right = boxes[j, sample].tolist()
            print(
                f"  channel {channel:2d}: {100 * share:5.1f}% of conv 2's relevance, heatmap sums "
                f"to {float(sums[sample, j]):+.4f} (channel relevance "
                f"{float(top.relevance[sample, j]):+.4f}), found in rows {top_row}-{bottom - 1}, "
                f"columns {left}-{right - 1}"
            )

    # hierarchical: which channels of the first convolution make up each image's top concept
    strongest = [{LAYER: top.channels[:, :1]}]
    parts = concepts.importance(plan, x, None, LOWER, conditions=strongest)[0]
    below = concepts.top(parts, 3)
    for sample in range(x.shape[0]):
        channels = ", ".join(
            f"{int(c)} ({100 * float(s):.0f}%)"
            for c, s in zip(below.channels[sample], below.share[sample], strict=True)
        )
        print(
            f"image {sample}: channel {int(top.channels[sample, 0])} of conv 2 draws on "
            f"channels {channels} of conv 1"
        )

    sample = min(args.sample, x.shape[0] - 1)
    labels = [f"channel {int(c)}" for c in top.channels[sample]]
    scale = 8
    path = Path(args.out)
    pixels = image.upscale(image.to_pixels(x[sample]), scale)
    upscaled = maps[:, sample].repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    outlines = fields[:, sample].repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    title = f"digit {int(data.y_test[sample])}: top {args.k} channels of conv 2"
    image.plot_concepts(
        pixels, upscaled, top.share[sample], labels, path, fields=outlines, title=title
    )
    print(f"wrote {path.resolve()}")


if __name__ == "__main__":
    main()
