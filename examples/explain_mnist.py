"""TorchLRP's MNIST example with lrpfn: train a CNN, fit patterns, explain with every rule.

By default the data is scikit-learn's bundled 8x8 digits (no download). With
`--data-dir DIR` it is MNIST read from DIR in torchvision's layout (`DIR/MNIST/raw/` as
`torchvision.datasets.MNIST(root=DIR, download=True)` leaves it; gzipped files work too).

    python examples/explain_mnist.py                         # digits
    python examples/explain_mnist.py --data-dir ~/data       # MNIST, 28x28
    python examples/explain_mnist.py --smoke                 # seconds

Writes `out/mnist_explanations.png`: one row per test image, one column per method.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _digits

from lrpfn import image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", help="MNIST in torchvision's layout (default: digits)")
    parser.add_argument("--epochs", type=int, default=None, help="default 20 (digits), 2 (MNIST)")
    parser.add_argument("--train-size", type=int, default=None, help="use the first N images")
    parser.add_argument("--samples", type=int, default=8, help="test images to explain")
    parser.add_argument("--out", default="out/mnist_explanations.png")
    parser.add_argument("--save-model", help="save the trained state dict here")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: seconds")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)  # small tensors: threads cost more than they give

    if args.data_dir:
        data = _digits.load_mnist(args.data_dir)
        epochs = 2 if args.epochs is None else args.epochs
    else:
        data = _digits.load_digits()
        epochs = 20 if args.epochs is None else args.epochs
    if args.smoke:
        epochs, args.samples, args.train_size = 1, 2, args.train_size or 256
    if args.train_size:
        data = data._replace(x_train=data.x_train[: args.train_size])
        data = data._replace(y_train=data.y_train[: args.train_size])
    size = data.x_train.shape[-1]
    print(f"{len(data.x_train)} training images, {len(data.x_test)} test images, {size}x{size}")

    model = _digits.make_cnn(size=size, width=32 if size >= 28 else 16)
    _digits.train(model, data.x_train, data.y_train, epochs)
    print(f"test accuracy: {_digits.accuracy(model, data.x_test, data.y_test):.3f}")
    if args.save_model:
        torch.save(model.state_dict(), args.save_model)

    patterns_all, patterns_positive = _digits.fit_patterns(model, data.x_train)
    methods = _digits.seed_methods(model, patterns_all, patterns_positive)

    x, labels = data.x_test[: args.samples], data.y_test[: args.samples]
    with torch.no_grad():
        predicted = model(x).argmax(1)
    heatmaps = {name: image.heatmap(explain(x), "bwr") for name, explain in methods.items()}
    rows = [f"label {int(t)}, pred {int(p)}" for t, p in zip(labels, predicted, strict=True)]
    path = Path(args.out)
    image.plot_grid(image.to_pixels(x), heatmaps, path, row_titles=rows)
    print(f"wrote {path.resolve()}")


if __name__ == "__main__":
    main()
