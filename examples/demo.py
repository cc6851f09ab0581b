"""The lrpfn demo (`make demo`): train, fit patterns, explain with every rule, check conservation.

1. trains a small CNN on scikit-learn's bundled 8x8 digits (no download) and prints its
   test accuracy;
2. fits PatternNet patterns of both kinds ("linear": all, "positive");
3. explains one test digit of each of the first classes with every method of TorchLRP
   (gradient x input, epsilon, gamma, gamma+epsilon, alpha1beta0, alpha2beta1, PatternNet
   and PatternAttribution with all and positive patterns) and every preset composite;
4. prints, per method, the sum of the input relevance against the explained logit: for a
   conservative rule their ratio is 1, up to what the biases absorb;
5. writes a grid figure (digits x methods) and prints its path;
6. evaluates every method by pixel flipping on 256 test digits (2x2 patches replaced by
   seeded uniform noise, most and least relevant first, 16 steps: the whole digit), prints
   the AOPC table and writes the curves next to the grid (`<name>_flipping.png`).

    python examples/demo.py                         # under a minute on 2 cores
    python examples/demo.py --out docs/img/demo.png
    python examples/demo.py --smoke                 # seconds: one epoch, two digits
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _digits

import lrpfn
from lrpfn import composites, evaluate, image


def preset_methods(model: torch.nn.Module) -> dict[str, _digits.Method]:
    """The preset composites; the z^B box of the first layer is the pixel range [0, 1]."""
    presets = {
        "epsilon_plus": composites.epsilon_plus(),
        "epsilon_plus_flat": composites.epsilon_plus_flat(),
        "epsilon_gamma_box": composites.epsilon_gamma_box(low=0.0, high=1.0),
        "epsilon_alpha2_beta1": composites.epsilon_alpha2_beta1(),
        "epsilon_alpha2_beta1_flat": composites.epsilon_alpha2_beta1_flat(),
    }
    plans = {name: lrpfn.prepare(model, preset) for name, preset in presets.items()}
    return {name: (lambda x, plan=plan: lrpfn.lrp(plan, x)) for name, plan in plans.items()}


def conservation(relevance: torch.Tensor, logit: torch.Tensor) -> torch.Tensor:
    """Sum of the input relevance of each sample over the logit it explains."""
    return relevance.flatten(1).sum(1) / logit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="demo_out/demo.png", help="the figure (PNG)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--digits", type=int, default=6, help="rows of the figure (<= 10)")
    parser.add_argument("--evaluate", type=int, default=256, help="test digits to flip")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: seconds")
    args = parser.parse_args()
    if args.smoke:
        args.epochs, args.digits, args.evaluate = 1, 2, 16
    started = time.perf_counter()
    torch.manual_seed(0)
    torch.set_num_threads(1)  # tensors this small gain nothing from threads

    data = _digits.load_digits()
    print(f"digits: {len(data.x_train)} training and {len(data.x_test)} test images, 8x8")
    model = _digits.make_cnn(size=8)
    _digits.train(model, data.x_train, data.y_train, args.epochs)
    print(f"test accuracy: {_digits.accuracy(model, data.x_test, data.y_test):.3f}")

    patterns_all, patterns_positive = _digits.fit_patterns(model, data.x_train)
    methods = {
        **_digits.seed_methods(model, patterns_all, patterns_positive),
        **preset_methods(model),
    }

    index = _digits.one_per_class(data.y_test, args.digits)
    x, labels = data.x_test[index], data.y_test[index]
    with torch.no_grad():
        logits = model(x)
    predicted = logits.argmax(1)
    logit = logits.gather(1, predicted[:, None]).squeeze(1)

    heatmaps, notes = {}, {}
    print(f"\nconservation: sum of input relevance / explained logit, over {len(x)} digits")
    print(f"  {'method':<26} {'mean':>7} {'min':>7} {'max':>7}")
    for name, explain in methods.items():
        relevance = explain(x)
        ratio = conservation(relevance, logit)
        print(f"  {name:<26} {ratio.mean():7.3f} {ratio.min():7.3f} {ratio.max():7.3f}")
        heatmaps[name] = image.heatmap(relevance, "bwr")
        signal = name.startswith("PatternNet")  # a signal in input space, not a relevance
        notes[name] = "(signal)" if signal else f"sum/logit {ratio.mean():.2f}"
    print(
        "  (PatternNet gives a signal, not a relevance, and gradient x input and "
        "PatternAttribution are not conservative: their ratios are shown, not expected to be 1)"
    )

    rows = [f"label {int(t)}, pred {int(p)}" for t, p in zip(labels, predicted, strict=True)]
    path = Path(args.out)
    image.plot_grid(
        image.to_pixels(x),
        heatmaps,
        path,
        row_titles=rows,
        notes=notes,
        title="lrpfn on scikit-learn digits: red = positive relevance, blue = negative",
    )
    print(f"\nwrote {path.resolve()}")

    flipping = pixel_flipping(model, methods, data.x_test[: args.evaluate], path)
    print(f"wrote {flipping.resolve()}")
    print(f"done in {time.perf_counter() - started:.1f} s")


def pixel_flipping(model, methods: dict[str, _digits.Method], x: torch.Tensor, grid: Path) -> Path:
    """Region perturbation of every method on `x` (2x2 patches, seeded uniform noise in
    [0, 1], all 16 patches): prints the AOPC table, writes the curves beside `grid`."""
    comparison = evaluate.compare(
        model, x, methods, patch=2, steps=16, perturbation=evaluate.UniformNoise(0.0, 1.0, seed=0)
    )
    print(
        f"\npixel flipping on {len(x)} test digits (2x2 patches -> uniform noise, 16 steps): "
        "AOPC, higher is better most relevant first (MoRF), lower least relevant first (LeRF)"
    )
    print(comparison)
    path = grid.with_name(f"{grid.stem}_flipping.png")
    evaluate.plot_curves(
        comparison, path, title=f"pixel flipping on {len(x)} scikit-learn test digits"
    )
    return path


if __name__ == "__main__":
    main()
