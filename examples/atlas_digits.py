"""The concept atlas of the digits CNN: for each channel, the test digits that use it most.

    python examples/atlas_digits.py                   # train 20 epochs, atlas of 450 digits
    python examples/atlas_digits.py --smoke           # seconds
    python examples/atlas_digits.py --figure docs/img/atlas.png
    torchrun --nproc_per_node=2 examples/atlas_digits.py   # the atlas on 2 ranks

The model is `_digits.make_cnn` (conv "0" - ReLU - pool - conv "3" - ReLU - pool - dense
"7"). `lrpfn.concepts.atlas` explains every test digit (its label) and keeps, for every
channel of both convolutions, the 8 digits of largest normalised relevance (and by
maximum, and by activation), and per class the mean relevance of every channel. The
script prints which channels each class relies on most, and draws the second
convolution's most used channels with their reference digits: each crop is cut to the
channel's receptive field on that digit, beside the channel's conditional heatmap (the
part of the explanation that flows through the channel).

Writes `OUT/atlas.zarr` and the figure (`--figure`, default `OUT/atlas.png`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _digits

from lrpfn import composites, concepts

LAYERS = ["0", "3"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="out/atlas", help="folder of the store")
    parser.add_argument("--figure", help="the figure (default: OUT/atlas.png)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: seconds")
    args = parser.parse_args()
    torch.set_num_threads(1)  # small tensors: threads cost more than they give
    torch.manual_seed(0)
    data = _digits.load_digits()
    train_x, train_y = data.x_train, data.y_train
    if args.smoke:
        args.epochs, train_x, train_y = 1, train_x[:256], train_y[:256]
    model = _digits.make_cnn(size=8)
    _digits.train(model, train_x, train_y, args.epochs, seed=0, progress=not args.smoke)
    test = torch.utils.data.TensorDataset(data.x_test, data.y_test)
    out = Path(args.out)
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        shutil.rmtree(out / "atlas.zarr", ignore_errors=True)  # a new model: a new store
    atlas = concepts.atlas(
        model, test, composites.epsilon_plus_flat(), LAYERS, out / "atlas.zarr", k=8,
        target="label", batch_size=64, progress=not args.smoke,
    )  # fmt: skip
    if rank != 0:
        return
    means = atlas.class_relevance("3")  # (classes, channels)
    for label in range(10):
        favourite = np.argsort(-means[label])[:3]
        shares = ", ".join(f"{c} ({100 * means[label, c]:.0f}%)" for c in favourite)
        print(f"class {label}: channels {shares} of the second convolution's relevance")
    used = np.argsort(-np.nanmean(means, axis=0))[:6]  # the channels most classes rely on
    references = atlas.references("3", used.tolist(), n=6, size=(32, 32))
    figure = Path(args.figure or out / "atlas.png")
    concepts.plot_atlas(
        references.images,
        references.crops,
        figure,
        row_titles=[f"channel {c}" for c in used],
        indices=references.indices,
        title="digits CNN, second convolution: the most used channels and their top digits",
    )
    print(f"wrote {out / 'atlas.zarr'} and {figure}")


if __name__ == "__main__":
    main()
