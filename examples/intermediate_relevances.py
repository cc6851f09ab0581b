"""TorchLRP's trace example, functional: the relevance at every node with `lrpfn.relevances`.

TorchLRP enabled a global trace, ran backward and collected a list. Here one call returns
`{node name: relevance}` in graph order, from the input placeholder to "output", and
nothing global is switched on or off:

    every = lrpfn.relevances(model, x, "epsilon")
    for i, (name, relevance) in enumerate(every.items()):
        print(i, name, relevance.shape)

The example trains the digits CNN briefly, prints every node's relevance (its shape and
its sum, which conservative rules keep from layer to layer), saves them all to
`out/relevances.npz` and draws the spatial ones to `out/intermediate_relevances.png`.

    python examples/intermediate_relevances.py [--rules alpha1beta0] [--smoke]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _digits

import lrpfn
from lrpfn import image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rules", default="alpha1beta0", help="a rule key or preset name")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default="out", help="folder for the .npz and the figure")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: seconds")
    args = parser.parse_args()
    if args.smoke:
        args.epochs = 1
    torch.manual_seed(0)
    torch.set_num_threads(1)

    data = _digits.load_digits()
    model = _digits.train(_digits.make_cnn(size=8), data.x_train, data.y_train, args.epochs)
    x = data.x_test[:4]

    every = lrpfn.relevances(model, x, args.rules)
    print(f"relevance at every node ({args.rules}), sums over the 4 samples:")
    for i, (name, relevance) in enumerate(every.items()):
        print(f"{i:3d}  {name:<10} {tuple(relevance.shape)!s:<18} sum {relevance.sum():9.4f}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "relevances.npz", **{n: r.numpy() for n, r in every.items()})
    spatial = {name: r for name, r in every.items() if r.ndim == 4}
    heatmaps = {f"{name} {tuple(r.shape[1:])}": image.heatmap(r) for name, r in spatial.items()}
    figure = out / "intermediate_relevances.png"
    rows = [f"test {i}" for i in range(len(x))]
    image.plot_grid(image.to_pixels(x), heatmaps, figure, row_titles=rows)
    print(f"wrote {(out / 'relevances.npz').resolve()} and {figure.resolve()}")


if __name__ == "__main__":
    main()
